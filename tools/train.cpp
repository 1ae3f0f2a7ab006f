// metatape train: the meta-training loop with metrics, checkpoints, resume,
// a progress line and a learning curve.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commands.hpp"
#include "metatape/meta/checkpoint.hpp"
#include "progress.hpp"
#include "svg.hpp"

namespace metatape::tools {
namespace {

namespace fs = std::filesystem;

// The metrics lines of iterations <= `last`, parsed; a torn last line (from a
// crash mid-write) is dropped.
std::vector<nlohmann::json> read_metrics(const fs::path& path, std::int64_t last) {
  std::vector<nlohmann::json> lines;
  if (!fs::exists(path)) return lines;
  std::istringstream in(meta::read_file(path.string()));
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("iteration")) continue;
    if (j["iteration"].get<std::int64_t>() <= last) lines.push_back(j);
  }
  return lines;
}

std::string join_lines(const std::vector<nlohmann::json>& lines) {
  std::string out;
  for (const auto& j : lines) out += j.dump() + "\n";
  return out;
}

// Meta-loss against iteration, smoothed by a running mean over about 1% of
// the run, on a log axis.
void write_learning_curve(const fs::path& path, const std::vector<nlohmann::json>& metrics, const RunConfig& config) {
  Series raw{"meta-loss (logged)", {}, {}, {}, "#c7c7c7"}, smooth{"running mean", {}, {}, {}, palette(0)};
  for (const auto& j : metrics) {
    raw.x.push_back(j["iteration"].get<double>());
    raw.y.push_back(j["meta_loss"].get<double>());
  }
  const std::size_t window = std::max<std::size_t>(1, raw.y.size() / 100);
  double total = 0;
  for (std::size_t i = 0; i < raw.y.size(); ++i) {
    total += raw.y[i];
    if (i >= window) total -= raw.y[i - window];
    smooth.x.push_back(raw.x[i]);
    smooth.y.push_back(total / static_cast<double>(std::min(i + 1, window)));
  }
  Chart chart{config.algorithm + " on " + config.task + ": meta-training loss",
              "iteration",
              "meta-loss (query MSE)",
              true,
              {raw, smooth}};
  meta::write_file_atomically(path.string(), render_svg(chart));
}

std::string duration(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return buffer;
}

}  // namespace

int run_train(const TrainArgs& args) {
  const RunConfig& config = args.config;
  RunParts parts = build(config);  // validates every option first
  if (args.checkpoint_every < 0 || args.log_every < 1)
    throw ValueError("--checkpoint-every must be >= 0 and --log-every >= 1");
  set_num_threads(args.threads);
  parts.options.device = parse_device(args.device);
  parts.options.cuda_graph = args.cuda_graph;
  parts.options.validate();  // before anything is written

  const fs::path out = args.out.empty() ? fs::path("runs") / config.algorithm : fs::path(args.out);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw IoError("cannot create the run directory " + out.string() + ": " + ec.message());
  const fs::path checkpoint_path = out / "checkpoint.bin", metrics_path = out / "metrics.jsonl";

  meta::Trainer trainer(*parts.model, parts.loss, *parts.tasks, parts.options);
  const std::string config_text = config.to_json().dump();
  if (args.resume) {
    if (!fs::exists(checkpoint_path))
      throw ValueError("--resume: there is no checkpoint to resume at " + checkpoint_path.string());
    const meta::Checkpoint checkpoint = meta::load_checkpoint(checkpoint_path.string());
    const nlohmann::json saved_json = nlohmann::json::parse(checkpoint.config, nullptr, false);
    if (saved_json.is_discarded())
      throw IoError("checkpoint " + checkpoint_path.string() + ": its configuration is not JSON");
    std::string difference;
    if (!config.same_run_as(RunConfig::from_json(saved_json), &difference))
      throw ValueError("--resume: " + checkpoint_path.string() + " belongs to a different run (" + difference + ")");
    if (checkpoint.iteration > config.iterations)
      throw ValueError("--resume: the checkpoint is at iteration " + std::to_string(checkpoint.iteration) +
                       ", past --iterations " + std::to_string(config.iterations));
    trainer.restore(checkpoint);
    // Metrics logged after the checkpoint are replayed by the resumed run.
    meta::write_file_atomically(metrics_path.string(), join_lines(read_metrics(metrics_path, trainer.iteration())));
  } else {
    if (fs::exists(checkpoint_path))
      throw ValueError(out.string() + " already holds a run (" + checkpoint_path.filename().string() +
                       "): pass --resume to continue it, or choose another --out");
    meta::write_file_atomically(metrics_path.string(), "");
  }
  meta::write_file_atomically((out / "config.json").string(), config.to_json().dump(2) + "\n");

  std::ofstream metrics(metrics_path, std::ios::app);
  if (!metrics) throw IoError("cannot append to " + metrics_path.string());
  Progress progress(!args.quiet && isatty(STDERR_FILENO));
  const auto start = std::chrono::steady_clock::now();
  const std::int64_t first = trainer.iteration();
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  while (trainer.iteration() < config.iterations) {
    const meta::IterationRecord r = trainer.step();
    const bool last = r.iteration == config.iterations;
    if (r.iteration % args.log_every == 0 || last) {
      metrics << nlohmann::json{{"iteration", r.iteration},
                                {"meta_loss", r.meta_loss},
                                {"task_losses", r.task_losses},
                                {"grad_norm", r.grad_norm},
                                {"time_s", elapsed()}}
                     .dump()
              << '\n'
              << std::flush;
      if (!metrics) throw IoError("cannot write to " + metrics_path.string());
    }
    if (!std::isfinite(r.meta_loss))
      throw Error("the meta-loss is " + std::to_string(r.meta_loss) + " at iteration " + std::to_string(r.iteration) +
                  "; stopping (the last checkpoint is kept): try a smaller --inner-lr or --outer-lr, or "
                  "--clip-grad-norm");
    if ((args.checkpoint_every > 0 && r.iteration % args.checkpoint_every == 0) || last)
      meta::save_checkpoint(checkpoint_path.string(), trainer.checkpoint(config_text));
    const double rate = static_cast<double>(r.iteration - first) / std::max(elapsed(), 1e-9);
    progress.update(r.iteration, config.iterations, rate, r.meta_loss,
                    static_cast<double>(config.iterations - r.iteration) / std::max(rate, 1e-9));
  }
  progress.finish();
  metrics.close();

  const double seconds = elapsed();
  write_learning_curve(out / "learning_curve.svg", read_metrics(metrics_path, config.iterations), config);
  std::printf("trained %s on %s (%s): %s, %lld iterations (%lld this run) in %s, %.0f it/s\n",
              config.algorithm.c_str(), config.task.c_str(), args.device.c_str(), parts.model->describe().c_str(),
              static_cast<long long>(config.iterations),
              static_cast<long long>(config.iterations - first), duration(seconds).c_str(),
              static_cast<double>(config.iterations - first) / std::max(seconds, 1e-9));
  std::printf("wrote %s, %s, %s and %s\n", checkpoint_path.c_str(), metrics_path.c_str(), (out / "config.json").c_str(),
              (out / "learning_curve.svg").c_str());
  return 0;
}

}  // namespace metatape::tools
