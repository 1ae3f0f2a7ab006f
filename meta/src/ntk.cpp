// Placeholder of the base commit, replaced by the implementation before the
// issue is resolved.
#include "metatape/meta/ntk.hpp"
