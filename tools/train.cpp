// metatape train: the meta-training loop with metrics, checkpoints, resume,
// a progress line and a learning curve.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "commands.hpp"
#include "distributed.hpp"
#include "memory.hpp"
#include "metatape/meta/checkpoint.hpp"
#include "progress.hpp"
#include "svg.hpp"

namespace metatape::tools {
namespace {

namespace fs = std::filesystem;

// The files a run writes into its directory.
constexpr const char* kRunFiles[] = {"checkpoint.bin", "metrics.jsonl", "config.json", "learning_curve.svg"};

// The metrics lines of iterations <= `last`, parsed; a torn last line (from a
// crash mid-write) is dropped.
std::vector<nlohmann::json> read_metrics(const fs::path& path, std::int64_t last) {
  std::vector<nlohmann::json> lines;
  if (!fs::exists(path)) return lines;
  std::istringstream in(meta::read_file(path.string()));
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("iteration") || !j["iteration"].is_number_integer()) continue;
    if (j["iteration"].get<std::int64_t>() <= last) lines.push_back(j);
  }
  return lines;
}

std::string join_lines(const std::vector<nlohmann::json>& lines) {
  std::string out;
  for (const auto& j : lines) out += j.dump() + "\n";
  return out;
}

// Temporaries of this run's files that writers killed mid-write left
// behind (see meta::remove_stale_temporaries), kept checkpoints' included.
void remove_stale_run_temporaries(const fs::path& dir) {
  for (const char* file : kRunFiles) meta::remove_stale_temporaries((dir / file).string());
  // A kept checkpoint's temporary is ".iteration-<N>.bin.tmp.<pid>".
  const fs::path kept_dir = dir / kKeptCheckpointDirectory;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(kept_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const std::size_t tmp = name.find(".tmp.");
    if (name.size() > 1 && name[0] == '.' && tmp != std::string::npos &&
        is_kept_checkpoint_name(name.substr(1, tmp - 1)))
      meta::remove_stale_temporaries((kept_dir / name.substr(1, tmp - 1)).string());
  }
}

// What a run leaves when it fails. A fresh run that fails before its first
// checkpoint removes the files it wrote and the directories it created; a
// run with a checkpoint (resumed, or written since) keeps it, the metrics
// and the kept checkpoints (--keep-checkpoints) up to it, so that --resume
// continues from there; a resume that fails before restoring leaves the run
// as it was. Kept checkpoints of earlier runs are never removed.
class RunOutput {
 public:
  // Creates `dir` (and missing parents) for a fresh run.
  static RunOutput fresh(const fs::path& dir) {
    RunOutput output(dir, true);
    fs::path p = fs::absolute(dir).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();  // "runs/a/"
    for (; !fs::exists(p) && p != p.parent_path(); p = p.parent_path()) output.created_dirs_.push_back(p);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) {
      output.abandon();
      throw IoError("cannot create the run directory " + dir.string() + ": " + ec.message());
    }
    return output;
  }
  // An existing run, not yet restored.
  static RunOutput existing(const fs::path& dir) { return RunOutput(dir, false); }

  void checkpointed(std::int64_t iteration) { checkpoint_ = iteration; }

  // Keeps `checkpoint` as checkpoints/iteration-<N>.bin (--keep-checkpoints),
  // remembering what it wrote so that a failure removes only that.
  void keep(const meta::Checkpoint& checkpoint) {
    const fs::path kept_dir = dir_ / kKeptCheckpointDirectory;
    if (!fs::exists(kept_dir)) {
      std::error_code ec;
      fs::create_directory(kept_dir, ec);
      if (ec) throw IoError("cannot create " + kept_dir.string() + ": " + ec.message());
      created_kept_dir_ = true;
    }
    const fs::path path = kept_dir / kept_checkpoint_name(checkpoint.iteration);
    meta::save_checkpoint(path.string(), checkpoint);
    kept_.emplace_back(path, checkpoint.iteration);
  }

  // Cleans up after a failure; says what it kept or removed ("" when it
  // touched nothing).
  std::string abandon() noexcept {
    try {
      const fs::path metrics = dir_ / "metrics.jsonl";
      std::error_code ignored;
      // Kept copies past the checkpoint --resume continues from are written again.
      for (const auto& [path, iteration] : kept_)
        if (!checkpoint_ || iteration > *checkpoint_) fs::remove(path, ignored);
      if (checkpoint_) {
        meta::write_file_atomically(metrics.string(), join_lines(read_metrics(metrics, *checkpoint_)));
        return "kept " + (dir_ / "checkpoint.bin").string() + " at iteration " + std::to_string(*checkpoint_) +
               " and the metrics up to it; --resume continues from there";
      }
      if (!fresh_) return "";
      for (const char* file : kRunFiles) fs::remove(dir_ / file, ignored);
      remove_stale_run_temporaries(dir_);
      if (created_kept_dir_) fs::remove(dir_ / kKeptCheckpointDirectory, ignored);  // only if empty
      for (const fs::path& d : created_dirs_) fs::remove(d, ignored);               // innermost first; only if empty
      return "no checkpoint was written; removed what this run wrote";
    } catch (...) {
      return "cleaning up " + dir_.string() + " failed too";
    }
  }

 private:
  RunOutput(fs::path dir, bool fresh) : dir_(std::move(dir)), fresh_(fresh) {}
  fs::path dir_;
  bool fresh_;
  std::vector<fs::path> created_dirs_;                   // innermost first
  std::optional<std::int64_t> checkpoint_;               // the last one this run can continue from
  std::vector<std::pair<fs::path, std::int64_t>> kept_;  // kept checkpoints this run wrote, with their iterations
  bool created_kept_dir_ = false;
};

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

