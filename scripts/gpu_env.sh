# Sourced by scripts/gpu_check.sh from the project's root: on a GPU machine
# without Debian's libraries (no network there either), the Debian packages
# carried in .devdeps/ are unpacked into a private prefix (never into /) and
# pkg-config, the compiler and the loader are pointed at it; nvcc goes on the
# PATH. Make .devdeps/ on a Debian 12 machine with network, then carry it:
#
#   mkdir -p .devdeps && (cd .devdeps && apt-get download \
#     libopenblas0-pthread libopenblas-pthread-dev libopenblas-dev libgfortran5 libquadmath0 \
#     liblapacke liblapacke-dev libtmglib3 libtmglib-dev doctest-dev libbenchmark-dev \
#     libbenchmark1debian libcli11-dev nlohmann-json3-dev zlib1g zlib1g-dev libpng16-16 libpng-dev \
#     pkgconf pkgconf-bin libpkgconf3)
if compgen -G ".devdeps/*.deb" >/dev/null; then
  deps_root=${METATAPE_DEPS:-/opt/metatape-deps}
  mkdir -p "$deps_root"
  for deb in .devdeps/*.deb; do dpkg -x "$deb" "$deps_root"; done
  deps_lib=$deps_root/usr/lib/x86_64-linux-gnu
  export PKG_CONFIG="$deps_root/usr/bin/pkgconf"
  export PKG_CONFIG_LIBDIR="$deps_lib/openblas-pthread/pkgconfig:$deps_lib/pkgconfig:$deps_root/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$deps_root"
  export CMAKE_PREFIX_PATH="$deps_root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export CPATH="$deps_root/usr/include${CPATH:+:$CPATH}"
  export LD_LIBRARY_PATH="$deps_lib/openblas-pthread:$deps_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LIBRARY_PATH="$deps_lib/openblas-pthread:$deps_lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  # Packages unpacked without their maintainer scripts lack two links:
  # lapack.pc (an alternatives link to OpenBLAS's), without which pkg-config
  # finds no LAPACK for LAPACKE, and libz.so (an absolute link into /lib),
  # without which Meson links the static libz.a into a shared library.
  mkdir -p "$deps_lib/pkgconfig"
  for name in lapack blas; do
    [ -e "$deps_lib/pkgconfig/$name.pc" ] ||
      ln -sf "$deps_lib/openblas-pthread/pkgconfig/$name-openblas.pc" "$deps_lib/pkgconfig/$name.pc"
  done
  if [ ! -e "$deps_lib/libz.so" ]; then
    rm -f "$deps_lib/libz.a"
    ln -sf /usr/lib/x86_64-linux-gnu/libz.so.1 "$deps_lib/libz.so"
  fi
fi
export PATH="/usr/local/cuda/bin:$PATH"
# CUPTI (bench-cuda-kernels) may sit apart from the toolkit's other libraries.
if [ -d /usr/local/cuda/extras/CUPTI/lib64 ]; then
  export LD_LIBRARY_PATH="/usr/local/cuda/extras/CUPTI/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
