#include "metatape/meta/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace metatape::meta {
namespace {

static_assert(std::endian::native == std::endian::little, "checkpoints are little-endian; add byte swapping");

constexpr char kMagic[8] = {'M', 'T', 'T', 'P', 'C', 'K', 'P', 'T'};
constexpr std::size_t kHeaderBytes = 24, kTrailerBytes = 8;

std::uint64_t fnv1a(std::string_view bytes) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

class Writer {
 public:
  template <class T>
  void put(T value) {
    out_.append(reinterpret_cast<const char*>(&value), sizeof value);
  }
  void put_bytes(const void* data, std::size_t n) { out_.append(static_cast<const char*>(data), n); }
  void put_string(const std::string& s) {
    put<std::uint64_t>(s.size());
    put_bytes(s.data(), s.size());
  }
  void put_tensors(const std::vector<Tensor>& ts) {
    put<std::uint32_t>(static_cast<std::uint32_t>(ts.size()));
    for (const Tensor& tensor : ts) {
      const Tensor t = tensor.to(Device::cpu);  // device tensors are saved from a host copy
      put<std::uint8_t>(static_cast<std::uint8_t>(t.dtype()));
      put<std::uint8_t>(static_cast<std::uint8_t>(t.rank()));
      for (std::int64_t d : t.shape()) put<std::int64_t>(d);
      put_bytes(t.raw_data(), static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype()));
    }
  }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

// Reads the payload with a bounds check on every read; errors name the file
// and the byte offset in it.
class Reader {
 public:
  Reader(std::string_view bytes, std::size_t base, const std::string& path) : in_(bytes), base_(base), path_(path) {}

  template <class T>
  T get(const char* what) {
    T value;
    std::memcpy(&value, take(sizeof value, what), sizeof value);
    return value;
  }
  std::string get_string(const char* what) {
    const auto n = get<std::uint64_t>(what);
    const char* p = take(n, what);
    return std::string(p, n);
  }
  std::vector<Tensor> get_tensors(const char* what) {
    const auto count = get<std::uint32_t>(what);
    std::vector<Tensor> out;
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::string item = std::string(what) + " tensor " + std::to_string(i);
      const std::size_t at = pos_;
      const auto dtype = get<std::uint8_t>(item.c_str());
      const auto rank = get<std::uint8_t>(item.c_str());
      if (dtype > static_cast<std::uint8_t>(DType::i64) || rank > kMaxRank) fail(at, "bad dtype or rank in " + item);
      Shape shape;
      for (int d = 0; d < rank; ++d) {
        const auto dim = get<std::int64_t>(item.c_str());
        if (dim < 0 || dim > (std::int64_t{1} << 40)) fail(pos_ - 8, "bad dimension in " + item);
        shape.push_back(dim);
      }
      Tensor t = empty(shape, static_cast<DType>(dtype));
      const std::size_t bytes = static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype());
      std::memcpy(t.raw_data(), take(bytes, item.c_str()), bytes);
      out.push_back(std::move(t));
    }
    return out;
  }
  void expect_end() {
    if (pos_ != in_.size()) fail(pos_, std::to_string(in_.size() - pos_) + " unexpected bytes after the payload");
  }
  [[noreturn]] void fail(std::size_t at, const std::string& why) const {
    throw IoError("checkpoint " + path_ + ": " + why + " at byte " + std::to_string(base_ + at));
  }

 private:
  const char* take(std::size_t n, const char* what) {
    if (n > in_.size() - pos_) fail(pos_, std::string("the payload ends inside ") + what);
    const char* p = in_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::string_view in_;
  std::size_t base_, pos_ = 0;
  const std::string& path_;
};

std::string system_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

}  // namespace

void write_file_atomically(const std::string& path, std::string_view contents) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string temp = (dir / ("." + target.filename().string() + ".tmp." + std::to_string(getpid()))).string();
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError(system_error("cannot create", temp));
  const auto fail = [&](const std::string& what) {
    const std::string message = system_error(what, temp);
    ::close(fd);
    ::unlink(temp.c_str());
    throw IoError(message);
  };
  std::size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write");
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("cannot flush");
  if (::close(fd) != 0) {
    const std::string message = system_error("cannot close", temp);
    ::unlink(temp.c_str());
    throw IoError(message);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string message = system_error("cannot rename into place", path);
    ::unlink(temp.c_str());
    throw IoError(message);
  }
  // Make the rename itself durable.
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(system_error("cannot open", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw IoError(system_error("cannot read", path));
  return buffer.str();
}

void save_checkpoint(const std::string& path, const Checkpoint& c) {
  Writer payload;
  payload.put_string(c.config);
  payload.put<std::int64_t>(c.iteration);
  payload.put<std::uint64_t>(c.task_rng_position);
  payload.put<std::int64_t>(c.optimizer_steps);
  payload.put_tensors(c.params);
  payload.put_tensors(c.optimizer_state);

  Writer file;
  file.put_bytes(kMagic, sizeof kMagic);
  file.put<std::uint32_t>(kCheckpointVersion);
  file.put<std::uint32_t>(0);
  file.put<std::uint64_t>(payload.bytes().size());
  file.put_bytes(payload.bytes().data(), payload.bytes().size());
  file.put<std::uint64_t>(fnv1a(payload.bytes()));
  write_file_atomically(path, file.bytes());
}

Checkpoint load_checkpoint(const std::string& path) {
  const std::string bytes = read_file(path);
  const auto fail = [&](std::size_t at, const std::string& why) -> void {
    throw IoError("checkpoint " + path + ": " + why + " at byte " + std::to_string(at));
  };
  if (bytes.size() < kHeaderBytes + kTrailerBytes)
    fail(bytes.size(), "truncated: " + std::to_string(bytes.size()) + " bytes is shorter than any checkpoint");
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) fail(0, "not a metatape checkpoint (bad magic)");
  std::uint32_t version;
  std::memcpy(&version, bytes.data() + 8, 4);
  if (version == 0 || version > kCheckpointVersion)
    fail(8, "format version " + std::to_string(version) + " is not one this build reads (it reads up to " +
                std::to_string(kCheckpointVersion) + ")");
  std::uint64_t size;
  std::memcpy(&size, bytes.data() + 16, 8);
  const std::size_t expected = kHeaderBytes + size + kTrailerBytes;
  if (size > bytes.size() || expected != bytes.size())
    fail(bytes.size(), "truncated or padded: the header promises " + std::to_string(expected) +
                           " bytes, the file has " + std::to_string(bytes.size()));
  const std::string_view payload(bytes.data() + kHeaderBytes, size);
  std::uint64_t checksum;
  std::memcpy(&checksum, bytes.data() + kHeaderBytes + size, 8);
  if (checksum != fnv1a(payload)) fail(kHeaderBytes + size, "corrupt: the checksum does not match the contents");

  Reader in(payload, kHeaderBytes, path);
  Checkpoint c;
  c.config = in.get_string("the configuration");
  c.iteration = in.get<std::int64_t>("the iteration");
  c.task_rng_position = in.get<std::uint64_t>("the generator position");
  c.optimizer_steps = in.get<std::int64_t>("the optimizer step count");
  c.params = in.get_tensors("parameter");
  c.optimizer_state = in.get_tensors("optimizer state");
  in.expect_end();
  return c;
}

}  // namespace metatape::meta
