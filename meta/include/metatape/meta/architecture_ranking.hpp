// Ranking architectures without training (docs/methods.md §4), as
// MetaNTK-NAS does for its cell operations: each candidate network is scored
// by the condition number κ of its meta-NTK Φ + ρI on one small seeded
// meta-batch (lower: more trainable) and by its number of linear regions,
// the distinct ReLU sign patterns over random inputs (more: more
// expressive); each score is ranked over the candidates and the two ranks
// are summed, the lowest sum first.
//
// Φ depends on the tasks' inputs only (not on their targets), so a "task"
// here is an input distribution:
//   sinusoid  x ~ U[−5, 5], one-dimensional (Finn et al.'s inputs). Φ over
//             1-D inputs is numerically singular (κ of 1e21–1e31 that changes
//             with the BLAS): only the ridge ρ makes κ mean something there.
//   gaussian  x ~ N(0, I) of the model's input shape: [input_dim] for an
//             MLP, [in_channels, image_size, image_size] for Conv4.
// Every candidate sees the same seeded inputs (for its input shape) and
// parameters initialised from the same seed. A Conv4 with batch norm has no
// per-example Jacobian: its Φ uses each set's Jacobian (ntk.hpp), where
// MetaNTK-NAS swaps batch norm for GroupNorm instead. Regions are counted on
// the candidate itself, not on TE-NAS's thin one-channel proxy, so a wide
// network can put every sample in its own region (the count saturates:
// rank-archs says so; more samples separate them).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "metatape/meta/meta_ntk.hpp"
#include "metatape/meta/models.hpp"

namespace metatape::meta {

struct CandidateSpec {
  std::string name;
  std::string model = "mlp";  // "mlp" or "conv4"
  // mlp: hidden widths (>= 0 layers of >= 1 unit) and activation.
  std::vector<std::int64_t> hidden = {40, 40};
  Activation activation = Activation::relu;
  // conv4: channels per block, pooled or strided, batch norm on or off.
  std::int64_t channels = 32;
  bool strided = false;
  bool batch_norm = false;
};

struct RankingConfig {
  std::string task = "gaussian";                               // "sinusoid" or "gaussian"
  std::int64_t input_dim = 8;                                  // gaussian inputs of an MLP
  std::int64_t in_channels = 1, image_size = 16, classes = 5;  // Conv4
  std::int64_t tasks = 3, shots = 5, queries = 5;              // the meta-batch of Φ
  std::int64_t region_samples = 1000;                          // inputs over which regions are counted
  std::uint64_t seed = 0;
  MetaNtkOptions ntk{};  // the inner loop of Φ and the ridge ρ of κ
  // Throws ValueError naming the bad field.
  void validate() const;
};

// The model of candidate `index` (named in errors with its name): ValueError
// naming the candidate and the field that cannot be built.
std::unique_ptr<Model> build_candidate(const CandidateSpec& candidate, std::size_t index, const RankingConfig& config);

// The number of distinct sign patterns of every hidden ReLU input of `model`
// over the examples x [n, ...] (one task): 1 for a model without ReLUs.
std::int64_t count_linear_regions(const Model& model, const std::vector<Tensor>& params, const Tensor& x);

// 1-based ranks of `values`, smallest first (larger first when `descending`),
// ties sharing the smallest rank of their group ("1, 2, 2, 4"); +inf ranks
// after every finite value, NaN is refused (ValueError).
std::vector<std::int64_t> rank_values(const std::vector<double>& values, bool descending = false);

struct CandidateScore {
  std::string name;
  std::string description;  // Model::describe()
  std::int64_t parameters = 0;
  double condition_number = 0;  // κ(Φ + ρI); +inf when Φ + ρI is singular
  double min_eigenvalue = 0, max_eigenvalue = 0;
  std::int64_t regions = 0;
  std::int64_t rank_condition = 0, rank_regions = 0;
  std::int64_t combined = 0;  // rank_condition + rank_regions
};

struct Ranking {
  std::vector<CandidateScore> scores;  // in the candidates' order
  std::vector<std::size_t> order;      // best first: by combined rank, then κ's rank, then position
  std::string inputs;                  // which inputs Φ and the regions used, in words
};

// Scores and ranks the candidates (at least one; names unique). Errors name
// the candidate by index and name.
Ranking rank_architectures(const std::vector<CandidateSpec>& candidates, const RankingConfig& config);

}  // namespace metatape::meta
