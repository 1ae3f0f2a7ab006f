// metatape against libtorch (PyTorch's C++ API, Debian's libtorch-dev) on the
// same exact (or first-order) MAML meta-gradient, same data, same initial
// parameters, same thread count, in one run:
//
//   metatape           meta_gradient: the task-batched graph, or for large
//                      inputs (Conv4) the batch split by task in chunks
//                      spread over the threads
//   libtorch loop      one task at a time, as users write it with
//                      torch::autograd::grad(..., create_graph=true)
//   libtorch batched   libtorch's best: tasks batched through baddbmm (MLP)
//                      or grouped convolutions (Conv4), per-task weights
//                      expanded from the shared ones
//   metatape replayed  the graph's step captured once, replayed (MLP only)
//   metatape split     the step `metatape train` takes: split by task, the
//                      batch's chunks spread over the threads
//
// The implementations take turns, two steps each per round with the second
// timed (timed_in_turns), so that a shared machine's drift during the run
// slows them alike. For each it reports the median step time over the
// rounds (float32; wall clock, and the process's CPU time over all threads
// beside it), the median and range
// over the rounds of its time over metatape's in the same round, the peak
// resident memory of two steps in a fresh process, and the relative
// error between the libtorch meta-gradient and metatape's, computed in
// float64 so that it shows rounding, not kink flips.
//
// With --only ntk or hvp (or by default after the MAML table) it also
// compares the kernel figures of bench_kernel_libtorch.cpp.
//
// Freed memory stays in the process while the steps are timed (glibc's
// malloc told to take no block from mmap and never to trim the heap).
// libtorch's CPU allocator is glibc's malloc, which by default maps each
// block above its mmap threshold (128 KiB at first, raised as mapped blocks
// are freed, to 32 MiB at most) and unmaps it when freed, and hands the free
// top of its heap back to the kernel, so that every step faults its large
// buffers back in, page by page. metatape's
// storage pool keeps its blocks, so without this the comparison would time
// two allocators as much as two engines. On the development VM, whose page
// faults are dear and vary, libtorch's batched strided Conv4 step took
// 56-64 ms in some runs and 202-269 ms in others (one such run made 5.1
// million page faults and spent 41 of its 117 s in the kernel), and its
// 32-task pooled batching took about 8 s a step where it takes 3.4 s with
// the memory kept.
// --glibc-malloc-defaults leaves glibc as it is. The peak-memory figure is
// measured in a fresh process that never changes glibc's settings.
//
//   build/bench/bench-maml-libtorch [--threads N] [--repeats R] [--only maml|ntk|hvp] [--match TEXT] [--ours-only]
//                                   [--glibc-malloc-defaults]
// (--match: only the MAML configurations whose name contains TEXT;
// --ours-only: metatape's step time alone, for alternated thread counts.)
// (--memory CONFIG VARIANT is the internal child mode of the memory figure.)
#include <cblas.h>   // openblas_set_num_threads
#include <malloc.h>  // mallopt
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "libtorch_common.hpp"
#include "maml_setups.hpp"
#include "resident.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;

