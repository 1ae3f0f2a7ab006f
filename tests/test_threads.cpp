// The CPU kernels' thread pool: how parallel_for cuts its range, nesting,
// errors, a pool busy with another thread's job, runs of whole items
// (parallel_for_unsplit) whose kernels do not split; the kernels that use it
// give the same bits at 1, 2 and 3 threads (gemm: close), at sizes the pool
// really splits (pool_jobs counts it); a float64 MAML meta-gradient at 1
// and 2 threads; the sinusoid step never uses the pool; set_num_threads and
// OpenBLAS kept at one thread.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cpu/backend.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/recording.hpp"
#include "kernels/cpu/small_gemm.hpp"
#include "kernels/cpu/strided.hpp"
#include "meta_test_util.hpp"
#include "metatape/meta/maml.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace cpu = metatape::kernels::cpu;
namespace meta = metatape::meta;
using K = cpu::CpuKernels;
using mt::DType;
using mt::Tensor;
using mt::kernels::BinaryOp;
using mt::kernels::UnaryOp;
using mt::testing::ThreadsFor;

namespace {

// The chunks parallel_for(n, grain) ran, sorted by their start.
std::vector<std::pair<std::int64_t, std::int64_t>> chunks_of(std::int64_t n, std::int64_t grain) {
  std::mutex lock;
  std::vector<std::pair<std::int64_t, std::int64_t>> chunks;
  cpu::parallel_for(n, grain, [&](std::int64_t begin, std::int64_t end) {
    std::lock_guard guard(lock);
    chunks.emplace_back(begin, end);
  });
  std::sort(chunks.begin(), chunks.end());
  return chunks;
}

// compute() on one thread.
std::vector<Tensor> at_one_thread(const std::function<std::vector<Tensor>()>& compute) {
  ThreadsFor threads(1);
  return compute();
}

// compute() at 1, 2 and 3 threads: the same bits each time.
void check_same_bits_at_1_2_3(const std::function<std::vector<Tensor>()>& compute) {
  const std::vector<Tensor> one = at_one_thread(compute);
  for (int t : {2, 3}) {
    ThreadsFor threads(t);
    INFO("threads = " << t);
    const std::uint64_t jobs = cpu::pool_jobs();
    CHECK(mt::testing::same_bits(compute(), one));
    CHECK(cpu::pool_jobs() > jobs);  // the sizes really are split
  }
}

// compute() at 2 and 3 threads within `tolerance` (relative) of 1 thread,
// and the same bits when run twice at one count.
void check_close_at_1_2_3(const std::function<std::vector<Tensor>()>& compute, double tolerance) {
  const std::vector<Tensor> one = at_one_thread(compute);
  for (int t : {2, 3}) {
    ThreadsFor threads(t);
    INFO("threads = " << t);
    const std::uint64_t jobs = cpu::pool_jobs();
    const std::vector<Tensor> first = compute();
    CHECK(cpu::pool_jobs() > jobs);
    CHECK(mt::testing::relative_error(first, one) < tolerance);
    CHECK(mt::testing::same_bits(compute(), first));
  }
}

Tensor random(const mt::Shape& shape, DType dtype, std::uint64_t seed) {
  mt::Generator gen(seed);
  return mt::normal(shape, 0, 1, gen, dtype);
}

// Row-major strides of a shape, for the strided kernels.
std::vector<std::int64_t> strides_of(const std::vector<std::int64_t>& shape) {
  std::vector<std::int64_t> s(shape.size());
  cpu::contiguous_strides(static_cast<int>(shape.size()), shape.data(), s.data());
  return s;
}

template <class T>
void check_gemm(DType dtype) {
  // op(A) m x k, op(B) k x n, m not a multiple of the split unit; alpha
  // and beta general.
  for (auto [m, n, k] : {std::array<std::int64_t, 3>{301, 170, 150}, {90, 517, 130}}) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        INFO("m " << m << " n " << n << " k " << k << " ta " << ta << " tb " << tb);
        const Tensor a = random(ta ? mt::Shape{k, m} : mt::Shape{m, k}, dtype, 1);
        const Tensor b = random(tb ? mt::Shape{n, k} : mt::Shape{k, n}, dtype, 2);
        const Tensor c0 = random({m, n}, dtype, 3);
        check_close_at_1_2_3(
            [&] {
              Tensor c = c0.clone();
              cpu::gemm<T>(ta, tb, m, n, k, T(0.75), a.data<T>(), ta ? m : k, b.data<T>(), tb ? k : n, T(-0.5),
                           c.data<T>(), n);
              return std::vector<Tensor>{c};
            },
            std::is_same_v<T, float> ? 1e-6 : 1e-14);
      }
  }
}

