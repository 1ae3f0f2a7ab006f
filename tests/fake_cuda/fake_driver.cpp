// A stand-in for the CUDA driver, built as libcuda.so.1 with nothing CUDA in
// it, for tests/footprint.sh: on LD_LIBRARY_PATH, it lets metatape get past
// its driver check and load its CUDA backend library, whose runtime then
// finds no usable driver and says so. Nothing calls this function.
extern "C" int metatape_fake_cuda_driver() { return 0; }