// Iterations per second: whole above 100, else three significant digits
// (a Conv4 run does well under one).
std::string rate_text(double rate) {
  char text[32];
  std::snprintf(text, sizeof text, rate >= 100 ? "%.0f" : "%.3g", rate);
  return text;
}

std::string with_note(const std::string& message, const std::string& note) {
  return note.empty() ? message : message + "; " + note;
}

// The options whose values a failing step points to, for its message.
std::string value_options(const RunConfig& config) {
  std::string options = "--inner-lr, --outer-lr, --clip-grad-norm";
  if (config.algorithm == meta::algorithm_name(meta::Algorithm::kernel)) options += ", --kernel-time, --ridge";
  if (config.algorithm == meta::algorithm_name(meta::Algorithm::metarkhs1)) options += ", --rkhs-alpha";
  if (config.task_weighting == meta::task_weighting_name(meta::TaskWeighting::softmax))
    options += ", --weighting-temperature";
  return options;
}

// The checkpoint in `checkpoint_path`, after checking that it belongs to
// this run.
meta::Checkpoint load_resume_checkpoint(const RunConfig& config, const fs::path& checkpoint_path) {
  meta::Checkpoint checkpoint = meta::load_checkpoint(checkpoint_path.string());
  std::string difference;
  if (!config.same_run_as(RunConfig::from_checkpoint(checkpoint.config, checkpoint_path.string()), &difference))
    throw ValueError("--resume: " + checkpoint_path.string() + " belongs to a different run (" + difference + ")");
  if (checkpoint.iteration > config.iterations)
    throw ValueError("--resume: the checkpoint is at iteration " + std::to_string(checkpoint.iteration) +
                     ", past --iterations " + std::to_string(config.iterations));
  return checkpoint;
}

// Drops the metrics logged after `iteration` (the resumed run logs them again).
void drop_metrics_after(const fs::path& metrics_path, std::int64_t iteration) {
  meta::write_file_atomically(metrics_path.string(), join_lines(read_metrics(metrics_path, iteration)));
}

// The training loop, from the trainer's iteration to config.iterations;
// returns the seconds it took. Every rank steps; only the rank with an
// output (rank 0) writes, and on the iterations where it does, the ranks
// agree that the writes succeeded before going on.
double train_loop(meta::Trainer& trainer, const TrainArgs& args, const fs::path& out, RunOutput* output,
                  meta::Communicator& group) {
  const RunConfig& config = args.config;
  const fs::path checkpoint_path = out / "checkpoint.bin", metrics_path = out / "metrics.jsonl";
  const std::string config_text = config.to_json().dump();
  std::ofstream metrics;
  meta::on_every_rank(group, "start", [&] {
    if (!output) return;
    metrics.open(metrics_path, std::ios::app);
    if (!metrics) throw IoError("cannot append to " + metrics_path.string());
  });
  Progress progress(output && !args.quiet && isatty(STDERR_FILENO));
  const auto start = std::chrono::steady_clock::now();
  const std::int64_t first = trainer.iteration();
  std::int64_t last_checkpoint = first;
  set_progress(first, last_checkpoint);
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  // The series over training starts at the initial parameters.
  if (args.keep_checkpoints && first == 0)
    meta::on_every_rank(group, "iteration 0", [&] {
      if (output) output->keep(trainer.checkpoint(config_text));
    });
  while (trainer.iteration() < config.iterations) {
    meta::IterationRecord r;
    try {
      r = trainer.step();
    } catch (const ValueError& e) {
      // A step fails on values (a NaN loss, an overflowing kernel): name the
      // options that set them.
      throw ValueError(std::string(e.what()) + "; the options for them: " + value_options(config));
    }
    const bool last = r.iteration == config.iterations;
    const bool log = r.iteration % args.log_every == 0 || last;
    const bool save = (args.checkpoint_every > 0 && r.iteration % args.checkpoint_every == 0) || last;
    if (log || save)
      meta::on_every_rank(group, "iteration " + std::to_string(r.iteration), [&] {
        if (!output) return;
        if (log) {
          metrics << nlohmann::json{{"iteration", r.iteration},     {"meta_loss", r.meta_loss},
                                    {"task_losses", r.task_losses}, {"task_weights", r.task_weights},
                                    {"grad_norm", r.grad_norm},     {"time_s", elapsed()}}
                         .dump()
                  << '\n'
                  << std::flush;
          if (!metrics) throw IoError("cannot write to " + metrics_path.string());
        }
        if (save) {
          // The kept copy first: a failure between the two leaves checkpoint.bin
          // and the metrics at the previous checkpoint, and abandon() removes the copy.
          const meta::Checkpoint checkpoint = trainer.checkpoint(config_text);
          if (args.keep_checkpoints) output->keep(checkpoint);
          meta::save_checkpoint(checkpoint_path.string(), checkpoint);
          output->checkpointed(r.iteration);
        }
      });
    if (save) last_checkpoint = r.iteration;
    set_progress(r.iteration, last_checkpoint);
    const double rate = static_cast<double>(r.iteration - first) / std::max(elapsed(), 1e-9);
    progress.update(r.iteration, config.iterations, rate, r.meta_loss,
                    static_cast<double>(config.iterations - r.iteration) / std::max(rate, 1e-9));
  }
  progress.finish();
  return elapsed();
}

