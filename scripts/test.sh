#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the release build
# (warnings are errors), then the same suite under AddressSanitizer and
# UndefinedBehaviorSanitizer in a second build directory.
#
#   scripts/test.sh                  everything (what CI runs)
#   scripts/test.sh --no-sanitizers  the release build only (quicker, locally)
set -euo pipefail
source "$(dirname "$0")/setup.sh"

sanitizers=1
for arg in "$@"; do
  case "$arg" in
    --no-sanitizers) sanitizers=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

install_missing_packages
# Fashion-MNIST lets the CLI tests read the real files too; they skip that
# check, and pass, where it cannot be installed.
install_dataset_packages || echo "metatape: dataset-fashion-mnist is not installed; the real-data check will skip"

echo "== release build: build/"
configure_and_build build -Dbuildtype=release -Dwerror=true
meson test -C build --print-errorlogs --num-processes 2

if ((sanitizers)); then
  echo "== sanitizer build: build-sanitize/ (address, undefined)"
  # -O0: compiles in a third of the time of -O2, and the suite is small.
  configure_and_build build-sanitize -Dbuildtype=debug -Dwerror=true \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbenchmarks=disabled
  # UBSan reports are failures, not warnings. protect_shadow_gap=0 lets the
  # CUDA runtime map device memory where ASan would otherwise guard.
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:protect_shadow_gap=0 \
    meson test -C build-sanitize --print-errorlogs --num-processes 2 --timeout-multiplier 4
fi
echo "== all tests passed"
