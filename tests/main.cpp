// The test runner: doctest's own main. Each meson test runs one suite
// (--test-suite=NAME), so suites run in parallel and report separately.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
