// The communication cost of a meta-batch spread over processes, measured on
// this host and extrapolated to many hosts. Run under mpirun (2 ranks or
// more), one thread each:
//   mpirun -np 2 build/bench/bench-distributed
// It measures
//   1. the all-reduce time of float32 buffers from 4 KB to 64 MB, and fits
//      t = α + β · bytes (least squares): the latency-bandwidth model, and how
//      well it predicts each measurement;
//   2. for the sinusoid MLP and Conv4 at 28×28 and 84×84: the parameter count
//      P, the bytes one iteration all-reduces (P × 4, the fast reduction) or
//      all-gathers (B × P × 4, the deterministic one), the all-reduce time at
//      that size here, and the exact-MAML step time per task on one thread;
// and from them prints the cost model for H hosts joined by a 10 or 100
// Gbit/s link: a ring all-reduce sends 2 (H−1)/H · bytes over each link in
// 2 (H−1) latency-bound steps, so
//   T_allreduce = 2 (H−1)/H · bytes / bandwidth + 2 (H−1) · latency,
// and the per-rank meta-batch b above which communication stays under 10%
// of a step is b >= 9 T / t_task (at least 1). The deterministic reduction gathers every
// task's gradient: (H−1) · b · P · 4 bytes reach each rank, a share of the
// step that does not fall with b.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "maml_setups.hpp"
#include "metatape/meta/mpi_communicator.hpp"

namespace {

namespace meta = metatape::meta;
using metatape::DType;
using metatape::Tensor;

constexpr double kLinkLatency = 5e-6;  // seconds per ring step: an assumption for a data-centre link
constexpr int kHosts = 8;              // the cluster the model is printed for

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds of `f` on every rank at once, the slowest rank's, median of `repeats`.
template <class F>
double timed(meta::Communicator& group, int repeats, F&& f) {
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    group.barrier();
    const auto start = std::chrono::steady_clock::now();
    f();
    const double mine = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const Tensor all = group.all_gather(metatape::from_vector({mine}, metatape::Shape{1}, DType::f64));
    const std::vector<double> each = all.to_vector();
    times.push_back(*std::max_element(each.begin(), each.end()));
  }
  return median(times);
}

double all_reduce_seconds(meta::Communicator& group, std::int64_t floats) {
  const Tensor buffer = metatape::full({floats}, 1.0, DType::f32);
  const int repeats = floats > (1 << 22) ? 5 : 21;
  return timed(group, repeats, [&] { (void)group.all_reduce_sum({buffer}); });
}

struct Fit {
  double latency = 0, seconds_per_byte = 0;
  double operator()(double bytes) const { return latency + seconds_per_byte * bytes; }
};

// Least squares in relative error, Σ ((α + β bytes_i − t_i) / t_i)²: the
// sizes span four orders of magnitude, and an absolute fit would let the
// largest decide alone (a negative latency).
Fit least_squares(const std::vector<double>& bytes, const std::vector<double>& seconds) {
  double a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0;  // normal equations of the scaled rows [1/t, x/t] · [α, β] = 1
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const double u = 1 / seconds[i], v = bytes[i] / seconds[i];
    a11 += u * u;
    a12 += u * v;
    a22 += v * v;
    b1 += u;
    b2 += v;
  }
  const double det = a11 * a22 - a12 * a12;
  return {(b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det};
}

struct Workload {
  const char* name;
  bench::MamlSetup setup;
  std::int64_t timed_tasks;  // the step is timed on this many tasks
};

std::int64_t parameter_count(const meta::MetaParams& params) {
  std::int64_t count = 0;
  for (const Tensor& p : params.all()) count += p.numel();
  return count;
}

// Exact-MAML seconds per task on one thread (every rank steps at once, as
// in training).
double step_seconds_per_task(meta::Communicator& group, const Workload& w) {
  const bench::MamlSetup& s = w.setup;
  const double seconds =
      timed(group, 3, [&] { (void)meta::meta_gradient_tensors(*s.model, s.loss, s.config, s.params, s.batch, 0); });
  return seconds / static_cast<double>(w.timed_tasks);
}

