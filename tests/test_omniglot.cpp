// The Omniglot loader on small trees generated here (PNGs encoded by hand
// with zlib, so libpng only reads), the area resize, the split and the PNG
// reader's refusals: truncations, flipped bytes (with and without a fixed
// CRC) and absurd dimensions give an IoError naming the file, never a crash.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "meta_test_util.hpp"
#include "metatape/meta/datasets.hpp"
#include "test_util.hpp"

using namespace metatape;
using namespace metatape::meta;
using metatape::testing::throws_error;

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

// A fresh directory, removed with its contents at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "metatape-omniglot-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void put_u32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

// The CRC of the chunk whose length field starts at `at` (over type and data).
std::uint32_t chunk_crc(const Bytes& png, std::size_t at, std::uint32_t length) {
  return static_cast<std::uint32_t>(crc32(0, png.data() + at + 4, static_cast<uInt>(length + 4)));
}

void add_chunk(Bytes& png, const char* type, const Bytes& data) {
  const std::size_t at = png.size();
  put_u32(png, static_cast<std::uint32_t>(data.size()));
  png.insert(png.end(), type, type + 4);
  png.insert(png.end(), data.begin(), data.end());
  put_u32(png, chunk_crc(png, at, static_cast<std::uint32_t>(data.size())));
}

// A greyscale PNG of grey[rows·cols], bit depth 8 or 1 (a pixel is white
// when >= 128), each row unfiltered.
Bytes png_bytes(std::uint32_t cols, std::uint32_t rows, const Bytes& grey, int depth = 8) {
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Bytes ihdr;
  put_u32(ihdr, cols);
  put_u32(ihdr, rows);
  ihdr.insert(ihdr.end(), {static_cast<std::uint8_t>(depth), 0, 0, 0, 0});
  add_chunk(png, "IHDR", ihdr);
  Bytes raw;
  for (std::uint32_t r = 0; r < rows; ++r) {
    raw.push_back(0);  // filter: none
    if (depth == 8) {
      raw.insert(raw.end(), grey.begin() + r * cols, grey.begin() + (r + 1) * cols);
    } else {
      for (std::uint32_t c0 = 0; c0 < cols; c0 += 8) {
        std::uint8_t byte = 0;
        for (std::uint32_t c = c0; c < std::min(cols, c0 + 8); ++c)
          if (grey[r * cols + c] >= 128) byte |= static_cast<std::uint8_t>(0x80 >> (c - c0));
        raw.push_back(byte);
      }
    }
  }
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  Bytes z(size);
  REQUIRE(compress(z.data(), &size, raw.data(), static_cast<uLong>(raw.size())) == Z_OK);
  z.resize(size);
  add_chunk(png, "IDAT", z);
  add_chunk(png, "IEND", {});
  return png;
}

