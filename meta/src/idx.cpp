// The IDX reader: files of unsigned bytes, gzip'd or plain, read through
// zlib (gzread passes plain files through unchanged).
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "metatape/meta/datasets.hpp"

namespace metatape::meta {

namespace {

// Deflate cannot compress better than 1032:1, so a gzip file of n bytes never
// decompresses to more than this many (the header and trailer only lower it).
constexpr std::uint64_t kDeflateMaxRatio = 1032;
constexpr int kMaxRank = 4;

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzHandle = std::unique_ptr<gzFile_s, GzCloser>;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw IoError("IDX file " + path + ": " + what);
}

// Reads up to n bytes; fewer only at the end of the data. A gzip error
// (corrupt data, bad checksum, stream cut short) is an IoError.
std::uint64_t read_some(gzFile f, std::uint8_t* out, std::uint64_t n, std::uint64_t offset, const std::string& path) {
  std::uint64_t done = 0;
  while (done < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::uint64_t>(n - done, 1u << 24));
    const int got = gzread(f, out + done, chunk);
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(f, &code);
      fail(path, "corrupt gzip data after byte " + std::to_string(offset + done) + " (" + message + ")");
    }
    if (got == 0) break;
    done += static_cast<std::uint64_t>(got);
  }
  // zlib reports a stream cut short (no trailer) as an error after a short read.
  int code = Z_OK;
  const char* message = gzerror(f, &code);
  if (code != Z_OK && code != Z_STREAM_END)
    fail(path, "corrupt gzip data after byte " + std::to_string(offset + done) + " (" + message + ")");
  return done;
}

std::uint32_t big_endian(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// The largest data size the file can hold, from its size on disk.
std::uint64_t capacity(const std::string& path, std::uint64_t file_size, std::uint64_t header) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(path, "cannot be opened");
  unsigned char magic[2] = {0, 0};
  const std::size_t got = std::fread(magic, 1, 2, f);
  std::fclose(f);
  const bool gzip = got == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  if (gzip) return file_size * kDeflateMaxRatio;
  return file_size >= header ? file_size - header : 0;
}

}  // namespace

IdxArray read_idx(const std::string& path, std::uint64_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail(path, "no such file");
  if (!std::filesystem::is_regular_file(path, ec)) fail(path, "not a regular file");
  const std::uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot read its size (" + ec.message() + ")");

  GzHandle f(gzopen(path.c_str(), "rb"));
  if (!f) fail(path, "cannot be opened");
  gzbuffer(f.get(), 1u << 17);

  std::uint8_t head[4 + 4 * kMaxRank];
  if (read_some(f.get(), head, 4, 0, path) < 4) fail(path, "truncated in the header (at byte < 4)");
  const std::uint32_t magic = big_endian(head);
  const int rank = head[3];
  if (head[0] != 0 || head[1] != 0 || head[2] != 0x08 || rank < 1 || rank > kMaxRank)
    fail(path, "bad magic " + hex(magic) + " (expected 0x000008NN: unsigned bytes of rank NN in 1.." +
                   std::to_string(kMaxRank) + ")");
  const std::uint64_t header = 4 + 4 * static_cast<std::uint64_t>(rank);
  const std::uint64_t got_dims = read_some(f.get(), head + 4, header - 4, 4, path);
  if (got_dims < header - 4) fail(path, "truncated at byte " + std::to_string(4 + got_dims) + " in the header");

  // Bound the product before allocating: each factor is below 2^32 and the
  // running product is checked against the cap at every step, so it never
  // overflows.
  const std::uint64_t limit = std::min(max_bytes, capacity(path, file_size, header));
  IdxArray out;
  std::uint64_t total = 1;
  std::string dims_text;
  for (int d = 0; d < rank; ++d) {
    const std::uint32_t n = big_endian(head + 4 + 4 * d);
    out.dims.push_back(n);
    dims_text += (d ? " x " : "") + std::to_string(n);
    if (n == 0) fail(path, "dimension " + std::to_string(d) + " is 0 (dims " + dims_text + ")");
    total = total > max_bytes ? total : total * n;  // stays below 2^31 · 2^32
  }
  if (total > limit)
    fail(path, "dims " + dims_text + " need " +
                   (total > max_bytes ? "more than " + std::to_string(max_bytes) : std::to_string(total)) +
                   " bytes, more than the file can hold (" + std::to_string(limit) + " bytes)");

  out.data.resize(total);
  const std::uint64_t got = read_some(f.get(), out.data.data(), total, header, path);
  if (got < total)
    fail(path, "truncated at byte " + std::to_string(header + got) + " (dims " + dims_text + " need " +
                   std::to_string(header + total) + ")");
  std::uint8_t extra = 0;
  if (read_some(f.get(), &extra, 1, header + total, path) != 0)
    fail(path, "trailing data after byte " + std::to_string(header + total) + " (dims " + dims_text + ")");
  return out;
}

ImageDataset read_idx_images(const std::string& images_path, const std::string& labels_path) {
  IdxArray images = read_idx(images_path);
  if (images.dims.size() != 3)
    fail(images_path, "images must have rank 3 (count, rows, cols), got rank " + std::to_string(images.dims.size()));
  IdxArray labels = read_idx(labels_path);
  if (labels.dims.size() != 1)
    fail(labels_path, "labels must have rank 1, got rank " + std::to_string(labels.dims.size()));
  if (labels.dims[0] != images.dims[0])
    fail(labels_path, std::to_string(labels.dims[0]) + " labels for the " + std::to_string(images.dims[0]) +
                          " images of " + images_path);
  ImageDataset out;
  out.count = images.dims[0];
  out.rows = images.dims[1];
  out.cols = images.dims[2];
  out.pixels = std::move(images.data);
  out.labels.assign(labels.data.begin(), labels.data.end());
  return out;
}

void ImageDataset::append(const ImageDataset& other) {
  if (count > 0 && other.count > 0 && (other.rows != rows || other.cols != cols))
    throw ShapeError("ImageDataset::append: images of " + std::to_string(other.rows) + "x" +
                     std::to_string(other.cols) + " onto images of " + std::to_string(rows) + "x" +
                     std::to_string(cols));
  if (count == 0) {
    rows = other.rows;
    cols = other.cols;
  }
  pixels.insert(pixels.end(), other.pixels.begin(), other.pixels.end());
  labels.insert(labels.end(), other.labels.begin(), other.labels.end());
  count += other.count;
}

}  // namespace metatape::meta
