#include "metatape/meta/mpi_communicator.hpp"

#include <mpi.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "fnv1a.hpp"

namespace metatape::meta {
namespace {

int max_count = INT_MAX;  // the most elements one MPI call carries (testing::set_max_mpi_count)
bool aborting = false;    // set by mpi_abort: MPI_Finalize must not run after MPI_Abort

// Throws CommunicatorError for an MPI error code: the call, the rank, MPI's words.
void check(int code, const char* call, int rank) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = std::snprintf(text, sizeof text, "code %d", code);
  const std::string where = rank >= 0 ? " on rank " + std::to_string(rank) : "";  // -1: before MPI knew it
  throw CommunicatorError(std::string(call) + " failed" + where + ": " +
                          std::string(text, static_cast<std::size_t>(length)));
}

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i64:
      return MPI_INT64_T;
  }
  throw DTypeError("MPI communicator: unknown dtype");
}

// FNV-1a, reduced to 62 bits so that its negation cannot overflow.
std::int64_t hash62(const std::string& bytes) { return static_cast<std::int64_t>(detail::fnv1a(bytes) >> 2); }

// The host copy of a tensor's values (the tensor itself when on the CPU).
Tensor on_host(const Tensor& t) { return t.device() == Device::cpu ? t.detach() : t.to(Device::cpu).detach(); }

// Tensors grouped by dtype into one flat host buffer each, so that a list of
// parameters travels in at most three MPI calls; unpack gives each its shape
// (and device) back.
struct Packed {
  DType dtype;
  std::vector<std::size_t> members;  // indices into the list
  Tensor flat;                       // [sum of their numel], CPU
};

std::vector<Packed> pack(const std::vector<Tensor>& tensors) {
  std::vector<Packed> packs;
  for (DType dtype : {DType::f32, DType::f64, DType::i64}) {
    Packed p{dtype, {}, {}};
    std::int64_t total = 0;
    for (std::size_t i = 0; i < tensors.size(); ++i)
      if (tensors[i].dtype() == dtype) p.members.push_back(i), total += tensors[i].numel();
    if (p.members.empty()) continue;
    p.flat = empty({total}, dtype);
    auto* at = static_cast<char*>(p.flat.raw_data());
    for (std::size_t i : p.members) {
      const Tensor host = on_host(tensors[i]);
      const std::size_t bytes = static_cast<std::size_t>(host.numel()) * dtype_size(dtype);
      if (bytes) std::memcpy(at, host.raw_data(), bytes);
      at += bytes;
    }
    packs.push_back(std::move(p));
  }
  return packs;
}

std::vector<Tensor> unpack(const std::vector<Packed>& packs, const std::vector<Tensor>& like) {
  std::vector<Tensor> out(like.size());
  for (const Packed& p : packs) {
    const auto* at = static_cast<const char*>(p.flat.raw_data());
    for (std::size_t i : p.members) {
      Tensor t = empty(like[i].shape(), p.dtype);
      const std::size_t bytes = static_cast<std::size_t>(t.numel()) * dtype_size(p.dtype);
      if (bytes) std::memcpy(t.raw_data(), at, bytes);
      at += bytes;
      out[i] = like[i].device() == Device::cpu ? t : t.to(like[i].device());
    }
  }
  return out;
}

