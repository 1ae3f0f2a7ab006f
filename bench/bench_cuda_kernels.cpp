// Where a MAML step's GPU time goes, kernel by kernel. CUPTI's activity
// records (each kernel's, copy's and fill's start and end on the GPU's clock,
// what Nsight Systems reads) over R repeated steps of each configuration of
// bench-cuda, eager and replayed as a CUDA graph, summed by kernel name and
// set beside the steps' wall time. "GPU busy" is the union of the records'
// intervals over the wall time: far below 100% means the step waits on the
// host (launches, the tape, synchronisation), not on the kernels.
//
//   build/bench/bench-cuda-kernels [--repeats R] [--top N] [--match TEXT]
//
// Without a usable GPU it says so and exits 77.
#include <cuda_runtime.h>
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cuda_configs.hpp"
#include "kernels/cuda/runtime.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;

namespace {

// One activity record: what ran (a kernel's readable name, or "[memcpy
// HtoD]" and the like) and when, in GPU nanoseconds.
struct Interval {
  std::string name;
  std::uint64_t start, end;
};

// CUPTI hands over full buffers from a thread of its own, and the rest when
// flushed: the records are taken under a lock.
std::mutex recorded_lock;
std::vector<Interval> recorded_intervals;

std::vector<Interval> take_recorded() {
  const std::lock_guard<std::mutex> hold(recorded_lock);
  return std::exchange(recorded_intervals, {});
}

void check_cupti(CUptiResult result, const char* what) {
  if (result == CUPTI_SUCCESS) return;
  const char* text = nullptr;
  cuptiGetResultString(result, &text);
  std::fprintf(stderr, "bench-cuda-kernels: %s failed: %s\n", what, text ? text : "unknown CUPTI error");
  std::exit(1);
}

// "void metatape::kernels::cuda::(anonymous namespace)::relu_kernel<float>(
// float const*, float*, long)" → "relu_kernel<float>": the return type, the
// namespaces and the argument list say nothing the table needs.
std::string readable(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> demangled(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                                        &std::free);
  std::string name = status == 0 && demangled ? demangled.get() : mangled;
  for (std::size_t at; (at = name.find("(anonymous namespace)::")) != std::string::npos;) name.erase(at, 23);
  if (name.rfind("void ", 0) == 0) name.erase(0, 5);
  int depth = 0;  // the argument list: the first '(' outside template brackets
  for (std::size_t i = 0; i < name.size(); ++i) {
    depth += name[i] == '<' ? 1 : name[i] == '>' ? -1 : 0;
    if (name[i] == '(' && depth == 0) {
      name.resize(i);
      break;
    }
  }
  const std::size_t scope = name.rfind("::", name.find('<'));
  if (scope != std::string::npos) name.erase(0, scope + 2);
  return name.size() > 90 ? name.substr(0, 87) + "..." : name;
}

const char* copy_kind(std::uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD:
      return "[memcpy HtoD]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH:
      return "[memcpy DtoH]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD:
      return "[memcpy DtoD]";
    default:
      return "[memcpy other]";
  }
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = std::size_t{16} << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  const std::lock_guard<std::mutex> hold(recorded_lock);
  std::vector<Interval>& recorded = recorded_intervals;
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
        recorded.push_back({readable(k->name), k->start, k->end});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
        recorded.push_back({copy_kind(m->copyKind), m->start, m->end});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
        recorded.push_back({"[memset]", m->start, m->end});
        break;
      }
      default:
        break;
    }
  }
  std::free(buffer);
}

const CUpti_ActivityKind kinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                    CUPTI_ACTIVITY_KIND_MEMSET};

// The GPU time the records cover, overlaps counted once.
double busy_ns(std::vector<Interval> intervals) {
  std::sort(intervals.begin(), intervals.end(), [](const Interval& a, const Interval& b) { return a.start < b.start; });
  double busy = 0;
  std::uint64_t reach = 0;
  for (const Interval& i : intervals) {
    if (i.end <= i.start) continue;
    const std::uint64_t from = std::max(i.start, reach);
    if (i.end > from) busy += static_cast<double>(i.end - from);
    reach = std::max(reach, i.end);
  }
  return busy;
}

