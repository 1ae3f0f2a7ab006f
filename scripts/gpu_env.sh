# Sourced by scripts/gpu_check.sh, from the project's root: on a GPU machine
# without Debian's libraries, the packages carried in .devdeps/ (see
# gpu_check.sh) unpacked and found; nvcc on the PATH.
if [ -f .devdeps/env.sh ]; then
  # shellcheck disable=SC1091
  source .devdeps/env.sh
  # Packages unpacked without their maintainer scripts lack two links:
  # lapack.pc (an alternatives link to OpenBLAS's), without which pkg-config
  # finds no LAPACK for LAPACKE, and libz.so (an absolute link into /lib),
  # without which Meson links the static libz.a into a shared library.
  deps_lib=${METATAPE_DEPS:-/opt/metatape-deps}/usr/lib/x86_64-linux-gnu
  for name in lapack blas; do
    [ -e "$deps_lib/pkgconfig/$name.pc" ] || ln -sf "$deps_lib/openblas-pthread/pkgconfig/$name-openblas.pc" "$deps_lib/pkgconfig/$name.pc"
  done
  if [ ! -e "$deps_lib/libz.so" ]; then
    rm -f "$deps_lib/libz.a"
    ln -sf /usr/lib/x86_64-linux-gnu/libz.so.1 "$deps_lib/libz.so"
  fi
fi
export PATH="/usr/local/cuda/bin:$PATH"
