#include "metatape/meta/nccl_communicator.hpp"

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace metatape::meta {
namespace {

void check_cuda(cudaError_t code, const char* call, int rank) {
  if (code != cudaSuccess)
    throw CommunicatorError(std::string(call) + " failed on rank " + std::to_string(rank) + ": " +
                            cudaGetErrorString(code));
}

void check_nccl(ncclResult_t code, const char* call, int rank, ncclComm_t comm = nullptr) {
  if (code == ncclSuccess) return;
  std::string message = std::string(call) + " failed on rank " + std::to_string(rank) + ": " + ncclGetErrorString(code);
  if (const char* detail = ncclGetLastError(comm); detail && *detail) message += std::string(" (") + detail + ")";
  throw CommunicatorError(message);
}

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::i64:
      return ncclInt64;
  }
  throw DTypeError("NCCL communicator: unknown dtype");
}

// The tensor on the GPU (a copy for a CPU tensor), and its result back
// where the input was.
Tensor on_gpu(const Tensor& t) { return (t.device() == Device::cuda ? t : t.to(Device::cuda)).detach(); }
Tensor back_to(const Tensor& result, const Tensor& like) {
  return like.device() == Device::cuda ? result : result.to(like.device());
}

std::string hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<Communicator> bootstrap, ncclComm_t comm, cudaStream_t stream)
      : bootstrap_(std::move(bootstrap)), comm_(comm), stream_(stream), rank_(bootstrap_->rank()) {}
  ~NcclCommunicator() override {
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return bootstrap_->size(); }
  std::string name() const override { return "nccl"; }

  std::vector<Tensor> all_reduce_sum(const std::vector<Tensor>& tensors) override {
    require_same_list("all_reduce_sum", tensors, describe_tensors(tensors));
    return each_on_gpu("ncclAllReduce", tensors, [&](Tensor& in, Tensor& out) {
      return ncclAllReduce(in.raw_data(), out.raw_data(), static_cast<std::size_t>(in.numel()), nccl_type(in.dtype()),
                           ncclSum, comm_, stream_);
    });
  }

  std::vector<Tensor> broadcast(const std::vector<Tensor>& tensors, int root) override {
    require_same_list("broadcast", tensors, "root " + std::to_string(root) + ", " + describe_tensors(tensors));
    if (root < 0 || root >= size())
      throw CommunicatorError("broadcast: root " + std::to_string(root) + " is not a rank of " +
                              std::to_string(size()) + " processes");
    return each_on_gpu("ncclBroadcast", tensors, [&](Tensor& in, Tensor& out) {
      return ncclBroadcast(in.raw_data(), out.raw_data(), static_cast<std::size_t>(in.numel()), nccl_type(in.dtype()),
                           root, comm_, stream_);
    });
  }

  Tensor all_gather(const Tensor& local) override;

  std::vector<std::string> all_gather_bytes(const std::string& local) override {
    return bootstrap_->all_gather_bytes(local);
  }
  void barrier() override { bootstrap_->barrier(); }

 private:
  // Throws on every rank unless every rank described its tensors alike
  // (CommunicatorError naming the ranks), or if they hold an undefined one.
  void require_same_list(const char* op, const std::vector<Tensor>& tensors, const std::string& description) {
    const std::vector<std::string> all = bootstrap_->all_gather_bytes(description);
    if (std::any_of(all.begin(), all.end(), [&](const std::string& d) { return d != all[0]; }))
      throw CommunicatorError(std::string(op) + ": the ranks passed different tensors: " + ranks_by_value(all));
    for (std::size_t i = 0; i < tensors.size(); ++i)
      if (!tensors[i].defined())
        throw ValueError(std::string(op) + ": tensor " + std::to_string(i) + " is undefined (on every rank)");
  }

  // The NCCL calls that `enqueue` makes, as one group on this stream, after
  // the engine's work on this thread (which wrote the inputs) and before the
  // results are handed back (which any engine stream may then read).
  template <class Enqueue>
  void run(const char* what, Enqueue enqueue) {
    synchronize(Device::cuda);
    check_nccl(ncclGroupStart(), "ncclGroupStart", rank_, comm_);
    try {
      enqueue();
    } catch (...) {
      ncclGroupEnd();
      throw;
    }
    check_nccl(ncclGroupEnd(), what, rank_, comm_);
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize", rank_);
  }

  // collective(in, out), an NCCL call, for each tensor: from a GPU copy of it
  // into a fresh GPU tensor, all in one group; each result back where its
  // input was.
  template <class Collective>
  std::vector<Tensor> each_on_gpu(const char* what, const std::vector<Tensor>& tensors, Collective collective) {
    std::vector<Tensor> in, out;
    for (const Tensor& t : tensors) in.push_back(on_gpu(t)), out.push_back(empty(t.shape(), t.dtype(), Device::cuda));
    run(what, [&] {
      for (std::size_t i = 0; i < in.size(); ++i) check_nccl(collective(in[i], out[i]), what, rank_, comm_);
    });
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = back_to(out[i], tensors[i]);
    return out;
  }

  std::shared_ptr<Communicator> bootstrap_;
  ncclComm_t comm_;
  cudaStream_t stream_;
  int rank_;
};

