// The Omniglot loader: the PNG tree of the standard release, decoded by
// libpng's simplified API, resized by area averaging, pooled in a fixed order
// (docs/methods.md §1).
#include <png.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "metatape/meta/datasets.hpp"

namespace metatape::meta {

namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw IoError("PNG file " + path + ": " + what);
}

[[noreturn]] void fail_tree(const std::string& path, const std::string& what) {
  throw IoError("Omniglot: " + path + ": " + what);
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// The whole file, refused before reading if it is larger than max_bytes.
std::vector<unsigned char> read_bytes(const std::string& path, std::uint64_t max_bytes) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, ec ? "cannot be examined (" + ec.message() + ")" : "no such file");
  if (!fs::is_regular_file(path, ec)) fail(path, "not a regular file");
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec) fail(path, "cannot read its size (" + ec.message() + ")");
  if (size > max_bytes)
    fail(path, std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) + " read");
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) fail(path, "cannot be opened");
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  if (size > 0 && std::fread(bytes.data(), 1, bytes.size(), f.get()) != bytes.size())
    fail(path, "cannot be read (" + std::to_string(size) + " bytes expected)");
  return bytes;
}

// Frees libpng's state on every path out (png_image_free may run twice: it
// clears the pointer it frees).
struct PngImageGuard {
  png_image image{};
  PngImageGuard() { image.version = PNG_IMAGE_VERSION; }
  ~PngImageGuard() { png_image_free(&image); }
  PngImageGuard(const PngImageGuard&) = delete;
  PngImageGuard& operator=(const PngImageGuard&) = delete;
};

// overlap[o] lists (source index, overlap) for output o of a 1-D area resize
// from n to s: in units of 1/(n·s) of the source, output o covers
// [o·n, (o+1)·n) and source i covers [i·s, (i+1)·s), so overlaps are integers
// that sum to n for every o.
std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> overlaps(std::int64_t n, std::int64_t s) {
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> out(static_cast<std::size_t>(s));
  for (std::int64_t o = 0; o < s; ++o) {
    const std::int64_t lo = o * n, hi = (o + 1) * n;
    for (std::int64_t i = lo / s; i < n && i * s < hi; ++i) {
      const std::int64_t overlap = std::min(hi, (i + 1) * s) - std::max(lo, i * s);
      if (overlap > 0) out[static_cast<std::size_t>(o)].emplace_back(i, overlap);
    }
  }
  return out;
}

// Sub-directories of dir (symbolic links followed), sorted by name.
std::vector<fs::path> sorted_subdirectories(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) out.push_back(it->path());
  if (ec) fail_tree(dir.string(), "cannot be listed (" + ec.message() + ")");
  std::sort(out.begin(), out.end());
  return out;
}

// The .png files of a character folder, sorted by name.
std::vector<fs::path> sorted_pngs(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".png" && !it->is_directory(ec)) out.push_back(it->path());
  if (ec) fail_tree(dir.string(), "cannot be listed (" + ec.message() + ")");
  if (out.empty()) fail_tree(dir.string(), "a character folder with no .png drawing");
  std::sort(out.begin(), out.end());
  return out;
}

constexpr const char* kOmniglotSets[] = {"images_background", "images_evaluation"};

}  // namespace

GreyImage read_png_grey(const std::string& path, std::int64_t max_side) {
  if (max_side < 1 || max_side > kPngLargestSide)
    throw ValueError("read_png_grey: max_side must be in 1.." + std::to_string(kPngLargestSide) + ", got " +
                     std::to_string(max_side) + " (for " + path + ")");
  const std::vector<unsigned char> bytes = read_bytes(path, kPngMaxFileBytes);
  PngImageGuard guard;
  png_image& image = guard.image;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()))
    fail(path, std::string("libpng: ") + image.message);
  // Bounded memory: the size comes from the header, checked before the
  // pixels are allocated.
  if (image.width < 1 || image.height < 1 || image.width > static_cast<std::uint64_t>(max_side) ||
      image.height > static_cast<std::uint64_t>(max_side))
    fail(path, "declares " + std::to_string(image.width) + "x" + std::to_string(image.height) + " pixels, outside 1.." +
                   std::to_string(max_side) + " per side");
  image.format = PNG_FORMAT_GRAY;
  GreyImage out;
  out.rows = image.height;
  out.cols = image.width;
  // Transparency is composited onto what the buffer holds: white paper.
  out.pixels.assign(PNG_IMAGE_SIZE(image), 255);
  if (!png_image_finish_read(&image, nullptr, out.pixels.data(), 0, nullptr))
    fail(path, std::string("libpng: ") + image.message);
  // libpng stops after the image data, so a file cut in its last chunk would
  // pass: a PNG ends with IEND, which is always these 12 bytes.
  static constexpr unsigned char kIend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
  if (bytes.size() < sizeof kIend || !std::equal(std::begin(kIend), std::end(kIend), bytes.end() - sizeof kIend))
    fail(path, "truncated or followed by other data: the file does not end with the IEND chunk");
  return out;
}

