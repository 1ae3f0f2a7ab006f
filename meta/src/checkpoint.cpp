#include "metatape/meta/checkpoint.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <sstream>

#include "fnv1a.hpp"

namespace metatape::meta {
namespace {

static_assert(std::endian::native == std::endian::little, "checkpoints are little-endian; add byte swapping");

constexpr char kMagic[8] = {'M', 'T', 'T', 'P', 'C', 'K', 'P', 'T'};
constexpr std::size_t kHeaderBytes = 24, kTrailerBytes = 8;

using detail::fnv1a;

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
// and the byte offset in it. Every size is bounded by the bytes left before
// anything is allocated.
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
  std::int64_t get_count(const char* what) {
    const std::size_t at = pos_;
    const auto value = get<std::int64_t>(what);
    if (value < 0) fail(at, std::string(what) + " is " + std::to_string(value) + ", it must be >= 0");
    return value;
  }
  std::vector<Tensor> get_tensors(const char* what) {
    const std::size_t at = pos_;
    const auto count = get<std::uint32_t>(what);
    // The smallest tensor is a dtype byte, a rank byte and one f32 scalar.
    // A count the rest of the payload cannot hold, or more tensors than any
    // model has, is refused before a handle is made for each.
    constexpr std::size_t kSmallestTensorBytes = 6, kMostTensors = std::size_t{1} << 20;
    if (count > kMostTensors || count > (in_.size() - pos_) / kSmallestTensorBytes)
      fail(at, std::string(what) + " count " + std::to_string(count) + " is more than " +
                   (count > kMostTensors ? "any model has (at most " + std::to_string(kMostTensors) + ")"
                                         : "the rest of the payload can hold"));
    std::vector<Tensor> out;
    for (std::uint32_t i = 0; i < count; ++i) out.push_back(get_tensor(std::string(what) + " " + std::to_string(i)));
    return out;
  }
  void expect_end() {
    if (pos_ != in_.size()) fail(pos_, std::to_string(in_.size() - pos_) + " unexpected bytes after the payload");
  }
  [[noreturn]] void fail(std::size_t at, const std::string& why) const {
    throw IoError("checkpoint " + path_ + ": " + why + " at byte " + std::to_string(base_ + at));
  }

 private:
  Tensor get_tensor(const std::string& item) {
    const std::size_t at = pos_;
    const auto dtype = get<std::uint8_t>(item.c_str());
    if (dtype > static_cast<std::uint8_t>(DType::i64))
      fail(at, "dtype code " + std::to_string(dtype) + " of " + item + " is none of 0 (f32), 1 (f64), 2 (i64)");
    const auto rank = get<std::uint8_t>(item.c_str());
    if (rank > kMaxRank)
      fail(at + 1,
           "rank " + std::to_string(rank) + " of " + item + " is past the largest, " + std::to_string(kMaxRank));
    const std::size_t dims_at = pos_;
    std::int64_t dims[kMaxRank] = {};
    for (int d = 0; d < rank; ++d) {
      dims[d] = get<std::int64_t>(item.c_str());
      if (dims[d] < 0)
        fail(pos_ - 8, "dimension " + std::to_string(d) + " of " + item + " is " + std::to_string(dims[d]));
    }
    const Shape shape(std::span<const std::int64_t>(dims, rank));
    check_tensor_fits_payload(shape, static_cast<DType>(dtype), item, dims_at);
    Tensor t = empty(shape, static_cast<DType>(dtype));
    const std::size_t bytes = static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype());
    std::memcpy(t.raw_data(), take(bytes, item.c_str()), bytes);
    return t;
  }
  // A tensor with elements must fit in the bytes left; one without (a zero
  // dimension) allocates nothing, but its other dimensions still bound the
  // strides computed from them.
  void check_tensor_fits_payload(const Shape& shape, DType dtype, const std::string& item, std::size_t dims_at) const {
    const std::size_t left = in_.size() - pos_;
    const bool has_zero = std::find(shape.begin(), shape.end(), 0) != shape.end();
    const std::uint64_t limit = has_zero ? (std::uint64_t{1} << 40) : left / dtype_size(dtype);
    std::uint64_t elements = 1;
    for (std::int64_t d : shape) {
      if (d == 0) continue;
      if (static_cast<std::uint64_t>(d) > limit / elements)
        fail(dims_at, item + " of " + dtype_name(dtype) + " " + shape.str() + " is larger than the " +
                          std::to_string(left) + " bytes left in the file");
      elements *= static_cast<std::uint64_t>(d);
    }
  }
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

int remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = "." + target.filename().string() + ".tmp.";
  std::error_code ec;
  fs::directory_iterator entries(dir, ec);
  if (ec) return 0;  // no directory, no temporaries
  int removed = 0;
  for (const fs::directory_entry& entry : entries) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string_view digits = std::string_view(name).substr(prefix.size());
    pid_t pid = 0;
    const auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
    if (err != std::errc() || end != digits.data() + digits.size() || digits[0] == '-') continue;  // not ours
    // kill(pid, 0) probes without signalling; EPERM means alive but not ours.
    // pid 0 would probe our own process group, so it counts as gone.
    const bool alive = pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
    if (alive && pid != ::getpid()) continue;  // another process may be writing it now
    if (::unlink(entry.path().c_str()) != 0 && errno != ENOENT)
      throw IoError(system_error("cannot remove the stale temporary", entry.path().string()));
    ++removed;
  }
  return removed;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(system_error("cannot open", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw IoError(system_error("cannot read", path));
  return buffer.str();
}

namespace {

// The index of the first NaN or infinity in a floating tensor, or -1.
std::int64_t first_non_finite(const Tensor& tensor) {
  if (!is_floating(tensor.dtype())) return -1;
  const Tensor t = tensor.to(Device::cpu);
  const auto scan = [&](const auto* p) -> std::int64_t {
    for (std::int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(static_cast<double>(p[i]))) return i;
    return -1;
  };
  return t.dtype() == DType::f32 ? scan(static_cast<const float*>(t.raw_data()))
                                 : scan(static_cast<const double*>(t.raw_data()));
}

}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& c) {
  // Never write what load_checkpoint would refuse.
  if (c.iteration < 0 || c.optimizer_steps < 0)
    throw ValueError("save_checkpoint " + path + ": the iteration (" + std::to_string(c.iteration) +
                     ") and the optimizer step count (" + std::to_string(c.optimizer_steps) + ") must be >= 0");
  for (const auto* list : {&c.params, &c.optimizer_state})
    for (std::size_t i = 0; i < list->size(); ++i)
      if (const std::int64_t at = first_non_finite((*list)[i]); at >= 0)
        throw ValueError("save_checkpoint " + path + ": " + (list == &c.params ? "parameter " : "optimizer state ") +
                         std::to_string(i) + " holds a non-finite value at element " + std::to_string(at));
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
  file.put<std::uint64_t>(fnv1a(file.bytes()));
  write_file_atomically(path, file.bytes());
}

