// A live progress line on a terminal (iterations/s, loss, ETA), redrawn at
// most ten times a second, or for slow work in named stages (`stage`);
// silent when stderr is not a terminal, so logs and pipes get only the
// metrics.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace metatape::tools {

class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled) {}

  void update(std::int64_t done, std::int64_t total, double per_second, double loss, double eta_seconds) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const long eta = static_cast<long>(eta_seconds + 0.5);
    std::fprintf(stderr, "\r[%s] %lld/%lld  %.0f it/s  loss %.4g  ETA %ld:%02ld:%02ld \033[K", bar(done, total).c_str(),
                 static_cast<long long>(done), static_cast<long long>(total), per_second, loss, eta / 3600,
                 (eta / 60) % 60, eta % 60);
    std::fflush(stderr);
    drawn_ = true;
  }

  // Work in `total` stages of which `done` are finished, the next being
  // `what` ("checkpoint 2/4: meta Hessian"); drawn at every call (stages
  // take seconds), with the time since the first.
  void stage(std::int64_t done, std::int64_t total, const std::string& what) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!drawn_) start_ = now;
    const long s = static_cast<long>(std::chrono::duration<double>(now - start_).count() + 0.5);
    std::fprintf(stderr, "\r[%s] %s  %ld:%02ld:%02ld \033[K", bar(done, total).c_str(), what.c_str(), s / 3600,
                 (s / 60) % 60, s % 60);
    std::fflush(stderr);
    drawn_ = true;
  }

  void finish() {
    if (enabled_ && drawn_) std::fprintf(stderr, "\n");
  }

 private:
  static std::string bar(std::int64_t done, std::int64_t total) {
    const int width = 24;
    const int filled = total > 0 ? static_cast<int>(width * done / total) : width;
    std::string bar(width, ' ');
    for (int i = 0; i < width; ++i) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    return bar;
  }

  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{}, start_{};
};

}  // namespace metatape::tools