// `count` elements of `dtype` at `data` in calls of at most max_count each:
// call(pointer, count) for each piece, in order (every rank splits alike).
template <class Call>
void in_pieces(void* data, std::int64_t count, DType dtype, Call call) {
  auto* at = static_cast<char*>(data);
  for (std::int64_t done = 0; done < count;) {
    const int n = static_cast<int>(std::min<std::int64_t>(count - done, max_count));
    call(at + static_cast<std::size_t>(done) * dtype_size(dtype), n);
    done += n;
  }
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank", -1);
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size", rank_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  std::vector<Tensor> all_reduce_sum(const std::vector<Tensor>& tensors) override {
    require_same_list("all_reduce_sum", tensors, describe_tensors(tensors));
    std::vector<Packed> packs = pack(tensors);
    for (Packed& p : packs)
      in_pieces(p.flat.raw_data(), p.flat.numel(), p.dtype, [&](void* piece, int n) {
        check(MPI_Allreduce(MPI_IN_PLACE, piece, n, mpi_type(p.dtype), MPI_SUM, comm_), "MPI_Allreduce", rank_);
      });
    return unpack(packs, tensors);
  }

  std::vector<Tensor> broadcast(const std::vector<Tensor>& tensors, int root) override {
    // The root is part of what must agree: ranks that named different roots
    // would each wait for a different sender.
    require_same_list("broadcast", tensors, "root " + std::to_string(root) + ", " + describe_tensors(tensors));
    if (root < 0 || root >= size_)
      throw CommunicatorError("broadcast: root " + std::to_string(root) + " is not a rank of " + std::to_string(size_) +
                              " processes");
    std::vector<Packed> packs = pack(tensors);
    for (Packed& p : packs)
      in_pieces(p.flat.raw_data(), p.flat.numel(), p.dtype, [&](void* piece, int n) {
        check(MPI_Bcast(piece, n, mpi_type(p.dtype), root, comm_), "MPI_Bcast", rank_);
      });
    return unpack(packs, tensors);
  }

  Tensor all_gather(const Tensor& local) override;
  std::vector<std::string> all_gather_bytes(const std::string& local) override;
  void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier", rank_); }

 private:
  // Throws CommunicatorError on every rank unless every rank passed a list
  // of the same description (count, dtypes, shapes, root), then ValueError
  // on every rank if the list holds an undefined tensor. One small
  // all-reduce of a hash (its maximum and minimum); the descriptions
  // themselves travel only when they differ, to name the ranks.
  void require_same_list(const char* op, const std::vector<Tensor>& tensors, const std::string& description) {
    const std::int64_t h = hash62(description);
    std::array<std::int64_t, 2> extremes{h, -h};
    check(MPI_Allreduce(MPI_IN_PLACE, extremes.data(), 2, MPI_INT64_T, MPI_MAX, comm_), "MPI_Allreduce", rank_);
    if (extremes[0] != -extremes[1])
      throw CommunicatorError(std::string(op) +
                              ": the ranks passed different tensors: " + ranks_by_value(all_gather_bytes(description)));
    for (std::size_t i = 0; i < tensors.size(); ++i)
      if (!tensors[i].defined())
        throw ValueError(std::string(op) + ": tensor " + std::to_string(i) + " is undefined (on every rank)");
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

// What each rank says of its tensor before the gather: dtype (-1:
// undefined), rank, then the dims.
using Header = std::array<std::int64_t, 2 + kMaxRank>;

Header header_of(const Tensor& t) {
  Header h{};
  h[0] = t.defined() ? static_cast<std::int64_t>(t.dtype()) : -1;
  h[1] = t.defined() ? t.rank() : 0;
  for (int a = 0; t.defined() && a < t.rank(); ++a) h[static_cast<std::size_t>(2 + a)] = t.dim(a);
  return h;
}

// "f32 [*, 3]": a header without its leading dimension, what must agree.
std::string trailing(const Header& h) {
  if (h[0] < 0) return "undefined";
  std::string out = std::string(dtype_name(static_cast<DType>(h[0]))) + " [";
  if (h[1] == 0) return out + "] (a scalar)";
  out += "*";
  for (std::int64_t a = 1; a < h[1]; ++a) out += ", " + std::to_string(h[static_cast<std::size_t>(2 + a)]);
  return out + "]";
}

Tensor MpiCommunicator::all_gather(const Tensor& local) {
  std::vector<Header> headers(static_cast<std::size_t>(size_));
  const Header mine = header_of(local);
  check(MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_INT64_T, headers.data(),
                      static_cast<int>(mine.size()), MPI_INT64_T, comm_),
        "MPI_Allgather", rank_);
  // Every rank judges the same headers, so every rank throws alike.
  std::vector<std::string> kinds;
  for (const Header& h : headers) kinds.push_back(trailing(h));
  if (std::any_of(kinds.begin(), kinds.end(), [&](const std::string& k) { return k != kinds[0]; }))
    throw CommunicatorError("all_gather: the tensors differ between ranks beyond axis 0: " + ranks_by_value(kinds));
  if (headers[0][0] < 0) throw ValueError("all_gather: the tensor is undefined (on every rank)");
  if (headers[0][1] == 0) throw ShapeError("all_gather: a scalar has no axis 0 to gather along (on every rank)");

  const DType dtype = static_cast<DType>(headers[0][0]);
  std::int64_t row = 1, rows = 0;  // elements per row; rows in all
  for (std::int64_t a = 1; a < headers[0][1]; ++a) row *= headers[0][static_cast<std::size_t>(2 + a)];
  std::vector<int> counts, offsets;  // in rows, per rank
  for (const Header& h : headers) {
    if (rows + h[2] > max_count || row > max_count)
      throw CommunicatorError("all_gather: " + std::to_string(rows + h[2]) + " rows of " + std::to_string(row) +
                              " elements are more than one MPI call carries (" + std::to_string(max_count) + ")");
    offsets.push_back(static_cast<int>(rows));
    counts.push_back(static_cast<int>(h[2]));
    rows += h[2];
  }
  Shape shape = local.shape();
  shape[0] = rows;
  Tensor out = empty(shape, dtype);
  if (out.numel() > 0) {
    // One row as one MPI element, so that the counts stay small.
    MPI_Datatype row_type;
    check(MPI_Type_contiguous(static_cast<int>(row), mpi_type(dtype), &row_type), "MPI_Type_contiguous", rank_);
    check(MPI_Type_commit(&row_type), "MPI_Type_commit", rank_);
    const Tensor host = on_host(local);
    const int code = MPI_Allgatherv(host.raw_data(), counts[static_cast<std::size_t>(rank_)], row_type, out.raw_data(),
                                    counts.data(), offsets.data(), row_type, comm_);
    MPI_Type_free(&row_type);
    check(code, "MPI_Allgatherv", rank_);
  }
  return local.device() == Device::cpu ? out : out.to(local.device());
}

