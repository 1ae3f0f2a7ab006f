// What the metatape command builds, by name: algorithms, task distributions,
// models and activations, one table each. Adding one to the command is one
// entry in its table; the option tables take their choices from here.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "metatape/error.hpp"
#include "metatape/meta/losses.hpp"
#include "metatape/meta/maml.hpp"
#include "metatape/meta/models.hpp"
#include "metatape/meta/tasks.hpp"

namespace metatape::tools {

struct RunConfig;

struct AlgorithmEntry {
  std::string name;  // meta::algorithm_name's
  meta::Algorithm algorithm;
  std::string summary;  // for --help
};
const std::vector<AlgorithmEntry>& algorithms();

// A task distribution, and what a model must fit to it.
struct TaskParts {
  std::unique_ptr<meta::TaskSampler> sampler;
  meta::Loss loss = meta::Loss::mse;
  std::vector<std::int64_t> input_shape;  // of one example: {1} for sinusoid, {C, H, W} for images
  std::int64_t outputs = 1;               // per example: output values or classes
  // The meta-test distribution where it differs (held-out classes); else null.
  std::unique_ptr<meta::TaskSampler> evaluation_sampler{};
};

struct TaskEntry {
  std::string name;
  std::string summary;
  std::function<TaskParts(const RunConfig&)> make;
};
const std::vector<TaskEntry>& tasks();

struct ModelEntry {
  std::string name;
  std::string summary;
  // Throws ValueError when the task's examples do not fit the model.
  std::function<std::unique_ptr<meta::Model>(const RunConfig&, const TaskParts&)> make;
  // Values one example leaves behind in one forward pass, for the estimate
  // of a run's memory (memory.hpp).
  std::function<double(const RunConfig&, const TaskParts&)> activations_per_example;
};
const std::vector<ModelEntry>& models();

struct ActivationEntry {
  std::string name;
  meta::Activation activation;
};
const std::vector<ActivationEntry>& activations();

struct DTypeEntry {
  std::string name;
  DType dtype;
};
const std::vector<DTypeEntry>& dtypes();

// The names of a table's entries, in order.
template <class Entry>
std::vector<std::string> names(const std::vector<Entry>& table) {
  std::vector<std::string> out;
  for (const Entry& e : table) out.push_back(e.name);
  return out;
}

// The entry called `name`; ValueError naming `kind` and the choices otherwise.
template <class Entry>
const Entry& find(const std::vector<Entry>& table, const std::string& name, const std::string& kind) {
  std::string choices;
  for (const Entry& e : table) {
    if (e.name == name) return e;
    choices += (choices.empty() ? "" : ", ") + e.name;
  }
  throw ValueError("unknown " + kind + " '" + name + "': choose " + choices);
}

}  // namespace metatape::tools
