// A CUDA backend library from "another version" of metatape, for
// tests/footprint.sh: it exports the entry point, but its table's
// fingerprint (the first field, all that is read before the check) matches
// no build, so metatape must refuse it with a version mismatch.
#include <cstdint>

extern "C" __attribute__((visibility("default"))) const void* metatape_cuda_backend_table() {
  static const std::uint64_t header[2] = {0x0123456789abcdefull, 0};
  return header;
}