namespace {

using bench::from_torch;
using bench::median_times;
using bench::mlp;
using bench::mlp_batched;
using bench::to_torch;
using bench::TorchList;

// --- Conv4 (64 channels): max-pool with batch norm, or strided without -------------

// Pooled: 4 x [conv 3x3 pad 1 + bias, batch norm, ReLU, 2x2 max-pool], then
// the flattened map into the head. Strided: 4 x [conv 3x3 stride 2 pad 1 +
// bias, ReLU], then the map averaged over space into the head. Parameters in
// metatape's order: per block w, b (and gamma, beta when pooled), head w
// [features, classes], head b.
torch::Tensor conv4(const TorchList& p, const torch::Tensor& x, bool strided) {  // x [n, 1, 28, 28]
  auto h = x;
  const int per_block = strided ? 2 : 4;
  for (int b = 0; b < 4; ++b) {
    const int first = per_block * b;
    h = torch::conv2d(h, p[first], p[first + 1], strided ? 2 : 1, 1);
    if (strided) {
      h = torch::relu(h);
      continue;
    }
    h = torch::batch_norm(h, p[first + 2], p[first + 3], {}, {}, true, 0.0, 1e-3, false);
    h = torch::max_pool2d(torch::relu(h), 2);
  }
  const int head = 4 * per_block;
  return torch::addmm(p[head + 1], strided ? h.mean({2, 3}) : h.flatten(1), p[head]);
}

// Per-task weights via grouped convolution: tasks become channel groups, and
// batch norm over [n, T·C, H, W] keeps per-task statistics.
torch::Tensor conv4_batched(const TorchList& p, const torch::Tensor& x, bool strided) {  // x [T, n, 1, 28, 28]
  const std::int64_t tasks = x.size(0), n = x.size(1);
  auto h = x.transpose(0, 1).reshape({n, tasks * x.size(2), x.size(3), x.size(4)});
  const int per_block = strided ? 2 : 4;
  for (int b = 0; b < 4; ++b) {
    const int first = per_block * b;
    const auto& w = p[first];  // [T, O, C, 3, 3]
    h = torch::conv2d(h, w.reshape({tasks * w.size(1), w.size(2), 3, 3}), p[first + 1].reshape({-1}), strided ? 2 : 1,
                      1, 1, tasks);
    if (strided) {
      h = torch::relu(h);
      continue;
    }
    h = torch::batch_norm(h, p[first + 2].reshape({-1}), p[first + 3].reshape({-1}), {}, {}, true, 0.0, 1e-3, false);
    h = torch::max_pool2d(torch::relu(h), 2);
  }
  // [n, T·C, s, s] -> [T, n, C·s·s] (pooled) or [T, n, C] (strided: spatial mean)
  if (strided) h = h.mean({2, 3});
  h = h.reshape({n, tasks, -1}).transpose(0, 1);
  const int head = 4 * per_block;
  return torch::baddbmm(p[head + 1], h, p[head]);
}

// --- the meta-gradient, three ways ----------------------------------------------

struct Problem {
  bool conv;
  bool strided;  // the strided Conv4 without batch norm (conv only)
  bool first_order;
  int steps;
  double alpha;
  TorchList params;
  torch::Tensor sx, sy, qx, qy;
};

torch::Tensor task_loss(const Problem& pr, const torch::Tensor& pred, const torch::Tensor& y) {
  return pr.conv ? torch::nll_loss(torch::log_softmax(pred, 1), y) : torch::mse_loss(pred, y);
}

TorchList libtorch_loop(const Problem& pr) {
  TorchList params;
  for (const auto& p : pr.params) params.push_back(p.detach().requires_grad_());
  const std::int64_t tasks = pr.sx.size(0);
  torch::Tensor meta_loss;
  for (std::int64_t t = 0; t < tasks; ++t) {
    TorchList fast = params;
    const auto forward = [&](const torch::Tensor& x) { return pr.conv ? conv4(fast, x, pr.strided) : mlp(fast, x); };
    for (int k = 0; k < pr.steps; ++k) {
      const auto loss = task_loss(pr, forward(pr.sx[t]), pr.sy[t]);
      const auto g = torch::autograd::grad({loss}, fast, {}, true, !pr.first_order);
      for (std::size_t i = 0; i < fast.size(); ++i) fast[i] = fast[i] - pr.alpha * g[i];
    }
    const auto q = task_loss(pr, forward(pr.qx[t]), pr.qy[t]) / static_cast<double>(tasks);
    meta_loss = meta_loss.defined() ? meta_loss + q : q;
  }
  return torch::autograd::grad({meta_loss}, params);
}

TorchList libtorch_batched(const Problem& pr) {
  TorchList params;
  for (const auto& p : pr.params) params.push_back(p.detach().requires_grad_());
  const std::int64_t tasks = pr.sx.size(0);
  TorchList fast;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    // Biases that baddbmm adds to [T, n, out] become [T, 1, out]; everything
    // else gains a leading task axis.
    const bool row_bias = p.dim() == 1 && (!pr.conv || i + 1 == params.size());
    std::vector<std::int64_t> shape{tasks};
    for (auto d : p.sizes()) shape.push_back(d);
    fast.push_back(row_bias ? p.reshape({1, 1, -1}).expand({tasks, 1, p.size(0)}) : p.unsqueeze(0).expand(shape));
  }
  const auto per_task_losses = [&](const torch::Tensor& pred, const torch::Tensor& y) {
    if (!pr.conv) return (pred - y).pow(2).mean({1, 2});
    const auto logp = torch::log_softmax(pred, 2);
    return -logp.gather(2, y.unsqueeze(2)).squeeze(2).mean(1);
  };
  const auto forward = [&](const torch::Tensor& x) {
    return pr.conv ? conv4_batched(fast, x, pr.strided) : mlp_batched(fast, x);
  };
  for (int k = 0; k < pr.steps; ++k) {
    const auto loss = per_task_losses(forward(pr.sx), pr.sy).sum();
    const auto g = torch::autograd::grad({loss}, fast, {}, true, !pr.first_order);
    for (std::size_t i = 0; i < fast.size(); ++i) fast[i] = fast[i] - pr.alpha * g[i];
  }
  return torch::autograd::grad({per_task_losses(forward(pr.qx), pr.qy).mean()}, params);
}