namespace {

// A regular file open for reading, its size measured before any read (a
// device or a pipe may never end, so anything else is refused). O_NONBLOCK
// keeps open() itself from waiting on a FIFO.
class RegularFile {
 public:
  explicit RegularFile(const std::string& path)
      : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)) {
    if (fd_ < 0) throw IoError(system_error("cannot open", path));
    struct stat st {};
    std::string refusal;
    if (::fstat(fd_, &st) != 0)
      refusal = system_error("cannot inspect", path);
    else if (S_ISDIR(st.st_mode))
      refusal = "checkpoint " + path + ": is a directory, not a checkpoint file";
    else if (!S_ISREG(st.st_mode))
      refusal = "checkpoint " + path + ": is not a regular file (a device, pipe or socket), not a checkpoint file";
    if (!refusal.empty()) {
      ::close(fd_);
      throw IoError(refusal);
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  ~RegularFile() { ::close(fd_); }

  std::uint64_t size() const { return size_; }
  // Reads exactly `n` more bytes; false if the file ends first (it shrank
  // after it was measured).
  bool read_exactly(char* out, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const ssize_t got = ::read(fd_, out + done, n - done);
      if (got < 0) {
        if (errno == EINTR) continue;
        throw IoError(system_error("cannot read", path_));
      }
      if (got == 0) return false;
      done += static_cast<std::size_t>(got);
    }
    return true;
  }

 private:
  const std::string& path_;
  int fd_;
  std::uint64_t size_ = 0;
};

// Checks the header against itself and against the file's size; returns the
// format version.
std::uint32_t check_header(const char* header, std::uint64_t file_size, const std::string& path) {
  const auto fail = [&](std::size_t at, const std::string& why) {
    throw IoError("checkpoint " + path + ": " + why + " at byte " + std::to_string(at));
  };
  if (std::memcmp(header, kMagic, sizeof kMagic) != 0) fail(0, "not a metatape checkpoint (bad magic)");
  std::uint32_t version, reserved;
  std::memcpy(&version, header + 8, 4);
  std::memcpy(&reserved, header + 12, 4);
  std::uint64_t size;
  std::memcpy(&size, header + 16, 8);
  if (version == 0 || version > kCheckpointVersion)
    fail(8, "format version " + std::to_string(version) + " is not one this build reads (it reads 1 to " +
                std::to_string(kCheckpointVersion) + ")");
  if (reserved != 0) fail(12, "corrupt: the reserved header field is " + std::to_string(reserved) + ", not 0");
  const std::uint64_t room = file_size - kHeaderBytes - kTrailerBytes;
  if (size > room)
    fail(file_size, "truncated: the header promises a payload of " + std::to_string(size) + " bytes, the file has " +
                        std::to_string(room) + " (" + std::to_string(file_size) + " bytes in all)");
  if (size < room)
    fail(kHeaderBytes + size + kTrailerBytes, "padded: " + std::to_string(room - size) +
                                                  " bytes after the checksum (the header promises a payload of " +
                                                  std::to_string(size) + " bytes)");
  return version;
}

