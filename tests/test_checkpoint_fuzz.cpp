// Checkpoints under attack: every truncation, every byte flipped with a few
// patterns, and fields forged with a recomputed checksum. Each mutant must
// either load to exactly the original or be refused with an IoError naming
// the file — never crash, never load as something else.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "metatape/meta/trainer.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
namespace fs = std::filesystem;
using mt::Tensor;

namespace {

constexpr std::size_t kHeader = 24, kTrailer = 8;

// The format's checksum, written out again so the test forges files without
// the code under test.
std::uint64_t fnv1a(std::string_view bytes) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

template <class T>
T read_at(const std::string& bytes, std::size_t at) {
  T value;
  std::memcpy(&value, bytes.data() + at, sizeof value);
  return value;
}

template <class T>
void write_at(std::string& bytes, std::size_t at, T value) {
  std::memcpy(bytes.data() + at, &value, sizeof value);
}

// Recomputes the version-2 checksum (header and payload) into the last 8 bytes.
std::string reseal(std::string bytes) {
  write_at<std::uint64_t>(bytes, bytes.size() - kTrailer,
                          fnv1a(std::string_view(bytes).substr(0, bytes.size() - kTrailer)));
  return bytes;
}

// Where each field of a well-formed file lies, found by walking the layout.
struct TensorAt {
  std::size_t dtype, rank, dims;
};
struct Layout {
  std::size_t iteration, rng_position, optimizer_steps;
  std::vector<TensorAt> params, state;
};

Layout walk(const std::string& bytes) {
  Layout l{};
  std::size_t pos = kHeader;
  pos += 8 + read_at<std::uint64_t>(bytes, pos);
  l.iteration = pos;
  l.rng_position = pos + 8;
  l.optimizer_steps = pos + 16;
  pos += 24;
  for (std::vector<TensorAt>* list : {&l.params, &l.state}) {
    const auto count = read_at<std::uint32_t>(bytes, pos);
    pos += 4;
    for (std::uint32_t i = 0; i < count; ++i) {
      const TensorAt t{pos, pos + 1, pos + 2};
      const auto dtype = static_cast<mt::DType>(read_at<std::uint8_t>(bytes, t.dtype));
      const int rank = read_at<std::uint8_t>(bytes, t.rank);
      std::int64_t numel = 1;
      for (int d = 0; d < rank; ++d) numel *= read_at<std::int64_t>(bytes, t.dims + 8 * static_cast<std::size_t>(d));
      pos = t.dims + 8 * static_cast<std::size_t>(rank) + static_cast<std::size_t>(numel) * mt::dtype_size(dtype);
      list->push_back(t);
    }
  }
  REQUIRE(pos == bytes.size() - kTrailer);
  return l;
}

bool same_meaning(const meta::Checkpoint& a, const meta::Checkpoint& b) {
  return a.config == b.config && a.iteration == b.iteration && a.task_rng_position == b.task_rng_position &&
         a.optimizer_steps == b.optimizer_steps && mt::testing::same_bits(a.params, b.params) &&
         mt::testing::same_bits(a.optimizer_state, b.optimizer_state);
}

// A real checkpoint of a small run: an Mlp after two Adam steps, so the
// optimiser state holds m and v for every parameter.
struct Fixture {
  meta::Mlp model{{1, 4, 1}};
  meta::SinusoidTasks tasks;
  meta::TrainOptions options;
  fs::path dir;
  std::string path, good;
  meta::Checkpoint original;

