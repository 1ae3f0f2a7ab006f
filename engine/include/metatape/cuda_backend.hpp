// What this process found of the CUDA backend. The backend is a library of
// its own (libmetatape-cuda.so, installed next to libmetatape.so) that
// libmetatape loads on the first use of a CUDA device: cuda_available(), a
// tensor made on or moved to Device::cuda, a CapturedStep. Before loading it,
// libmetatape checks for the driver (libcuda.so.1), so a machine without one
// never maps the CUDA runtime; a program that never asks for a CUDA device
// maps no CUDA library at all. Wherever something is missing, everything
// runs on the CPU and cuda_available() says why.
//
// The library is looked up in the folder of libmetatape.so first, then by
// the dynamic loader's usual search; the environment variable
// METATAPE_CUDA_BACKEND, when set, names the file to load instead.
#pragma once

#include <string>

namespace metatape {

struct CudaBackendStatus {
  bool built = false;           // this build of metatape has a CUDA backend
  bool driver_found = false;    // libcuda.so.1 could be loaded
  bool library_loaded = false;  // the backend library is loaded and matches this libmetatape
  std::string library;          // the backend library loaded, or the last one tried ("" if none)
  int devices = 0;              // usable devices (0 unless library_loaded)
  std::string runtime;          // versions and one line per device, when the library is loaded
  std::string reason;           // why CUDA is not usable, when devices == 0
};

// Loads the backend if nothing has yet (as cuda_available does) and reports
// what was found. Never throws.
CudaBackendStatus cuda_backend_status();

}  // namespace metatape
