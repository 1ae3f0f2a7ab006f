// The IDX reader and the rotated few-shot episodes, on small files generated
// here (gzip'd with zlib and plain): nothing depends on an installed data set.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
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

using Bytes = std::vector<std::uint8_t>;

// A fresh directory, removed with its contents at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "metatape-datasets-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

Bytes idx_bytes(const std::vector<std::uint32_t>& dims, const Bytes& data) {
  Bytes out = {0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(d >> shift));
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_plain(const std::string& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

Bytes read_plain(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

void write_gz(const std::string& path, const Bytes& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty()) REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

Bytes pattern(std::size_t n) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(i * 37 + 11);
  return out;
}

// Test images: side s, the top-left corner 250 (so the rotation shows where
// it went) and the id (< 250) at the four pixels one in from the corners (a
// set every rotation keeps), 0 elsewhere.
constexpr int kMarker = 250;
void draw_image(std::uint8_t* image, std::int64_t s, int id) {
  std::fill(image, image + s * s, 0);
  image[0] = kMarker;
  for (std::int64_t r : {std::int64_t{1}, s - 2})
    for (std::int64_t c : {std::int64_t{1}, s - 2}) image[r * s + c] = static_cast<std::uint8_t>(id);
}

// per_class images of each of `labels` classes; image k of class b has id b·20 + k.
ImageDataset make_dataset(int labels, int per_class, std::int64_t s) {
  ImageDataset d;
  d.count = labels * per_class;
  d.rows = d.cols = s;
  d.pixels.resize(static_cast<std::size_t>(d.count * s * s));
  for (int k = 0; k < per_class; ++k)
    for (int b = 0; b < labels; ++b) {
      const std::int64_t i = k * labels + b;  // classes interleaved, as in real files
      d.labels.push_back(b);
      draw_image(d.pixels.data() + i * s * s, s, b * 20 + k);
    }
  return d;
}

struct Decoded {
  int base, turns, id;
};

// Reads back an image the sampler wrote (pixels/255) drawn by draw_image.
Decoded decode(const std::vector<double>& x, std::size_t offset, std::int64_t s) {
  const int id = metatape::testing::episode_pixel(x, offset, s, 1, 1);
  return {id / 20, metatape::testing::marker_turns(x, offset, s, kMarker), id};
}

}  // namespace

TEST_SUITE("datasets") {
  TEST_CASE("IDX files round-trip, gzip'd and plain") {
    TempDir dir;
    const Bytes data = pattern(3 * 4 * 5);
    for (bool gz : {false, true}) {
      const std::string path = dir.file(gz ? "images.gz" : "images");
      (gz ? write_gz : write_plain)(path, idx_bytes({3, 4, 5}, data));
      const IdxArray a = read_idx(path);
      CHECK(a.dims == std::vector<std::int64_t>{3, 4, 5});
      CHECK(a.data == data);
    }
    write_gz(dir.file("labels.gz"), idx_bytes({3}, {7, 0, 255}));
    const ImageDataset d = read_idx_images(dir.file("images.gz"), dir.file("labels.gz"));
    CHECK(d.count == 3);
    CHECK(d.rows == 4);
    CHECK(d.cols == 5);
    CHECK(d.labels == std::vector<std::int32_t>{7, 0, 255});
    CHECK(d.pixels == data);
    CHECK(d.image(2)[0] == data[40]);
  }

  TEST_CASE("rotate_image turns counterclockwise by quarter turns, exactly") {
    const Bytes in = {1, 2, 3, 4, 5, 6, 7, 8, 9};  // [[1,2,3],[4,5,6],[7,8,9]]
    const std::array<Bytes, 4> expected = {Bytes{1, 2, 3, 4, 5, 6, 7, 8, 9}, Bytes{3, 6, 9, 2, 5, 8, 1, 4, 7},
                                           Bytes{9, 8, 7, 6, 5, 4, 3, 2, 1}, Bytes{7, 4, 1, 8, 5, 2, 9, 6, 3}};
    for (int q = 0; q < 4; ++q) {
      CAPTURE(q);
      std::vector<double> out64(9);
      std::vector<float> out32(9);
      rotate_image(in.data(), 3, q, out64.data());
      rotate_image(in.data(), 3, q, out32.data());
      for (std::size_t i = 0; i < 9; ++i) {
        CHECK(out64[i] == doctest::Approx(expected[q][i] / 255.0).epsilon(1e-15));
        CHECK(out32[i] == doctest::Approx(expected[q][i] / 255.0).epsilon(1e-7));
      }
    }
  }

  TEST_CASE("episodes: shapes, balanced labels, disjoint support and query, seeded") {
    const std::int64_t s = 5, ways = 4, shots = 2, queries = 3, tasks = 3;
    auto data = std::make_shared<const ImageDataset>(make_dataset(10, 6, s));
    const RotatedImageTasks sampler(data, {.ways = ways, .base_classes = {0, 1, 2, 3, 4, 5}, .name = "test"});
    CHECK(sampler.classes() == 24);
    for (DType dtype : {DType::f32, DType::f64}) {
      Generator gen(7);
      const TaskBatch b = sampler.sample(tasks, shots, queries, gen, dtype);
      CHECK(b.support_x.shape() == Shape{tasks, ways * shots, 1, s, s});
      CHECK(b.query_x.shape() == Shape{tasks, ways * queries, 1, s, s});
      CHECK(b.support_y.shape() == Shape{tasks, ways * shots});
      CHECK(b.query_y.shape() == Shape{tasks, ways * queries});
      CHECK(b.support_x.dtype() == dtype);
      CHECK(b.support_y.dtype() == DType::i64);
      const std::vector<double> sx = b.support_x.to_vector(), qx = b.query_x.to_vector();
      const std::vector<double> sy = b.support_y.to_vector(), qy = b.query_y.to_vector();
      for (std::int64_t t = 0; t < tasks; ++t) {
        std::map<int, std::pair<int, int>> class_of_label;  // label -> (base, turns)
        std::map<int, std::set<int>> ids_of_label;
        std::map<int, int> support_count, query_count;
        const auto visit = [&](const std::vector<double>& x, const std::vector<double>& y, std::int64_t n, bool sup) {
          for (std::int64_t i = 0; i < n; ++i) {
            const int label = static_cast<int>(y[static_cast<std::size_t>(t * n + i)]);
            CHECK(label == i % ways);
            const Decoded d = decode(x, static_cast<std::size_t>((t * n + i) * s * s), s);
            REQUIRE(d.turns >= 0);
            const auto [it, fresh] = class_of_label.try_emplace(label, d.base, d.turns);
            CHECK(it->second == std::pair(d.base, d.turns));  // one class per label
            CHECK(ids_of_label[label].insert(d.id).second);   // no image twice, support and query disjoint
            (sup ? support_count : query_count)[label]++;
          }
        };
        visit(sx, sy, ways * shots, true);
        visit(qx, qy, ways * queries, false);
        std::set<std::pair<int, int>> distinct;
        for (const auto& [label, c] : class_of_label) distinct.insert(c);
        CHECK(distinct.size() == std::size_t(ways));
        for (int j = 0; j < ways; ++j) {
          CHECK(support_count[j] == shots);
          CHECK(query_count[j] == queries);
        }
      }
      Generator again(7), other(8);
      CHECK(testing::same_bits({b.support_x, b.support_y, b.query_x, b.query_y}, [&] {
        const TaskBatch c = sampler.sample(tasks, shots, queries, again, dtype);
        return std::vector<Tensor>{c.support_x, c.support_y, c.query_x, c.query_y};
      }()));
      const TaskBatch c = sampler.sample(tasks, shots, queries, other, dtype);
      CHECK_FALSE(testing::same_bits({b.support_x, b.query_x}, {c.support_x, c.query_x}));
    }
  }

  TEST_CASE("Fashion-MNIST split from generated files: no leak, every class at 4 rotations") {
    TempDir dir;
    for (const char* prefix : {"train", "t10k"}) {
      const ImageDataset d = make_dataset(10, 2, 28);
      std::vector<std::uint32_t> dims = {static_cast<std::uint32_t>(d.count), 28, 28};
      write_gz(dir.file(std::string(prefix) + "-images-idx3-ubyte.gz"), idx_bytes(dims, d.pixels));
      write_gz(dir.file(std::string(prefix) + "-labels-idx1-ubyte.gz"),
               idx_bytes({dims[0]}, Bytes(d.labels.begin(), d.labels.end())));
    }
    const auto data = load_fashion_mnist(dir.path.string());
    CHECK(data->count == 40);
    for (FewShotSplit split : {FewShotSplit::train, FewShotSplit::test}) {
      const bool train = split == FewShotSplit::train;
      const RotatedImageTasks sampler = fashion_mnist_tasks(data, {.ways = 5, .split = split});
      CHECK(sampler.classes() == (train ? 24 : 16));
      Generator gen(3);
      const TaskBatch b = sampler.sample(60, 1, 1, gen, DType::f32);
      std::set<std::pair<int, int>> seen;
      for (const Tensor& x : {b.support_x, b.query_x}) {
        const std::vector<double> v = x.to_vector();
        for (std::size_t i = 0; i < v.size() / (28 * 28); ++i) {
          const Decoded d = decode(v, i * 28 * 28, 28);
          CHECK(d.turns >= 0);
          CHECK((train ? d.base <= 5 : (d.base >= 6 && d.base <= 9)));
          seen.insert({d.base, d.turns});
        }
      }
      CHECK(seen.size() == std::size_t(train ? 24 : 16));
    }
  }

  TEST_CASE("missing files name the path (and the Debian package)") {
    TempDir dir;
    CHECK(throws_error<IoError>([&] { read_idx(dir.file("nope.gz")); }, {dir.file("nope.gz"), "no such file"}));
    CHECK(throws_error<IoError>([&] { read_idx(dir.path.string()); }, {"not a regular file"}));
    CHECK(throws_error<IoError>([&] { fashion_mnist_tasks({.directory = dir.file("none")}); },
                                {dir.file("none"), "train-images-idx3-ubyte.gz", "dataset-fashion-mnist"}));
  }

  TEST_CASE("every truncation is an IoError") {
    TempDir dir;
    const Bytes file = idx_bytes({2, 3, 3}, pattern(18));
    const std::string path = dir.file("cut");
    for (std::size_t n = 0; n < file.size(); ++n) {
      CAPTURE(n);
      write_plain(path, Bytes(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(n)));
      CHECK(throws_error<IoError>([&] { read_idx(path); }, {path}));
      write_gz(path, Bytes(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(n)));
      CHECK(throws_error<IoError>([&] { read_idx(path); }, {path, "truncated"}));
    }
    write_gz(path, file);
    const Bytes gz = read_plain(path);
    for (std::size_t n = 0; n < gz.size(); ++n) {
      CAPTURE(n);
      write_plain(path, Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(n)));
      CHECK(throws_error<IoError>([&] { read_idx(path); }, {path}));
    }
    write_gz(path, idx_bytes({2, 3, 3}, pattern(10)));
    CHECK(throws_error<IoError>([&] { read_idx(path); }, {"truncated at byte 26", "need 34"}));
  }

  TEST_CASE("flipped bytes give a valid parse or an IoError, never a crash") {
    TempDir dir;
    const Bytes file = idx_bytes({2, 2, 3}, pattern(12));
    const std::string path = dir.file("flip");
    write_gz(path, file);
    const Bytes gz = read_plain(path);
    for (const Bytes* original : {&file, &gz})
      for (std::size_t i = 0; i < original->size(); ++i)
        for (std::uint8_t x : {0x01, 0x10, 0x80, 0xff}) {
          CAPTURE(i);
          CAPTURE(int(x));
          Bytes flipped = *original;
          flipped[i] ^= x;
          write_plain(path, flipped);
          try {
            const IdxArray a = read_idx(path);
            std::size_t total = 1;
            for (std::int64_t d : a.dims) total *= static_cast<std::size_t>(d);
            CHECK(total == a.data.size());
          } catch (const IoError& e) {
            CHECK(std::string(e.what()).find(path) != std::string::npos);
          }
        }
  }

  TEST_CASE("bad magic, absurd dims, trailing data, mismatched files") {
    TempDir dir;
    const std::string path = dir.file("bad");
    write_plain(path, Bytes{0, 0, 0x09, 1, 0, 0, 0, 1, 5});
    CHECK(throws_error<IoError>([&] { read_idx(path); }, {path, "bad magic 0x00000901"}));
    // 2^31 × 2^31 images of 2^31 pixels: refused before allocating (an
    // allocation of that size would abort under the sanitizers).
    for (bool gz : {false, true}) {
      (gz ? write_gz : write_plain)(path, idx_bytes({0x80000000u, 0x80000000u, 0x80000000u}, pattern(64)));
      CHECK(throws_error<IoError>([&] { read_idx(path); }, {path, "2147483648 x 2147483648", "more than"}));
      // Within the cap but more than the file holds (a gzip file can expand
      // only 1032-fold).
      (gz ? write_gz : write_plain)(path, idx_bytes({1u << 20, 28, 28}, pattern(64)));
      CHECK(throws_error<IoError>([&] { read_idx(path); }, {path, "more than the file can hold"}));
    }
    write_plain(path, idx_bytes({2, 0, 3}, {}));
    CHECK(throws_error<IoError>([&] { read_idx(path); }, {"dimension 1 is 0"}));
    write_gz(path, idx_bytes({4}, pattern(6)));
    CHECK(throws_error<IoError>([&] { read_idx(path); }, {"trailing data after byte 12"}));

    write_gz(dir.file("images"), idx_bytes({2, 3, 3}, pattern(18)));
    write_gz(dir.file("labels"), idx_bytes({3}, {0, 1, 2}));
    CHECK(throws_error<IoError>([&] { read_idx_images(dir.file("images"), dir.file("labels")); },
                                {dir.file("labels"), "3 labels for the 2 images"}));
    CHECK(throws_error<IoError>([&] { read_idx_images(dir.file("labels"), dir.file("labels")); }, {"rank 3"}));
  }

  TEST_CASE("Fashion-MNIST checks labels and image size") {
    TempDir dir;
    ImageDataset d = make_dataset(10, 1, 28);
    d.labels[3] = 12;
    for (const char* prefix : {"train", "t10k"}) {
      write_gz(dir.file(std::string(prefix) + "-images-idx3-ubyte.gz"), idx_bytes({10, 28, 28}, d.pixels));
      write_gz(dir.file(std::string(prefix) + "-labels-idx1-ubyte.gz"),
               idx_bytes({10}, Bytes(d.labels.begin(), d.labels.end())));
    }
    CHECK(throws_error<IoError>([&] { load_fashion_mnist(dir.path.string()); }, {"label 12 at index 3"}));
    write_gz(dir.file("train-images-idx3-ubyte.gz"), idx_bytes({10, 28, 7}, Bytes(10 * 28 * 7)));
    CHECK(throws_error<IoError>([&] { load_fashion_mnist(dir.path.string()); }, {"28x7", "expected 28x28"}));
  }

  TEST_CASE("sampler arguments are checked") {
    auto data = std::make_shared<const ImageDataset>(make_dataset(3, 4, 4));
    CHECK(throws_error<ValueError>(
        [&] {
          RotatedImageTasks(data, {.ways = 13, .base_classes = {0, 1, 2}});
        },
        {"ways must be in 1..12"}));
    CHECK(throws_error<ValueError>(
        [&] {
          RotatedImageTasks(data, {.ways = 2, .base_classes = {0, 0}});
        },
        {"listed twice"}));
    CHECK(throws_error<ValueError>(
        [&] {
          RotatedImageTasks(data, {.ways = 2, .base_classes = {0, 7}});
        },
        {"base class 7 has no image"}));
    const RotatedImageTasks sampler(data, {.ways = 2, .base_classes = {0, 1, 2}});
    Generator gen(1);
    CHECK(throws_error<ValueError>([&] { sampler.sample(1, 2, 3, gen, DType::f32); }, {"exceed the 4 images"}));
    CHECK(throws_error<ValueError>([&] { sampler.sample(1, 2, INT64_MAX, gen, DType::f32); }, {"exceed"}));
    CHECK(throws_error<ValueError>([&] { sampler.sample(1, 0, 3, gen, DType::f32); }, {"at least one"}));
    CHECK(throws_error<DTypeError>([&] { sampler.sample(1, 1, 1, gen, DType::i64); }, {"f32 or f64"}));
    ImageDataset short_labels = make_dataset(3, 4, 4);
    short_labels.labels.pop_back();
    CHECK(throws_error<ValueError>(
        [&] {
          RotatedImageTasks(std::make_shared<const ImageDataset>(short_labels), {.ways = 2, .base_classes = {0}});
        },
        {"11 labels"}));
    ImageDataset wide = make_dataset(3, 4, 4);
    wide.cols = 2;
    wide.rows = 8;
    CHECK(throws_error<ValueError>(
        [&] { RotatedImageTasks(std::make_shared<const ImageDataset>(wide), {.ways = 2, .base_classes = {0}}); },
        {"square"}));
  }
}