Checkpoint decode_payload(std::string_view payload, const std::string& path) {
  Reader in(payload, kHeaderBytes, path);
  Checkpoint c;
  c.config = in.get_string("the configuration");
  c.iteration = in.get_count("the iteration");
  c.task_rng_position = in.get<std::uint64_t>("the generator position");
  c.optimizer_steps = in.get_count("the optimizer step count");
  c.params = in.get_tensors("parameter");
  c.optimizer_state = in.get_tensors("optimizer state");
  in.expect_end();
  return c;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  RegularFile file(path);
  const std::uint64_t file_size = file.size();
  if (file_size < kHeaderBytes + kTrailerBytes)
    throw IoError("checkpoint " + path + ": truncated: " + std::to_string(file_size) +
                  " bytes is shorter than any checkpoint at byte " + std::to_string(file_size));
  std::string bytes(kHeaderBytes, '\0');
  const auto shrank = [&] {
    return IoError("checkpoint " + path + ": truncated: the file shrank while it was read (" +
                   std::to_string(file_size) + " bytes when opened)");
  };
  if (!file.read_exactly(bytes.data(), kHeaderBytes)) throw shrank();
  const std::uint32_t version = check_header(bytes.data(), file_size, path);
  try {
    bytes.resize(file_size);
  } catch (const std::exception&) {  // bad_alloc or length_error: a huge (sparse) file with a valid header
    throw IoError("checkpoint " + path + ": its " + std::to_string(file_size) + " bytes do not fit in memory");
  }
  if (!file.read_exactly(bytes.data() + kHeaderBytes, file_size - kHeaderBytes)) throw shrank();

  const std::size_t payload_end = file_size - kTrailerBytes;
  // Version 1 summed the payload alone; its header is fully checked above.
  const std::string_view summed = version == 1
                                      ? std::string_view(bytes).substr(kHeaderBytes, payload_end - kHeaderBytes)
                                      : std::string_view(bytes).substr(0, payload_end);
  std::uint64_t checksum;
  std::memcpy(&checksum, bytes.data() + payload_end, 8);
  if (checksum != fnv1a(summed))
    throw IoError("checkpoint " + path + ": corrupt: the checksum does not match the contents at byte " +
                  std::to_string(payload_end));
  return decode_payload(std::string_view(bytes).substr(kHeaderBytes, payload_end - kHeaderBytes), path);
}

namespace {

std::string describe(DType dtype, const Shape& shape) { return std::string(dtype_name(dtype)) + " " + shape.str(); }

// The index of the first element that is not finite, or -1.
void check_tensors(const std::vector<Tensor>& got, const std::vector<TensorSpec>& expected, const char* what,
                   const std::string& where) {
  if (got.size() != expected.size())
    throw IoError(where + ": holds " + std::to_string(got.size()) + " " + what + " tensors, the run needs " +
                  std::to_string(expected.size()));
  for (std::size_t i = 0; i < got.size(); ++i) {
    const std::string name = std::string(what) + " " + std::to_string(i);
    if (got[i].shape() != expected[i].shape || got[i].dtype() != expected[i].dtype)
      throw IoError(where + ": " + name + " is " + describe(got[i].dtype(), got[i].shape()) + ", the run needs " +
                    describe(expected[i].dtype, expected[i].shape));
    if (const std::int64_t at = first_non_finite(got[i]); at >= 0)
      throw IoError(where + ": " + name + " holds a non-finite value at element " + std::to_string(at));
  }
}

}  // namespace

std::string checkpoint_label(const std::string& path) {
  return path.empty() ? std::string("a checkpoint") : "checkpoint " + path;
}

void check_checkpoint_matches(const Checkpoint& c, const std::vector<Tensor>& expected_params,
                              const std::vector<TensorSpec>& expected_optimizer_state, const std::string& path) {
  const std::string where = checkpoint_label(path);
  if (c.iteration < 0 || c.optimizer_steps < 0)
    throw IoError(where + ": the iteration (" + std::to_string(c.iteration) + ") and the optimizer step count (" +
                  std::to_string(c.optimizer_steps) + ") must be >= 0");
  std::vector<TensorSpec> params;
  for (const Tensor& p : expected_params) params.push_back({p.shape(), p.dtype()});
  check_tensors(c.params, params, "parameter", where);
  check_tensors(c.optimizer_state, expected_optimizer_state, "optimizer state", where);
}

}  // namespace metatape::meta
