// metatape rank-archs: ranks candidate architectures without training, by
// κ(Φ + ρI) of the meta-NTK and by linear regions (docs/methods.md §4),
// from a small JSON file:
//   {"task": "gaussian", "input_dim": 8, "ridge": 1e-8,
//    "candidates": [{"name": "a", "model": "mlp", "hidden": [40, 40], "activation": "relu"},
//                   {"name": "b", "model": "conv4", "channels": 32, "strided": false, "batch_norm": false}]}
// Prints the table and writes ranking.json.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "catalog.hpp"
#include "commands.hpp"
#include "metatape/meta/architecture_ranking.hpp"
#include "metatape/meta/checkpoint.hpp"

namespace metatape::tools {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Thrown by strict() for a value of the wrong JSON type.
struct WrongType {};

// Reads the fields of one JSON object, each at most once, and refuses the
// fields nobody read (a misspelt key must not silently fall back to a default).
class Fields {
 public:
  Fields(const json& object, std::string where) : object_(object), where_(std::move(where)) {
    if (!object.is_object()) throw ValueError(where_ + " must be a JSON object, got " + object.dump());
  }
  void read_with(const char* key, const std::function<void(const json&)>& set, const std::string& expected) {
    known_.push_back(key);
    if (!object_.contains(key)) return;
    try {
      set(object_.at(key));
    } catch (const WrongType&) {
      throw ValueError(where_ + ": field '" + key + "' must be " + expected + ", got " + object_.at(key).dump());
    } catch (const json::exception&) {
      throw ValueError(where_ + ": field '" + key + "' must be " + expected + ", got " + object_.at(key).dump());
    }
  }
  void finish() const {
    for (const auto& [key, value] : object_.items())
      if (std::find(known_.begin(), known_.end(), key) == known_.end()) {
        std::string choices;
        for (const std::string& k : known_) choices += (choices.empty() ? "" : ", ") + k;
        throw ValueError(where_ + ": unknown field '" + key + "' (the fields are " + choices + ")");
      }
  }
  const std::string& where() const { return where_; }

 private:
  const json& object_;
  std::string where_;
  std::vector<std::string> known_;
};

// A value of the right JSON type, whole numbers exactly (no 2.5 read as 2,
// no −1 wrapped into an unsigned seed).
template <class T>
void strict(const json& j, T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) throw WrongType{};
  } else if constexpr (std::is_unsigned_v<T>) {
    if (!j.is_number_unsigned()) throw WrongType{};
  } else if constexpr (std::is_integral_v<T>) {
    if (!j.is_number_integer()) throw WrongType{};
  } else if constexpr (std::is_same_v<T, double>) {
    if (!j.is_number()) throw WrongType{};
  } else {
    if (!j.is_string()) throw WrongType{};
  }
  value = j.get<T>();
}

meta::CandidateSpec read_candidate(const json& j, std::size_t index, const std::string& file) {
  meta::CandidateSpec c;
  std::string at = file + ": candidates[" + std::to_string(index) + "]";
  if (!j.is_object()) throw ValueError(at + " must be a JSON object, got " + j.dump());
  if (!j.contains("name") || !j.at("name").is_string()) throw ValueError(at + ": field 'name' must be a string");
  c.name = j.at("name").get<std::string>();
  at += " ('" + c.name + "')";
  Fields f(j, at);
  auto field = [&](const char* key, auto& value, const std::string& expected) {
    f.read_with(
        key, [&](const json& v) { strict(v, value); }, expected);
  };
  f.read_with(
      "name", [](const json&) {}, "a string");
  field("model", c.model, "\"mlp\" or \"conv4\"");
  f.read_with(
      "hidden",
      [&](const json& v) {
        if (!v.is_array()) throw WrongType{};
        c.hidden.clear();
        for (const json& w : v) {
          std::int64_t width = 0;
          strict(w, width);
          c.hidden.push_back(width);
        }
      },
      "a list of whole numbers");
  std::string activation = "relu";
  field("activation", activation, "a string");
  try {
    c.activation = find(activations(), activation, "activation").activation;
  } catch (const ValueError& e) {
    throw ValueError(at + ": field 'activation': " + e.what());
  }
  field("channels", c.channels, "a whole number");
  field("strided", c.strided, "true or false");
  field("batch_norm", c.batch_norm, "true or false");
  f.finish();
  return c;
}

