// The MPI communicator against what one process computes, run by meson under
// mpirun with 2 and 3 ranks (every rank runs every test case, in the same
// order, as the collectives require): sums, broadcast from a non-zero root,
// gathers of uneven task shares (B = 5 and B = 2 over the ranks, a rank with
// none), byte strings, the rank-agreement helpers, mismatches that every rank
// must report alike (and then carry on), messages split into pieces, and
// (run with --abort-from) one rank ending the job while the others wait.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "metatape/meta/mpi_communicator.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::DType;
using mt::Tensor;

namespace {

meta::Communicator& world() { return *meta::mpi_world(); }

// Rank r's values for element i: distinct per rank, exact in binary (halves
// and small integers), so that any order of summation gives the same sum.
double value(int r, std::int64_t i) { return (r + 1) * static_cast<double>(i) + 0.5 * r - 3; }

Tensor of_rank(int r, const mt::Shape& shape, DType dtype) {
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = dtype == DType::i64 ? r * 7 + i : value(r, i);
  if (dtype == DType::i64) {
    std::vector<std::int64_t> ints(v.begin(), v.end());
    return mt::from_indices(ints, shape);
  }
  return mt::from_vector(v, shape, dtype);
}

// What one process computes: the sum over ranks, element by element.
std::vector<double> sum_of_ranks(const mt::Shape& shape, DType dtype) {
  std::vector<double> sum(static_cast<std::size_t>(shape.numel()), 0.0);
  for (int r = 0; r < world().size(); ++r) {
    const std::vector<double> v = of_rank(r, shape, dtype).to_vector();
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += v[i];
  }
  return sum;
}

// The rows of tasks [begin, end): row t is [t, 10 t + 0.5, -t].
Tensor task_rows(std::int64_t begin, std::int64_t end, DType dtype) {
  std::vector<double> v;
  for (std::int64_t t = begin; t < end; ++t) v.insert(v.end(), {double(t), 10.0 * t + 0.5, -double(t)});
  if (dtype == DType::i64) {
    std::vector<std::int64_t> ints;
    for (std::int64_t t = begin; t < end; ++t) ints.insert(ints.end(), {t, 10 * t, -t});
    return mt::from_indices(ints, {end - begin, 3});
  }
  return mt::from_vector(v, {end - begin, 3}, dtype);
}

std::string bytes_of(const Tensor& t) {
  return {static_cast<const char*>(t.raw_data()), static_cast<std::size_t>(t.numel()) * mt::dtype_size(t.dtype())};
}

// Lowers the per-call element limit for one test case, every rank alike.
struct MaxCount {
  explicit MaxCount(int n) { meta::testing::set_max_mpi_count(n); }
  ~MaxCount() { meta::testing::set_max_mpi_count(INT_MAX); }
};

}  // namespace

TEST_CASE("mpi_world: one communicator over every rank the launcher started") {
  CHECK(meta::launched_by_mpi_launcher());
  CHECK(meta::mpi_world() == meta::mpi_world());
  CHECK(world().name() == "mpi");
  if (const char* size = std::getenv("OMPI_COMM_WORLD_SIZE")) CHECK(world().size() == std::atoi(size));
  CHECK(world().rank() >= 0);
  CHECK(world().rank() < world().size());
  world().barrier();
}

TEST_CASE("launched_by_mpi_launcher reads the environment the launcher left, and nothing else") {
  // Without any launcher's variables this would be a plain process.
  const std::vector<const char*> names = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                                          "MPI_LOCALNRANKS"};
  std::vector<std::pair<const char*, std::string>> saved;
  for (const char* name : names)
    if (const char* v = std::getenv(name)) saved.emplace_back(name, v), unsetenv(name);
  CHECK_FALSE(meta::launched_by_mpi_launcher());
  for (const char* name : names) {
    CAPTURE(name);
    setenv(name, "1", 1);
    CHECK(meta::launched_by_mpi_launcher());
    unsetenv(name);
  }
  for (const auto& [name, v] : saved) setenv(name, v.c_str(), 1);
  CHECK(meta::launched_by_mpi_launcher());
}

TEST_CASE("all_reduce_sum of f32, f64 and i64 tensors equals the sum one process computes, exactly") {
  const int r = world().rank();
  const std::vector<mt::Shape> shapes = {{4, 3}, {7}, {2, 2, 2}, {0, 5}, {}};
  const std::vector<DType> dtypes = {DType::f32, DType::f64, DType::i64, DType::f64, DType::f32};
  std::vector<Tensor> mine;
  for (std::size_t k = 0; k < shapes.size(); ++k) mine.push_back(of_rank(r, shapes[k], dtypes[k]));
  const std::vector<Tensor> sums = world().all_reduce_sum(mine);
  REQUIRE(sums.size() == mine.size());
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    CAPTURE(k);
    CHECK(sums[k].shape() == shapes[k]);
    CHECK(sums[k].dtype() == dtypes[k]);
    CHECK(sums[k].to_vector() == sum_of_ranks(shapes[k], dtypes[k]));
  }
  CHECK(mine[0].to_vector() == of_rank(r, shapes[0], dtypes[0]).to_vector());  // inputs untouched
  CHECK(world().all_reduce_sum({}).empty());
  const std::vector<Tensor> nothing = world().all_reduce_sum({mt::zeros({0}, DType::i64), mt::zeros({3, 0})});
  CHECK(nothing[0].shape() == mt::Shape{0});
  CHECK(nothing[1].shape() == mt::Shape{3, 0});
  CHECK(world().broadcast({mt::zeros({0})}, 0)[0].numel() == 0);
}

