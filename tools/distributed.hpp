// Running a command as one rank of `mpirun -np N metatape ...`: which group
// this process belongs to and what a rank says when the launcher stops it.
// (meta::on_every_rank is how the ranks agree that a phase succeeded.)
#pragma once

#include <cstdint>
#include <memory>
#include <string>

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

// On SIGTERM or SIGINT (mpirun stops every rank when one dies), says which
// rank stopped, at which iteration and where --resume continues from, then
// dies of the signal as it would have. `command` names it ("train").
void report_termination(const char* command);
// What that message says; cheap, called every iteration.
void set_progress(std::int64_t iteration, std::int64_t last_checkpoint);

}  // namespace metatape::tools
