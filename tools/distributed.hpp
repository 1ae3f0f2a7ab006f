// Running a command as one rank of `mpirun -np N metatape ...`: which group
// this process belongs to and what a rank says when the launcher stops it.
// (meta::on_every_rank is how the ranks agree that a phase succeeded.)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "metatape/meta/communicator.hpp"

namespace metatape::tools {

// The group of this process: the MPI world when an MPI launcher started it
// (mpirun, mpiexec, srun), else this process alone (a SelfCommunicator).
// Created on the first call; commands that never ask stay plain processes.
// Throws ValueError when a launcher started this process and this build has
// no MPI: each process would train alone and overwrite the others' files.
std::shared_ptr<meta::Communicator> process_group();
// This process's rank (0 before process_group() and without a launcher).
int process_rank();
// " (rank R of N)" when there are several processes, else "": for messages.
std::string rank_label();

// Marks the error in flight as known to every rank: agreed through
// on_every_rank, or computed from the same values on every rank (a trainer
// step).
void note_agreed_failure();

// meta::on_every_rank, remembering that the error it throws (if any) is
// one every rank knows of, so that main may end this rank normally.
template <class Work>
void agree(meta::Communicator& group, const std::string& where, Work&& work) {
  try {
    meta::on_every_rank(group, where, std::forward<Work>(work));
  } catch (...) {
    note_agreed_failure();
    throw;
  }
}
// main's last word on an error under several processes: one that every
// rank knows of ends this rank normally (every rank leaves MPI together);
// any other may leave the others waiting in a collective forever (MPI's
// finalisation waits for them), so it ends every rank (MPI_Abort) after
// printing. With one process it only says whether to end normally.
bool ends_normally_after_failure();
[[noreturn]] void abort_group(const std::string& message);

// The smallest of every rank's `value`: for a size each rank derives from
// its own host (free memory), which all ranks must then share.
std::int64_t group_minimum(meta::Communicator& group, std::int64_t value);

// Throws ValueError on every rank unless every rank has the same `fields`
// (name, value), naming the first that differs and each rank's value of it:
// "<what> differs between ranks: --seed is 1 on rank 0, 2 on rank 1".
void require_same_fields(meta::Communicator& group, const std::string& what,
                         const std::vector<std::pair<std::string, std::string>>& fields);

// On SIGTERM or SIGINT (mpirun stops every rank when one dies), says which
// rank stopped, at which iteration and where --resume continues from, then
// dies of the signal as it would have. `command` names it ("train").
void report_termination(const char* command);
// What that message says; cheap, called every iteration.
void set_progress(std::int64_t iteration, std::int64_t last_checkpoint);

}  // namespace metatape::tools