// --- measurement -------------------------------------------------------------------

// Peak resident memory that two steps add to a fresh process, in MiB: the
// program runs itself again with --memory, so that no allocator cache of an
// earlier measurement is inherited.
double peak_mib(int config, int variant, int threads) {
  char self[4096] = {};
  if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) return -1;
  const std::string command = std::string(self) + " --memory " + std::to_string(config) + " " +
                              std::to_string(variant) + " --threads " + std::to_string(threads);
  FILE* child = popen(command.c_str(), "r");
  if (!child) return -1;
  double mib = -1;
  if (std::fscanf(child, "%lf", &mib) != 1) mib = -1;
  pclose(child);
  return mib;
}

struct Config {
  const char* name;
  bool conv, first_order;
  int steps;
  std::int64_t tasks = 4;  // the Conv4 meta-batch (the sinusoid's is 25)
  bool strided = false;    // the strided Conv4 without batch norm
};

const Config kConfigs[] = {
    {"sinusoid MLP, 25 tasks, K=10, 1 step, exact", false, false, 1},
    {"sinusoid MLP, 25 tasks, K=10, 5 steps, exact", false, false, 5},
    {"sinusoid MLP, 25 tasks, K=10, 1 step, first-order", false, true, 1},
    {"sinusoid MLP, 25 tasks, K=10, 5 steps, first-order", false, true, 5},
    {"conv4 28x28 5-way 1-shot, 4 tasks, 1 step, exact", true, false, 1},
    {"conv4 28x28 5-way 1-shot, 4 tasks, 1 step, first-order", true, true, 1},
    {"conv4 28x28 5-way 1-shot, 32 tasks, 1 step, exact", true, false, 1, 32},
    {"conv4 28x28 5-way 1-shot, 32 tasks, 1 step, first-order", true, true, 1, 32},
    {"strided conv4, no BN, 4 tasks, 1 step, exact", true, false, 1, 4, true},
    {"strided conv4, no BN, 4 tasks, 1 step, first-order", true, true, 1, 4, true},
    {"strided conv4, no BN, 32 tasks, 1 step, exact", true, false, 1, 32, true},
    {"strided conv4, no BN, 32 tasks, 1 step, first-order", true, true, 1, 32, true},
};

bench::MamlSetup make_setup(const Config& c, mt::DType dtype = mt::DType::f32) {
  if (!c.conv) return bench::sinusoid_setup(c.steps, c.first_order, true, dtype);
  return c.strided ? bench::strided_conv4_setup(c.first_order, true, dtype, c.tasks)
                   : bench::conv4_setup(c.first_order, true, dtype, c.tasks);
}

Problem make_problem(const Config& c, const bench::MamlSetup& setup) {
  return {c.conv,
          c.strided,
          c.first_order,
          setup.config.inner_steps,
          setup.config.inner_lr,
          to_torch(setup.params.model),
          to_torch(setup.batch.support_x),
          to_torch(setup.batch.support_y),
          to_torch(setup.batch.query_x),
          to_torch(setup.batch.query_y)};
}

// libtorch's matrix products go through the same OpenBLAS that metatape
// keeps at one thread (its own pool is its parallelism): libtorch's steps get
// `threads` OpenBLAS threads while they run, as they would on their own.
class LibtorchBlasThreads {
 public:
  explicit LibtorchBlasThreads(int threads) { openblas_set_num_threads(threads); }
  ~LibtorchBlasThreads() { openblas_set_num_threads(1); }
  LibtorchBlasThreads(const LibtorchBlasThreads&) = delete;
  LibtorchBlasThreads& operator=(const LibtorchBlasThreads&) = delete;
};

// The meta-gradient split by task, as `metatape train` computes it: the
// batch in chunks spread over the threads, each task's row combined in task
// order.
std::vector<mt::Tensor> split_meta_gradient(const bench::MamlSetup& setup) {
  const meta::TaskTerms terms = meta::task_terms(*setup.model, setup.loss, setup.config, setup.params, setup.batch, 0);
  return meta::combine_task_terms(setup.config.weighting, terms, setup.params.model.size()).grads;
}