void resize_area(const std::uint8_t* in, std::int64_t rows, std::int64_t cols, std::int64_t size, std::uint8_t* out) {
  for (std::int64_t v : {rows, cols, size})
    if (v < 1 || v > kPngMaxSide)
      throw ValueError("resize_area: sides must be in 1.." + std::to_string(kPngMaxSide) + ", got " +
                       std::to_string(rows) + "x" + std::to_string(cols) + " to " + std::to_string(size));
  const auto row_weights = overlaps(rows, size), col_weights = overlaps(cols, size);
  // Rows first: tmp[o][j] = Σ_i overlap(o, i) · in[i][j] (at most 255 · rows).
  std::vector<std::uint64_t> tmp(static_cast<std::size_t>(size * cols), 0);
  for (std::int64_t o = 0; o < size; ++o)
    for (const auto& [i, w] : row_weights[static_cast<std::size_t>(o)])
      for (std::int64_t j = 0; j < cols; ++j)
        tmp[static_cast<std::size_t>(o * cols + j)] += static_cast<std::uint64_t>(w) * in[i * cols + j];
  // Then columns; the weights of an output pixel sum to rows · cols.
  const std::uint64_t total = static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols);
  for (std::int64_t o = 0; o < size; ++o)
    for (std::int64_t p = 0; p < size; ++p) {
      std::uint64_t sum = 0;
      for (const auto& [j, w] : col_weights[static_cast<std::size_t>(p)])
        sum += static_cast<std::uint64_t>(w) * tmp[static_cast<std::size_t>(o * cols + j)];
      out[o * size + p] = static_cast<std::uint8_t>((2 * sum + total) / (2 * total));
    }
}

std::vector<std::string> omniglot_characters(const std::string& directory) {
  std::error_code ec;
  if (!fs::is_directory(directory, ec))
    fail_tree(directory, fs::exists(directory, ec) ? "not a directory"
                                                   : "no such directory (the Omniglot release, holding "
                                                     "images_background and images_evaluation)");
  std::vector<std::string> out;
  for (const char* set : kOmniglotSets) {
    const fs::path root = fs::path(directory) / set;
    if (!fs::is_directory(root, ec))
      fail_tree(root.string(), "missing (Omniglot's " + std::string(set) + " folder, unzipped from " + set + ".zip)");
    const std::vector<fs::path> alphabets = sorted_subdirectories(root);
    if (alphabets.empty()) fail_tree(root.string(), "holds no alphabet folder");
    for (const fs::path& alphabet : alphabets) {
      const std::vector<fs::path> characters = sorted_subdirectories(alphabet);
      if (characters.empty()) fail_tree(alphabet.string(), "an alphabet folder with no character folder");
      for (const fs::path& c : characters) out.push_back(c.string());
    }
  }
  return out;
}

std::shared_ptr<const ImageDataset> load_omniglot(const std::string& directory, std::int64_t image_size) {
  if (image_size < 1 || image_size > kPngMaxSide)
    throw ValueError("load_omniglot: image_size must be in 1.." + std::to_string(kPngMaxSide) + ", got " +
                     std::to_string(image_size));
  const std::vector<std::string> characters = omniglot_characters(directory);
  auto data = std::make_shared<ImageDataset>();
  data->rows = data->cols = image_size;
  const std::size_t pixels = static_cast<std::size_t>(image_size * image_size);
  for (std::size_t c = 0; c < characters.size(); ++c)
    for (const fs::path& file : sorted_pngs(characters[c])) {
      const GreyImage grey = read_png_grey(file.string());
      if (grey.rows != grey.cols)
        fail(file.string(), "is " + std::to_string(grey.cols) + "x" + std::to_string(grey.rows) +
                                " pixels, expected a square drawing (Omniglot's are 105x105)");
      data->pixels.resize(data->pixels.size() + pixels);
      std::uint8_t* out = data->pixels.data() + data->pixels.size() - pixels;
      resize_area(grey.pixels.data(), grey.rows, grey.cols, image_size, out);
      // Ink (black, 0) becomes 255: ink is 1 after the episodes' 1/255.
      for (std::size_t i = 0; i < pixels; ++i) out[i] = static_cast<std::uint8_t>(255 - out[i]);
      data->labels.push_back(static_cast<std::int32_t>(c));
      ++data->count;
    }
  return data;
}

std::vector<std::int64_t> omniglot_base_classes(FewShotSplit split, std::int64_t characters,
                                                std::int64_t train_characters) {
  if (train_characters < 1 || train_characters >= characters)
    throw ValueError("Omniglot: the split meta-trains on the first " + std::to_string(train_characters) +
                     " characters and meta-tests on the rest, so it needs more than " +
                     std::to_string(train_characters) + " characters (and at least 1 for training); found " +
                     std::to_string(characters) +
                     " (a partial tree? the full release has 1623: 964 in images_background, 659 in "
                     "images_evaluation)");
  std::vector<std::int64_t> out;
  const bool train = split == FewShotSplit::train;
  for (std::int64_t c = train ? 0 : train_characters; c < (train ? train_characters : characters); ++c)
    out.push_back(c);
  return out;
}

RotatedImageTasks omniglot_tasks(std::shared_ptr<const ImageDataset> data, const OmniglotOptions& options) {
  if (!data) throw ValueError("omniglot_tasks: no data set");
  std::int64_t characters = 0;
  for (std::int32_t label : data->labels) characters = std::max<std::int64_t>(characters, std::int64_t{label} + 1);
  const bool train = options.split == FewShotSplit::train;
  return RotatedImageTasks(std::move(data),
                           {.ways = options.ways,
                            .base_classes = omniglot_base_classes(options.split, characters, options.train_characters),
                            .name = train ? "omniglot train" : "omniglot test"});
}

RotatedImageTasks omniglot_tasks(const OmniglotOptions& options) {
  return omniglot_tasks(load_omniglot(options.directory, options.image_size), options);
}

}  // namespace metatape::meta
