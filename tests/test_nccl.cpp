// The NCCL communicator against what one process computes, run by meson
// under mpirun with 2 ranks (one GPU each): sums of CUDA tensors, broadcast
// from a non-zero root, gathers of uneven task shares (B = 5 and a rank with
// none), CPU tensors carried over, mismatches reported on every rank. Without
// a usable GPU for every rank it says why and exits 77, which meson counts as
// skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "metatape/cuda_backend.hpp"
#include "metatape/meta/mpi_communicator.hpp"
#include "metatape/meta/nccl_communicator.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::Device;
using mt::DType;
using mt::Tensor;

namespace {

std::shared_ptr<meta::Communicator> nccl;

// Rank r's values: exact in binary, so any order of summation agrees.
Tensor of_rank(int r, const mt::Shape& shape, DType dtype) {
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = (r + 1) * static_cast<double>(i) + 0.5 * r - 3;
  if (dtype == DType::i64) {
    std::vector<std::int64_t> ints;
    for (std::size_t i = 0; i < v.size(); ++i) ints.push_back(static_cast<std::int64_t>(r * 7 + i));
    return mt::from_indices(ints, shape);
  }
  return mt::from_vector(v, shape, dtype);
}

std::vector<double> sum_of_ranks(const mt::Shape& shape, DType dtype) {
  std::vector<double> sum(static_cast<std::size_t>(shape.numel()), 0.0);
  for (int r = 0; r < nccl->size(); ++r) {
    const std::vector<double> v = of_rank(r, shape, dtype).to_vector();
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += v[i];
  }
  return sum;
}

Tensor task_rows(std::int64_t begin, std::int64_t end) {
  std::vector<double> v;
  for (std::int64_t t = begin; t < end; ++t) v.insert(v.end(), {double(t), 10.0 * t + 0.5, -double(t)});
  return mt::from_vector(v, {end - begin, 3}, DType::f64);
}

}  // namespace

TEST_CASE("nccl: all_reduce_sum of CUDA tensors equals the sum one process computes; CPU tensors stay on the CPU") {
  CHECK(nccl->name() == "nccl");
  const int r = nccl->rank();
  const std::vector<mt::Shape> shapes = {{4, 3}, {7}, {2, 2, 2}, {0, 5}};
  const std::vector<DType> dtypes = {DType::f32, DType::f64, DType::i64, DType::f64};
  std::vector<Tensor> mine;
  for (std::size_t k = 0; k < shapes.size(); ++k) mine.push_back(of_rank(r, shapes[k], dtypes[k]).to(Device::cuda));
  mine.push_back(of_rank(r, {3}, DType::f64));  // on the CPU
  const std::vector<Tensor> sums = nccl->all_reduce_sum(mine);
  REQUIRE(sums.size() == 5);
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    CAPTURE(k);
    CHECK(sums[k].device() == Device::cuda);
    CHECK(sums[k].dtype() == dtypes[k]);
    CHECK(sums[k].to_vector() == sum_of_ranks(shapes[k], dtypes[k]));
  }
  CHECK(sums[4].device() == Device::cpu);
  CHECK(sums[4].to_vector() == sum_of_ranks({3}, DType::f64));
}

TEST_CASE("nccl: broadcast from the last rank") {
  const int root = nccl->size() - 1;
  const std::vector<Tensor> got = nccl->broadcast(
      {of_rank(nccl->rank(), {3, 2}, DType::f64).to(Device::cuda), of_rank(nccl->rank(), {5}, DType::i64)}, root);
  CHECK(got[0].to_vector() == of_rank(root, {3, 2}, DType::f64).to_vector());
  CHECK(got[1].to_vector() == of_rank(root, {5}, DType::i64).to_vector());
}

TEST_CASE("nccl: all_gather of uneven shares, a rank with none included, in task order") {
  for (std::int64_t tasks : {5, 1, 0}) {
    CAPTURE(tasks);
    const meta::TaskRange mine = meta::task_range(tasks, nccl->rank(), nccl->size());
    const Tensor all = nccl->all_gather(task_rows(mine.begin, mine.end).to(Device::cuda));
    CHECK(all.device() == Device::cuda);
    CHECK(all.shape() == mt::Shape{tasks, 3});
    CHECK(all.to_vector() == task_rows(0, tasks).to_vector());
  }
}

TEST_CASE("nccl: mismatches throw CommunicatorError on every rank, and the ranks carry on") {
  const std::int64_t wide = nccl->rank() == 1 ? 4 : 3;
  CHECK_THROWS_AS(nccl->all_gather(mt::zeros({1, wide}, DType::f32, Device::cuda)), meta::CommunicatorError);
  CHECK_THROWS_AS(nccl->all_reduce_sum({mt::zeros({wide}, DType::f32, Device::cuda)}), meta::CommunicatorError);
  CHECK_THROWS_AS(nccl->broadcast({mt::ones({2}, DType::f32, Device::cuda)}, nccl->size()), meta::CommunicatorError);
  CHECK(nccl->all_reduce_sum({mt::ones({3}, DType::f32, Device::cuda)})[0].to_vector() ==
        std::vector<double>(3, nccl->size()));
  CHECK(nccl->all_gather_bytes(std::to_string(nccl->rank())).back() == std::to_string(nccl->size() - 1));
  nccl->barrier();
}

int main(int argc, char** argv) {
  try {
    std::shared_ptr<meta::Communicator> world = meta::mpi_world();
    // Every rank needs a GPU of its own: skip together when any rank lacks one.
    std::string reason;
    const bool usable = mt::cuda_available(&reason);
    const std::vector<std::string> all = world->all_gather_bytes(usable ? "" : reason);
    for (std::size_t r = 0; r < all.size(); ++r)
      if (!all[r].empty()) {
        if (world->rank() == 0) std::printf("skipped: no CUDA GPU on rank %zu: %s\n", r, all[r].c_str());
        return 77;
      }
    const int devices = mt::cuda_backend_status().devices;
    const std::vector<std::string> counts = world->all_gather_bytes(std::to_string(devices));
    for (std::size_t r = 0; r < counts.size(); ++r)
      if (std::stoi(counts[r]) < world->size()) {  // one host here: mpirun on localhost
        if (world->rank() == 0)
          std::printf("skipped: no CUDA GPU for every rank (%d ranks, %s GPU(s) on rank %zu)\n", world->size(),
                      counts[r].c_str(), r);
        return 77;
      }
    nccl = meta::nccl_communicator(world);
  } catch (const mt::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  doctest::Context context(argc, argv);
  if (nccl->rank() != 0) context.setOption("minimal", true);
  const int failed = context.run();
  nccl.reset();  // NCCL's resources go before MPI finalises at exit
  return failed;
}
