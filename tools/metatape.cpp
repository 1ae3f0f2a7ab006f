// metatape: meta-train and evaluate MAML and its variants from the command
// line. CLI11 splits the arguments; the option tables (option_tables.cpp)
// read and check the values. Every bad value gets a message naming the
// option and what it accepts, and a non-zero exit; nothing is left
// half-written.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <new>

#include "commands.hpp"
#include "distributed.hpp"

namespace {

using namespace metatape::tools;

// The subcommand a failed parse was for, for the message; "" before one.
std::string subcommand_of(const CLI::App& app) {
  for (const CLI::App* sub : app.get_subcommands()) return " " + sub->get_name();
  return "";
}

// CLI11 says only "A subcommand is required" for `metatape frobnicate` or
// `metatape --frobnicate`: name the word that is not a command.
int unknown_subcommand(const CLI::App& app, int argc, char** argv) {
  if (argc < 2) return -1;
  std::string choices;
  for (const CLI::App* sub : app.get_subcommands({})) choices += (choices.empty() ? "" : ", ") + sub->get_name();
  std::fprintf(stderr, "metatape: unknown %s '%s'; the commands are %s\nRun with --help for more information.\n",
               argv[1][0] == '-' ? "option" : "command", argv[1], choices.c_str());
  return static_cast<int>(CLI::ExitCodes::ExtrasError);
}

// CLI11 reports a missing --checkpoint before a stray word; the stray word is
// the likelier mistake, so it is named first.
int unexpected_words(CLI::App& app) {
  const std::vector<std::string> words = app.remaining(true);
  if (words.empty()) return -1;
  std::fprintf(stderr, "metatape%s: unexpected argument '%s'\nRun with --help for more information.\n",
               subcommand_of(app).c_str(), words.front().c_str());
  return static_cast<int>(CLI::ExitCodes::ExtrasError);
}

int fail(const std::string& where, const std::string& message) {
  std::fprintf(stderr, "metatape%s%s: error: %s\n", where.c_str(), rank_label().c_str(), message.c_str());
  return 1;
}

// fail(), or, for an error this rank may be alone with among several
// processes, the same message and the end of every rank.
int fail_here(const std::string& where, const std::string& message) {
  // abort_group names the program and the rank itself.
  if (!ends_normally_after_failure()) abort_group((where.empty() ? "" : where.substr(1) + ": ") + "error: " + message);
  return fail(where, message);
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
  CLI::App* eval = app.add_subcommand("eval",
                                      "Evaluate a checkpoint on fresh tasks after 0..steps inner steps; "
                                      "prints the table, writes eval.json and mse_vs_steps.svg");
  NtkArgs ntk_args;
  CLI::App* ntk = app.add_subcommand("ntk",
                                     "Write a model's empirical NTK on fresh tasks: ntk.json (kernels, eigenvalues, "
                                     "condition numbers), ntk_heatmap.svg and ntk_spectrum.svg");
  CLI::App* info = app.add_subcommand("info", "Print the build's backends and the devices this machine offers");
  MetaNtkArgs meta_ntk_args;
  RankArchsArgs rank_args;
  CLI::App* meta_ntk = app.add_subcommand("meta-ntk",
                                          "The meta-NTK Φ of a model on a seeded meta-batch; writes meta_ntk.json "
                                          "(Φ, eigenvalues, κ with its ridge) and SVGs of Φ and its spectrum");
  AnalyzeArgs analyze_args;
  CLI::App* analyze = app.add_subcommand("analyze",
                                         "Exact against first-order meta-gradients and the Hessians' top eigenvalues "
                                         "over a run's checkpoints; writes analysis.json and SVG plots");
  CLI::App* rank = app.add_subcommand("rank-archs",
                                      "Rank candidate architectures without training by κ(Φ) and linear regions; "
                                      "prints the table, writes ranking.json");
  try {
    const auto train_added = add_options(*train, train_options(), train_args);
    const auto eval_added = add_options(*eval, eval_options(), eval_args);
    const auto ntk_added = add_options(*ntk, ntk_options(), ntk_args);
    const auto meta_ntk_added = add_options(*meta_ntk, meta_ntk_options(), meta_ntk_args);
    const auto rank_added = add_options(*rank, rank_archs_options(), rank_args);
    const auto analyze_added = add_options(*analyze, analyze_options(), analyze_args);
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);
    } catch (const CLI::ParseError& e) {
      const int status = app.get_subcommands().empty() ? unknown_subcommand(app, argc, argv) : unexpected_words(app);
      return status >= 0 ? status : app.exit(e);
    }
    if (train->parsed()) {
      apply(train_options(), train_added, train_args);
      refuse_inapplicable(train_options(), train_added, train_args);
      return run_train(train_args);
    }
    if (info->parsed()) return run_info();
    if (ntk->parsed()) {
      apply(ntk_options(), ntk_added, ntk_args);
      return run_ntk(ntk_args, given_stored(ntk_options(), ntk_added));
    }
    if (meta_ntk->parsed()) {
      apply(meta_ntk_options(), meta_ntk_added, meta_ntk_args);
      return run_meta_ntk(meta_ntk_args);
    }
    if (analyze->parsed()) {
      apply(analyze_options(), analyze_added, analyze_args);
      return run_analyze(analyze_args);
    }
    if (rank->parsed()) {
      apply(rank_archs_options(), rank_added, rank_args);
      return run_rank_archs(rank_args);
    }
    apply(eval_options(), eval_added, eval_args);
    return run_eval(eval_args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const metatape::meta::RankFailure& e) {
    // Another rank failed: rank 0 says so once for the group, the others
    // stay quiet (the failed rank gave its own message).
    return process_rank() == 0 ? fail(subcommand_of(app), e.what()) : 1;
  } catch (const std::bad_alloc&) {
    return fail_here(subcommand_of(app), "out of memory (std::bad_alloc): choose smaller sizes");
  } catch (const std::exception& e) {
    return fail_here(subcommand_of(app), e.what());
  }
}
