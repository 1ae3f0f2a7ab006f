// Training-free ranking of architectures by κ(Φ) and linear regions
// (docs/methods.md §4).
#include "metatape/meta/architecture_ranking.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

namespace metatape::meta {
namespace {

std::string candidate_label(const CandidateSpec& candidate, std::size_t index) {
  return "candidate " + std::to_string(index) + " ('" + candidate.name + "')";
}

// The inputs of `count` examples per task for `model`, x [tasks, count, ...]:
// uniform on [−5, 5] for the sinusoid, standard normal otherwise.
Tensor draw_inputs(const Model& model, const RankingConfig& config, std::int64_t tasks, std::int64_t count,
                   Generator& gen) {
  Shape shape{tasks, count};
  for (std::int64_t d : model.input_shape()) shape.push_back(d);  // the temporary lives through the loop
  if (config.task == "sinusoid") return uniform(shape, -5.0, 5.0, gen, DType::f64);
  return normal(shape, 0.0, 1.0, gen, DType::f64);
}

CandidateScore score(const Model& model, const RankingConfig& config) {
  CandidateScore s;
  s.description = model.describe();
  Generator param_gen(config.seed), input_gen(config.seed + 1), region_gen(config.seed + 2);
  const std::vector<Tensor> params = model.init(param_gen, DType::f64);
  for (const Tensor& p : params) s.parameters += p.numel();
  TaskBatch batch;
  batch.support_x = draw_inputs(model, config, config.tasks, config.shots, input_gen);
  batch.query_x = draw_inputs(model, config, config.tasks, config.queries, input_gen);
  const MetaNtkResult phi = meta_ntk(model, params, batch, config.ntk);
  s.condition_number = phi.condition_number;
  s.min_eigenvalue = phi.eigenvalues.front();
  s.max_eigenvalue = phi.eigenvalues.back();
  const Tensor x = squeeze(draw_inputs(model, config, 1, config.region_samples, region_gen), 0);
  s.regions = count_linear_regions(model, params, x);
  return s;
}

}  // namespace

void RankingConfig::validate() const {
  if (task != "sinusoid" && task != "gaussian")
    throw ValueError("ranking: unknown task '" + task + "': choose sinusoid or gaussian");
  auto positive = [](std::int64_t v, const char* field) {
    if (v < 1) throw ValueError(std::string("ranking: ") + field + " must be >= 1, got " + std::to_string(v));
  };
  positive(input_dim, "input_dim");
  positive(in_channels, "in_channels");
  positive(image_size, "image_size");
  positive(classes, "classes");
  positive(tasks, "tasks");
  positive(shots, "shots");
  positive(queries, "queries");
  positive(region_samples, "region_samples");
  ntk.validate();
}

std::unique_ptr<Model> build_candidate(const CandidateSpec& candidate, std::size_t index, const RankingConfig& config) {
  const std::string label = candidate_label(candidate, index);
  try {
    if (candidate.model == "mlp") {
      std::vector<std::int64_t> widths = {config.task == "sinusoid" ? 1 : config.input_dim};
      for (std::size_t l = 0; l < candidate.hidden.size(); ++l) {
        if (candidate.hidden[l] < 1)
          throw ValueError("field 'hidden': width " + std::to_string(l) + " is " + std::to_string(candidate.hidden[l]) +
                           ", must be >= 1");
        widths.push_back(candidate.hidden[l]);
      }
      widths.push_back(1);
      return std::make_unique<Mlp>(widths, candidate.activation);
    }
    if (candidate.model == "conv4") {
      if (config.task == "sinusoid")
        throw ValueError("field 'model': conv4 takes images, the sinusoid's inputs are 1-D: use task gaussian");
      if (candidate.channels < 1)
        throw ValueError("field 'channels' must be >= 1, got " + std::to_string(candidate.channels));
      Conv4Options o;
      o.in_channels = config.in_channels;
      o.image_size = config.image_size;
      o.channels = candidate.channels;
      o.classes = config.classes;
      o.strided = candidate.strided;
      o.batch_norm = candidate.batch_norm;
      return std::make_unique<Conv4>(o);
    }
    throw ValueError("field 'model': unknown model '" + candidate.model + "': choose mlp or conv4");
  } catch (const Error& e) {
    throw ValueError(label + " cannot be built: " + e.what());
  }
}

std::int64_t count_linear_regions(const Model& model, const std::vector<Tensor>& params, const Tensor& x) {
  const std::vector<Tensor> pre = model.relu_preactivations(params, x);
  if (pre.empty()) return 1;
  const std::int64_t n = x.dim(0);
  std::vector<std::vector<bool>> patterns(static_cast<std::size_t>(n));
  for (const Tensor& layer : pre) {
    const std::vector<double> v = layer.to_vector();
    const std::size_t units = v.size() / static_cast<std::size_t>(n);
    for (std::size_t i = 0; i < patterns.size(); ++i)
      for (std::size_t u = 0; u < units; ++u) patterns[i].push_back(v[i * units + u] > 0);
  }
  return static_cast<std::int64_t>(std::set<std::vector<bool>>(patterns.begin(), patterns.end()).size());
}

std::vector<std::int64_t> rank_values(const std::vector<double>& values, bool descending) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (std::isnan(values[i])) throw ValueError("rank_values: value " + std::to_string(i) + " is NaN");
  std::vector<std::int64_t> ranks(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::int64_t better = 0;
    for (double other : values) better += descending ? other > values[i] : other < values[i];
    ranks[i] = better + 1;
  }
  return ranks;
}

Ranking rank_architectures(const std::vector<CandidateSpec>& candidates, const RankingConfig& config) {
  config.validate();
  if (candidates.empty()) throw ValueError("ranking: no candidates");
  Ranking ranking;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j)
      if (candidates[j].name == candidates[i].name)
        throw ValueError(candidate_label(candidates[i], i) + ": field 'name' repeats candidate " + std::to_string(j));
    const std::unique_ptr<Model> model = build_candidate(candidates[i], i, config);
    try {
      ranking.scores.push_back(score(*model, config));
    } catch (const Error& e) {
      throw ValueError(candidate_label(candidates[i], i) + " (" + model->describe() + "): " + e.what());
    }
    ranking.scores.back().name = candidates[i].name;
  }
  std::vector<double> kappa, regions;
  for (const CandidateScore& s : ranking.scores) {
    kappa.push_back(s.condition_number);
    regions.push_back(static_cast<double>(s.regions));
  }
  const std::vector<std::int64_t> rk = rank_values(kappa), rr = rank_values(regions, true);
  for (std::size_t i = 0; i < ranking.scores.size(); ++i) {
    ranking.scores[i].rank_condition = rk[i];
    ranking.scores[i].rank_regions = rr[i];
    ranking.scores[i].combined = rk[i] + rr[i];
  }
  ranking.order.resize(ranking.scores.size());
  std::iota(ranking.order.begin(), ranking.order.end(), 0);
  std::stable_sort(ranking.order.begin(), ranking.order.end(), [&](std::size_t a, std::size_t b) {
    const CandidateScore &sa = ranking.scores[a], &sb = ranking.scores[b];
    return sa.combined != sb.combined ? sa.combined < sb.combined : sa.rank_condition < sb.rank_condition;
  });
  ranking.inputs = config.task == "sinusoid"
                       ? "sinusoid inputs x ~ U[-5, 5] (1-D: Φ is numerically singular without the ridge)"
                       : "gaussian inputs x ~ N(0, I) of each model's input shape";
  return ranking;
}

}  // namespace metatape::meta