TEST_CASE("all_reduce_sum where rounding matters: within rounding of the float64 sum, the same bits on every rank") {
  const int r = world().rank();
  std::vector<double> v(1000);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.1 * (r + 1) + 1e-3 * std::sin(double(i) + r);
  const Tensor sum = world().all_reduce_sum({mt::from_vector(v, {1000}, DType::f32)})[0];
  const std::vector<double> got = sum.to_vector();
  for (std::size_t i = 0; i < v.size(); ++i) {
    double exact = 0;
    for (int q = 0; q < world().size(); ++q) exact += 0.1 * (q + 1) + 1e-3 * std::sin(double(i) + q);
    REQUIRE(std::abs(got[i] - exact) <= 1e-6 * std::abs(exact));
  }
  // Every rank must apply the same step: the sums agree bit for bit.
  const std::vector<std::string> all = world().all_gather_bytes(bytes_of(sum));
  for (const std::string& other : all) CHECK(other == all[0]);
}

TEST_CASE("broadcast from the last rank: every rank receives its values, whatever it passed") {
  const int root = world().size() - 1, r = world().rank();
  const std::vector<Tensor> mine = {of_rank(r, {3, 2}, DType::f64), of_rank(r, {5}, DType::i64),
                                    of_rank(r, {2}, DType::f32)};
  const std::vector<Tensor> got = world().broadcast(mine, root);
  REQUIRE(got.size() == 3);
  CHECK(got[0].to_vector() == of_rank(root, {3, 2}, DType::f64).to_vector());
  CHECK(got[1].to_vector() == of_rank(root, {5}, DType::i64).to_vector());
  CHECK(got[1].dtype() == DType::i64);
  CHECK(got[2].to_vector() == of_rank(root, {2}, DType::f32).to_vector());
  CHECK(got[0].shape() == mt::Shape{3, 2});
}

TEST_CASE("all_gather of uneven task shares: B = 5 and B = 2 (a rank with none) give the tasks in order") {
  for (std::int64_t tasks : {5, 2, 0}) {
    for (DType dtype : {DType::f64, DType::f32, DType::i64}) {
      CAPTURE(tasks);
      const meta::TaskRange mine = meta::task_range(tasks, world().rank(), world().size());
      const Tensor all = world().all_gather(task_rows(mine.begin, mine.end, dtype));
      CHECK(all.shape() == mt::Shape{tasks, 3});
      CHECK(all.dtype() == dtype);
      CHECK(all.to_vector() == task_rows(0, tasks, dtype).to_vector());
    }
  }
  // A rank-1 tensor: one element per row.
  const Tensor ranks = world().all_gather(mt::full({1}, world().rank(), DType::i64));
  std::vector<double> expected;
  for (int q = 0; q < world().size(); ++q) expected.push_back(q);
  CHECK(ranks.to_vector() == expected);
}

TEST_CASE("mismatched tensors throw CommunicatorError on every rank, naming the ranks, and the ranks carry on") {
  const int r = world().rank();
  // all_gather: rank 1's rows are longer, then its dtype differs.
  std::string m = mt::testing::throws_error([&] {
                    world().all_gather(mt::zeros({1, std::int64_t{r == 1 ? 4 : 3}}));
                  }).message;
  CHECK(m.find("all_gather") != std::string::npos);
  CHECK(m.find("rank 1 has f32 [*, 4]") != std::string::npos);
  CHECK_THROWS_AS(world().all_gather(mt::zeros({2}, r == 1 ? DType::f64 : DType::f32)), meta::CommunicatorError);
  CHECK_THROWS_AS(world().all_gather(mt::scalar(1)), mt::ShapeError);
  // all_reduce_sum: a shape, and a count of tensors.
  m = mt::testing::throws_error([&] { world().all_reduce_sum({mt::zeros({std::int64_t{r == 1 ? 3 : 2}})}); }).message;
  CHECK(m.find("rank 1 has 1 tensor: f32 [3]") != std::string::npos);
  CHECK_THROWS_AS(world().all_reduce_sum(std::vector<Tensor>(r == 0 ? 2 : 1, mt::ones({2}))), meta::CommunicatorError);
  // broadcast: ranks that name different roots, and a root that is no rank.
  CHECK_THROWS_AS(world().broadcast({mt::ones({2})}, r == 0 ? 1 : 0), meta::CommunicatorError);
  m = mt::testing::throws_error([&] { world().broadcast({mt::ones({2})}, world().size()); }).message;
  CHECK(m.find("root " + std::to_string(world().size()) + " is not a rank") != std::string::npos);
  // After all that, the collectives still line up.
  CHECK(world().all_reduce_sum({mt::ones({3})})[0].to_vector() == std::vector<double>(3, world().size()));
}

