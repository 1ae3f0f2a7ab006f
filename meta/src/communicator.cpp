#include "metatape/meta/communicator.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "fnv1a.hpp"

namespace metatape::meta {
namespace {

// Whether the last agreement of this thread's ranks found a failure (see
// failure_known_to_every_rank).
thread_local bool failure_known = false;

std::string hex(std::uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i) out += (i ? ", " : "") + std::to_string(ranks[i]);
  return out;
}

// The collectives are not recorded on the tape (the MPI and NCCL ones cannot
// be): the results are detached handles, so that one process and N behave alike.
std::vector<Tensor> detached(const std::vector<Tensor>& tensors, const char* op) {
  std::vector<Tensor> out;
  out.reserve(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].defined()) throw ValueError(std::string(op) + ": tensor " + std::to_string(i) + " is undefined");
    out.push_back(tensors[i].detach());
  }
  return out;
}

}  // namespace

std::vector<Tensor> SelfCommunicator::all_reduce_sum(const std::vector<Tensor>& tensors) {
  return detached(tensors, "all_reduce_sum");
}

std::vector<Tensor> SelfCommunicator::broadcast(const std::vector<Tensor>& tensors, int root) {
  if (root != 0) throw CommunicatorError("broadcast: root " + std::to_string(root) + " is not a rank of 1 process");
  return detached(tensors, "broadcast");
}

Tensor SelfCommunicator::all_gather(const Tensor& local) {
  // A scalar has no axis to concatenate along, with one process as with N.
  if (local.defined() && local.rank() == 0) throw ShapeError("all_gather: a scalar has no axis 0 to gather along");
  return detached({local}, "all_gather")[0];
}

std::vector<std::string> SelfCommunicator::all_gather_bytes(const std::string& local) { return {local}; }

bool failure_known_to_every_rank() { return failure_known; }

void note_failure_known_to_every_rank() { failure_known = true; }

TaskRange task_range(std::int64_t tasks, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size)
    throw ValueError("task_range: rank " + std::to_string(rank) + " is not one of " + std::to_string(size) +
                     " processes");
  if (tasks < 0) throw ValueError("task_range: " + std::to_string(tasks) + " tasks");
  const std::int64_t base = tasks / size, extra = tasks % size;
  const std::int64_t begin = rank * base + std::min<std::int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

void raise_if_any_rank_failed(Communicator& communicator, const std::string& local_error, const std::string& where) {
  // A status byte first, so that an empty message still counts as a failure.
  const std::vector<std::string> all = communicator.all_gather_bytes((local_error.empty() ? "0" : "1") + local_error);
  std::vector<int> failed;
  for (std::size_t r = 0; r < all.size(); ++r)
    if (!all[r].empty() && all[r][0] == '1') failed.push_back(static_cast<int>(r));
  failure_known = !failed.empty();
  if (failed.empty()) return;
  const int first = failed.front();
  std::string message = "rank " + std::to_string(first) + " failed at " + where + ": " + all[first].substr(1);
  if (failed.size() > 1) message += " (" + rank_list({failed.begin() + 1, failed.end()}) + " failed too)";
  throw RankFailure(message, first);
}

void require_same_on_all_ranks(Communicator& communicator, const std::string& what, const std::string& value) {
  const std::vector<std::string> hashes = communicator.all_gather_bytes(hex(detail::fnv1a(value)));
  failure_known = !std::all_of(hashes.begin(), hashes.end(), [&](const std::string& h) { return h == hashes[0]; });
  if (!failure_known) return;
  const std::string message = what + " differs between ranks: " + ranks_by_value(hashes);
  throw ValueError(message);
}

std::string ranks_by_value(const std::vector<std::string>& values) {
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  for (std::size_t r = 0; r < values.size(); ++r) {
    auto same = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == values[r]; });
    if (same == groups.end()) same = groups.emplace(groups.end(), values[r], std::vector<int>{});
    same->second.push_back(static_cast<int>(r));
  }
  std::string out;
  for (const auto& [value, ranks] : groups)
    out += (out.empty() ? "" : "; ") + rank_list(ranks) + (ranks.size() == 1 ? " has " : " have ") + value;
  return out;
}

std::string describe_tensors(const std::vector<Tensor>& tensors) {
  std::string out = std::to_string(tensors.size()) + " tensor" + (tensors.size() == 1 ? "" : "s");
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    out += (i ? ", " : ": ") + (t.defined() ? std::string(dtype_name(t.dtype())) + " " + t.shape().str() : "undefined");
  }
  return out;
}

bool launched_by_mpi_launcher() {
  // Open MPI's mpirun, any PMIx launcher, MPICH's hydra and Slurm's srun
  // (PMI-1/2) each set at least one of these in every rank's environment.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (const char* value = std::getenv(name); value && *value) return true;
  return false;
}

}  // namespace metatape::meta