struct Setup {
  meta::RankingConfig config;
  std::vector<meta::CandidateSpec> candidates;
};

Setup read_setup(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError("cannot open the candidates file " + path);
  std::stringstream text;
  text << in.rdbuf();
  json j;
  try {
    j = json::parse(text.str());
  } catch (const json::parse_error& e) {
    throw IoError(path + " is not valid JSON: " + e.what());
  }
  Setup s;
  meta::RankingConfig& c = s.config;
  c.ntk.form = meta::KernelForm::steps;
  Fields f(j, path);
  auto field = [&](const char* key, auto& value, const std::string& expected) {
    f.read_with(
        key, [&](const json& v) { strict(v, value); }, expected);
  };
  field("task", c.task, "\"sinusoid\" or \"gaussian\"");
  field("input_dim", c.input_dim, "a whole number");
  field("in_channels", c.in_channels, "a whole number");
  field("image_size", c.image_size, "a whole number");
  field("classes", c.classes, "a whole number");
  field("tasks", c.tasks, "a whole number");
  field("shots", c.shots, "a whole number");
  field("queries", c.queries, "a whole number");
  field("region_samples", c.region_samples, "a whole number");
  field("seed", c.seed, "a whole number");
  field("inner_lr", c.ntk.inner_lr, "a number");
  field("inner_steps", c.ntk.inner_steps, "a whole number");
  f.read_with(
      "time",
      [&](const json& v) {
        c.ntk.form = meta::KernelForm::flow;
        if (v.is_string() && v.get<std::string>() == "inf") {
          c.ntk.time = INFINITY;
          return;
        }
        if (!v.is_number()) throw WrongType{};
        c.ntk.time = v.get<double>();
      },
      "a number or \"inf\"");
  field("anil", c.ntk.anil, "true or false");
  field("ridge", c.ntk.ridge, "a number");
  field("inverse_ridge", c.ntk.inverse_ridge, "a number");
  std::string mode = "trace";
  field("kernel_mode", mode, "\"trace\" or \"full\"");
  c.ntk.mode = meta::parse_kernel_mode(mode);
  const json* list = nullptr;
  f.read_with(
      "candidates",
      [&](const json& v) {
        if (!v.is_array()) throw WrongType{};
        list = &v;
      },
      "a list of candidate objects");
  f.finish();
  if (j.contains("time") && j.contains("inner_steps"))
    throw ValueError(path + ": fields 'time' (gradient flow) and 'inner_steps' (SGD steps) exclude each other");
  if (list == nullptr || list->empty())
    throw ValueError(path + ": no candidates (field 'candidates' is missing or empty)");
  for (std::size_t i = 0; i < list->size(); ++i) s.candidates.push_back(read_candidate((*list)[i], i, path));
  try {
    c.validate();
  } catch (const ValueError& e) {
    throw ValueError(path + ": " + e.what());
  }
  return s;
}

std::string kappa_text(double kappa) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, std::isinf(kappa) ? "inf" : "%.4g", kappa);
  return buffer;
}

// The table, its name and model columns as wide as their longest entry.
void print_table(const meta::Ranking& r) {
  int name_width = 4, model_width = 5;
  for (const meta::CandidateScore& s : r.scores) {
    name_width = std::max(name_width, static_cast<int>(s.name.size()));
    model_width = std::max(model_width, static_cast<int>(s.description.size()));
  }
  std::printf("%-5s  %-*s  %-*s %10s %12s %9s %7s %13s %9s\n", "place", name_width, "name", model_width, "model",
              "params", "kappa", "regions", "rank_k", "rank_regions", "combined");
  for (std::size_t place = 0; place < r.order.size(); ++place) {
    const meta::CandidateScore& s = r.scores[r.order[place]];
    std::printf("%-5zu  %-*s  %-*s %10lld %12s %9lld %7lld %13lld %9lld\n", place + 1, name_width, s.name.c_str(),
                model_width, s.description.c_str(), static_cast<long long>(s.parameters),
                kappa_text(s.condition_number).c_str(), static_cast<long long>(s.regions),
                static_cast<long long>(s.rank_condition), static_cast<long long>(s.rank_regions),
                static_cast<long long>(s.combined));
  }
}

