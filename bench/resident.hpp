// Resident memory of this process, from /proc/self/status: now (VmRSS) and
// its high-water mark (VmHWM), in MiB. Every bench program reports it at
// start, and the Google Benchmark programs per benchmark too, through
// METATAPE_BENCHMARK_MAIN() in place of BENCHMARK_MAIN(): the context line
// "resident_at_start" and the counters rss_MiB (after the benchmark) and
// peak_rss_MiB (its own peak: the mark is reset after each benchmark where
// the kernel allows, else it is the peak since start). 0 where /proc is not
// there.
#pragma once

#include <cstdio>
#include <fstream>
#include <string>

namespace bench {

struct Resident {
  double mib = 0;       // now
  double peak_mib = 0;  // the high-water mark
};

inline Resident resident() {
  Resident r;
  std::ifstream status("/proc/self/status");
  std::string key;
  double kib = 0;
  while (status >> key) {
    if (key == "VmRSS:" && status >> kib) r.mib = kib / 1024.0;
    if (key == "VmHWM:" && status >> kib) r.peak_mib = kib / 1024.0;
  }
  return r;
}

// Starts the high-water mark again from the current resident size (Linux:
// "5" to /proc/self/clear_refs); false where that is refused.
inline bool reset_resident_peak() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

inline std::string resident_text(const Resident& r = resident()) {
  char text[96];
  std::snprintf(text, sizeof text, "%.1f MiB resident (peak %.1f MiB)", r.mib, r.peak_mib);
  return text;
}

}  // namespace bench

#ifdef BENCHMARK_BENCHMARK_H_

#include <memory>
#include <vector>

namespace bench {

// The display reporter the flags chose, with the resident figures added to
// each benchmark's runs as counters.
class ResidentReporter : public benchmark::BenchmarkReporter {
 public:
  ResidentReporter() : inner_(benchmark::CreateDefaultDisplayReporter()) {}
  bool ReportContext(const Context& context) override { return inner_->ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    const Resident r = resident();
    std::vector<Run> with = runs;
    for (Run& run : with) {
      run.counters["rss_MiB"] = benchmark::Counter(r.mib);
      run.counters["peak_rss_MiB"] = benchmark::Counter(r.peak_mib);
    }
    inner_->ReportRuns(with);
    reset_resident_peak();
  }
  void Finalize() override { inner_->Finalize(); }

 private:
  benchmark::BenchmarkReporter* inner_;  // owned by the library
};

inline int run_benchmarks_with_resident(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("resident_at_start", resident_text());
  reset_resident_peak();
  ResidentReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench

#define METATAPE_BENCHMARK_MAIN() \
  int main(int argc, char** argv) { return ::bench::run_benchmarks_with_resident(argc, argv); }

#endif
