// Checkpoints: everything a training run needs to continue bit for bit —
// meta-parameters, optimiser state, iteration, the task generator's position
// and the run's configuration — in one versioned, checksummed file.
//
// Layout (little-endian):
//   0   "MTTPCKPT"                  magic, 8 bytes
//   8   u32 format version          (kCheckpointVersion)
//   12  u32 0                       reserved
//   16  u64 payload size
//   24  payload                     see checkpoint.cpp
//   ..  u64 FNV-1a-64 of the payload
// Files are written atomically: a temporary file beside the target, flushed
// and fsync'ed, then renamed over it, so a crash leaves the old checkpoint.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "metatape/engine.hpp"

namespace metatape::meta {

inline constexpr std::uint32_t kCheckpointVersion = 1;

struct Checkpoint {
  std::string config;          // the run's configuration (JSON text, opaque here)
  std::int64_t iteration = 0;  // completed meta-iterations
  std::uint64_t task_rng_position = 0;
  std::vector<Tensor> params;  // MetaParams::all()
  std::vector<Tensor> optimizer_state;
  std::int64_t optimizer_steps = 0;
};

void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// Throws IoError naming the file and, for bad contents, the byte offset:
// missing, truncated, not a checkpoint, from a newer format, or corrupt.
Checkpoint load_checkpoint(const std::string& path);

// Replaces `path` with `contents` atomically (temporary file, fsync, rename,
// fsync of the directory). Throws IoError; `path` is untouched on failure.
void write_file_atomically(const std::string& path, std::string_view contents);
// The whole file; throws IoError naming it.
std::string read_file(const std::string& path);

}  // namespace metatape::meta
