# Shared set-up for run.sh and test.sh (sourced, not run): installs what is
# missing on a Debian machine, then offers a configure-and-build helper.
# Nothing else is needed: no network access beyond Debian's archive.

metatape_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$metatape_root"

# The CUDA toolkit lives outside Debian's packages, at /usr/local/cuda: put
# its nvcc on the PATH so that every build compiles the CUDA backend (GPU or
# not; the tests that need a GPU skip without one).
if [ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null 2>&1; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# Debian packages the build, the tests and the benchmarks need. Open MPI
# (mpirun and its headers) builds libmetatape-mpi and runs the tests of a
# meta-batch spread over processes on this machine.
metatape_packages=(meson ninja-build g++ pkg-config libopenblas-dev liblapacke-dev doctest-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev zlib1g-dev libpng-dev openmpi-bin libopenmpi-dev)

# Data sets: the image benchmark's Fashion-MNIST (the tests generate their
# own files and use these only where they are installed).
metatape_dataset_packages=(dataset-fashion-mnist)

install_dataset_packages() { install_missing_packages "${metatape_dataset_packages[@]}"; }

# install_missing_packages [PACKAGES...]: those given, else the build's.
install_missing_packages() {
  local missing=() p wanted=("$@")
  ((${#wanted[@]} > 0)) || wanted=("${metatape_packages[@]}")
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "metatape: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    return 1
  fi
  echo "metatape: installing ${missing[*]}"
  # Reuse the package lists when they are there; fetch them when they are not.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# configure_and_build DIR [meson options...]: set up DIR (or apply the options
# to an existing one) and build everything in it.
configure_and_build() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir"
}
