// The NCCL communicator: the collectives on CUDA tensors, GPU to GPU, for
// ranks that each drive one GPU. In its own library, libmetatape-nccl (built
// where the CUDA backend, NCCL and MPI were found), which links the CUDA
// runtime and NCCL: nothing else links it, so a CPU-only program maps no
// CUDA library.
//
// It is bootstrapped from another communicator (the MPI one): rank 0's
// ncclUniqueId travels through it, and all_gather_bytes and barrier go
// through it as well. Rank r uses the GPU (local rank) mod (GPUs on its
// host), where the local rank counts the ranks before r on the same host;
// that GPU becomes the current device of the calling thread, so create the
// communicator before the first CUDA tensor of the process.
//
// Collectives take f32, f64 and i64 tensors; a CPU tensor is copied to the
// GPU and its result back. They wait for the work this thread queued on the
// engine's stream, run on a stream of their own, and return when their
// results are ready. What every rank passed is compared first (through the
// bootstrap communicator): a mismatch throws CommunicatorError on every rank,
// naming the ranks. A failure of CUDA or NCCL throws CommunicatorError naming
// the call, the rank and NCCL's or CUDA's message.
#pragma once

#include <memory>

#include "metatape/meta/communicator.hpp"

namespace metatape::meta {

// A collective call on every rank of `bootstrap`. Throws RankFailure on
// every rank when any rank has no usable GPU, more ranks on its host than
// GPUs, or (rank 0) cannot make NCCL's unique id; the message names that
// rank and why. A failure inside ncclCommInitRank itself throws
// CommunicatorError on the ranks that see it (NCCL gives no way to tell
// the others), so call it where a launcher ends the job when a rank exits.
std::shared_ptr<Communicator> nccl_communicator(std::shared_ptr<Communicator> bootstrap);

}  // namespace metatape::meta