// The step of variant 0 (metatape), 1 (libtorch loop), 2 (libtorch batched),
// 3 (metatape's step captured once and replayed) or 4 (metatape split by
// task).
std::function<void()> step_of(int variant, const bench::MamlSetup& setup, const Problem& pr, int threads) {
  if (variant == 0)
    return [&] { (void)meta::meta_gradient(*setup.model, setup.loss, setup.config, setup.params, setup.batch, 0); };
  if (variant == 4) return [&] { (void)split_meta_gradient(setup); };
  if (variant == 3) {
    auto captured = std::make_shared<meta::CapturedMetaGradient>(*setup.model, setup.loss, setup.config);
    return [&setup, captured] { (void)(*captured)(setup.params, setup.batch); };
  }
  if (variant == 1)
    return [&pr, threads] {
      const LibtorchBlasThreads blas(threads);
      (void)libtorch_loop(pr);
    };
  return [&pr, threads] {
    const LibtorchBlasThreads blas(threads);
    (void)libtorch_batched(pr);
  };
}

void compare(int index, int threads, int repeats, bool ours_only) {
  const Config& c = kConfigs[index];
  const bench::MamlSetup setup = make_setup(c);
  const Problem pr = make_problem(c, setup);
  if (ours_only) {  // metatape's step time alone, for alternated runs
    const bench::Timing t = median_times(step_of(0, setup, pr, threads), c.conv ? std::max(3, repeats / 4) : repeats);
    std::printf("%-52s %-17s %10.3f %10.3f\n", c.name, "metatape", t.wall_ms, t.cpu_ms);
    std::fflush(stdout);
    return;
  }
  // The gradient check runs in float64, where the two implementations must
  // agree to rounding (float32 would blur it with kink flips of ReLU and
  // max-pool).
  const bench::MamlSetup setup64 = make_setup(c, mt::DType::f64);
  const Problem pr64 = make_problem(c, setup64);
  const std::vector<mt::Tensor> reference =
      meta::meta_gradient(*setup64.model, setup64.loss, setup64.config, setup64.params, setup64.batch, 0).grads;
  const auto replayed_error = [&] {
    meta::CapturedMetaGradient replayed(*setup64.model, setup64.loss, setup64.config);
    return mt::testing::relative_error(replayed(setup64.params, setup64.batch).grads, reference);
  };
  const double errors[5] = {0, mt::testing::relative_error(from_torch(libtorch_loop(pr64)), reference),
                            mt::testing::relative_error(from_torch(libtorch_batched(pr64)), reference),
                            c.conv ? 0.0 : replayed_error(),
                            mt::testing::relative_error(split_meta_gradient(setup64), reference)};
  const char* names[5] = {"metatape", "libtorch loop", "libtorch batched", "metatape replayed", "metatape split"};
  // The replayed step is measured where per-op overhead matters (the MLP);
  // Conv4's time is in its convolutions, which a replay runs just the same.
  // Conv4's batches are large enough that meta_gradient itself is the split
  // step: one row for both.
  std::vector<int> variants;
  std::vector<std::function<void()>> steps;
  for (int v = 0; v < 5; ++v) {
    if (v >= 3 && c.conv) continue;
    variants.push_back(v);
    steps.push_back(step_of(v, setup, pr, threads));
  }
  const std::vector<bench::TurnTimes> times = bench::timed_in_turns(steps, c.conv ? std::max(3, repeats / 4) : repeats);
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const int v = variants[i];
    const bench::TurnTimes& t = times[i];
    const double mib = peak_mib(index, v, threads);
    if (v == 0) {
      std::printf("%-52s %-17s %10.3f %10.3f %9.1f %8s %13s %10s\n", c.name, names[v], t.median.wall_ms,
                  t.median.cpu_ms, mib, "", "", "");
    } else {
      // "vs ours": the median over rounds of this step's time over ours in the same round, and the range.
      char range[32];
      std::snprintf(range, sizeof range, "%.1f-%.1f", t.ratio_low, t.ratio_high);
      std::printf("%-52s %-17s %10.3f %10.3f %9.1f %7.1fx %13s %10.1e\n", "", names[v], t.median.wall_ms,
                  t.median.cpu_ms, mib, t.ratio_median, range, errors[v]);
    }
    std::fflush(stdout);
  }
}

