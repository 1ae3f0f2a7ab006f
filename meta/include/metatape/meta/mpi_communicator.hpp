// The MPI communicator: the ranks of MPI_COMM_WORLD, started by mpirun,
// mpiexec or srun. In its own library, libmetatape-mpi (built where Meson
// found MPI, `-Dmpi=auto|enabled|disabled`), so that libmetatape and
// libmetatape-meta never link MPI: a program without MPI is unaffected.
//
// Collectives take CPU tensors of f32, f64 or i64 (a CUDA tensor is copied to
// the host, and the result back to the device). Every rank validates what
// all ranks passed before any data moves, so that a mismatch (a dtype, a
// shape, a tensor count) throws CommunicatorError on every rank, naming the
// ranks and what each had, instead of hanging or corrupting memory. An error
// of MPI itself throws CommunicatorError naming the call, the rank and
// MPI's own message, on the ranks that see it.
#pragma once

#include <memory>
#include <string>

#include "metatape/meta/communicator.hpp"

namespace metatape::meta {

// launched_by_mpi_launcher() (communicator.hpp) tells whether to call mpi_world().

// The ranks of MPI_COMM_WORLD. The first call initialises MPI
// (MPI_Init_thread with MPI_THREAD_FUNNELED: only the thread that calls the
// collectives uses MPI, never the engine's thread pool) unless the program
// already did, and then MPI_Finalize runs at exit; later calls return the
// same communicator. Errors come back as codes (MPI_ERRORS_RETURN), turned
// into CommunicatorError. Throws CommunicatorError if MPI cannot be
// initialised, or was already finalised.
std::shared_ptr<Communicator> mpi_world();

// Ends every rank at once (MPI_Abort on MPI_COMM_WORLD) after printing
// "metatape: rank R: <message>" to stderr: for an error that only this rank
// saw, where the others may be waiting in a collective (MPI_Finalize at exit
// would wait for them forever). Errors that every rank saw alike
// (RankFailure, a mismatch a collective found) can end normally instead.
[[noreturn]] void mpi_abort(const std::string& message, int exit_code = 1);

namespace testing {
// The most elements one MPI call may carry (INT_MAX by default: MPI's counts
// are int). Larger collectives are split into calls of at most this many, or
// refused with CommunicatorError where they cannot be (an all_gather whose
// rows or byte strings exceed it); the tests lower it to reach those paths
// with small tensors. Every rank must set the same value.
void set_max_mpi_count(int count);
}  // namespace testing

}  // namespace metatape::meta