// Everything that must be equal on every rank for the ranks to train one
// run together: the run's configuration and the options of this command.
std::vector<std::pair<std::string, std::string>> training_fields(const TrainArgs& args) {
  std::vector<std::pair<std::string, std::string>> fields;
  const nlohmann::json config = args.config.to_json();
  for (const auto& [key, value] : config.items())
    fields.emplace_back(key, value.is_string() ? value.get<std::string>() : value.dump());
  fields.insert(fields.end(), {{"--out", args.out},
                               {"--threads", std::to_string(args.threads)},
                               {"--device", args.device},
                               {"--replay", std::to_string(args.replay)},
                               {"--reduction", args.reduction},
                               {"--resume", std::to_string(args.resume)},
                               {"--checkpoint-every", std::to_string(args.checkpoint_every)},
                               {"--log-every", std::to_string(args.log_every)},
                               {"--keep-checkpoints", std::to_string(args.keep_checkpoints)}});
  return fields;
}

// Refuses to start a run where one cannot be: --resume without a
// checkpoint, or a fresh run over another run's files.
void check_run_directory(const TrainArgs& args, const fs::path& out) {
  const fs::path checkpoint_path = out / "checkpoint.bin";
  if (args.resume) {
    if (!fs::is_directory(out))
      throw ValueError("--resume: there is no checkpoint to resume at " + checkpoint_path.string() + ": " +
                       out.string() + " is not a directory");
    if (!fs::exists(checkpoint_path))
      throw ValueError("--resume: there is no checkpoint to resume at " + checkpoint_path.string());
    return;
  }
  // A fresh run writes these names; one that is there already belongs to
  // someone else and must survive both success and failure.
  for (const char* file : kRunFiles)
    if (fs::exists(out / file))
      throw ValueError(out.string() + " already holds a run (" + file +
                       "): pass --resume to continue it, or choose another --out");
  // Kept checkpoints of another run would join this run's series.
  if (const std::vector<fs::path> kept = kept_checkpoints(out); !kept.empty())
    throw ValueError(out.string() + " already holds a run (" + kept.front().lexically_relative(out).string() +
                     "): pass --resume to continue it, or choose another --out");
}

}  // namespace

std::string kept_checkpoint_name(std::int64_t iteration) {
  char name[64];
  std::snprintf(name, sizeof name, "iteration-%010lld.bin", static_cast<long long>(iteration));
  return name;
}

bool is_kept_checkpoint_name(const std::string& name) {
  const std::string prefix = "iteration-", suffix = ".bin";
  constexpr std::size_t digits = 10;
  if (name.size() != prefix.size() + digits + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  for (std::size_t i = prefix.size(); i < prefix.size() + digits; ++i)
    if (name[i] < '0' || name[i] > '9') return false;
  return true;
}

std::vector<fs::path> kept_checkpoints(const fs::path& run_directory) {
  std::vector<fs::path> kept;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(run_directory / kKeptCheckpointDirectory, ec))
    if (is_kept_checkpoint_name(entry.path().filename().string())) kept.push_back(entry.path());
  std::sort(kept.begin(), kept.end());
  return kept;
}

