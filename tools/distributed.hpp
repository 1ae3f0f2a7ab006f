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

// main's last word on an error: true with one process, or when every rank
// knows of it (meta::failure_known_to_every_rank: they all leave MPI
// together); otherwise main ends every rank at once with abort_group, since
// the others may be waiting in a collective forever.
bool ends_normally_after_failure();
[[noreturn]] void abort_group(const std::string& message);

// The smallest of every rank's `value`: for a size each rank derives from
// its own host (free memory), which all ranks must then share.
std::int64_t group_minimum(meta::Communicator& group, std::int64_t value);

// Throws ValueError on every rank unless every rank has the same `fields`
// (name, value), naming the first that differs and each rank's value of it:
// "<what> differs between ranks: seed is '1' on rank 0, '2' on rank 1"
// (the run's fields by their config.json names, the others by option).
void require_same_fields(meta::Communicator& group, const std::string& what,
                         const std::vector<std::pair<std::string, std::string>>& fields);

// On SIGTERM or SIGINT (mpirun stops every rank when one dies), says which
// rank stopped, at which iteration and where --resume continues from, then
// dies of the signal as it would have. `command` names it ("train").
void report_termination(const char* command);
// What that message says; cheap, called every iteration.
void set_progress(std::int64_t iteration, std::int64_t last_checkpoint);

}  // namespace metatape::tools
