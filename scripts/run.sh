#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: for now the
# demonstration of exact higher-order derivatives (metatape-demo).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
install_missing_packages
configure_and_build build -Dbuildtype=release >/dev/null
exec build/tools/metatape-demo "$@"