Tensor NcclCommunicator::all_gather(const Tensor& local) {
  // The shapes travel first: they must agree beyond axis 0, and the leading
  // dims say where each rank's rows go. Each rank sends "f32 [*, 3]\n5".
  std::string kind = "undefined";
  if (local.defined()) {
    kind = std::string(dtype_name(local.dtype())) + (local.rank() == 0 ? " [] (a scalar)" : " [*");
    for (int a = 1; a < local.rank(); ++a) kind += ", " + std::to_string(local.dim(a));
    kind += local.rank() == 0 ? "" : "]";
  }
  const std::int64_t mine = local.defined() && local.rank() > 0 ? local.dim(0) : 0;
  std::vector<std::string> kinds;
  std::vector<std::int64_t> rows;
  for (const std::string& sent : bootstrap_->all_gather_bytes(kind + "\n" + std::to_string(mine))) {
    const std::size_t cut = sent.rfind('\n');
    kinds.push_back(sent.substr(0, cut));
    rows.push_back(std::stoll(sent.substr(cut + 1)));
  }
  if (std::any_of(kinds.begin(), kinds.end(), [&](const std::string& k) { return k != kinds[0]; }))
    throw CommunicatorError("all_gather: the tensors differ between ranks beyond axis 0: " + ranks_by_value(kinds));
  if (!local.defined()) throw ValueError("all_gather: the tensor is undefined (on every rank)");
  if (local.rank() == 0) throw ShapeError("all_gather: a scalar has no axis 0 to gather along (on every rank)");

  Shape shape = local.shape();
  shape[0] = 0;
  for (std::int64_t n : rows) shape[0] += n;
  const Tensor in = on_gpu(local);
  Tensor out = empty(shape, local.dtype(), Device::cuda);
  std::int64_t row = 1;  // elements per row
  for (int a = 1; a < local.rank(); ++a) row *= local.dim(a);
  // Uneven shares: each rank broadcasts its rows into place, in one group.
  run("ncclBroadcast", [&] {
    std::int64_t offset = 0;
    for (int r = 0; r < size(); ++r) {
      const std::int64_t count = rows[static_cast<std::size_t>(r)] * row;
      char* into = static_cast<char*>(out.raw_data()) + offset * static_cast<std::int64_t>(dtype_size(out.dtype()));
      if (count > 0)
        check_nccl(ncclBroadcast(r == rank_ ? in.raw_data() : nullptr, into, static_cast<std::size_t>(count),
                                 nccl_type(out.dtype()), r, comm_, stream_),
                   "ncclBroadcast", rank_, comm_);
      offset += count;
    }
  });
  return back_to(out, local);
}

}  // namespace

std::shared_ptr<Communicator> nccl_communicator(std::shared_ptr<Communicator> bootstrap) {
  if (!bootstrap) throw ValueError("nccl_communicator: no bootstrap communicator");
  const int rank = bootstrap->rank(), size = bootstrap->size();
  // This rank's place among the ranks on its host picks its GPU.
  const std::vector<std::string> hosts = bootstrap->all_gather_bytes(hostname());
  const auto local_rank = std::count(hosts.begin(), hosts.begin() + rank, hosts[static_cast<std::size_t>(rank)]);
  const auto local_size = std::count(hosts.begin(), hosts.end(), hosts[static_cast<std::size_t>(rank)]);

  // Every rank says whether it can take part before any rank waits in NCCL.
  std::string error;
  ncclUniqueId id{};
  cudaStream_t stream = nullptr;
  try {
    std::string reason;
    if (!cuda_available(&reason)) throw DeviceError("no usable CUDA GPU: " + reason);
    int devices = 0;
    check_cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount", rank);
    if (local_size > devices)
      throw DeviceError(std::to_string(local_size) + " ranks on host " + hosts[static_cast<std::size_t>(rank)] +
                        " share " + std::to_string(devices) + " GPU(s); NCCL needs one GPU per rank");
    check_cuda(cudaSetDevice(static_cast<int>(local_rank % devices)), "cudaSetDevice", rank);
    check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate", rank);
    if (rank == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", rank);
  } catch (const std::exception& e) {
    error = *e.what() ? e.what() : "an error without a message";
  } catch (...) {
    error = "an exception that is not a std::exception";
  }
  try {
    raise_if_any_rank_failed(*bootstrap, error, "the NCCL set-up");
  } catch (...) {
    if (stream) cudaStreamDestroy(stream);
    throw;
  }
  const std::string ids = bootstrap->all_gather_bytes(
      rank == 0 ? std::string(reinterpret_cast<const char*>(&id), sizeof id) : std::string())[0];
  std::memcpy(&id, ids.data(), sizeof id);
  ncclComm_t comm = nullptr;
  const ncclResult_t code = ncclCommInitRank(&comm, size, id, rank);
  if (code != ncclSuccess) {
    cudaStreamDestroy(stream);
    check_nccl(code, "ncclCommInitRank", rank);
  }
  return std::make_shared<NcclCommunicator>(std::move(bootstrap), comm, stream);
}

}  // namespace metatape::meta
