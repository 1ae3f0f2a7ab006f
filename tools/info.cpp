// metatape info: what this build can run on, so that scripts (run.sh) can
// choose the device and users can see why the GPU is not used.
#include <cstdio>
#include <string>

#include "commands.hpp"

namespace metatape::tools {

int run_info() {
  std::printf("metatape %s\n", METATAPE_VERSION);
  std::printf("cpu: usable (OpenBLAS, %d thread(s))\n", num_threads());
  std::string reason;
  if (cuda_available(&reason))
    std::printf("cuda: usable\n");
  else
    std::printf("cuda: not usable: %s\n", reason.c_str());
  return 0;
}

}  // namespace metatape::tools