// Removes the file first: a file truncated and rewritten is flushed to disk
// on close by ext4 (auto_da_alloc), which made the fuzz test wait on the disk.
void write_file(const fs::path& path, const Bytes& bytes) {
  fs::create_directories(path.parent_path());
  fs::remove(path);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Test drawings of side s in the stored (inverted) domain, so that what the
// loader stores reads back exactly when image_size = s: the top-left corner
// 250 (to see the rotation), the character's id at the four pixels one in
// from the corners and the drawing's number at the centre 2×2 (sets every
// rotation keeps), 0 (paper) elsewhere. The file holds 255 − that.
constexpr int kMarker = 250;
Bytes drawing(std::int64_t s, int character, int number) {
  Bytes stored(static_cast<std::size_t>(s * s), 0);
  stored[0] = kMarker;
  for (std::int64_t r : {std::int64_t{1}, s - 2})
    for (std::int64_t c : {std::int64_t{1}, s - 2})
      stored[static_cast<std::size_t>(r * s + c)] = std::uint8_t(character);
  for (std::int64_t r : {s / 2 - 1, s / 2})
    for (std::int64_t c : {s / 2 - 1, s / 2}) stored[static_cast<std::size_t>(r * s + c)] = std::uint8_t(number);
  for (std::uint8_t& v : stored) v = static_cast<std::uint8_t>(255 - v);
  return stored;
}

struct Decoded {
  int character, turns, number;
};

// Reads back a drawing from an episode (pixels/255) by where the corner went.
Decoded decode(const std::vector<double>& x, std::size_t offset, std::int64_t s) {
  using metatape::testing::episode_pixel;
  return {episode_pixel(x, offset, s, 1, 1), metatape::testing::marker_turns(x, offset, s, kMarker),
          episode_pixel(x, offset, s, s / 2, s / 2)};
}

// The tree of the tests: 7 characters, in the order the loader must give
// them (images_background's alphabets by name, then images_evaluation's,
// although "Aaa" sorts before the others), `drawings` each, written in
// another order, with a file that is not a PNG beside them.
const std::vector<std::string> kCharacters = {
    "images_background/Alpha/character01", "images_background/Alpha/character02", "images_background/Beta/character01",
    "images_background/Beta/character02",  "images_background/Beta/character10",  "images_evaluation/Aaa/character01",
    "images_evaluation/Aaa/character02"};

void write_tree(const fs::path& root, std::int64_t s, int drawings) {
  for (std::size_t c = kCharacters.size(); c-- > 0;) {
    for (int k = drawings; k >= 1; --k) {
      const std::string name = "09" + std::to_string(c) + "_" + (k < 10 ? "0" : "") + std::to_string(k) + ".png";
      write_file(root / kCharacters[c] / name, png_bytes(static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(s),
                                                         drawing(s, static_cast<int>(c) + 1, k)));
    }
    write_file(root / kCharacters[c] / "notes.txt", {'h', 'i'});
  }
}

// What a truncated or corrupt file must give: a valid image or an IoError
// naming the path.
void read_or_refuse(const std::string& path) {
  try {
    const GreyImage g = read_png_grey(path);
    CHECK(g.rows >= 1);
    CHECK(g.cols >= 1);
    CHECK(g.rows <= kPngMaxSide);
    CHECK(g.cols <= kPngMaxSide);
    CHECK(g.pixels.size() == static_cast<std::size_t>(g.rows * g.cols));
  } catch (const IoError& e) {
    CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
}

// The chunk (offset of its length field, data length) holding byte i, if any.
std::pair<std::size_t, std::uint32_t> chunk_at(const Bytes& png, std::size_t i) {
  for (std::size_t at = 8; at + 12 <= png.size();) {
    const std::uint32_t length = (std::uint32_t{png[at]} << 24) | (std::uint32_t{png[at + 1]} << 16) |
                                 (std::uint32_t{png[at + 2]} << 8) | png[at + 3];
    if (i < at + 12 + length) return {at, length};
    at += 12 + length;
  }
  return {0, 0};
}

void set_crc(Bytes& png, std::size_t at, std::uint32_t length) {
  const std::uint32_t crc = chunk_crc(png, at, length);
  for (int b = 0; b < 4; ++b) png[at + 8 + length + b] = static_cast<std::uint8_t>(crc >> (24 - 8 * b));
}

}  // namespace

TEST_SUITE("omniglot") {
  TEST_CASE("read_png_grey decodes 8-bit and 1-bit greyscale exactly") {
    TempDir dir;
    const std::uint32_t cols = 13, rows = 9;  // 13 columns: a 1-bit row ends mid-byte
    Bytes grey(cols * rows);
    for (std::size_t i = 0; i < grey.size(); ++i) grey[i] = static_cast<std::uint8_t>(i * 37 + 5);
    const std::string path = (dir.path / "a.png").string();
    write_file(path, png_bytes(cols, rows, grey));
    GreyImage g = read_png_grey(path);
    CHECK(g.rows == rows);
    CHECK(g.cols == cols);
    CHECK(g.pixels == grey);
    write_file(path, png_bytes(cols, rows, grey, 1));
    g = read_png_grey(path);
    REQUIRE(g.pixels.size() == grey.size());
    for (std::size_t i = 0; i < grey.size(); ++i) CHECK(g.pixels[i] == (grey[i] >= 128 ? 255 : 0));
    for (const std::int64_t bad : {std::int64_t{0}, std::int64_t{-1}, kPngLargestSide + 1})
      CHECK(throws_error<ValueError>([&] { read_png_grey(path, bad); }, {"max_side must be in 1..16384", path}));
  }

  TEST_CASE("resize_area: constant, identity, integer factor, 105 to 28 against the area integral") {
    Bytes in(105 * 105, 77), out(28 * 28);
    resize_area(in.data(), 105, 105, 28, out.data());
    CHECK(out == Bytes(28 * 28, 77));
    for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::uint8_t>((i * 7919) % 251);
    Bytes same(105 * 105);
    resize_area(in.data(), 105, 105, 105, same.data());
    CHECK(same == in);
    // 84 -> 28: the mean of each 3×3 block, rounded.
    resize_area(in.data(), 84, 84, 28, out.data());
    for (int o = 0; o < 28; ++o)
      for (int p = 0; p < 28; ++p) {
        int sum = 0;
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) sum += in[static_cast<std::size_t>((3 * o + i) * 84 + 3 * p + j)];
        CHECK(out[static_cast<std::size_t>(o * 28 + p)] == (2 * sum + 9) / 18);
      }
    // 105 -> 28: each output pixel covers [3.75·o, 3.75·(o+1)) per axis; the
    // integral over it in doubles, to within the rounding.
    resize_area(in.data(), 105, 105, 28, out.data());
    const auto weight = [](int o, int i) {
      return std::max(0.0, std::min(3.75 * (o + 1), i + 1.0) - std::max(3.75 * o, double(i))) / 3.75;
    };
    for (int o = 0; o < 28; ++o)
      for (int p = 0; p < 28; ++p) {
        double v = 0;
        for (int i = 0; i < 105; ++i)
          for (int j = 0; j < 105; ++j) v += weight(o, i) * weight(p, j) * in[static_cast<std::size_t>(i * 105 + j)];
        CHECK(std::abs(out[static_cast<std::size_t>(o * 28 + p)] - v) <= 0.5 + 1e-9);
      }
    // A black column 3 on white: output column 0 holds 3 white columns and
    // 0.75 of the black one (255 · 3 / 3.75 = 204), column 1 a quarter of it
    // (255 · 3.5 / 3.75 = 238).
    for (int r = 0; r < 105; ++r)
      for (int c = 0; c < 105; ++c) in[static_cast<std::size_t>(r * 105 + c)] = c == 3 ? 0 : 255;
    resize_area(in.data(), 105, 105, 28, out.data());
    for (int o = 0; o < 28; ++o) {
      CHECK(out[static_cast<std::size_t>(o * 28)] == 204);
      CHECK(out[static_cast<std::size_t>(o * 28 + 1)] == 238);
      CHECK(out[static_cast<std::size_t>(o * 28 + 2)] == 255);
    }
    CHECK(throws_error<ValueError>([&] { resize_area(in.data(), 105, 105, 0, out.data()); }, {"resize_area"}));
    CHECK(throws_error<ValueError>([&] { load_omniglot("/nowhere", 0); }, {"image_size must be in 1..4096"}));
  }

  TEST_CASE("load_omniglot: sorted order, a label per character, inverted pixels, other files ignored") {
    TempDir dir;
    write_tree(dir.path, 8, 3);
    std::vector<std::string> expected;
    for (const std::string& c : kCharacters) expected.push_back((dir.path / c).string());
    CHECK(omniglot_characters(dir.path.string()) == expected);
    const auto data = load_omniglot(dir.path.string(), 8);
    REQUIRE(data->count == 21);
    CHECK(data->rows == 8);
    CHECK(data->cols == 8);
    std::vector<double> x(data->pixels.begin(), data->pixels.end());
    for (double& v : x) v /= 255;
    for (std::int64_t i = 0; i < 21; ++i) {
      CAPTURE(i);
      CHECK(data->labels[static_cast<std::size_t>(i)] == i / 3);  // drawings in name order
      const Decoded d = decode(x, static_cast<std::size_t>(i * 64), 8);
      CHECK(d.turns == 0);
      CHECK(d.character == i / 3 + 1);
      CHECK(d.number == i % 3 + 1);
    }
  }

  TEST_CASE("the split: first train_characters meta-train, no leak, 4 rotations each, seeded episodes") {
    TempDir dir;
    write_tree(dir.path, 8, 4);
    const auto data = load_omniglot(dir.path.string(), 8);
    for (FewShotSplit split : {FewShotSplit::train, FewShotSplit::test}) {
      const bool train = split == FewShotSplit::train;
      CAPTURE(train);
      const OmniglotOptions options{.ways = 3, .split = split, .train_characters = 4};
      const RotatedImageTasks sampler = omniglot_tasks(data, options);
      CHECK(sampler.classes() == (train ? 16 : 12));
      CHECK(sampler.describe().find(train ? "omniglot train" : "omniglot test") != std::string::npos);
      for (std::int64_t c = 0; c < sampler.classes(); ++c) CHECK(sampler.class_at(c).base == (train ? 0 : 4) + c / 4);
      Generator gen(11);
      const std::int64_t tasks = 40, shots = 2, queries = 1;
      const TaskBatch b = sampler.sample(tasks, shots, queries, gen, DType::f64);
      CHECK(b.support_x.shape() == Shape{tasks, 3 * shots, 1, 8, 8});
      CHECK(b.query_x.shape() == Shape{tasks, 3 * queries, 1, 8, 8});
      const std::vector<double> sx = b.support_x.to_vector(), sy = b.support_y.to_vector();
      const std::vector<double> qx = b.query_x.to_vector(), qy = b.query_y.to_vector();
      std::set<std::pair<int, int>> seen;
      for (std::int64_t t = 0; t < tasks; ++t) {
        std::map<int, std::pair<int, int>> class_of_label;
        std::map<int, std::set<int>> drawings;  // per label: no drawing twice (support and query disjoint)
        const auto visit = [&](const std::vector<double>& x, const std::vector<double>& y, std::int64_t n) {
          for (std::int64_t i = 0; i < n; ++i) {
            const int label = static_cast<int>(y[static_cast<std::size_t>(t * n + i)]);
            CHECK(label == i % 3);
            const Decoded d = decode(x, static_cast<std::size_t>((t * n + i) * 64), 8);
            REQUIRE(d.turns >= 0);
            CHECK((train ? (d.character >= 1 && d.character <= 4) : (d.character >= 5 && d.character <= 7)));
            CHECK(class_of_label.try_emplace(label, d.character, d.turns).first->second ==
                  std::pair(d.character, d.turns));
            CHECK(drawings[label].insert(d.number).second);
            seen.insert({d.character, d.turns});
          }
        };
        visit(sx, sy, 3 * shots);
        visit(qx, qy, 3 * queries);
      }
      CHECK(seen.size() == std::size_t(train ? 16 : 12));
      Generator again(11), other(12);
      CHECK(testing::same_bits({b.support_x, b.query_x, b.support_y}, [&] {
        const TaskBatch c = sampler.sample(tasks, shots, queries, again, DType::f64);
        return std::vector<Tensor>{c.support_x, c.query_x, c.support_y};
      }()));
      CHECK_FALSE(
          testing::same_bits({b.support_x}, {sampler.sample(tasks, shots, queries, other, DType::f64).support_x}));
    }
    // The loading form gives the same split.
    const RotatedImageTasks loaded = omniglot_tasks({.ways = 2,
                                                     .split = FewShotSplit::test,
                                                     .directory = dir.path.string(),
                                                     .image_size = 8,
                                                     .train_characters = 5});
    CHECK(loaded.classes() == 8);
    CHECK(loaded.class_at(0).base == 5);
  }

  TEST_CASE("105x105 drawings, 8-bit and 1-bit, are stored at 28x28, inverted") {
    TempDir dir;
    Bytes stripe(105 * 105);
    for (int r = 0; r < 105; ++r)
      for (int c = 0; c < 105; ++c) stripe[static_cast<std::size_t>(r * 105 + c)] = c == 3 ? 0 : 255;
    Bytes pattern(105 * 105);
    for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<std::uint8_t>((i * 31) % 256);
    const fs::path a = dir.path / "images_background/A/c1", b = dir.path / "images_evaluation/B/c1";
    write_file(a / "1.png", png_bytes(105, 105, stripe, 1));
    write_file(a / "2.png", png_bytes(105, 105, pattern));
    write_file(b / "1.png", png_bytes(105, 105, stripe));
    const auto data = load_omniglot(dir.path.string());
    REQUIRE(data->count == 3);
    CHECK(data->rows == 28);
    CHECK(data->labels == std::vector<std::int32_t>{0, 0, 1});
    Bytes resized(28 * 28);
    resize_area(pattern.data(), 105, 105, 28, resized.data());
    for (std::size_t i = 0; i < resized.size(); ++i) {
      CHECK(data->image(1)[i] == 255 - resized[i]);
      CHECK(data->image(0)[i] == data->image(2)[i]);  // 1-bit and 8-bit: the same drawing
    }
    for (int o = 0; o < 28; ++o) {
      CHECK(data->image(0)[o * 28] == 255 - 204);
      CHECK(data->image(0)[o * 28 + 1] == 255 - 238);
      CHECK(data->image(0)[o * 28 + 5] == 0);
    }
    const RotatedImageTasks sampler = omniglot_tasks(data, {.ways = 4, .train_characters = 1});
    Generator gen(1);
    CHECK(sampler.sample(2, 1, 1, gen).support_x.shape() == Shape{2, 4, 1, 28, 28});
  }

  TEST_CASE("the split needs more characters than it meta-trains on") {
    TempDir dir;
    write_tree(dir.path, 4, 1);
    const auto data = load_omniglot(dir.path.string(), 4);
    CHECK(throws_error<ValueError>([&] { omniglot_tasks(data, {}); },
                                   {"first 1200 characters", "found 7", "partial tree", "1623"}));
    CHECK(throws_error<ValueError>([&] { omniglot_tasks(data, {.train_characters = 7}); }, {"found 7"}));
    CHECK(throws_error<ValueError>([&] { omniglot_tasks(data, {.train_characters = 0}); }, {"at least 1"}));
    // The full release's 1,623 characters (built in memory, 2 tiny images
    // each): 4,800 and 1,692 classes, labels beyond a byte.
    ImageDataset full;
    full.count = 2 * 1623;
    full.rows = full.cols = 2;
    full.pixels.assign(static_cast<std::size_t>(full.count * 4), 0);
    for (std::int32_t c = 0; c < 1623; ++c) full.labels.insert(full.labels.end(), {c, c});
    const auto shared = std::make_shared<const ImageDataset>(std::move(full));
    const RotatedImageTasks full_train = omniglot_tasks(shared, {}),
                            full_test = omniglot_tasks(shared, {.split = FewShotSplit::test});
    CHECK(full_train.classes() == 4800);
    CHECK(full_test.classes() == 1692);
    CHECK(full_train.class_at(4799).base == 1199);
    CHECK(full_test.class_at(0).base == 1200);
    CHECK(full_test.class_at(1691).base == 1622);
    CHECK(omniglot_base_classes(FewShotSplit::test, 1623).size() == 423);
    CHECK(omniglot_base_classes(FewShotSplit::train, 1623).back() == 1199);
    CHECK(omniglot_base_classes(FewShotSplit::test, 1623).front() == 1200);
    CHECK(throws_error<ValueError>([&] { omniglot_tasks(data, {.ways = 30, .train_characters = 6}); },
                                   {"ways must be in 1..24"}));
  }

  TEST_CASE("a tree with a part missing is an IoError naming the path") {
    TempDir dir;
    const std::string root = dir.path.string();
    CHECK(throws_error<IoError>([&] { load_omniglot(root + "/none"); }, {root + "/none", "no such directory"}));
    CHECK(throws_error<IoError>([&] { omniglot_tasks({.directory = root + "/none"}); }, {root + "/none"}));
    write_tree(dir.path, 4, 1);
    fs::remove_all(dir.path / "images_evaluation");
    CHECK(throws_error<IoError>([&] { load_omniglot(root); }, {root + "/images_evaluation", "missing"}));
    write_file(dir.path / "images_evaluation", {'x'});
    CHECK(throws_error<IoError>([&] { load_omniglot(root); }, {root + "/images_evaluation", "missing"}));
    fs::remove(dir.path / "images_evaluation");
    write_tree(dir.path, 4, 1);
    fs::create_directories(dir.path / "images_background/Beta/character05");
    CHECK(
        throws_error<IoError>([&] { load_omniglot(root); }, {root + "/images_background/Beta/character05", "no .png"}));
    fs::remove_all(dir.path / "images_background/Beta");
    fs::create_directories(dir.path / "images_background/Beta");
    CHECK(
        throws_error<IoError>([&] { load_omniglot(root); }, {root + "/images_background/Beta", "no character folder"}));
    fs::remove_all(dir.path / "images_background");
    fs::create_directories(dir.path / "images_background");
    CHECK(throws_error<IoError>([&] { load_omniglot(root); }, {root + "/images_background", "no alphabet"}));
    write_file(dir.path / "file", {'x'});
    CHECK(throws_error<IoError>([&] { load_omniglot(root + "/file"); }, {root + "/file", "not a directory"}));
  }

  TEST_CASE("bad files: truncated, not square, absurd dimensions, CRC errors, too large") {
    TempDir dir;
    write_tree(dir.path, 4, 2);
    const fs::path file = dir.path / kCharacters[3] / "093_02.png";
    const std::string path = file.string();
    const Bytes good = png_bytes(4, 4, drawing(4, 4, 2));
    write_file(file, Bytes(good.begin(), good.end() - 20));
    CHECK(throws_error<IoError>([&] { load_omniglot(dir.path.string(), 4); }, {path, "libpng"}));
    write_file(file, png_bytes(4, 3, Bytes(12, 9)));
    CHECK(throws_error<IoError>([&] { load_omniglot(dir.path.string(), 4); }, {path, "4x3", "square"}));
    // IHDR says 5000 columns, rows or both, with a valid CRC: refused from
    // the header. (A 5000x5000 grey image would take 25 MB; the cap is what
    // keeps a corrupt header from asking for gigabytes.)
    Bytes huge = good;
    for (const auto& [at, message] :
         std::vector<std::pair<std::size_t, std::string>>{{16, "5000x4"}, {20, "4x5000"}, {0, "5000x5000"}}) {
      huge = good;
      for (std::size_t field : {std::size_t{16}, std::size_t{20}})
        if (at == 0 || at == field) huge[field + 2] = 0x13, huge[field + 3] = 0x88;
      set_crc(huge, 8, 13);
      write_file(file, huge);
      CHECK(throws_error<IoError>([&] { read_png_grey(path); }, {path, "declares " + message, "1..4096"}));
    }
    CHECK(throws_error<IoError>([&] { read_png_grey(path, 10000); }, {path, "libpng"}));  // no data for them
    // The same without fixing the CRC: libpng's CRC check.
    huge = good;
    huge[16 + 2] = 0x13;
    write_file(file, huge);
    CHECK(throws_error<IoError>([&] { read_png_grey(path); }, {path, "CRC"}));
    write_file(file, {});
    CHECK(throws_error<IoError>([&] { read_png_grey(path); }, {path, "libpng"}));
    // The image data whole but IEND cut, or bytes after it.
    write_file(file, Bytes(good.begin(), good.end() - 1));
    CHECK(throws_error<IoError>([&] { read_png_grey(path); }, {path, "does not end with the IEND chunk"}));
    Bytes longer = good;
    longer.push_back(0);
    write_file(file, longer);
    CHECK(throws_error<IoError>([&] { read_png_grey(path); }, {path, "does not end with the IEND chunk"}));
    write_file(file, good);
    CHECK(read_png_grey(path).pixels == drawing(4, 4, 2));
    fs::resize_file(file, kPngMaxFileBytes + 1);  // sparse: nothing written
    CHECK(throws_error<IoError>([&] { read_png_grey(path); }, {path, "more than the"}));
    CHECK(throws_error<IoError>([&] { read_png_grey(path + "x"); }, {path + "x", "no such file"}));
    CHECK(throws_error<IoError>([&] { read_png_grey(dir.path.string()); }, {"not a regular file"}));
  }

  TEST_CASE(
      "fuzz: every truncation, every byte flip (CRC fixed or not), random damage: read or refused, never a crash") {
    TempDir dir;
    const std::string path = (dir.path / "f.png").string();
    for (int depth : {8, 1}) {
      const Bytes good = png_bytes(6, 6, drawing(6, 9, 3), depth);
      for (std::size_t n = 0; n < good.size(); ++n) {
        CAPTURE(n);
        write_file(path, Bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)));
        CHECK(throws_error<IoError>([&] { read_png_grey(path); }, {path}));
      }
      for (std::size_t i = 0; i < good.size(); ++i)
        for (std::uint8_t mask : {0x01, 0x10, 0xff})
          for (bool fix_crc : {false, true}) {
            CAPTURE(i);
            CAPTURE(int(mask));
            Bytes bad = good;
            bad[i] ^= mask;
            const auto [at, length] = chunk_at(good, i);
            if (fix_crc && at > 0 && i >= at + 4 && i < at + 8 + length) set_crc(bad, at, length);
            write_file(path, bad);
            read_or_refuse(path);
          }
    }
    // Seeded random damage to a 105x105 1-bit drawing, Omniglot's format:
    // 1 to 4 bytes replaced (each touched chunk's CRC fixed half the time),
    // then possibly cut.
    Bytes stroke(105 * 105, 255);
    for (int i = 0; i < 105; ++i) stroke[static_cast<std::size_t>(i * 105 + i)] = 0;
    const Bytes good = png_bytes(105, 105, stroke, 1);
    std::mt19937 rng(5);
    for (int trial = 0; trial < 300; ++trial) {
      CAPTURE(trial);
      Bytes bad = good;
      const int flips = 1 + static_cast<int>(rng() % 4);
      const bool fix_crc = rng() % 2 == 0;
      for (int f = 0; f < flips; ++f) {
        const std::size_t i = rng() % bad.size();
        bad[i] = static_cast<std::uint8_t>(rng());
        const auto [at, length] = chunk_at(good, i);
        if (fix_crc && at > 0 && i >= at + 4 && i < at + 8 + length) set_crc(bad, at, length);
      }
      if (rng() % 4 == 0) bad.resize(rng() % bad.size());
      write_file(path, bad);
      read_or_refuse(path);
    }
  }
}
