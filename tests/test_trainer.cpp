// The training loop's guarantees: determinism, bit-for-bit resume,
// checkpoints that refuse corruption, atomic files, the evaluation summary.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "metatape/meta/evaluation.hpp"
#include "metatape/meta/trainer.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
namespace fs = std::filesystem;
using mt::Tensor;

namespace {

// A fresh, empty directory for one test.
fs::path scratch_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("metatape-test-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

meta::TrainOptions small_options(meta::Algorithm algorithm = meta::Algorithm::maml) {
  meta::TrainOptions o;
  o.meta = {.algorithm = algorithm, .inner_steps = 2, .inner_lr = 0.02};
  o.meta_batch = 4;
  o.shots = 5;
  o.queries = 5;
  o.seed = 11;
  return o;
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

}  // namespace

TEST_SUITE("trainer") {
  TEST_CASE("a resumed run equals an uninterrupted one, bit for bit") {
    const meta::Mlp model({1, 16, 16, 1});
    const meta::SinusoidTasks tasks;
    for (meta::Algorithm a : {meta::Algorithm::maml, meta::Algorithm::metasgd, meta::Algorithm::reptile}) {
      INFO(std::string(meta::algorithm_name(a)));
      const fs::path dir = scratch_dir("resume");
      meta::Trainer straight(model, meta::Loss::mse, tasks, small_options(a));
      for (int i = 0; i < 12; ++i) straight.step();

      meta::Trainer first(model, meta::Loss::mse, tasks, small_options(a));
      for (int i = 0; i < 7; ++i) first.step();
      meta::save_checkpoint((dir / "c.bin").string(), first.checkpoint("{}"));
      meta::Trainer resumed(model, meta::Loss::mse, tasks, small_options(a));
      resumed.restore(meta::load_checkpoint((dir / "c.bin").string()));
      CHECK(resumed.iteration() == 7);
      for (int i = 0; i < 5; ++i) resumed.step();

      CHECK(mt::testing::same_bits(straight.params().all(), resumed.params().all()));
      CHECK(mt::testing::same_bits(straight.checkpoint("").optimizer_state, resumed.checkpoint("").optimizer_state));
      CHECK(straight.checkpoint("").task_rng_position == resumed.checkpoint("").task_rng_position);
      fs::remove_all(dir);
    }
  }

  TEST_CASE("training lowers the meta-loss, and the same seed gives the same run") {
    const meta::Mlp model({1, 16, 16, 1});
    const meta::SinusoidTasks tasks;
    meta::TrainOptions o = small_options();
    o.outer_lr = 3e-3;
    meta::Trainer a(model, meta::Loss::mse, tasks, o), b(model, meta::Loss::mse, tasks, o);
    double early = 0, late = 0;
    for (int i = 0; i < 300; ++i) {
      const auto r = a.step();
      (void)b.step();
      if (i < 30) early += r.meta_loss / 30;
      if (i >= 270) late += r.meta_loss / 30;
    }
    CHECK(late < 0.8 * early);
    CHECK(mt::testing::same_bits(a.params().all(), b.params().all()));
  }

  TEST_CASE("checkpoints round-trip every field exactly") {
    const fs::path dir = scratch_dir("roundtrip");
    mt::Generator gen(3);
    meta::Checkpoint c{
        "{\"x\": 1}",
        42,
        123456789,
        {mt::normal({3, 4}, 0, 1, gen, mt::DType::f64), mt::normal({5}, 0, 1, gen, mt::DType::f32), mt::scalar(2.5)},
        {mt::from_indices({7, -8, 9}, {3})},
        17};
    meta::save_checkpoint((dir / "c.bin").string(), c);
    const meta::Checkpoint r = meta::load_checkpoint((dir / "c.bin").string());
    CHECK(r.config == c.config);
    CHECK(r.iteration == 42);
    CHECK(r.task_rng_position == 123456789);
    CHECK(r.optimizer_steps == 17);
    CHECK(mt::testing::same_bits(r.params, c.params));
    CHECK(mt::testing::same_bits(r.optimizer_state, c.optimizer_state));
    fs::remove_all(dir);
  }

  TEST_CASE("truncated, corrupt and foreign checkpoints are refused with the file and the byte") {
    const fs::path dir = scratch_dir("corrupt");
    const std::string path = (dir / "c.bin").string();
    mt::Generator gen(4);
    meta::save_checkpoint(path, {"{}", 5, 6, {mt::normal({8}, 0, 1, gen, mt::DType::f32)}, {}, 5});
    const std::string good = meta::read_file(path);

    const auto refusal = [&](const std::string& bytes) {
      write_bytes(path, bytes);
      return mt::testing::throws_error<mt::IoError>([&] { (void)meta::load_checkpoint(path); }).message;
    };
    for (std::size_t cut : {std::size_t{0}, std::size_t{10}, std::size_t{30}, good.size() - 1}) {
      INFO("cut at " << cut);
      const std::string m = refusal(good.substr(0, cut));
      CHECK(m.find(path) != std::string::npos);
      CHECK(m.find("truncated") != std::string::npos);
      CHECK(m.find("at byte") != std::string::npos);
    }
    std::string flipped = good;
    flipped[40] = static_cast<char>(flipped[40] ^ 0x10);
    CHECK(refusal(flipped).find("corrupt: the checksum does not match") != std::string::npos);
    std::string magic = good;
    magic[0] = 'X';
    CHECK(refusal(magic).find("not a metatape checkpoint") != std::string::npos);
    std::string future = good;
    future[8] = 9;
    CHECK(refusal(future).find("format version 9") != std::string::npos);
    CHECK(refusal(good + "junk").find("padded") != std::string::npos);
    CHECK(mt::testing::throws_error<mt::IoError>([&] { (void)meta::load_checkpoint((dir / "missing.bin").string()); },
                                                 {"cannot open"}));
    fs::remove_all(dir);
  }

  TEST_CASE("atomic writes replace a file whole or leave it alone") {
    const fs::path dir = scratch_dir("atomic");
    const std::string path = (dir / "out.txt").string();
    meta::write_file_atomically(path, "first");
    meta::write_file_atomically(path, "second");
    CHECK(meta::read_file(path) == "second");
    // A target that cannot be replaced (a directory) fails cleanly: an IoError
    // naming it, no temporary file left behind.
    fs::create_directories(dir / "taken");
    CHECK(mt::testing::throws_error<mt::IoError>([&] { meta::write_file_atomically((dir / "taken").string(), "x"); },
                                                 {"taken"}));
    CHECK(mt::testing::throws_error<mt::IoError>(
        [&] { meta::write_file_atomically((dir / "no" / "such" / "dir.txt").string(), "x"); }, {"cannot create"}));
    int entries = 0;
    for (const auto& entry : fs::directory_iterator(dir)) entries += entry.path().filename().string()[0] == '.';
    CHECK(entries == 0);
    fs::remove_all(dir);
  }

  TEST_CASE("restoring a checkpoint of another model is refused") {
    const meta::Mlp small({1, 8, 1}), large({1, 16, 1});
    const meta::SinusoidTasks tasks;
    meta::Trainer a(small, meta::Loss::mse, tasks, small_options());
    meta::Trainer b(large, meta::Loss::mse, tasks, small_options());
    CHECK(mt::testing::throws_error<mt::IoError>(
        [&] { b.restore(a.checkpoint("{}"), "a.bin"); },
        {"checkpoint a.bin: parameter 0 is f32 [1, 8], the run needs f32 [1, 16]"}));
  }

  TEST_CASE("directories, devices and pipes are refused as such, without reading them") {
    const fs::path dir = scratch_dir("special");
    const auto refusal = [](const std::string& path) {
      return mt::testing::throws_error<mt::IoError>([&] { (void)meta::load_checkpoint(path); }).message;
    };
    CHECK(refusal(dir.string()).find(dir.string() + ": is a directory") != std::string::npos);
    // An endless device: refused by its kind before a byte is read.
    CHECK(refusal("/dev/zero").find("/dev/zero: is not a regular file") != std::string::npos);
    // A FIFO without a writer: open() must not wait for one.
    const std::string fifo = (dir / "fifo").string();
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(refusal(fifo).find(fifo + ": is not a regular file") != std::string::npos);
    fs::remove_all(dir);
  }

  TEST_CASE("stale temporaries of killed writers are removed, live writers' are kept") {
    const fs::path dir = scratch_dir("stale");
    const std::string path = (dir / "c.bin").string();
    // A process that has exited and been reaped: its id names no process.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) ::_exit(0);
    REQUIRE(::waitpid(child, nullptr, 0) == child);
    const auto temp = [&](const std::string& suffix) { return dir / (".c.bin.tmp." + suffix); };
    for (const std::string& suffix : {std::to_string(child), std::to_string(::getpid()), std::to_string(::getppid()),
                                      std::string("abc"), std::string("-5")})
      write_bytes(temp(suffix), "partial");
    write_bytes(dir / ".other.bin.tmp.1", "x");
    write_bytes(path, "the checkpoint");
    CHECK(meta::remove_stale_temporaries(path) == 2);
    CHECK(!fs::exists(temp(std::to_string(child))));
    CHECK(!fs::exists(temp(std::to_string(::getpid()))));  // a reused id of ours: no write is under way
    CHECK(fs::exists(temp(std::to_string(::getppid()))));  // the parent is alive and may be writing
    CHECK(fs::exists(temp("abc")));
    CHECK(fs::exists(temp("-5")));
    CHECK(fs::exists(dir / ".other.bin.tmp.1"));
    CHECK(meta::read_file(path) == "the checkpoint");
    CHECK(meta::remove_stale_temporaries((dir / "missing" / "c.bin").string()) == 0);
    fs::remove_all(dir);
  }

  TEST_CASE("a non-finite meta-loss stops training before the update, naming the iteration") {
    const meta::Mlp model({1, 8, 1});
    const meta::SinusoidTasks tasks;
    // Three good steps, then the same run with an inner rate that overflows.
    meta::Trainer good(model, meta::Loss::mse, tasks, small_options());
    for (int i = 0; i < 3; ++i) good.step();
    const meta::Checkpoint last_good = good.checkpoint("{}");
    meta::TrainOptions wild = small_options();
    wild.meta.inner_lr = 1e308;
    meta::Trainer trainer(model, meta::Loss::mse, tasks, wild);
    trainer.restore(last_good);
    const std::string m = mt::testing::throws_error<meta::NonFiniteError>([&] { trainer.step(); }).message;
    try {
      (void)trainer.step();
    } catch (const meta::NonFiniteError& e) {
      CHECK(e.iteration == 4);
    }
    CHECK(m.find("at iteration 4") != std::string::npos);
    INFO(m);
    const bool names_the_value = m.find("is nan") != std::string::npos || m.find("is inf") != std::string::npos;
    CHECK(names_the_value);
    CHECK_THROWS_AS(trainer.step(), mt::ValueError);
    // Nothing moved: parameters, optimiser state, iteration, task generator.
    const meta::Checkpoint after = trainer.checkpoint("{}");
    CHECK(trainer.iteration() == 3);
    CHECK(mt::testing::same_bits(after.params, last_good.params));
    CHECK(mt::testing::same_bits(after.optimizer_state, last_good.optimizer_state));
    CHECK(after.optimizer_steps == last_good.optimizer_steps);
    CHECK(after.task_rng_position == last_good.task_rng_position);
    // From the first iteration too.
    meta::Trainer fresh(model, meta::Loss::mse, tasks, wild);
    CHECK(mt::testing::throws_error<meta::NonFiniteError>([&] { fresh.step(); }, {"at iteration 1"}));
    CHECK(fresh.checkpoint("").optimizer_state.empty());
  }

  TEST_CASE("an update that overflows the parameters is rolled back, naming the iteration") {
    const meta::Mlp model({1, 8, 1});
    const meta::SinusoidTasks tasks;
    for (const char* optimizer : {"sgd", "adam"}) {
      INFO(optimizer);
      meta::TrainOptions options = small_options();
      options.optimizer = optimizer;
      meta::Trainer trainer(model, meta::Loss::mse, tasks, options);
      trainer.step();
      const meta::Checkpoint before = trainer.checkpoint("{}");
      // Finite loss and gradient, but θ − lr·g overflows.
      options.outer_lr = 1e308;
      meta::Trainer wild(model, meta::Loss::mse, tasks, options);
      wild.restore(before);
      CHECK(mt::testing::throws_error<meta::NonFiniteError>([&] { wild.step(); },
                                                            {"update at iteration 2", "non-finite"}));
      const meta::Checkpoint after = wild.checkpoint("{}");
      CHECK(wild.iteration() == 1);
      CHECK(mt::testing::same_bits(after.params, before.params));
      CHECK(mt::testing::same_bits(after.optimizer_state, before.optimizer_state));
      CHECK(after.optimizer_steps == before.optimizer_steps);
      CHECK(after.task_rng_position == before.task_rng_position);
    }
  }

  TEST_CASE("saving a checkpoint with a non-finite tensor is refused") {
    const meta::Mlp model({1, 8, 1});
    const meta::SinusoidTasks tasks;
    meta::Trainer trainer(model, meta::Loss::mse, tasks, small_options());
    meta::Checkpoint c = trainer.checkpoint("{}");
    c.params[1] = mt::full(c.params[1].shape(), std::numeric_limits<double>::infinity(), c.params[1].dtype());
    const fs::path dir = scratch_dir("non-finite");
    CHECK(mt::testing::throws_error<mt::ValueError>([&] { meta::save_checkpoint((dir / "c.bin").string(), c); },
                                                    {"parameter 1 holds a non-finite value at element 0"}));
    CHECK(!fs::exists(dir / "c.bin"));
    fs::remove_all(dir);
  }

  TEST_CASE("evaluation summaries: mean and a 95% interval of the mean") {
    const auto s = meta::summarize({{1.0, 2.0, 3.0, 4.0}, {2.0, 2.0, 2.0, 2.0}});
    REQUIRE(s.size() == 2);
    CHECK(s[0].mean == doctest::Approx(2.5));
    CHECK(s[0].ci95 == doctest::Approx(1.96 * std::sqrt(5.0 / 3.0) / 2.0));
    CHECK(s[1].ci95 == 0.0);
    CHECK(meta::derive_seed(1, 0) != meta::derive_seed(1, 1));
    CHECK(meta::derive_seed(1, 2) != meta::derive_seed(2, 2));
  }
}