// Runs `step` three times unrecorded (warm-up), then `repeats` times
// recorded, and prints the table; false where nothing was recorded. The wall time is taken with tracing on,
// which adds a little to each launch.
template <class Step>
bool profile(const std::string& title, Step&& step, int repeats, int top) {
  for (int i = 0; i < 3; ++i) step();
  mt::kernels::cuda::synchronize();
  check_cupti(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll");
  (void)take_recorded();
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < repeats; ++r) step();
  mt::kernels::cuda::synchronize();
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  check_cupti(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll");
  const std::vector<Interval> recorded = take_recorded();
  if (recorded.empty()) {
    std::printf("\n## %s\n\nno activity records: CUPTI recorded nothing over %d steps\n", title.c_str(), repeats);
    return false;
  }

  std::map<std::string, std::pair<double, int>> by_name;  // name → (ns, calls)
  double total_ns = 0;
  for (const Interval& i : recorded) {
    // CUPTI gives 0 for both ends where it could not take the times.
    const double duration = i.end > i.start ? static_cast<double>(i.end - i.start) : 0.0;
    auto& [ns, calls] = by_name[i.name];
    ns += duration;
    ++calls;
    total_ns += duration;
  }
  const double per_step = 1e-6 / repeats;  // ns summed over the repeats → ms per step
  const double busy = busy_ns(recorded);
  std::printf("\n## %s\n\nwall %.3f ms/step; GPU busy %.3f ms/step (%.0f%%); %zu records/step, their sum %.3f ms\n\n",
              title.c_str(), wall_ms / repeats, busy * per_step, 100.0 * busy * 1e-6 / wall_ms,
              recorded.size() / repeats, total_ns * per_step);
  std::vector<std::pair<std::string, std::pair<double, int>>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  std::printf("| share | ms/step | calls/step | µs/call | kernel |\n| --- | --- | --- | --- | --- |\n");
  for (int i = 0; i < std::min<int>(top, rows.size()); ++i) {
    const auto& [name, time] = rows[i];
    std::printf("| %.1f%% | %.4f | %.1f | %.2f | `%s` |\n", total_ns > 0 ? 100.0 * time.first / total_ns : 0.0,
                time.first * per_step, static_cast<double>(time.second) / repeats, time.first * 1e-3 / time.second,
                name.c_str());
  }
  std::fflush(stdout);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 20, top = 15;
  std::string match;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--repeats") == 0)
      repeats = std::max(1, std::atoi(argv[i + 1]));
    else if (std::strcmp(argv[i], "--top") == 0)
      top = std::max(1, std::atoi(argv[i + 1]));
    else if (std::strcmp(argv[i], "--match") == 0)
      match = argv[i + 1];
    else {
      std::fprintf(stderr, "bench-cuda-kernels: unknown option '%s' (--repeats R, --top N, --match TEXT)\n", argv[i]);
      return 2;
    }
  }
  std::string reason;
  if (!mt::cuda_available(&reason)) {
    std::fprintf(stderr, "bench-cuda-kernels: SKIP: %s\n", reason.c_str());
    return 77;
  }
  // Tracing is on from here to the end, before any step's graph is made:
  // kernels of a graph instantiated before tracing began may go unrecorded.
  check_cupti(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks");
  for (CUpti_ActivityKind kind : kinds) check_cupti(cuptiActivityEnable(kind), "cuptiActivityEnable");
  bool recorded_all = true;
  for (const bench::CudaMamlConfig& config : bench::cuda_maml_configs()) {
    if (!match.empty() && config.name.find(match) == std::string::npos) continue;
    bench::MamlSetup setup = config.setup();
    const meta::MetaParams params = setup.params.to(mt::Device::cuda);
    const meta::TaskBatch batch = setup.batch.to(mt::Device::cuda);
    recorded_all &= profile(
        config.name + ", eager",
        [&] { (void)meta::meta_gradient(*setup.model, setup.loss, setup.config, params, batch, 0); },
        config.repeats(repeats), top);
    meta::CapturedMetaGradient captured(*setup.model, setup.loss, setup.config);
    recorded_all &= profile(
        config.name + ", CUDA graph",
        [&] {
          const meta::MetaStepTensors out = captured(params, batch);
          (void)out.meta_loss.item();
        },
        config.repeats(repeats), top);
  }
  return recorded_all ? 0 : 1;
}