int run_train(const TrainArgs& args) {
  const RunConfig& config = args.config;
  // Ranks started with different options stop here, before any of them
  // writes, naming the first option that differs.
  const std::shared_ptr<meta::Communicator> group = process_group();
  require_same_fields(*group, "the training configuration", training_fields(args));
  report_termination("train");
  // Agreed on by every rank: a data directory or the memory of one host
  // can fail one rank alone.
  std::optional<RunParts> built;
  meta::on_every_rank(*group, "start", [&] {
    built.emplace(build(config));  // validates every option first
    RunParts& parts = *built;
    check_memory(training_memory(config, parts), "this run");
    set_num_threads(static_cast<int>(args.threads));
    parts.options.device = parse_device(args.device);
    parts.options.replay = args.replay;
    // The step is split by task (and added over the task axis) whenever it
    // can be, even in one process, so that one process and N give the same bits.
    if (const std::string reason = meta::unsplittable_reason(parts.options.meta); reason.empty())
      parts.options.communicator = group;
    else if (group->size() > 1)
      throw ValueError("training over " + std::to_string(group->size()) + " processes " + reason +
                       " (run it without mpirun)");
    parts.options.reduction = meta::parse_reduction(args.reduction);
    parts.options.validate();  // before anything is written
  });
  RunParts& parts = *built;

  const fs::path out = args.out.empty() ? fs::path("runs") / config.algorithm : fs::path(args.out);
  const fs::path checkpoint_path = out / "checkpoint.bin", metrics_path = out / "metrics.jsonl";
  // Rank 0 alone writes the run's files; the others only train.
  std::optional<RunOutput> output;
  meta::on_every_rank(*group, "start", [&] {
    if (group->rank() != 0) return;
    check_run_directory(args, out);
    output.emplace(args.resume ? RunOutput::existing(out) : RunOutput::fresh(out));
  });
  const auto abandon = [&] { return output ? output->abandon() : std::string(); };
  double seconds = 0;
  std::int64_t first = 0;
  try {
    std::optional<meta::Trainer> trainer;
    std::optional<meta::Checkpoint> checkpoint;
    meta::on_every_rank(*group, "start", [&] {
      if (output) remove_stale_run_temporaries(out);
      trainer.emplace(*parts.model, parts.loss, *parts.tasks, parts.options);
      // Every rank reads the checkpoint (a file system all ranks share).
      if (args.resume) checkpoint = load_resume_checkpoint(config, checkpoint_path);
    });
    // Outside on_every_rank: with a group, restoring is itself a collective
    // (the ranks agree on each file's checks, then compare what they restored).
    if (checkpoint) trainer->restore(*checkpoint, checkpoint_path.string());
    meta::on_every_rank(*group, "start", [&] {
      if (!output) return;
      if (args.resume) {
        drop_metrics_after(metrics_path, trainer->iteration());
        output->checkpointed(trainer->iteration());
      } else {
        meta::write_file_atomically(metrics_path.string(), "");
      }
      meta::write_file_atomically((out / "config.json").string(), config.to_json().dump(2) + "\n");
    });
    first = trainer->iteration();
    seconds = train_loop(*trainer, args, out, output ? &*output : nullptr, *group);
    meta::on_every_rank(*group, "the end", [&] {
      if (output)
        write_learning_curve(out / "learning_curve.svg", read_metrics(metrics_path, config.iterations), config);
    });
  } catch (const meta::RankFailure& e) {
    if (!output) throw;  // the type tells main that another rank failed
    throw meta::RankFailure(with_note(e.what(), abandon()), e.failed_rank);
  } catch (const std::bad_alloc&) {
    throw Error(with_note("out of memory (std::bad_alloc): choose smaller sizes", abandon()));
  } catch (const std::exception& e) {
    throw Error(with_note(e.what(), abandon()));
  }
  if (!output) return 0;

  std::printf("trained %s on %s (%s%s): %s, %lld iterations (%lld this run) in %s, %s it/s\n", config.algorithm.c_str(),
              config.task.c_str(), args.device.c_str(),
              group->size() > 1 ? (", " + std::to_string(group->size()) + " processes, " + args.reduction).c_str() : "",
              parts.model->describe().c_str(), static_cast<long long>(config.iterations),
              static_cast<long long>(config.iterations - first), duration(seconds).c_str(),
              rate_text(static_cast<double>(config.iterations - first) / std::max(seconds, 1e-9)).c_str());
  std::printf("wrote %s, %s, %s and %s\n", checkpoint_path.c_str(), metrics_path.c_str(), (out / "config.json").c_str(),
              (out / "learning_curve.svg").c_str());
  if (args.keep_checkpoints)
    std::printf("%s holds %zu kept checkpoints\n", (out / kKeptCheckpointDirectory).c_str(),
                kept_checkpoints(out).size());
  return 0;
}

}  // namespace metatape::tools
