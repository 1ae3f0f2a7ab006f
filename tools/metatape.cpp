// metatape: meta-train and evaluate MAML and its variants from the command
// line. Argument parsing is CLI11's; every bad value gets a message and a
// non-zero exit, and nothing is left half-written.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "commands.hpp"

namespace {

using metatape::tools::EvalArgs;
using metatape::tools::TrainArgs;

void add_train_options(CLI::App& train, TrainArgs& a) {
  auto& c = a.config;
  train.add_option("--task", c.task, "Task distribution")->check(CLI::IsMember({"sinusoid"}))->capture_default_str();
  train.add_option("--model", c.model, "Model")->check(CLI::IsMember({"mlp"}))->capture_default_str();
  train.add_option("--hidden", c.hidden, "Hidden widths of the MLP, comma-separated")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  train.add_option("--activation", c.activation, "MLP activation")
      ->check(CLI::IsMember({"relu", "tanh"}))
      ->capture_default_str();
  train
      .add_option("--algorithm", c.algorithm,
                  "maml (exact second order), fomaml (first order), metasgd (learned per-parameter rates), anil "
                  "(adapt the head only), reptile, or pretrain (the no-adaptation baseline)")
      ->check(CLI::IsMember({"maml", "fomaml", "metasgd", "anil", "reptile", "pretrain"}))
      ->capture_default_str();
  train.add_flag("--lslr", c.lslr, "MAML++: learn the inner rate per layer and per step (maml, fomaml)");
  train.add_flag("--multi-step-loss", c.multi_step_loss, "MAML++: outer loss over every inner step, annealed");
  train.add_option("--msl-anneal", c.msl_anneal, "Iterations over which the multi-step weights move to the last step")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  train.add_option("--inner-steps", c.inner_steps, "Inner SGD steps during training")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  train.add_option("--inner-lr", c.inner_lr, "Inner learning rate α (the initial value when learned)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  train.add_flag("!--looped", c.task_batched,
                 "Loop over tasks instead of recording the meta-batch as one task-batched graph (same result, slower)");
  train.add_option("--meta-batch", c.meta_batch, "Tasks per meta-iteration")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  train.add_option("--shots", c.shots, "Support examples per task (K)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  train.add_option("--queries", c.queries, "Query examples per task")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  train.add_option("--iterations", c.iterations, "Meta-iterations to reach (counting those of a resumed run)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  train.add_option("--optimizer", c.optimizer, "Outer optimiser")
      ->check(CLI::IsMember({"adam", "sgd"}))
      ->capture_default_str();
  train.add_option("--outer-lr", c.outer_lr, "Outer learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  train.add_option("--clip-grad-norm", c.clip_grad_norm, "Clip the meta-gradient's global norm to this (0: off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  train.add_option("--seed", c.seed, "Seed of parameters and tasks")->capture_default_str();
  train.add_option("--dtype", c.dtype, "Floating-point type")
      ->check(CLI::IsMember({"f32", "f64"}))
      ->capture_default_str();
  train.add_option("--threads", a.threads, "Threads for the matrix products")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  train.add_option("--device", a.device, "Where to train")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  train.add_flag("--cuda-graph", a.cuda_graph,
                 "Capture the meta-gradient step as a CUDA graph and replay it (needs --device cuda)");
  train.add_option("--out", a.out, "Run directory (default runs/<algorithm>)");
  train
      .add_option("--checkpoint-every", a.checkpoint_every,
                  "Write a checkpoint every N iterations (0: only at the end)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  train.add_option("--log-every", a.log_every, "Write a metrics line every N iterations")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  train.add_flag("--resume", a.resume, "Continue the run in --out from its checkpoint, bit for bit");
  train.add_flag("--quiet", a.quiet, "No progress line, even on a terminal");
}

void add_eval_options(CLI::App& eval, EvalArgs& a) {
  eval.add_option("--checkpoint", a.checkpoint, "Checkpoint to evaluate")->required();
  eval.add_option("--baseline", a.baseline, "A second checkpoint to show beside it (e.g. the pretrained baseline)");
  eval.add_option("--baseline-inner-lr", a.baseline_inner_lr,
                  "Fine-tuning step of the baseline (default: its run's --inner-lr; Finn et al. tuned theirs)")
      ->check(CLI::PositiveNumber);
  eval.add_option("--shots", a.shots, "Support sizes K to evaluate, comma-separated (default: the run's K)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  eval.add_option("--queries", a.queries, "Query points per task (default: K)")->check(CLI::PositiveNumber);
  eval.add_option("--tasks", a.tasks, "Fresh tasks per K")->check(CLI::PositiveNumber)->capture_default_str();
  eval.add_option("--steps", a.steps, "Inner steps to evaluate after (0..steps)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  eval.add_option("--seed", a.seed, "Seed of the evaluation tasks")->capture_default_str();
  eval.add_option("--out", a.out,
                  "Where to write eval.json and mse_vs_steps.svg (default: the checkpoint's directory)");
  eval.add_option("--device", a.device, "Where to evaluate")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  eval.add_option("--threads", a.threads, "Threads for the matrix products")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "metatape: MAML with exact second-order meta-gradients, on a tape-based autodiff engine.\n"
      "Train a run, then evaluate its checkpoint against a baseline."};
  app.require_subcommand(1);
  TrainArgs train_args;
  EvalArgs eval_args;
  CLI::App* train = app.add_subcommand("train",
                                       "Meta-train; writes checkpoint.bin, metrics.jsonl, config.json and "
                                       "learning_curve.svg into the run directory");
  add_train_options(*train, train_args);
  CLI::App* eval = app.add_subcommand("eval",
                                      "Evaluate a checkpoint on fresh tasks after 0..steps inner steps; "
                                      "prints the table, writes eval.json and mse_vs_steps.svg");
  add_eval_options(*eval, eval_args);
  CLI::App* info = app.add_subcommand("info", "Print the build's backends and the devices this machine offers");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (train->parsed()) return metatape::tools::run_train(train_args);
    if (info->parsed()) return metatape::tools::run_info();
    return metatape::tools::run_eval(eval_args);
  } catch (const metatape::Error& e) {
    std::fprintf(stderr, "metatape %s: error: %s\n", app.get_subcommands().front()->get_name().c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "metatape %s: error: %s\n", app.get_subcommands().front()->get_name().c_str(), e.what());
    return 1;
  }
}