// Candidates with as many regions as inputs: the count saturated and does not
// separate them (more region_samples would).
std::vector<std::string> saturated(const meta::Ranking& r, std::int64_t samples) {
  std::vector<std::string> names;
  for (const meta::CandidateScore& s : r.scores)
    if (s.regions == samples) names.push_back(s.name);
  return names;
}

// The flow form's time ("inf" for +infinity, which JSON cannot hold); null for steps.
json time_json(const meta::MetaNtkOptions& o) {
  if (o.form == meta::KernelForm::steps) return nullptr;
  return std::isinf(o.time) ? json("inf") : json(o.time);
}

json ranking_json(const Setup& setup, const meta::Ranking& r, const std::string& file) {
  const meta::RankingConfig& c = setup.config;
  json candidates = json::array();
  for (std::size_t place = 0; place < r.order.size(); ++place) {
    const meta::CandidateScore& s = r.scores[r.order[place]];
    candidates.push_back({{"place", place + 1},
                          {"name", s.name},
                          {"model", s.description},
                          {"parameters", s.parameters},
                          {"condition_number", std::isinf(s.condition_number) ? json("inf") : json(s.condition_number)},
                          {"min_eigenvalue", s.min_eigenvalue},
                          {"max_eigenvalue", s.max_eigenvalue},
                          {"regions", s.regions},
                          {"rank_condition", s.rank_condition},
                          {"rank_regions", s.rank_regions},
                          {"combined", s.combined}});
  }
  return {{"candidates_file", file},
          {"task", c.task},
          {"inputs", r.inputs},
          {"ridge", c.ntk.ridge},
          {"meta_batch", {{"tasks", c.tasks}, {"shots", c.shots}, {"queries", c.queries}, {"seed", c.seed}}},
          {"inner_loop",
           {{"form", meta::kernel_form_name(c.ntk.form)},
            {"inner_lr", c.ntk.inner_lr},
            {"inner_steps", c.ntk.inner_steps},
            {"time", time_json(c.ntk)},
            {"anil", c.ntk.anil},
            {"kernel_mode", meta::kernel_mode_name(c.ntk.mode)}}},
          {"region_samples", c.region_samples},
          {"regions_saturated", saturated(r, c.region_samples)},
          {"combined_rank", "rank of kappa (ascending) + rank of regions (descending); ties share the best rank"},
          {"ranking", candidates}};
}

}  // namespace

const std::vector<Option<RankArchsArgs>>& rank_archs_options() {
  using O = Options<RankArchsArgs>;
  static const std::vector<Option<RankArchsArgs>> table = {
      O::local("--candidates", &RankArchsArgs::candidates, "JSON file of the candidates and the meta-batch",
               Text{.required = true}),
      O::local("--out", &RankArchsArgs::out, "Directory for ranking.json (default: the candidates file's)", Text{}),
  };
  return table;
}

int run_rank_archs(const RankArchsArgs& args) {
  const Setup setup = read_setup(args.candidates);
  const meta::Ranking ranking = meta::rank_architectures(setup.candidates, setup.config);
  const meta::RankingConfig& c = setup.config;
  std::printf(
      "%zu candidates; Φ over %lld tasks (%lld support, %lld query) of %s; κ of Φ + ρI, ridge ρ = %g; "
      "regions over %lld inputs\n",
      setup.candidates.size(), static_cast<long long>(c.tasks), static_cast<long long>(c.shots),
      static_cast<long long>(c.queries), ranking.inputs.c_str(), c.ntk.ridge, static_cast<long long>(c.region_samples));
  print_table(ranking);
  const std::vector<std::string> full = saturated(ranking, c.region_samples);
  if (!full.empty())
    std::printf(
        "note: %zu candidate(s) put every one of the %lld inputs in its own region (count saturated; raise "
        "region_samples to separate them)\n",
        full.size(), static_cast<long long>(c.region_samples));
  fs::path out = args.out.empty() ? fs::path(args.candidates).parent_path() : fs::path(args.out);
  if (out.empty()) out = ".";
  std::error_code error;
  fs::create_directories(out, error);
  if (error) throw IoError("cannot create the directory " + out.string() + ": " + error.message());
  meta::write_file_atomically((out / "ranking.json").string(),
                              ranking_json(setup, ranking, args.candidates).dump(2) + "\n");
  std::printf("wrote %s\n", (out / "ranking.json").c_str());
  return 0;
}

}  // namespace metatape::tools