  Fixture() {
    options.meta = {.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = 0.02};
    options.meta_batch = 2;
    options.shots = 3;
    options.queries = 3;
    options.seed = 5;
    meta::Trainer trainer(model, meta::Loss::mse, tasks, options);
    for (int i = 0; i < 2; ++i) trainer.step();
    dir = fs::temp_directory_path() / ("metatape-test-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    path = (dir / "c.bin").string();
    meta::save_checkpoint(path, trainer.checkpoint(R"({"model": "mlp 1-4-1"})"));
    good = meta::read_file(path);
    original = meta::load_checkpoint(path);
  }
  ~Fixture() { fs::remove_all(dir); }

  enum class Outcome { identical, refused, wrong };
  // Loads `bytes` as a file and validates it the way `eval` and `--resume`
  // do. Any exception but IoError escapes and fails the test.
  Outcome load(const std::string& bytes, std::string* message = nullptr) const {
    {
      // Removed first: truncating a file with contents makes ext4 flush it
      // on close, seconds over thousands of mutants.
      fs::remove(path);
      std::ofstream out(path, std::ios::binary);
      out << bytes;
    }
    try {
      const meta::Checkpoint c = meta::load_checkpoint(path);
      meta::check_checkpoint_fits(c, model, options, path);
      return same_meaning(c, original) ? Outcome::identical : Outcome::wrong;
    } catch (const mt::IoError& e) {
      if (message) *message = e.what();
      return std::string(e.what()).find(path) != std::string::npos ? Outcome::refused : Outcome::wrong;
    }
  }
  std::string refusal(const std::string& bytes) const {
    std::string message;
    CHECK(load(bytes, &message) == Outcome::refused);
    return message;
  }
};

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_SUITE("checkpoint-fuzz") {
  TEST_CASE("the unmodified file loads to the state it was saved from") {
    const Fixture f;
    CHECK(f.load(f.good) == Fixture::Outcome::identical);
    CHECK(f.original.optimizer_state.size() == 2 * f.original.params.size());
    CHECK(f.original.iteration == 2);
  }

  TEST_CASE("every truncation is refused with the file named") {
    const Fixture f;
    int wrong = 0;
    for (std::size_t cut = 0; cut < f.good.size(); ++cut)
      if (f.load(f.good.substr(0, cut)) != Fixture::Outcome::refused) {
        ++wrong;
        FAIL_CHECK("truncation to " << cut << " bytes was not refused");
      }
    CHECK(wrong == 0);
  }

  TEST_CASE("every byte, flipped with each of several patterns, is caught") {
    // Every byte is covered by the checksum or checked, and FNV-1a changes
    // with any one-byte change, so no flip may load at all.
    const Fixture f;
    int loaded = 0;
    for (std::size_t at = 0; at < f.good.size(); ++at)
      for (unsigned pattern : {0x01u, 0x10u, 0x80u, 0xFFu, 0x5Au}) {
        std::string mutant = f.good;
        mutant[at] = static_cast<char>(static_cast<unsigned char>(mutant[at]) ^ pattern);
        const Fixture::Outcome outcome = f.load(mutant);
        if (outcome == Fixture::Outcome::wrong)
          FAIL_CHECK("byte " << at << " ^ " << pattern << " loaded as another state");
        loaded += outcome == Fixture::Outcome::identical;
      }
    CHECK(loaded == 0);
  }

  TEST_CASE("the reserved header bytes are checked, resealed or not") {
    const Fixture f;
    for (std::size_t at = 12; at < 16; ++at) {
      std::string mutant = f.good;
      mutant[at] = 1;
      CHECK(contains(f.refusal(mutant), "corrupt"));
      CHECK(contains(f.refusal(reseal(mutant)), "reserved header field is"));
    }
  }

  TEST_CASE("version 1 files (payload-only checksum) still load, and their header is still checked") {
    const Fixture f;
    std::string v1 = f.good;
    write_at<std::uint32_t>(v1, 8, 1);
    write_at<std::uint64_t>(v1, v1.size() - kTrailer,
                            fnv1a(std::string_view(v1).substr(kHeader, v1.size() - kHeader - kTrailer)));
    CHECK(f.load(v1) == Fixture::Outcome::identical);
    std::string reserved = v1;
    reserved[14] = 7;
    CHECK(contains(f.refusal(reserved), "reserved header field is 458752, not 0 at byte 12"));
  }

  TEST_CASE("forged counters with a valid checksum are refused with the field and the byte") {
    const Fixture f;
    const Layout l = walk(f.good);
    for (std::int64_t bad : {std::int64_t{-1}, std::numeric_limits<std::int64_t>::min()}) {
      std::string iteration = f.good;
      write_at(iteration, l.iteration, bad);
      const std::string m = f.refusal(reseal(iteration));
      CHECK(contains(m, "the iteration is " + std::to_string(bad)));
      CHECK(contains(m, "at byte " + std::to_string(l.iteration)));
      std::string steps = f.good;
      write_at(steps, l.optimizer_steps, bad);
      CHECK(contains(f.refusal(reseal(steps)), "the optimizer step count is " + std::to_string(bad)));
    }
    meta::Checkpoint negative = f.original;
    negative.iteration = -1;
    CHECK_THROWS_AS(meta::save_checkpoint(f.path, negative), mt::ValueError);
    // Well-formed, but not what the trainer writes: one optimiser step per iteration.
    std::string ahead = f.good;
    write_at<std::int64_t>(ahead, l.iteration, 1000);
    CHECK(contains(f.refusal(reseal(ahead)), "the optimizer step count 2 differs from the iteration 1000"));
  }

  TEST_CASE("forged tensor headers are refused before anything is allocated") {
    const Fixture f;
    const Layout l = walk(f.good);
    const TensorAt& first = l.params[0];
    std::string dtype = f.good;
    write_at<std::uint8_t>(dtype, first.dtype, 9);
    CHECK(contains(f.refusal(reseal(dtype)), "dtype code 9 of parameter 0"));
    std::string rank = f.good;
    write_at<std::uint8_t>(rank, first.rank, 200);
    CHECK(contains(f.refusal(reseal(rank)), "rank 200 of parameter 0"));
    for (std::int64_t dim : {std::int64_t{1} << 40, std::numeric_limits<std::int64_t>::max(), std::int64_t{-3}}) {
      INFO("dimension " << dim);
      std::string huge = f.good;
      write_at(huge, first.dims, dim);
      const std::string m = f.refusal(reseal(huge));
      CHECK(contains(m, "parameter 0"));
      CHECK(contains(m, "at byte " + std::to_string(first.dims)));
    }
    // Tensor counts: more than any model has, and more than the payload holds.
    for (const std::uint32_t bad : {0xFFFFFFFFu, 1000u}) {
      std::string count = f.good;
      write_at<std::uint32_t>(count, first.dtype - 4, bad);
      const std::string m = f.refusal(reseal(count));
      CHECK(contains(m, "parameter count " + std::to_string(bad) + " is more than"));
      CHECK(contains(m, "at byte " + std::to_string(first.dtype - 4)));
    }
    std::string config = f.good;
    write_at<std::uint64_t>(config, kHeader, std::uint64_t{1} << 63);
    CHECK(contains(f.refusal(reseal(config)), "the payload ends inside the configuration"));
  }

  TEST_CASE("an optimiser state of the wrong shape is refused naming both shapes") {
    const Fixture f;
    const Layout l = walk(f.good);
    // m of the first weight [1, 4] relabelled [4, 1]: the same bytes, so the
    // file decodes; only the comparison with the run can tell.
    std::string swapped = f.good;
    write_at<std::int64_t>(swapped, l.state[0].dims, 4);
    write_at<std::int64_t>(swapped, l.state[0].dims + 8, 1);
    const std::string m = f.refusal(reseal(swapped));
    CHECK(contains(m, "optimizer state 0 is f32 [4, 1], the run needs f32 [1, 4]"));
    // The trainer refuses it too, and is left as it was.
    const meta::Checkpoint forged = meta::load_checkpoint(f.path);
    meta::Trainer trainer(f.model, meta::Loss::mse, f.tasks, f.options);
    const meta::Checkpoint before = trainer.checkpoint(f.original.config);
    try {
      trainer.restore(forged, f.path);
      FAIL_CHECK("the trainer accepted an optimizer state of the wrong shape");
    } catch (const mt::IoError& e) {
      CHECK(contains(e.what(), "checkpoint " + f.path + ": optimizer state 0 is f32 [4, 1]"));
    }
    CHECK(same_meaning(trainer.checkpoint(f.original.config), before));
  }

  TEST_CASE("a non-finite parameter value is refused") {
    const Fixture f;
    const Layout l = walk(f.good);
    std::string nan = f.good;
    write_at(nan, l.params[1].dims + 8 + 4, std::numeric_limits<float>::quiet_NaN());  // b1[1]
    CHECK(contains(f.refusal(reseal(nan)), "parameter 1 holds a non-finite value at element 1"));
  }

  TEST_CASE("extra bytes and a lying payload size are refused") {
    const Fixture f;
    const std::size_t payload_end = f.good.size() - kTrailer;
    std::string inside = f.good;
    inside.insert(payload_end, "extra");
    write_at<std::uint64_t>(inside, 16, read_at<std::uint64_t>(inside, 16) + 5);
    CHECK(contains(f.refusal(reseal(inside)), "5 unexpected bytes after the payload"));
    CHECK(contains(f.refusal(reseal(f.good + "12345678")), "padded"));
    const auto size = read_at<std::uint64_t>(f.good, 16);
    for (std::uint64_t lie : {size - 1, size + 1, std::uint64_t{0}, ~std::uint64_t{0}, ~std::uint64_t{0} - 30}) {
      INFO("payload size " << lie);
      std::string mutant = f.good;
      write_at(mutant, 16, lie);
      const std::string m = f.refusal(reseal(mutant));
      CHECK((contains(m, "truncated") || contains(m, "padded")));
    }
  }

  TEST_CASE("a checkpoint does not fit a run of another model, algorithm or optimiser") {
    const Fixture f;
    const meta::Mlp wider({1, 8, 1});
    const auto fits = [&](const meta::Model& model, const meta::TrainOptions& options) {
      return mt::testing::throws_error<mt::IoError>(
                 [&] { meta::check_checkpoint_fits(f.original, model, options, f.path); })
          .message;
    };
    CHECK_NOTHROW(meta::check_checkpoint_fits(f.original, f.model, f.options, f.path));
    CHECK(contains(fits(wider, f.options),
                   "checkpoint " + f.path + ": parameter 0 (w1) is [1, 4], the model mlp 1-8-1 relu needs [1, 8]"));
    // A configuration forged to describe a huge model is refused from the
    // model's description, before anything of its size is allocated.
    const meta::Mlp huge({1, 1000000, 1});
    CHECK(contains(fits(huge, f.options),
                   "parameter 0 (w1) is [1, 4], the model mlp 1-1000000-1 relu needs [1, 1000000]"));
    meta::TrainOptions metasgd = f.options;
    metasgd.meta.algorithm = meta::Algorithm::metasgd;
    CHECK(contains(fits(f.model, metasgd), "holds 4 parameter tensors, the run needs 8"));
    meta::TrainOptions sgd = f.options;
    sgd.optimizer = "sgd";
    CHECK(contains(fits(f.model, sgd), "holds 8 optimizer state tensors, the run needs 0"));
    meta::TrainOptions f64 = f.options;
    f64.dtype = mt::DType::f64;
    CHECK(contains(fits(f.model, f64), "parameter 0 is f32 [1, 4], the run needs f64 [1, 4]"));
  }
}
