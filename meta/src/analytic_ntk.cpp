// Placeholder of the base commit: written next.