// glibc's malloc set to keep what is freed (the header says why): no block
// from mmap, which would be unmapped when freed, and no trim of the heap's
// free top at all (a threshold of -1, which glibc reads as the largest size;
// with the largest positive int, 2 GiB, below the 2.3 GB of libtorch's
// 32-task pooled batching, that step took 13 s, not 3.4). False if glibc
// refuses either.
bool keep_freed_memory() { return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1; }

// The child of peak_mib(): set up, note the resident size, run two steps.
int measure_memory(int index, int variant, int threads) {
  const Config& c = kConfigs[index];
  const bench::MamlSetup setup = make_setup(c);
  const Problem pr = make_problem(c, setup);
  const auto step = step_of(variant, setup, pr, threads);
  const double before = bench::resident().mib;
  step();
  step();
  std::printf("%.1f\n", bench::resident().peak_mib - before);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, repeats = 21, memory_config = -1, memory_variant = -1;
  bool ours_only = false, glibc_malloc_defaults = false;
  std::string only;   // empty: every comparison
  std::string match;  // empty: every MAML configuration
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (arg == "--repeats" && i + 1 < argc) {
      repeats = std::atoi(argv[++i]);
    } else if (arg == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (arg == "--ours-only") {
      ours_only = true;
    } else if (arg == "--glibc-malloc-defaults") {
      glibc_malloc_defaults = true;
    } else if (arg == "--match" && i + 1 < argc) {
      match = argv[++i];
    } else if (arg == "--memory" && i + 2 < argc) {
      memory_config = std::atoi(argv[++i]);
      memory_variant = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--threads N] [--repeats R] [--only maml|ntk|hvp] [--match TEXT] [--ours-only] "
                   "[--glibc-malloc-defaults]\n",
                   argv[0]);
      return 2;
    }
  }
  if (threads < 1 || repeats < 1) {
    std::fprintf(stderr, "%s: --threads and --repeats must be >= 1\n", argv[0]);
    return 2;
  }
  if (!only.empty() && only != "maml" && only != "ntk" && only != "hvp") {
    std::fprintf(stderr, "%s: --only takes maml, ntk or hvp, not '%s'\n", argv[0], only.c_str());
    return 2;
  }
  mt::set_num_threads(threads);
  torch::set_num_threads(threads);
  at::set_num_interop_threads(1);
  if (memory_config >= 0) return measure_memory(memory_config, memory_variant, threads);
  std::printf("resident at start: %s\n", bench::resident_text().c_str());
  if (!glibc_malloc_defaults && !keep_freed_memory()) {
    std::fprintf(stderr, "%s: glibc's malloc refused mallopt; rerun with --glibc-malloc-defaults\n", argv[0]);
    return 1;
  }
  std::printf("glibc malloc: %s\n", glibc_malloc_defaults ? "its defaults (large blocks go back to the kernel)"
                                                           : "freed memory kept in the process (see the header)");

  if (only.empty() || only == "maml") {
    if (ours_only) {
      std::printf("float32, %d thread(s), metatape alone: median of %d steps (conv4: %d) after one warm-up step\n",
                  threads, repeats, std::max(3, repeats / 4));
      std::printf("%-52s %-17s %10s %10s\n", "configuration", "implementation", "ms/step", "cpu ms");
    } else {
      std::printf(
          "float32, %d thread(s), median of %d rounds (conv4: %d); in each round every implementation runs "
          "two steps in turn, the second timed; memory: peak resident growth of a fresh process over two steps\n",
          threads, repeats, std::max(3, repeats / 4));
      std::printf("%-52s %-17s %10s %10s %9s %8s %13s %10s\n", "configuration", "implementation", "ms/step", "cpu ms",
                  "peak MiB", "vs ours", "rounds' range", "f64 err");
    }
    for (int i = 0; i < static_cast<int>(std::size(kConfigs)); ++i)
      if (std::string(kConfigs[i].name).find(match) != std::string::npos) compare(i, threads, repeats, ours_only);
  }
  // A metatape error (an algorithm not built yet, say) ends that comparison
  // with its message, not the run.
  using Compare = void (*)(int);
  const std::pair<std::string, Compare> kernel_figures[] = {{"ntk", bench::compare_ntk}, {"hvp", bench::compare_hvp}};
  for (const auto& [name, compare_kernel] : kernel_figures) {
    if (!only.empty() && only != name) continue;
    try {
      compare_kernel(repeats);
    } catch (const mt::Error& e) {
      std::printf("%s: not measured: %s\n", name.c_str(), e.what());
    }
  }
  return 0;
}
