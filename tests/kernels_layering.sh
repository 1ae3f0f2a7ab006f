#!/usr/bin/env bash
# The kernels depend on nothing above them: no file under kernels/ includes
# an engine header (<metatape/...>); failures cross over as KernelError.
#   tests/kernels_layering.sh path/to/kernels
set -uo pipefail
dir=$1
[[ -d $dir ]] || { echo "FAIL: no directory $dir"; exit 1; }
found=$(grep -rnE '#[[:space:]]*include[[:space:]]*[<"](metatape|engine)/' "$dir")
status=$?
if [[ $status -gt 1 ]]; then echo "FAIL: grep could not read $dir"; exit 1; fi
if [[ -n $found ]]; then
  echo "FAIL: kernels/ includes engine headers:"
  echo "$found"
  exit 1
fi
echo "ok: no engine header included under $dir"
