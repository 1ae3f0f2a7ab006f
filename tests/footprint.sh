#!/usr/bin/env bash
# The minimal engine loads no CUDA it does not use:
#   - libmetatape.so needs OpenBLAS and the C and C++ runtimes only (no
#     liblapacke, no CUDA library);
#   - libmetatape-meta.so (named by METATAPE_META_LIB) needs no MPI, NCCL
#     or CUDA library;
#   - `metatape info` runs, and on a machine without a usable GPU says
#     "cuda: not usable: <reason>" and maps no CUDA (or NCCL) library;
#   - in a build with the CUDA backend, each way of failing to load it is a
#     reason, never a crash: no backend file, a file that is no backend, a
#     backend from another version, and, with a driver that is a stand-in,
#     the real backend loaded (and then its CUDA libraries mapped) whose
#     runtime refuses.
#   tests/footprint.sh libmetatape.so metatape [fake-driver-dir fake-backend.so real-backend.so]
set -uo pipefail
lib=$1
metatape=$2
fake_driver_dir=${3:-}
fake_backend=${4:-}
real_backend=${5:+$(readlink -f "$5")}
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# The libraries a process loaded, from the dynamic loader's own trace (one
# "calling init: <path>" per library, dlopen'd ones included).
loaded_libraries() { LD_DEBUG=libs "$@" 2>&1 >/dev/null | sed -n 's/.*calling init: //p'; }
cuda_libraries='lib(cuda|cudart|cublas|cublasLt|cusolver|metatape-cuda|nccl|metatape-nccl)\.so'

needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[ -n "$needed" ] || fail "readelf found no NEEDED entry in $lib"
while read -r name; do
  [ -z "$name" ] && continue
  # A sanitized build (-Db_sanitize) adds its sanitizer runtimes: they come
  # from the build mode, not from what the library uses.
  [[ $name =~ ^lib(asan|ubsan|tsan|lsan)\.so\.[0-9]+$ ]] && continue
  [[ $name =~ ^(libopenblas\.so\.0|libstdc\+\+\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libc\.so\.6|ld-linux-x86-64\.so\.2)$ ]] ||
    fail "libmetatape.so needs $name (only OpenBLAS and the C/C++ runtimes are allowed)"
done <<<"$needed"
grep -q '^libopenblas' <<<"$needed" || fail "libmetatape.so does not need OpenBLAS: $needed"

# The distributed libraries stay out of the others: libmetatape-meta.so
# (when METATAPE_META_LIB names it) needs no MPI, NCCL or CUDA library, so
# that a program without them is unaffected.
if [ -n "${METATAPE_META_LIB:-}" ]; then
  meta_needed=$(readelf -d "$METATAPE_META_LIB" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  [ -n "$meta_needed" ] || fail "readelf found no NEEDED entry in $METATAPE_META_LIB"
  bad=$(grep -E '^lib(mpi|mpi_cxx|open-pal|open-rte|nccl|cuda|cudart|metatape-mpi|metatape-nccl)\.so' <<<"$meta_needed")
  [ -z "$bad" ] || fail "libmetatape-meta.so needs $(tr '\n' ' ' <<<"$bad")"
fi

info=$("$metatape" info) || fail "metatape info exited non-zero"
grep -q '^cpu: usable (OpenBLAS, [0-9]* thread(s))$' <<<"$info" || fail "info's CPU line: $info"
if grep -q '^cuda: usable' <<<"$info"; then
  echo "a usable GPU here: the checks for a machine without one are skipped"
  exit $((failures > 0))
fi
grep -qE '^cuda: not usable: .{10,}' <<<"$info" || fail "info gives no reason CUDA is not usable: $info"
# Judged by what was mapped, not by what info says: where the driver did not
# load, nothing else of CUDA may have been.
mapped=$(loaded_libraries "$metatape" info | grep -E "$cuda_libraries")
if ! grep -q 'libcuda\.so' <<<"$mapped" && [ -n "$mapped" ]; then
  fail "without a driver, metatape info mapped: $mapped"
fi

if [ -n "$fake_driver_dir" ]; then
  export LD_LIBRARY_PATH="$fake_driver_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The real backend, found beside libmetatape.so: loaded, its runtime refuses.
  info=$("$metatape" info) || fail "metatape info with a stand-in driver exited non-zero"
  grep -q '^cuda driver: found' <<<"$info" || fail "the stand-in driver was not found: $info"
  grep -qF "cuda backend library: loaded ($real_backend)" <<<"$info" ||
    fail "the backend beside libmetatape.so ($real_backend) was not loaded: $info"
  grep -qE '^cuda: not usable: .*cudaGetDeviceCount' <<<"$info" || fail "the runtime's refusal is not the reason: $info"
  loaded_libraries "$metatape" info | grep -qE 'libcudart\.so' ||
    fail "with a driver, the backend's runtime was not mapped (is the trace of loaded libraries working?)"
  # Each way the backend can be wrong, named.
  check_reason() {
    local what=$1 part=$2 file=$3 out
    out=$(METATAPE_CUDA_BACKEND=$file "$metatape" info) || { fail "$what: metatape info exited non-zero"; return; }
    grep -q '^cuda: not usable: ' <<<"$out" || fail "$what: CUDA is said usable: $out"
    grep -qF -- "$part" <<<"$out" || fail "$what: the reason lacks '$part': $out"
  }
  check_reason "no backend file" "cannot load the CUDA backend library /nonexistent/libmetatape-cuda.so" \
    /nonexistent/libmetatape-cuda.so
  check_reason "not a backend" "is not a metatape CUDA backend (no symbol metatape_cuda_backend_table)" \
    "$fake_driver_dir/libcuda.so.1"
  check_reason "another version" "version mismatch: $fake_backend was built from another version" "$fake_backend"
fi

if [ $failures -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "ok: libmetatape.so needs only: $(tr '\n' ' ' <<<"$needed")"