template <class T>
void check_gemm_batched(DType dtype) {
  struct Case {
    std::int64_t m, n, k, count;
  };
  for (const Case& c : {Case{64, 48, 96, 24}, Case{40, 30, 20, 1000}}) {
    INFO("m " << c.m << " n " << c.n << " k " << c.k << " count " << c.count);
    const Tensor a = random({c.count, c.m, c.k}, dtype, 4), b = random({c.count, c.k, c.n}, dtype, 5);
    const auto product = [&](std::int64_t stride_b) {
      Tensor out = mt::zeros({c.count, c.m, c.n}, dtype);
      K::gemm_batched<T>(false, false, c.m, c.n, c.k, a.data<T>(), c.m * c.k, b.data<T>(), stride_b, out.data<T>(),
                         c.m * c.n, c.count);
      return std::vector<Tensor>{out};
    };
    // A B per matrix: split over the batch, each matrix one unsplit product,
    // so the same bits at every thread count.
    check_same_bits_at_1_2_3([&] { return product(c.k * c.n); });
    // One B shared by all (stride 0): a single product of count·m rows,
    // split by rows like any large gemm: on OpenBLAS equal up to summation
    // order, on the small-product kernel (which takes the second case where
    // the CPU has it) the same bits.
    if (cpu::small_gemm_takes<T>(cpu::small_gemm_isa(), c.n, c.k))
      check_same_bits_at_1_2_3([&] { return product(0); });
    else
      check_close_at_1_2_3([&] { return product(0); }, std::is_same_v<T, float> ? 1e-6 : 1e-14);
  }
}

}  // namespace

