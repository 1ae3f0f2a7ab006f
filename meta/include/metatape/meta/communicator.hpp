// A group of processes that train one model together: each holds the same
// meta-parameters, computes the meta-gradient of its share of the meta-batch,
// and the shares are combined with the collectives below. Implementations:
// SelfCommunicator (one process, here), the MPI one (mpi_communicator.hpp,
// in libmetatape-mpi where Meson found MPI) and the NCCL one for CUDA tensors
// (loaded with nccl_communicator.hpp where CUDA and NCCL were found).
//
// Every collective must be called by every rank, in the same order, with
// tensors of the same dtype and (except all_gather's leading axis) shape;
// what a rank contributes is never modified. A failure of the transport
// throws CommunicatorError on the ranks that see it.
#pragma once

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "metatape/engine.hpp"

namespace metatape::meta {

class CommunicatorError : public Error {
 public:
  explicit CommunicatorError(const std::string& message) : Error(message) {}
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "self", "mpi", "nccl": what --help and errors call it

  // Each tensor summed over the ranks; every rank receives the sums (as new
  // tensors on the inputs' device). The order in which the transport adds
  // is its own: the result may differ from a sequential sum by rounding.
  virtual std::vector<Tensor> all_reduce_sum(const std::vector<Tensor>& tensors) = 0;
  // The root's tensors, on every rank (the others pass tensors of the same
  // shapes and dtypes, whose values are ignored).
  virtual std::vector<Tensor> broadcast(const std::vector<Tensor>& tensors, int root) = 0;
  // Every rank's `local` concatenated along axis 0 in rank order; the
  // leading dimension may differ between ranks (0 included), the rest and
  // the dtype may not (CommunicatorError naming the ranks).
  virtual Tensor all_gather(const Tensor& local) = 0;
  // Every rank's byte string, in rank order (status words, configuration
  // hashes, error messages).
  virtual std::vector<std::string> all_gather_bytes(const std::string& local) = 0;
  virtual void barrier() = 0;
};

// One process alone: every collective returns its input.
class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "self"; }
  std::vector<Tensor> all_reduce_sum(const std::vector<Tensor>& tensors) override;
  std::vector<Tensor> broadcast(const std::vector<Tensor>& tensors, int root) override;
  Tensor all_gather(const Tensor& local) override;
  std::vector<std::string> all_gather_bytes(const std::string& local) override;
  void barrier() override {}
};

// The tasks [begin, end) of a meta-batch of `tasks` that `rank` of `size`
// computes: contiguous, in rank order, the first tasks % size ranks one
// task more than the others (a rank may get none when tasks < size).
struct TaskRange {
  std::int64_t begin = 0, end = 0;
  std::int64_t count() const { return end - begin; }
};
TaskRange task_range(std::int64_t tasks, int rank, int size);

// A rank that failed while the others waited for it: thrown on every rank
// by raise_if_any_rank_failed, naming the rank and where (the iteration).
class RankFailure : public Error {
 public:
  RankFailure(const std::string& message, int failed_rank) : Error(message), failed_rank(failed_rank) {}
  int failed_rank;
};

// Every rank calls this at the same point with "" when its own work
// succeeded, or with its error message when it did not. When any rank
// failed, every rank throws RankFailure: "rank R failed at <where>: <its
// message>" (the lowest failing rank; the others' count is added), so that
// no rank waits forever in a collective the failed one never reaches.
void raise_if_any_rank_failed(Communicator& communicator, const std::string& local_error, const std::string& where);

// Runs `work` on every rank, then has the ranks agree on the outcome
// (raise_if_any_rank_failed), so that no rank waits in a collective that a
// failed one never reaches: a rank whose `work` threw rethrows its own
// exception (one process keeps its errors as they were), the others throw
// RankFailure naming it and `where`. `work` must not call collectives
// itself: a failing rank would skip them.
template <class Work>
void on_every_rank(Communicator& communicator, const std::string& where, Work&& work) {
  std::exception_ptr failure;
  std::string message;
  try {
    work();
  } catch (const std::exception& e) {
    failure = std::current_exception();
    message = *e.what() ? e.what() : "an error without a message";
  } catch (...) {
    failure = std::current_exception();
    message = "an exception that is not a std::exception";
  }
  try {
    raise_if_any_rank_failed(communicator, message, where);
  } catch (const RankFailure&) {
    if (failure) std::rethrow_exception(failure);
    throw;
  }
}

// Whether the error now propagating on this thread is one every rank knows
// of: the last agreement (raise_if_any_rank_failed, on_every_rank,
// require_same_on_all_ranks) found a failure, or note_failure_known_to_
// every_rank was called after it. A program ending on such an error may
// leave MPI normally, every rank does; any other error may leave the other
// ranks waiting in a collective forever (MPI's finalisation waits for
// them), so such a program should end every rank at once (mpi_abort). A
// successful agreement clears it.
bool failure_known_to_every_rank();
// For an error about to be thrown on every rank from values every rank
// shares (a non-finite meta-loss after the reduction).
void note_failure_known_to_every_rank();

// Throws ValueError on every rank unless every rank passed the same
// `value` (compared by an all-gathered hash): "<what> differs between
// ranks: ranks 0, 1 have <hash>; ranks 2, 3 have <hash>". For the
// configuration of a run, so that ranks started with different options stop
// at once.
void require_same_on_all_ranks(Communicator& communicator, const std::string& what, const std::string& value);

// For messages about a disagreement: each distinct value of `values` (one
// per rank, in rank order) once, with the ranks that have it, in the order
// of the first rank that does: "ranks 0, 2 have <a>; rank 1 has <b>".
std::string ranks_by_value(const std::vector<std::string>& values);

// "2 tensors: f32 [3, 4], i64 [5]" ("undefined" for a tensor without a
// value): what a rank passed to a collective, for those messages.
std::string describe_tensors(const std::vector<Tensor>& tensors);

// True when the environment shows that an MPI launcher started this process:
// one of OMPI_COMM_WORLD_SIZE (Open MPI's mpirun), PMIX_RANK (any PMIx
// launcher, srun --mpi=pmix included), PMI_RANK or PMI_SIZE (MPICH's
// mpiexec, srun --mpi=pmi2), MPI_LOCALNRANKS (MPICH's hydra) is set and not
// empty. Does not initialise MPI: a program run on its own can stay a plain
// process (a singleton MPI_Init is slow and needs the MPI runtime).
bool launched_by_mpi_launcher();

}  // namespace metatape::meta