std::vector<std::string> MpiCommunicator::all_gather_bytes(const std::string& local) {
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(size_));
  const auto mine = static_cast<std::int64_t>(local.size());
  check(MPI_Allgather(&mine, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, comm_), "MPI_Allgather", rank_);
  std::vector<int> counts, offsets;
  std::int64_t total = 0;
  for (std::int64_t s : sizes) {
    if (total + s > max_count)
      throw CommunicatorError("all_gather_bytes: " + std::to_string(total + s) +
                              " bytes are more than one MPI call carries (" + std::to_string(max_count) + ")");
    offsets.push_back(static_cast<int>(total));
    counts.push_back(static_cast<int>(s));
    total += s;
  }
  std::string all(static_cast<std::size_t>(total), '\0');
  check(MPI_Allgatherv(local.data(), static_cast<int>(mine), MPI_BYTE, all.data(), counts.data(), offsets.data(),
                       MPI_BYTE, comm_),
        "MPI_Allgatherv", rank_);
  std::vector<std::string> out;
  for (std::size_t r = 0; r < sizes.size(); ++r)
    out.push_back(all.substr(static_cast<std::size_t>(offsets[r]), static_cast<std::size_t>(counts[r])));
  return out;
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && !aborting) MPI_Finalize();
}

}  // namespace

std::shared_ptr<Communicator> mpi_world() {
  static std::mutex mutex;
  static std::shared_ptr<Communicator> world;
  std::lock_guard lock(mutex);
  if (world) return world;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) throw CommunicatorError("mpi_world: MPI was already finalised in this process");
  if (!initialized) {
    // MPI_Init's own failures abort (no error handler exists yet); it only
    // returns an error in some implementations.
    int provided = MPI_THREAD_SINGLE;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread", -1);
    std::atexit(finalize_at_exit);
    if (provided < MPI_THREAD_FUNNELED)
      throw CommunicatorError("mpi_world: this MPI offers no thread support (MPI_THREAD_FUNNELED is needed)");
  } else {
    // The program initialised MPI itself: its thread level must do too.
    int provided = MPI_THREAD_SINGLE;
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_FUNNELED)
      throw CommunicatorError(
          "mpi_world: MPI was initialised with no thread support; initialise it with MPI_Init_thread and at least "
          "MPI_THREAD_FUNNELED (the engine's own threads never call MPI)");
  }
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  // A communicator of its own, so that metatape's collectives never match
  // messages of a program that uses MPI_COMM_WORLD itself.
  MPI_Comm comm;
  check(MPI_Comm_dup(MPI_COMM_WORLD, &comm), "MPI_Comm_dup", rank);
  check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", rank);
  world = std::make_shared<MpiCommunicator>(comm);
  return world;
}

void mpi_abort(const std::string& message, int exit_code) {
  int initialized = 0, finalized = 0, rank = -1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "metatape: rank %d: %s\n", rank, message.c_str());
  std::fflush(stderr);
  if (!initialized || finalized) std::exit(exit_code);
  aborting = true;
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; should it, nothing else may run
}

namespace testing {
void set_max_mpi_count(int count) {
  if (count < 1) throw ValueError("set_max_mpi_count: " + std::to_string(count) + " is not a positive count");
  max_count = count;
}
}  // namespace testing

}  // namespace metatape::meta