TEST_CASE("all_gather_bytes: every rank's bytes, zeros and empty strings included, in rank order") {
  auto bytes = [](int q) { return std::string(static_cast<std::size_t>(3 * q), '\0') + "r" + std::to_string(q); };
  const std::vector<std::string> all = world().all_gather_bytes(bytes(world().rank()));
  REQUIRE(all.size() == static_cast<std::size_t>(world().size()));
  for (int q = 0; q < world().size(); ++q) CHECK(all[static_cast<std::size_t>(q)] == bytes(q));
  const std::vector<std::string> empty = world().all_gather_bytes(world().rank() == 0 ? "x" : "");
  CHECK(empty[0] == "x");
  CHECK(empty[1].empty());
}

TEST_CASE("raise_if_any_rank_failed: one failing rank makes every rank throw RankFailure naming it") {
  const int last = world().size() - 1;
  CHECK_NOTHROW(meta::raise_if_any_rank_failed(world(), "", "iteration 4"));
  try {
    meta::raise_if_any_rank_failed(world(), world().rank() == last ? "loss is NaN" : "", "iteration 4");
    FAIL("no RankFailure");
  } catch (const meta::RankFailure& e) {
    CHECK(e.failed_rank == last);
    CHECK(std::string(e.what()) == "rank " + std::to_string(last) + " failed at iteration 4: loss is NaN");
  }
}

TEST_CASE("require_same_on_all_ranks: one differing rank makes every rank throw ValueError naming it") {
  CHECK_NOTHROW(meta::require_same_on_all_ranks(world(), "the configuration", "lr=0.1 seed=3"));
  const std::string m =
      mt::testing::throws_error([&] {
        meta::require_same_on_all_ranks(world(), "the configuration", world().rank() == 1 ? "lr=0.2" : "lr=0.1");
      }).message;
  CHECK(m.find("the configuration differs between ranks") != std::string::npos);
  CHECK(m.find(world().size() == 2 ? "rank 1 has" : "ranks 0, 2 have") != std::string::npos);
}

TEST_CASE("messages above the per-call limit: split into several calls, or refused on every rank") {
  const MaxCount limit(4);
  const int r = world().rank();
  // 11 f64 and 6 f32 elements: pieces of 4, 4, 3 and 4, 2.
  const std::vector<Tensor> sums = world().all_reduce_sum({of_rank(r, {11}, DType::f64), of_rank(r, {6}, DType::f32)});
  CHECK(sums[0].to_vector() == sum_of_ranks({11}, DType::f64));
  CHECK(sums[1].to_vector() == sum_of_ranks({6}, DType::f32));
  const int root = world().size() - 1;
  CHECK(world().broadcast({of_rank(r, {9}, DType::f64)}, root)[0].to_vector() ==
        of_rank(root, {9}, DType::f64).to_vector());
  // A gather counts rows: 4 rows of 3 fit, 5 rows do not, nor do rows of 5.
  const meta::TaskRange four = meta::task_range(4, r, world().size());
  CHECK(world().all_gather(task_rows(four.begin, four.end, DType::f64)).to_vector() ==
        task_rows(0, 4, DType::f64).to_vector());
  const meta::TaskRange five = meta::task_range(5, r, world().size());
  CHECK_THROWS_AS(world().all_gather(task_rows(five.begin, five.end, DType::f64)), meta::CommunicatorError);
  CHECK_THROWS_AS(world().all_gather(mt::zeros({1, 5})), meta::CommunicatorError);
  CHECK_THROWS_AS(world().all_gather_bytes("abc"), meta::CommunicatorError);  // 3 N bytes > 4
}

// `--abort-from=R`: rank R ends the job with mpi_abort while the others wait
// in a barrier that it never reaches; meson expects a failure, not a hang.
bool abort_from(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--abort-from=", 13) == 0) {
      if (world().rank() == std::atoi(argv[i] + 13)) meta::mpi_abort("a deliberate failure", 3);
      world().barrier();
      return true;
    }
  return false;
}

int main(int argc, char** argv) {
  try {
    meta::mpi_world();
    if (abort_from(argc, argv)) return 0;
  } catch (const mt::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  doctest::Context context(argc, argv);
  // One report is enough when all pass; failures show on whichever rank.
  if (world().rank() != 0) context.setOption("minimal", true);
  return context.run();
}
