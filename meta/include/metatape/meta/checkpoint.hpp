// Checkpoints: everything a training run needs to continue bit for bit —
// meta-parameters, optimiser state, iteration, the task generator's position
// and the run's configuration — in one versioned, checksummed file.
//
// Layout (little-endian):
//   0   "MTTPCKPT"                  magic, 8 bytes
//   8   u32 format version          (kCheckpointVersion)
//   12  u32 0                       reserved, must be 0
//   16  u64 payload size            must equal the file size − 32
//   24  payload                     see checkpoint.cpp
//   ..  u64 FNV-1a-64 of bytes 0 .. 24 + payload size (header and payload)
// Every byte is therefore checked: the header field by field and by the
// checksum, the payload by the checksum and by decoding. Version 1 files
// (the checksum over the payload alone) are still read: their header is
// checked field by field, reserved included, so no byte goes unchecked.
// Files are written atomically: a temporary file beside the target, flushed
// and fsync'ed, then renamed over it, so a crash leaves the old checkpoint.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "metatape/engine.hpp"
#include "metatape/meta/optim.hpp"

namespace metatape::meta {

inline constexpr std::uint32_t kCheckpointVersion = 2;

struct Checkpoint {
  std::string config;                   // the run's configuration (JSON text, opaque here)
  std::int64_t iteration = 0;           // completed meta-iterations, >= 0
  std::uint64_t task_rng_position = 0;  // any value is a valid Philox stream position
  std::vector<Tensor> params;           // MetaParams::all()
  std::vector<Tensor> optimizer_state;
  std::int64_t optimizer_steps = 0;  // >= 0
};

// Throws ValueError for a negative iteration or step count (a file that
// load_checkpoint would refuse), IoError when the file cannot be written.
void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// Throws IoError naming the file, the field and, for bad contents, the byte
// offset: missing, a directory or not a regular file, truncated or padded,
// not a checkpoint, from a newer format, corrupt (checksum), or well-formed
// but impossible (a negative iteration, an unknown dtype or rank, a tensor
// larger than the bytes left in the file). The header is read and checked
// against the file's size before anything else, so a huge or endless file is
// refused without reading it.
Checkpoint load_checkpoint(const std::string& path);

// How messages about a checkpoint name it: "checkpoint PATH", or "a
// checkpoint" when it came from no file (path empty).
std::string checkpoint_label(const std::string& path);

// Checks that a decoded checkpoint fits what a run expects: the count, shape
// and dtype of every parameter (compare MetaParams::all() of freshly
// initialised parameters), the optimiser state's layout
// (Optimizer::state_layout) and finite values in both. Throws IoError naming
// `path` (or "a checkpoint" when empty) and the field, with both shapes.
void check_checkpoint_matches(const Checkpoint& checkpoint, const std::vector<Tensor>& expected_params,
                              const std::vector<TensorSpec>& expected_optimizer_state, const std::string& path);

// Replaces `path` with `contents` atomically (temporary file, fsync, rename,
// fsync of the directory). Throws IoError; `path` is untouched on failure.
// The temporary is `.NAME.tmp.PID` beside `path`.
void write_file_atomically(const std::string& path, std::string_view contents);
// Removes the temporaries of write_file_atomically(path) that a killed
// process left behind: those whose process is gone, and this process's own
// (a process with the same id before it, as in a fresh container each
// run) — so call it while no other thread of this process writes `path`.
// Temporaries of other live processes are left alone. Returns how many were
// removed; throws IoError naming a file it cannot remove.
int remove_stale_temporaries(const std::string& path);
// The whole file; throws IoError naming it.
std::string read_file(const std::string& path);

}  // namespace metatape::meta