TEST_SUITE("threads") {
  TEST_CASE("parallel_for covers [0, n) exactly once, in the documented chunks") {
    for (int t : {1, 2, 3, 5}) {
      ThreadsFor threads(t);
      for (std::int64_t n : {1, 2, 3, 7, 100, 1001})
        for (std::int64_t grain : {1, 3, 50, 2000}) {
          INFO("threads " << t << " n " << n << " grain " << grain);
          const auto chunks = chunks_of(n, grain);
          const std::int64_t c = cpu::parallel_chunks(n, grain);
          CHECK(c == std::clamp<std::int64_t>(n / grain, 1, t));
          REQUIRE(static_cast<std::int64_t>(chunks.size()) == c);
          for (std::int64_t i = 0; i < c; ++i) {
            CHECK(chunks[static_cast<std::size_t>(i)].first == n * i / c);
            CHECK(chunks[static_cast<std::size_t>(i)].second == n * (i + 1) / c);
          }
        }
      // Every item once, counted by the items themselves.
      std::vector<std::atomic<int>> seen(997);
      cpu::parallel_for(997, 1, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) seen[static_cast<std::size_t>(i)].fetch_add(1);
      });
      CHECK(std::all_of(seen.begin(), seen.end(), [](const std::atomic<int>& s) { return s.load() == 1; }));
      CHECK(chunks_of(0, 1).empty());
    }
  }

  TEST_CASE("more threads than items: one chunk per item; a pool of 3 runs 3 chunks at once") {
    ThreadsFor threads(3);
    const auto chunks = chunks_of(2, 1);
    REQUIRE(chunks.size() == 2);
    CHECK(chunks[0] == std::pair<std::int64_t, std::int64_t>{0, 1});
    CHECK(chunks[1] == std::pair<std::int64_t, std::int64_t>{1, 2});
    // Each of 3 chunks waits until all 3 run at once: only a pool of 3 threads
    // gets past it.
    std::atomic<int> arrived{0};
    std::atomic<bool> all_met{true};
    cpu::parallel_for(3, 1, [&](std::int64_t, std::int64_t) {
      arrived.fetch_add(1);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (arrived.load() < 3)
        if (std::chrono::steady_clock::now() > deadline) {
          all_met = false;
          return;
        }
    });
    CHECK(all_met.load());
  }

  TEST_CASE("a parallel_for inside a chunk runs serially on that chunk's thread") {
    ThreadsFor threads(2);
    CHECK_FALSE(cpu::in_parallel_region());
    std::atomic<int> inner_items{0}, inner_chunks{0}, foreign{0}, outside_region{0};
    cpu::parallel_for(2, 1, [&](std::int64_t, std::int64_t) {
      if (!cpu::in_parallel_region()) outside_region.fetch_add(1);
      const std::thread::id self = std::this_thread::get_id();
      CHECK(cpu::parallel_chunks(1000, 1) == 1);
      cpu::parallel_for(1000, 1, [&](std::int64_t begin, std::int64_t end) {
        inner_chunks.fetch_add(1);
        inner_items.fetch_add(static_cast<int>(end - begin));
        if (std::this_thread::get_id() != self) foreign.fetch_add(1);
      });
    });
    CHECK(outside_region.load() == 0);
    CHECK(inner_chunks.load() == 2);
    CHECK(inner_items.load() == 2000);
    CHECK(foreign.load() == 0);
    CHECK_FALSE(cpu::in_parallel_region());
  }

  TEST_CASE("an exception in a chunk is rethrown, after the other chunks, and the pool still works") {
    ThreadsFor threads(3);
    std::atomic<int> finished{0};
    const auto run = [&] {
      cpu::parallel_for(3, 1, [&](std::int64_t begin, std::int64_t) {
        if (begin == 1) throw std::runtime_error("chunk 1 failed");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        finished.fetch_add(1);
      });
    };
    CHECK_THROWS_WITH_AS(run(), "chunk 1 failed", std::runtime_error);
    CHECK(finished.load() == 2);
    CHECK_FALSE(cpu::in_parallel_region());
    CHECK(chunks_of(9, 1).size() == 3);
  }

  TEST_CASE("a pool busy with another thread's job: the caller runs its chunks itself, without waiting") {
    ThreadsFor threads(2);
    std::atomic<bool> holding{false}, release{false}, waited_out{false};
    std::thread other([&] {
      cpu::parallel_for(2, 1, [&](std::int64_t begin, std::int64_t) {
        if (begin != 0) return;
        holding = true;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!release.load())
          if (std::chrono::steady_clock::now() > deadline) {
            waited_out = true;
            return;
          }
      });
    });
    while (!holding.load()) std::this_thread::yield();
    // The pool's job is still running: ours must not wait for it.
    const std::thread::id self = std::this_thread::get_id();
    std::mutex lock;
    std::vector<std::pair<std::int64_t, std::int64_t>> chunks;
    bool all_here = true, all_inside = true;
    cpu::parallel_for(10, 1, [&](std::int64_t begin, std::int64_t end) {
      std::lock_guard guard(lock);
      chunks.emplace_back(begin, end);
      all_here = all_here && std::this_thread::get_id() == self;
      // As on the pool: a nested call (a GEMM inside) does not split.
      all_inside = all_inside && cpu::in_parallel_region();
    });
    release = true;
    other.join();
    CHECK_FALSE(waited_out.load());
    CHECK(all_here);
    CHECK(all_inside);
    CHECK_FALSE(cpu::in_parallel_region());
    // The same chunks as with a free pool, in order.
    CHECK(chunks == std::vector<std::pair<std::int64_t, std::int64_t>>{{0, 5}, {5, 10}});
  }

  TEST_CASE("parallel_for_unsplit: every item once, one run per thread, each inside the region") {
    for (int t : {1, 2, 3}) {
      INFO(t << " threads");
      ThreadsFor threads(t);
      std::vector<std::atomic<int>> seen(7);
      std::atomic<int> runs{0}, outside_region{0}, nested_jobs{0};
      cpu::parallel_for_unsplit(7, [&](std::int64_t begin, std::int64_t end) {
        runs.fetch_add(1);
        if (!cpu::in_parallel_region()) outside_region.fetch_add(1);
        // What a run calls does not split: the same as at one thread.
        const std::uint64_t jobs = cpu::pool_jobs();
        cpu::parallel_for(1000, 1, [](std::int64_t, std::int64_t) {});
        if (cpu::pool_jobs() != jobs) nested_jobs.fetch_add(1);
        for (std::int64_t i = begin; i < end; ++i) seen[static_cast<std::size_t>(i)].fetch_add(1);
      });
      CHECK(std::all_of(seen.begin(), seen.end(), [](const std::atomic<int>& s) { return s.load() == 1; }));
      CHECK(runs.load() == t);
      CHECK(outside_region.load() == 0);
      CHECK(nested_jobs.load() == 0);
      CHECK_FALSE(cpu::in_parallel_region());
    }
    // An exception is rethrown once the other runs are done.
    ThreadsFor threads(2);
    std::atomic<int> finished{0};
    CHECK_THROWS_WITH_AS(cpu::parallel_for_unsplit(2,
                                                   [&](std::int64_t begin, std::int64_t) {
                                                     if (begin == 0) throw std::runtime_error("run 0 failed");
                                                     std::this_thread::sleep_for(std::chrono::milliseconds(20));
                                                     finished.fetch_add(1);
                                                   }),
                         "run 0 failed", std::runtime_error);
    CHECK(finished.load() == 1);
    CHECK_FALSE(cpu::in_parallel_region());
  }

  TEST_CASE("parallel_for_unsplit under a kernel recording: every run on the recording thread, replayed unsplit") {
    ThreadsFor threads(2);
    cpu::KernelRecording recording;
    cpu::detail::active_recording = &recording;
    const std::thread::id self = std::this_thread::get_id();
    bool all_here = true, all_inside = true;
    cpu::parallel_for_unsplit(4, [&](std::int64_t, std::int64_t) {
      all_here = all_here && std::this_thread::get_id() == self;
      all_inside = all_inside && cpu::in_parallel_region();
      recording.add("probe", [&] { all_inside = all_inside && cpu::in_parallel_region(); });
    });
    recording.add("outside", [&] { all_here = all_here && !cpu::in_parallel_region(); });
    cpu::detail::active_recording = nullptr;
    CHECK(all_here);
    CHECK(all_inside);
    CHECK(recording.size() == 2);
    recording.replay();  // the probe inside an unsplit region again, the other outside
    CHECK(all_here);
    CHECK(all_inside);
    CHECK_FALSE(cpu::in_parallel_region());
  }

  TEST_CASE("set_num_threads sets the pool, keeps OpenBLAS at one thread, refuses bad counts") {
    {
      ThreadsFor threads(3);
      CHECK(mt::num_threads() == 3);
      CHECK(cpu::threads() == 3);
      CHECK(cpu::blas_threads() == 1);
    }
    CHECK(mt::testing::throws_error<mt::ValueError>([] { mt::set_num_threads(0); },
                                                    {"threads must be >= 1 and <=", "got 0"}));
    const int too_many = mt::max_num_threads() + 1;
    CHECK(
        mt::testing::throws_error<mt::ValueError>([&] { mt::set_num_threads(too_many); }, {std::to_string(too_many)}));
    ThreadsFor threads(2);
    std::atomic<int> refused{0};
    cpu::parallel_for(2, 1, [&](std::int64_t, std::int64_t) {
      try {
        mt::set_num_threads(1);
      } catch (const mt::ValueError&) {
        refused.fetch_add(1);
      }
    });
    CHECK(refused.load() == 2);
    CHECK(mt::num_threads() == 2);
  }

  TEST_CASE("gemm: split over 2 and 3 threads, equal up to summation order, any transposes") {
    check_gemm<float>(DType::f32);
    check_gemm<double>(DType::f64);
  }

  TEST_CASE("gemm_batched: the same bits at 1, 2 and 3 threads over the batch, a shared B up to summation order") {
    check_gemm_batched<float>(DType::f32);
    check_gemm_batched<double>(DType::f64);
  }

  TEST_CASE("elementwise kernels: the same bits at 1, 2 and 3 threads") {
    const std::int64_t n = 150001;
    const Tensor x = random({n}, DType::f32, 6), g = random({n}, DType::f32, 7);
    check_same_bits_at_1_2_3([&] {
      Tensor tanh_x = mt::empty({n}, DType::f32), pow_x = mt::empty({n}, DType::f32);
      Tensor masked = mt::empty({n}, DType::f32), filled = mt::empty({n}, DType::f32);
      Tensor copied = mt::empty({n}, DType::f32), wide = mt::empty({n}, DType::f64);
      K::unary<float>(UnaryOp::tanh, x.data<float>(), tanh_x.data<float>(), n, 0);
      K::unary<float>(UnaryOp::pow, x.data<float>(), pow_x.data<float>(), n, 2);
      K::multiply_by_mask<float>(UnaryOp::step, g.data<float>(), x.data<float>(), masked.data<float>(), n);
      K::fill<float>(filled.data<float>(), n, 1.5f);
      K::copy<float>(x.data<float>(), copied.data<float>(), n);
      K::convert<float, double>(x.data<float>(), wide.data<double>(), n);
      return std::vector<Tensor>{tanh_x, pow_x, masked, filled, copied, wide};
    });
    // Broadcasting: [a, b, c] op [1, b, 1], and a row against a column.
    const std::vector<std::int64_t> shape{7, 301, 53}, row{1, 301, 1};
    const Tensor a = random({7, 301, 53}, DType::f64, 8), b = random({1, 301, 1}, DType::f64, 9);
    const std::vector<std::int64_t> sa = strides_of(shape), sb{0, 1, 0};
    const Tensor col = random({1001, 1}, DType::f64, 10), line = random({1, 257}, DType::f64, 11);
    const std::vector<std::int64_t> outer{1001, 257}, scol{1, 0}, sline{0, 1};
    check_same_bits_at_1_2_3([&] {
      Tensor sum = mt::empty({7, 301, 53}, DType::f64), quotient = mt::empty({1001, 257}, DType::f64);
      K::binary<double>(BinaryOp::add, 3, shape.data(), a.data<double>(), sa.data(), b.data<double>(), sb.data(),
                        sum.data<double>());
      K::binary<double>(BinaryOp::div, 2, outer.data(), col.data<double>(), scol.data(), line.data<double>(),
                        sline.data(), quotient.data<double>());
      return std::vector<Tensor>{sum, quotient};
    });
  }

  TEST_CASE("reductions: the same bits at 1, 2 and 3 threads, each output summed in one order") {
    const Tensor x = random({6, 211, 97}, DType::f32, 12);
    const std::vector<std::int64_t> in{6, 211, 97};
    // Reduced along: the leading axes, the last axis, the middle one, all.
    const std::vector<std::vector<std::int64_t>> outs = {{1, 1, 97}, {6, 211, 1}, {6, 1, 97}, {1, 1, 1}};
    check_same_bits_at_1_2_3([&] {
      std::vector<Tensor> results;
      for (const auto& out_shape : outs) {
        Tensor out = mt::empty(mt::Shape(out_shape), DType::f32);
        K::sum_to<float>(3, in.data(), x.data<float>(), out_shape.data(), out.data<float>());
        results.push_back(out);
      }
      Tensor index = mt::empty({6, 97}, DType::i64), logp = mt::empty({6, 211, 97}, DType::f32);
      K::argmax_axis<float>(x.data<float>(), 6, 211, 97, index.data<std::int64_t>());
      K::log_softmax<float>(x.data<float>(), logp.data<float>(), 6 * 211, 97, 1);
      results.push_back(index);
      results.push_back(logp);
      return results;
    });
  }

  TEST_CASE("data movement: the same bits at 1, 2 and 3 threads") {
    const Tensor x = random({40, 70, 33}, DType::f64, 13);
    const std::vector<std::int64_t> permuted{33, 40, 70}, ps{1, 70 * 33, 33};  // x.permute(2, 0, 1)
    std::vector<std::int64_t> rows(3000), flat(200000);
    for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<std::int64_t>((i * 7919) % 40);
    for (std::size_t i = 0; i < flat.size(); ++i) flat[i] = static_cast<std::int64_t>((i * 104729) % 92400);
    const Tensor g = random({3000, 70 * 33}, DType::f64, 14), gf = random({200000}, DType::f64, 15);
    check_same_bits_at_1_2_3([&] {
      Tensor p = mt::empty({33, 40, 70}, DType::f64), into = mt::zeros({40, 100, 33}, DType::f64);
      Tensor from = mt::empty({40, 20, 33}, DType::f64), gathered = mt::empty({3000, 70 * 33}, DType::f64);
      Tensor scattered = mt::empty({40, 70 * 33}, DType::f64), taken = mt::empty({200000}, DType::f64);
      Tensor added = mt::empty({92400}, DType::f64), positions = mt::empty({3000}, DType::i64);
      K::strided_copy<double>(3, permuted.data(), x.data<double>(), ps.data(), p.data<double>());
      K::copy_into_axis<double>(x.data<double>(), 40, 70, 33, into.data<double>(), 100, 20);
      K::copy_from_axis<double>(x.data<double>(), 40, 70, 33, 30, 20, from.data<double>());
      K::gather_rows<double>(x.data<double>(), 70 * 33, rows.data(), 3000, gathered.data<double>());
      K::scatter_rows_add<double>(g.data<double>(), 70 * 33, rows.data(), 3000, scattered.data<double>(), 40);
      K::take<double>(x.data<double>(), flat.data(), 200000, taken.data<double>());
      K::scatter_add<double>(gf.data<double>(), flat.data(), 200000, added.data<double>(), 92400);
      K::label_positions(rows.data(), 3000, 40, positions.data<std::int64_t>());
      return std::vector<Tensor>{p, into, from, gathered, scattered, taken, added, positions};
    });
  }

  TEST_CASE("a float64 MAML meta-gradient at 1 and 2 threads: equal to 1e-12, indeed bit for bit") {
    // Wide enough that the products, activations and bias sums are split.
    const meta::Mlp model({1, 256, 256, 1}, meta::Activation::tanh);
    const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.01};
    const auto params = mt::testing::random_meta_params(model, config, 3);
    const auto batch = mt::testing::sinusoid_batch(8, 64, 19);
    meta::MetaStep one, two;
    {
      ThreadsFor threads(1);
      one = meta::meta_gradient(model, meta::Loss::mse, config, params, batch, 0);
    }
    {
      ThreadsFor threads(2);
      const std::uint64_t jobs = cpu::pool_jobs();
      two = meta::meta_gradient(model, meta::Loss::mse, config, params, batch, 0);
      CHECK(cpu::pool_jobs() > jobs);
    }
    CHECK(two.meta_loss == doctest::Approx(one.meta_loss).epsilon(1e-12));
    CHECK(mt::testing::relative_error(two.grads, one.grads) < 1e-12);
    CHECK(mt::testing::same_bits(two.grads, one.grads));
  }

  TEST_CASE("the sinusoid step (25 tasks, K = 10, MLP 1-40-40-1) never waits on the pool") {
    // Its kernels are far below every grain: at 2 threads it runs exactly as
    // at 1, so it cannot be slower.
    const meta::Mlp model({1, 40, 40, 1});
    const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = 5, .inner_lr = 0.01};
    mt::Generator gen(1);
    const auto params = meta::init_meta_params(model, config, gen, DType::f32);
    const auto batch = meta::SinusoidTasks().sample(25, 10, 10, gen, DType::f32);
    ThreadsFor threads(2);
    const std::uint64_t jobs = cpu::pool_jobs();
    (void)meta::meta_gradient(model, meta::Loss::mse, config, params, batch, 0);
    CHECK(cpu::pool_jobs() == jobs);
  }
}
