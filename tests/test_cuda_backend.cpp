// Where CUDA cannot be used (this build has no backend, or the machine no
// driver, runtime or device), every use of a CUDA device is refused with
// the reason cuda_available gives, as a DeviceError, and a process that
// found no driver has mapped no CUDA library. On a machine with a usable GPU
// these checks do not apply (tests/test_cuda.cpp runs there).
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "metatape/cuda_backend.hpp"
#include "metatape/engine.hpp"
#include "test_util.hpp"

namespace mt = metatape;
using mt::Device;
using mt::DType;
using mt::testing::throws_error;

TEST_SUITE("cuda-backend") {
  TEST_CASE("without a usable GPU, every use of one is a DeviceError naming the reason") {
    std::string reason;
    if (mt::cuda_available(&reason)) {
      MESSAGE("a usable GPU here: tests/test_cuda.cpp checks it");
      return;
    }
    REQUIRE(reason.size() > 10);
    const std::string_view why = reason;
    CHECK(throws_error<mt::DeviceError>(
        [] {
          (void)mt::zeros({2, 3}, DType::f32, Device::cuda);
        },
        {"cannot allocate on cuda: ", why}));
    CHECK(throws_error<mt::DeviceError>([] { (void)mt::ones({4}, DType::f64).to(Device::cuda); }, {why}));
    CHECK(throws_error<mt::DeviceError>([] { mt::synchronize(Device::cuda); }, {"synchronize", why}));
    CHECK(throws_error<mt::DeviceError>(
        [] { mt::CapturedStep step([](const std::vector<mt::Tensor>& x) { return x; }, {mt::ones({2})}); },
        {"CapturedStep: a CUDA graph needs"}));
    // The status says the same, and nothing made the GPU usable since.
    const mt::CudaBackendStatus status = mt::cuda_backend_status();
    CHECK(status.devices == 0);
    CHECK(status.reason == reason);
    CHECK(!mt::cuda_available());
  }

  TEST_CASE("without a CUDA driver, no CUDA library is mapped, even after CUDA was asked for") {
    (void)mt::cuda_available();
    (void)mt::cuda_backend_status();
    // Judged by what is mapped, not by what the status claims.
    std::ifstream maps("/proc/self/maps");
    REQUIRE(maps.good());
    std::string mapped;  // the CUDA lines of the map, printed if the check fails
    bool driver = false;
    for (std::string line; std::getline(maps, line);) {
      driver = driver || line.find("/libcuda.so") != std::string::npos;
      for (const char* name : {"libcudart", "libcublas", "libcusolver", "libmetatape-cuda"})
        if (line.find(name) != std::string::npos) mapped += line + "\n";
    }
    if (driver) {
      MESSAGE("a CUDA driver is mapped here: its libraries may be too");
      return;
    }
    CHECK(mapped == "");
    CHECK(!mt::cuda_backend_status().library_loaded);
  }
}