double ring_all_reduce(double bytes, double bits_per_second) {
  const double hosts = kHosts;
  return 2 * (hosts - 1) / hosts * bytes * 8 / bits_per_second + 2 * (hosts - 1) * kLinkLatency;
}

void print_model_rows(const char* name, std::int64_t params, double measured, const Fit& fit, double task_seconds,
                      std::int64_t meta_batch) {
  const double bytes = 4.0 * static_cast<double>(params);
  std::printf("| %s | %lld | %.1f KB | %.1f MB | %.3g ms | %.3g ms | %.3g ms |", name, static_cast<long long>(params),
              bytes / 1e3, bytes * static_cast<double>(meta_batch) / 1e6, 1e3 * measured, 1e3 * fit(bytes),
              1e3 * task_seconds);
  for (double link : {10e9, 100e9}) {
    const double t = ring_all_reduce(bytes, link);
    // Deterministic: every rank receives the other ranks' rows, (H−1) b P 4
    // bytes, against b tasks of compute: a share independent of b.
    const double gather_share_per_task = (kHosts - 1) * bytes * 8 / link / task_seconds;
    std::printf(" %.3g ms, b >= %.0f, %.0f%% |", 1e3 * t, std::max(1.0, std::ceil(9 * t / task_seconds)),
                100 * gather_share_per_task / (1 + gather_share_per_task));
  }
  std::printf("\n");
}

}  // namespace

int main() {
  try {
    metatape::set_num_threads(1);
    const std::shared_ptr<meta::Communicator> group = meta::mpi_world();
    const bool speaks = group->rank() == 0;
    if (speaks) std::printf("bench-distributed: %d processes, one thread each\n\n", group->size());

    std::vector<double> sizes, seconds;
    if (speaks) std::printf("| all-reduce of | measured | fit | fit error |\n|---|---|---|---|\n");
    for (std::int64_t floats = 1 << 10; floats <= (1 << 24); floats *= 4) {
      sizes.push_back(4.0 * static_cast<double>(floats));
      seconds.push_back(all_reduce_seconds(*group, floats));
    }
    const Fit fit = least_squares(sizes, seconds);
    for (std::size_t i = 0; i < sizes.size() && speaks; ++i)
      std::printf("| %.0f KB | %.3g ms | %.3g ms | %+.0f%% |\n", sizes[i] / 1e3, 1e3 * seconds[i], 1e3 * fit(sizes[i]),
                  100 * (fit(sizes[i]) / seconds[i] - 1));
    if (speaks)
      std::printf("\nfit: latency %.3g us, bandwidth %.3g GB/s (this host's shared memory, not a network)\n\n",
                  1e6 * fit.latency, 1e-9 / fit.seconds_per_byte);

    constexpr std::int64_t kMetaBatch = 32;
    Workload workloads[] = {
        {"sinusoid MLP 1-40-40-1", bench::sinusoid_setup(1, false, true, DType::f32), 25},
        {"Conv4 28x28x1, 64 ch", bench::conv4_setup(false, true, DType::f32, 2), 2},
        {"Conv4 84x84x3, 32 ch",
         bench::conv4_setup(false, true, DType::f32, 1, 1, {.in_channels = 3, .image_size = 84, .channels = 32}), 1},
    };
    if (speaks)
      std::printf(
          "| model | P | all-reduced (P x 4) | gathered, B = %lld | all-reduce here | fit | step per task | "
          "%d hosts, 10 Gbit/s: ring all-reduce, b for < 10%%, deterministic share | 100 Gbit/s: the same |\n"
          "|---|---|---|---|---|---|---|---|---|\n",
          static_cast<long long>(kMetaBatch), kHosts);
    for (const Workload& w : workloads) {
      const std::int64_t params = parameter_count(w.setup.params);
      const double measured = all_reduce_seconds(*group, params);
      const double task_seconds = step_seconds_per_task(*group, w);
      if (speaks) print_model_rows(w.name, params, measured, fit, task_seconds, kMetaBatch);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench-distributed: %s\n", e.what());
    return 1;
  }
}
