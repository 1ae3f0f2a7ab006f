// The empirical NTK (docs/methods.md §5) against one backward pass per
// sample and output, its modes against each other, its symmetry and
// positive semi-definiteness, the linear model's closed form, task batching,
// derivatives through it, NTK-vector products and bad input.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "metatape/meta/analytic_ntk.hpp"
#include "metatape/meta/ntk.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::DType;
using mt::Tensor;
using mt::testing::relative_error;
using mt::testing::throws_error;

namespace {

constexpr DType f64 = DType::f64;

// Parameters large enough that every layer matters (init's are 0.01).
std::vector<Tensor> random_params(const meta::Model& model, std::uint64_t seed, double scale = 0.7) {
  mt::Generator gen(seed);
  std::vector<Tensor> params;
  for (const meta::ParamInfo& p : model.parameters()) params.push_back(mt::normal(p.shape, 0.0, scale, gen, f64));
  return params;
}

Tensor random_inputs(const meta::Model& model, std::vector<std::int64_t> leading, std::uint64_t seed) {
  mt::Generator gen(seed);
  for (std::int64_t d : model.input_shape()) leading.push_back(d);
  return mt::normal(mt::Shape(leading), 0.0, 1.0, gen, f64);
}

// Jacobian rows [C, S, P] the slow way: one backward pass per example and
// output, of f_c(x_i) on x_i alone, or, for a model that couples examples,
// of f_c(x)_i on the whole set.
Tensor reference_rows(const meta::Model& model, const std::vector<Tensor>& params, const Tensor& x,
                      meta::ParamSubset subset) {
  mt::TapeScope scope;
  std::vector<Tensor> leaves;
  for (const Tensor& p : params) leaves.push_back(p.detach().clone().requires_grad_());
  std::vector<Tensor> selected;
  for (std::size_t i : meta::subset_indices(model, subset)) selected.push_back(leaves[i]);
  const std::int64_t n = x.dim(0), classes = model.outputs();
  std::vector<Tensor> per_output;
  for (std::int64_t c = 0; c < classes; ++c) {
    std::vector<Tensor> rows;
    for (std::int64_t i = 0; i < n; ++i) {
      const Tensor f = model.couples_examples() ? mt::slice(model.forward(leaves, x), 0, i, i + 1)
                                                : model.forward(leaves, mt::slice(x, 0, i, i + 1));
      std::vector<Tensor> parts;
      for (const Tensor& g : mt::grad(mt::sum(mt::slice(f, 1, c, c + 1)), selected))
        parts.push_back(mt::reshape(g, mt::Shape{g.numel()}));
      rows.push_back(mt::concat(parts, 0).detach());
    }
    per_output.push_back(mt::stack(rows, 0));
  }
  return mt::stack(per_output, 0);
}

// The full kernel [nA·C, nB·C] from reference rows [C, n, P].
Tensor full_from_rows(const Tensor& ja, const Tensor& jb) {
  const auto by_point = [](const Tensor& j) {
    return mt::reshape(mt::permute(j, {1, 0, 2}), mt::Shape{j.dim(0) * j.dim(1), j.dim(2)});
  };
  return mt::matmul(by_point(ja), by_point(jb), false, true);
}

const meta::NtkOptions kFull{.mode = meta::KernelMode::full};

constexpr meta::MlpOptions kNtkParam{.parameterization = meta::Parameterization::ntk};
constexpr meta::MlpOptions kNtkParamNoBias{.parameterization = meta::Parameterization::ntk, .bias = false};

// The empirical NTK of the NTK-parameterised ReLU network `widths` (one
// output) at a fresh initialisation, relative to the analytic kernel, averaged
// over three seeds.
double mean_error_to_limit(const std::vector<std::int64_t>& widths, const meta::MlpOptions& options, const Tensor& x,
                           const Tensor& limit) {
  const meta::Mlp model(widths, options);
  double total = 0;
  for (std::uint64_t seed : {31, 32, 33}) {
    mt::Generator gen(seed);
    total += relative_error(meta::empirical_ntk(model, model.init(gen, f64), x), limit) / 3;
  }
  return total;
}

// An Mlp seen through the Model interface, with its dense tape hidden (so
// empirical_ntk takes the generic per-sample path) or altered.
class Wrapped final : public meta::Model {
 public:
  enum class Tape { hidden, doubled_first_scale, no_biases };
  Wrapped(const meta::Mlp& inner, Tape tape) : inner_(inner), tape_(tape) {}
  const std::vector<meta::ParamInfo>& parameters() const override { return inner_.parameters(); }
  std::vector<Tensor> init(mt::Generator& gen, DType dtype) const override { return inner_.init(gen, dtype); }
  Tensor forward(const std::vector<Tensor>& params, const Tensor& x) const override {
    return inner_.forward(params, x);
  }
  mt::Shape input_shape() const override { return inner_.input_shape(); }
  std::int64_t outputs() const override { return inner_.outputs(); }
  bool couples_examples() const override { return false; }
  std::vector<Tensor> relu_preactivations(const std::vector<Tensor>& params, const Tensor& x) const override {
    return inner_.relu_preactivations(params, x);
  }
  std::optional<meta::DenseTape> dense_layers(const std::vector<Tensor>& params, const Tensor& x) const override {
    if (tape_ == Tape::hidden) return std::nullopt;
    std::optional<meta::DenseTape> tape = inner_.dense_layers(params, x);
    if (tape_ == Tape::doubled_first_scale) tape->layers.front().scale *= 2;
    if (tape_ == Tape::no_biases)
      for (meta::DenseLayer& l : tape->layers) l.bias.reset();
    return tape;
  }

 protected:
  std::string name() const override { return inner_.describe() + " (wrapped)"; }

 private:
  const meta::Mlp& inner_;
  Tape tape_;
};

// The MLPs the dense path serves: both parameterisations, with and without
// biases, tanh and ReLU.
std::vector<meta::Mlp> dense_models() {
  std::vector<meta::Mlp> models;
  models.emplace_back(std::vector<std::int64_t>{3, 5, 4, 2}, meta::Activation::tanh);
  models.emplace_back(std::vector<std::int64_t>{3, 5, 4, 2},
                      meta::MlpOptions{.activation = meta::Activation::relu, .bias = false});
  models.emplace_back(std::vector<std::int64_t>{3, 6, 2}, kNtkParam);
  models.emplace_back(
      std::vector<std::int64_t>{3, 5, 4, 3},
      meta::MlpOptions{
          .activation = meta::Activation::tanh, .parameterization = meta::Parameterization::ntk, .bias = false});
  return models;
}

}  // namespace

TEST_SUITE("ntk") {
  TEST_CASE("the batched Jacobian rows and kernel equal one backward pass per sample, for every subset") {
    const meta::Mlp model({3, 5, 4, 2}, meta::Activation::tanh);
    const auto params = random_params(model, 1);
    const Tensor a = random_inputs(model, {4}, 2), b = random_inputs(model, {3}, 3);
    for (meta::ParamSubset subset : {meta::ParamSubset::all, meta::ParamSubset::head, meta::ParamSubset::weights}) {
      CAPTURE(meta::param_subset_name(subset));
      const Tensor ja = reference_rows(model, params, a, subset), jb = reference_rows(model, params, b, subset);
      CHECK(relative_error(meta::jacobian_rows(model, params, a, {.subset = subset}), ja) < 1e-13);
      const Tensor theta = meta::empirical_ntk(model, params, a, b, {.mode = meta::KernelMode::full, .subset = subset});
      CHECK(relative_error(theta, full_from_rows(ja, jb)) < 1e-13);
    }
    CHECK(meta::jacobian_rows(model, params, a).shape() == mt::Shape{2, 4, 20 + 24 + 10});
  }

  TEST_CASE("full, trace and diagonal modes agree, and Θ(a, b) = Θ(b, a)ᵀ") {
    const meta::Mlp model({3, 6, 3}, meta::Activation::tanh);
    const auto params = random_params(model, 4);
    const Tensor a = random_inputs(model, {4}, 5), b = random_inputs(model, {2}, 6);
    const Tensor full = meta::empirical_ntk(model, params, a, b, kFull);
    const Tensor diagonal = meta::empirical_ntk(model, params, a, b, {.mode = meta::KernelMode::diagonal});
    const Tensor trace = meta::empirical_ntk(model, params, a, b, {.mode = meta::KernelMode::trace});
    REQUIRE(full.shape() == mt::Shape{12, 6});
    REQUIRE(diagonal.shape() == mt::Shape{4, 2, 3});
    REQUIRE(trace.shape() == mt::Shape{4, 2});
    const auto f = full.to_vector(), d = diagonal.to_vector(), t = trace.to_vector();
    double worst = 0;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 2; ++j) {
        double mean_c = 0;
        for (int c = 0; c < 3; ++c) {
          worst = std::max(worst, std::abs(d[(i * 2 + j) * 3 + c] - f[(i * 3 + c) * 6 + j * 3 + c]));
          mean_c += f[(i * 3 + c) * 6 + j * 3 + c] / 3;
        }
        worst = std::max(worst, std::abs(t[i * 2 + j] - mean_c));
      }
    CHECK(worst < 1e-13);
    CHECK(relative_error(meta::empirical_ntk(model, params, b, a, kFull), mt::transpose(full)) < 1e-14);
  }

  TEST_CASE("Θ(x, x) is exactly symmetric and positive semi-definite") {
    const meta::Mlp model({2, 8, 3}, meta::Activation::relu);
    const auto params = random_params(model, 7);
    const Tensor x = random_inputs(model, {120}, 8);  // large enough that a GEMM of J with Jᵀ is not symmetric
    const Tensor diagonal = meta::empirical_ntk(model, params, x, {.mode = meta::KernelMode::diagonal});
    CHECK(relative_error(diagonal, mt::transpose(diagonal, 0, 1)) == 0);
    const Tensor batched = meta::empirical_ntk(model, params, random_inputs(model, {2, 5}, 46), kFull);
    CHECK(relative_error(batched, mt::transpose(batched)) == 0);
    for (meta::KernelMode mode : {meta::KernelMode::full, meta::KernelMode::trace}) {
      const Tensor theta = meta::empirical_ntk(model, params, x, {.mode = mode});
      CHECK(relative_error(theta, mt::transpose(theta)) == 0);
      const auto values = mt::eigh(theta).values.to_vector();
      CHECK(values.front() >= -1e-12 * values.back());
      CHECK(values.back() > 0);
    }
  }

  TEST_CASE("a linear model's kernel is XXᵀ, plus 1 for the bias") {
    const meta::Mlp model({4, 1});
    const auto params = random_params(model, 9);
    const Tensor x = random_inputs(model, {5}, 10);
    const Tensor gram = mt::matmul(x, x, false, true);
    CHECK(relative_error(meta::empirical_ntk(model, params, x), gram + 1.0) < 1e-14);
    CHECK(relative_error(meta::empirical_ntk(model, params, x, {.subset = meta::ParamSubset::weights}), gram) < 1e-14);
  }

  TEST_CASE("the head subset is the kernel of the last layer: features hᵢ·hⱼ + 1 on each output") {
    const meta::Mlp model({3, 5, 2}, meta::Activation::tanh);
    const auto params = random_params(model, 11);
    const Tensor x = random_inputs(model, {4}, 12);
    const Tensor h = mt::tanh(mt::matmul(x, params[0]) + params[1]);
    const Tensor features = mt::matmul(h, h, false, true) + 1.0;  // [4, 4]
    const Tensor diagonal =
        meta::empirical_ntk(model, params, x, {.mode = meta::KernelMode::diagonal, .subset = meta::ParamSubset::head});
    CHECK(relative_error(mt::slice(diagonal, 2, 0, 1), mt::unsqueeze(features, 2)) < 1e-14);
    CHECK(relative_error(mt::slice(diagonal, 2, 1, 2), mt::unsqueeze(features, 2)) < 1e-14);
    // Across outputs the head kernel is zero: output c's weights touch only output c.
    const Tensor full =
        meta::empirical_ntk(model, params, x, {.mode = meta::KernelMode::full, .subset = meta::ParamSubset::head});
    CHECK(std::abs(full.to_vector()[1]) == 0);
  }

  TEST_CASE("task-batched inputs give each task's kernel") {
    const meta::Mlp model({2, 4, 2}, meta::Activation::tanh);
    const auto params = random_params(model, 13);
    const Tensor a = random_inputs(model, {3, 4}, 14), b = random_inputs(model, {3, 2}, 15);
    for (meta::KernelMode mode : {meta::KernelMode::full, meta::KernelMode::trace, meta::KernelMode::diagonal}) {
      const Tensor batched = meta::empirical_ntk(model, params, a, b, {.mode = mode});
      const Tensor rows = meta::jacobian_rows(model, params, a);
      REQUIRE(rows.shape() == mt::Shape{3, 2, 4, 22});
      for (std::int64_t t = 0; t < 3; ++t) {
        const Tensor at = mt::squeeze(mt::slice(a, 0, t, t + 1), 0), bt = mt::squeeze(mt::slice(b, 0, t, t + 1), 0);
        CHECK(relative_error(mt::squeeze(mt::slice(batched, 0, t, t + 1), 0),
                             meta::empirical_ntk(model, params, at, bt, {.mode = mode})) < 1e-14);
        CHECK(relative_error(mt::squeeze(mt::slice(rows, 0, t, t + 1), 0), meta::jacobian_rows(model, params, at)) <
              1e-14);
      }
    }
  }

  TEST_CASE("with create_graph the kernel's derivative matches finite differences; without, it is detached") {
    const meta::Mlp model({2, 4, 2}, meta::Activation::tanh);
    const auto base = random_params(model, 16);
    const Tensor a = random_inputs(model, {3}, 17), b = random_inputs(model, {2}, 18);
    mt::Generator gen(19);
    const Tensor weights = mt::normal({6, 4}, 0, 1, gen, f64);  // a loss of the full kernel
    const auto loss = [&](const std::vector<Tensor>& p, bool create_graph) {
      return mt::sum(mt::square(meta::empirical_ntk(model, p, a, b,
                                                    {.mode = meta::KernelMode::full, .create_graph = create_graph})) *
                     weights);
    };
    mt::TapeScope scope;
    std::vector<Tensor> leaves;
    for (const Tensor& p : base) leaves.push_back(p.clone().requires_grad_());
    // The kernel does not depend on the last bias: its derivative is 0.
    const std::vector<Tensor> g = mt::grad(loss(leaves, true), leaves, {.allow_unused = true});
    CHECK_FALSE(meta::empirical_ntk(model, leaves, a).requires_grad());
    CHECK_FALSE(meta::jacobian_rows(model, leaves, a).requires_grad());
    for (std::size_t i = 0; i < base.size(); ++i) {
      const Tensor u = mt::normal(base[i].shape(), 0, 1, gen, f64);
      const double h = 1e-5;
      auto plus = base, minus = base;
      plus[i] = base[i] + u * h;
      minus[i] = base[i] - u * h;
      const double fd = (loss(plus, false).item() - loss(minus, false).item()) / (2 * h);
      const double exact = mt::sum(g[i] * u).item();
      CAPTURE(i);
      CHECK(std::abs(fd - exact) <= 1e-6 * std::max(1.0, std::abs(exact)));
    }
  }

  TEST_CASE("the per-sample rows take one pass: the recorded graph does not grow with the number of examples") {
    const meta::Mlp model({3, 5, 2}, meta::Activation::tanh);
    const auto params = random_params(model, 41);
    const auto nodes = [&](std::int64_t n) {
      mt::TapeScope scope;
      const std::size_t before = mt::tape_stats().nodes;
      (void)meta::jacobian_rows(model, params, random_inputs(model, {n}, 42), {.create_graph = true});
      return mt::tape_stats().nodes - before;
    };
    CHECK(nodes(2) > 0);
    CHECK(nodes(2) == nodes(9));
  }

  TEST_CASE("the dense path equals the generic per-sample path in every mode, subset, cross and task-batched case") {
    for (const meta::Mlp& model : dense_models()) {
      CAPTURE(model.describe());
      const Wrapped generic(model, Wrapped::Tape::hidden);
      const auto params = random_params(model, 50);
      const Tensor a = random_inputs(model, {4}, 51), b = random_inputs(model, {3}, 52);
      const Tensor as = random_inputs(model, {2, 4}, 53), bs = random_inputs(model, {2, 3}, 54);
      for (meta::KernelMode mode : meta::kKernelModes)
        for (meta::ParamSubset subset : meta::kParamSubsets) {
          CAPTURE(meta::kernel_mode_name(mode));
          CAPTURE(meta::param_subset_name(subset));
          const meta::NtkOptions options{.mode = mode, .subset = subset};
          for (const auto& [x, y] : {std::pair{a, a}, std::pair{a, b}, std::pair{as, as}, std::pair{as, bs}}) {
            CAPTURE(x.shape().str() + " " + y.shape().str());
            const Tensor fast = meta::empirical_ntk(model, params, x, y, options);
            CHECK(fast.shape() == meta::empirical_ntk(generic, params, x, y, options).shape());
            CHECK(relative_error(fast, meta::empirical_ntk(generic, params, x, y, options)) < 1e-12);
          }
        }
    }
  }

  TEST_CASE("with create_graph, first and second derivatives through the dense kernel equal the generic path's") {
    for (const meta::Mlp& model : dense_models()) {
      CAPTURE(model.describe());
      const Wrapped generic(model, Wrapped::Tape::hidden);
      const auto base = random_params(model, 55);
      const Tensor a = random_inputs(model, {2, 3}, 56), b = random_inputs(model, {2, 2}, 57);
      mt::Generator gen(58);
      for (meta::KernelMode mode : meta::kKernelModes) {
        CAPTURE(meta::kernel_mode_name(mode));
        mt::TapeScope scope;
        std::vector<Tensor> leaves, directions;
        for (const Tensor& p : base) {
          leaves.push_back(p.clone().requires_grad_());
          directions.push_back(mt::normal(p.shape(), 0, 1, gen, f64));
        }
        const meta::NtkOptions options{.mode = mode, .create_graph = true};
        Tensor weights;
        // A loss of Θ(a, a) and Θ(a, b), its gradient, and the gradient of
        // the gradient along `directions` (a Hessian-vector product).
        const auto derivatives = [&](const meta::Model& m) {
          const Tensor same = meta::empirical_ntk(m, leaves, a, options),
                       cross = meta::empirical_ntk(m, leaves, a, b, options);
          if (!weights.defined()) weights = mt::normal(cross.shape(), 0, 1, gen, f64);
          const Tensor loss = mt::sum(mt::square(same)) + mt::sum(mt::tanh(cross) * weights);
          const mt::GradOptions recorded{.create_graph = true, .allow_unused = true};
          const std::vector<Tensor> g = mt::grad(loss, leaves, recorded);
          Tensor along = mt::sum(g[0] * directions[0]);
          for (std::size_t i = 1; i < g.size(); ++i) along = along + mt::sum(g[i] * directions[i]);
          std::vector<Tensor> out = g;
          for (const Tensor& h : mt::grad(along, leaves, {.allow_unused = true})) out.push_back(h);
          return out;
        };
        const std::vector<Tensor> fast = derivatives(model), slow = derivatives(generic);
        for (std::size_t i = 0; i < fast.size(); ++i) {
          CAPTURE(i);
          CHECK(relative_error(fast[i], slow[i]) < 1e-12);
        }
      }
    }
  }

  TEST_CASE("an MLP's dense tape: each layer's input and pre-activation, its scale, and the model's output") {
    const meta::Mlp model({3, 5, 2}, kNtkParam);
    const auto params = random_params(model, 59);
    const Tensor x = random_inputs(model, {2, 4}, 60);
    const std::optional<meta::DenseTape> tape = model.dense_layers(params, x);
    REQUIRE(tape.has_value());
    REQUIRE(tape->layers.size() == 2);
    CHECK(relative_error(tape->output, model.forward(params, x)) == 0);
    CHECK(tape->layers[0].input.shape() == mt::Shape{2, 4, 3});
    CHECK(tape->layers[1].input.shape() == mt::Shape{2, 4, 5});
    CHECK(tape->layers[1].preactivation.shape() == mt::Shape{2, 4, 2});
    CHECK(std::abs(tape->layers[1].scale - 1 / std::sqrt(5.0)) < 1e-16);
    CHECK(tape->layers[1].weight == 2);
    CHECK(tape->layers[1].bias == std::optional<std::size_t>(3));
    CHECK(relative_error(tape->layers[1].input, mt::relu(tape->layers[0].preactivation)) == 0);
    const meta::Conv4 conv(
        {.in_channels = 1, .image_size = 8, .channels = 2, .classes = 2, .strided = true, .batch_norm = false});
    CHECK_FALSE(conv.dense_layers(random_params(conv, 61), random_inputs(conv, {1, 2}, 62)).has_value());
    CHECK(throws_error<mt::ShapeError>([&] { model.dense_layers(params, random_inputs(model, {4}, 63)); }, {"[4, 3]"}));
  }

  TEST_CASE("the kernel comes from the dense tape when it covers the selected parameters, else per sample") {
    const meta::Mlp model({3, 5, 2}, meta::Activation::tanh);
    const auto params = random_params(model, 64);
    const Tensor x = random_inputs(model, {4}, 65);
    const Tensor generic = meta::empirical_ntk(Wrapped(model, Wrapped::Tape::hidden), params, x);
    // A tape that misstates the first layer's scale changes the kernel: it is the one used.
    const Tensor lied = meta::empirical_ntk(Wrapped(model, Wrapped::Tape::doubled_first_scale), params, x);
    CHECK(relative_error(lied, generic) > 1e-3);
    // A tape that omits the biases covers the weights only: the full kernel falls back.
    const Wrapped no_biases(model, Wrapped::Tape::no_biases);
    CHECK(relative_error(meta::empirical_ntk(no_biases, params, x), generic) < 1e-12);
    const meta::NtkOptions weights{.subset = meta::ParamSubset::weights};
    CHECK(relative_error(meta::empirical_ntk(no_biases, params, x, weights),
                         meta::empirical_ntk(Wrapped(model, Wrapped::Tape::hidden), params, x, weights)) < 1e-12);
  }

  TEST_CASE("Θv recorded with create_graph has the derivative of the recorded kernel times v") {
    const meta::Mlp model({2, 4, 2}, meta::Activation::tanh);
    const auto base = random_params(model, 43);
    const Tensor x = random_inputs(model, {3}, 44);
    mt::Generator gen(45);
    const Tensor v = mt::normal({3, 2}, 0, 1, gen, f64), w = mt::normal({3, 2}, 0, 1, gen, f64);
    mt::TapeScope scope;
    std::vector<Tensor> leaves;
    for (const Tensor& p : base) leaves.push_back(p.clone().requires_grad_());
    const meta::NtkOptions recorded{.mode = meta::KernelMode::full, .create_graph = true};
    const Tensor direct = mt::sum(meta::ntk_vector_product(model, leaves, x, v, recorded) * w);
    const Tensor via_kernel = mt::sum(
        mt::matmul(meta::empirical_ntk(model, leaves, x, recorded), mt::reshape(v, {6, 1})) * mt::reshape(w, {6, 1}));
    const mt::GradOptions unused{.allow_unused = true};
    CHECK(relative_error(mt::grad(direct, leaves, unused), mt::grad(via_kernel, leaves, unused)) < 1e-12);
    CHECK_FALSE(meta::ntk_vector_product(model, leaves, x, v).requires_grad());
  }

  TEST_CASE("Θv without forming Θ equals the full kernel times v") {
    const meta::Mlp model({3, 5, 2}, meta::Activation::tanh);
    const auto params = random_params(model, 20);
    mt::Generator gen(21);
    for (meta::ParamSubset subset : {meta::ParamSubset::all, meta::ParamSubset::head}) {
      const Tensor x = random_inputs(model, {4}, 22);
      const Tensor v = mt::normal({4, 2}, 0, 1, gen, f64);
      const Tensor theta = meta::empirical_ntk(model, params, x, {.mode = meta::KernelMode::full, .subset = subset});
      const Tensor expected = mt::reshape(mt::matmul(theta, mt::reshape(v, {8, 1})), {4, 2});
      CHECK(relative_error(meta::ntk_vector_product(model, params, x, v, {.subset = subset}), expected) < 1e-13);
      // Task-batched: one kernel per task, no coupling across tasks.
      const Tensor xs = random_inputs(model, {2, 3}, 23);
      const Tensor vs = mt::normal({2, 3, 2}, 0, 1, gen, f64);
      const Tensor thetas = meta::empirical_ntk(model, params, xs, {.mode = meta::KernelMode::full, .subset = subset});
      const Tensor batched = mt::reshape(mt::matmul(thetas, mt::reshape(vs, {2, 6, 1})), {2, 3, 2});
      CHECK(relative_error(meta::ntk_vector_product(model, params, xs, vs, {.subset = subset}), batched) < 1e-13);
    }
  }

  TEST_CASE("Conv4 with and without batch norm against one backward pass per sample (set Jacobian with batch norm)") {
    for (bool batch_norm : {false, true}) {
      CAPTURE(batch_norm);
      const meta::Conv4 model(
          {.in_channels = 1, .image_size = 8, .channels = 4, .classes = 3, .strided = true, .batch_norm = batch_norm});
      const auto params = random_params(model, 24, 0.5);
      const Tensor x = random_inputs(model, {2, 3}, 25);
      const Tensor rows = meta::jacobian_rows(model, params, x);
      const Tensor theta = meta::empirical_ntk(model, params, x, kFull);
      for (std::int64_t t = 0; t < 2; ++t) {
        const Tensor xt = mt::squeeze(mt::slice(x, 0, t, t + 1), 0);
        const Tensor expected = reference_rows(model, params, xt, meta::ParamSubset::all);
        CHECK(relative_error(mt::squeeze(mt::slice(rows, 0, t, t + 1), 0), expected) < 1e-12);
        CHECK(relative_error(mt::squeeze(mt::slice(theta, 0, t, t + 1), 0), full_from_rows(expected, expected)) <
              1e-12);
      }
    }
  }

  TEST_CASE("Conv4 pooled without batch norm, weights only") {
    const meta::Conv4 model({.in_channels = 2, .image_size = 16, .channels = 2, .classes = 2, .batch_norm = false});
    const auto params = random_params(model, 26, 0.5);
    const Tensor x = random_inputs(model, {3}, 27);
    const Tensor expected = reference_rows(model, params, x, meta::ParamSubset::weights);
    CHECK(relative_error(meta::jacobian_rows(model, params, x, {.subset = meta::ParamSubset::weights}), expected) <
          1e-12);
  }

  TEST_CASE("names parse back, and bad input throws typed errors naming what") {
    for (meta::KernelMode m : {meta::KernelMode::full, meta::KernelMode::trace, meta::KernelMode::diagonal})
      CHECK(meta::parse_kernel_mode(meta::kernel_mode_name(m)) == m);
    for (meta::ParamSubset s : {meta::ParamSubset::all, meta::ParamSubset::head, meta::ParamSubset::weights})
      CHECK(meta::parse_param_subset(meta::param_subset_name(s)) == s);
    CHECK(throws_error<mt::ValueError>([] { meta::parse_kernel_mode("diag"); }, {"diag", "trace, full, diagonal"}));
    CHECK(throws_error<mt::ValueError>([] { meta::parse_param_subset("bias"); }, {"bias", "all, head, weights"}));

    const meta::Mlp model({3, 4, 2});
    const auto params = random_params(model, 28);
    const Tensor x = random_inputs(model, {4}, 29);
    CHECK(throws_error<mt::ShapeError>([&] { meta::empirical_ntk(model, {params[0]}, x); }, {"4 parameters, got 1"}));
    auto wrong = params;
    wrong[2] = mt::zeros({5, 2}, f64);
    CHECK(throws_error<mt::ShapeError>([&] { meta::empirical_ntk(model, wrong, x); }, {"w2", "[5, 2]", "[4, 2]"}));
    wrong = params;
    wrong[0] = mt::zeros({2, 3, 4}, f64);  // per-task parameters are refused: the kernel is of shared ones
    CHECK(throws_error<mt::ShapeError>([&] { meta::jacobian_rows(model, wrong, x); }, {"w1", "[2, 3, 4]"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          meta::empirical_ntk(model, params, mt::zeros({4, 5}, f64));
        },
        {"first inputs", "[4, 5]"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          meta::empirical_ntk(model, params, x, mt::zeros({1, 4, 3}, f64));
        },
        {"[4, 3]", "[1, 4, 3]", "both"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          meta::empirical_ntk(model, params, mt::zeros({2, 4, 3}, f64), mt::zeros({3, 4, 3}, f64));
        },
        {"task counts", "[2, 4, 3]", "[3, 4, 3]"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          meta::empirical_ntk(model, params, mt::zeros({0, 3}, f64));
        },
        {"empty", "[0, 3]"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          meta::empirical_ntk(model, params, x, mt::zeros({2, 0, 3}, f64));
        },
        {"second inputs", "empty"}));
    CHECK(throws_error<mt::DTypeError>([&] { meta::empirical_ntk(model, params, x.to(DType::f32)); }, {"dtype"}));
    std::vector<Tensor> ints;
    for (const Tensor& p : params) ints.push_back(mt::zeros(p.shape(), DType::i64));
    CHECK(throws_error<mt::DTypeError>([&] { meta::empirical_ntk(model, ints, x); }, {"w1", "f32 or f64"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          meta::ntk_vector_product(model, params, x, mt::zeros({4, 3}, f64));
        },
        {"v", "[4, 2]", "[4, 3]"}));
    CHECK(throws_error<mt::ValueError>([&] { meta::empirical_ntk(model, params, Tensor()); }, {"undefined"}));
    const Tensor ones = mt::ones({4, 2}, f64);
    const Tensor theta_ones =
        mt::reshape(mt::matmul(meta::empirical_ntk(model, params, x, kFull), mt::reshape(ones, {8, 1})), {4, 2});
    {
      mt::NoGradScope no_grad;
      CHECK(throws_error<mt::GradError>([&] { meta::empirical_ntk(model, params, x); }, {"NoGradScope"}));
      CHECK(throws_error<mt::GradError>([&] { meta::jacobian_rows(model, params, x); }, {"NoGradScope"}));
      CHECK(relative_error(meta::ntk_vector_product(model, params, x, ones), theta_ones) < 1e-13);
    }
    auto nan_params = params;
    nan_params[1] = mt::full({4}, NAN, f64);
    CHECK(throws_error<mt::ValueError>([&] { meta::empirical_ntk(model, nan_params, x); }, {"non-finite", "[4, 4]"}));
    CHECK(throws_error<mt::ValueError>([&] { meta::jacobian_rows(model, nan_params, x); }, {"jacobian_rows"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          meta::ntk_vector_product(model, params, x, mt::full({4, 2}, INFINITY, f64));
        },
        {"non-finite"}));
  }

  TEST_CASE("the NTK parameterisation: unit-variance parameters, layers scaled by 1/√fan_in, linear kernel XXᵀ/d") {
    const meta::Mlp ntk({4, 1}, kNtkParamNoBias), ntk_bias({4, 1}, kNtkParam);
    CHECK(ntk.describe() == "mlp 4-1 relu ntk no bias");
    CHECK(meta::Mlp({4, 1}).describe() == "mlp 4-1 relu");
    CHECK(ntk.parameters().size() == 1);
    const Tensor x = random_inputs(ntk, {5}, 34);
    const Tensor gram = mt::matmul(x, x, false, true) / 4.0;
    CHECK(relative_error(meta::empirical_ntk(ntk, random_params(ntk, 35), x), gram) < 1e-14);
    CHECK(relative_error(meta::empirical_ntk(ntk_bias, random_params(ntk_bias, 36), x), gram + 1.0) < 1e-14);

    const meta::Mlp wide({64, 128, 1}, kNtkParam);
    mt::Generator gen(37);
    const auto params = wide.init(gen, f64);
    const auto w = params[0].to_vector(), b = params[1].to_vector();
    double w2 = 0, b2 = 0;
    for (double v : w) w2 += v * v / static_cast<double>(w.size());
    for (double v : b) b2 += v * v / static_cast<double>(b.size());
    CHECK(std::abs(w2 - 1) < 0.05);  // 8192 draws: the mean square is 1 ± 0.016
    CHECK(std::abs(b2 - 1) < 0.4);   // 128 draws: 1 ± 0.125
    const Tensor xs = random_inputs(wide, {3}, 38);
    const Tensor pre = wide.relu_preactivations(params, xs).front();
    CHECK(relative_error(pre, mt::matmul(xs, params[0]) / 8.0 + params[1]) < 1e-14);
    CHECK(relative_error(wide.forward(params, xs),
                         mt::matmul(mt::relu(pre), params[2]) / std::sqrt(128.0) + params[3]) < 1e-14);
  }

  TEST_CASE("the analytic ReLU kernels: the arc-cosine formula, the recursion, and where they coincide") {
    const Tensor e = mt::from_vector({1, 0, 0, 1}, {2, 2}, f64);
    // φ = 0: x·x/2 + ‖x‖²/2 = 1; φ = π/2: 0 + 1/(2π).
    const Tensor one_hidden = meta::relu_ntk_one_hidden(e, e);
    CHECK(relative_error(one_hidden, mt::from_vector({1, 0.5 / M_PI, 0.5 / M_PI, 1}, {2, 2}, f64)) < 1e-15);
    // Σ and Θ on the diagonal for ‖x‖² = d, no bias: Σˡ = 2^{1-l}, Σ̇ = 1/2,
    // so Θ after L hidden layers is (L + 1)/2^L.
    const Tensor x = mt::from_vector({1, 1, -1}, {1, 3}, f64);
    CHECK(std::abs(meta::relu_ntk(x, x, 3).item() - 0.5) < 1e-15);
    CHECK(std::abs(meta::relu_ntk(x, x, 1, true).item() - (2 * 0.5 + 2)) < 1e-15);  // Σ¹ = Θ¹ = 2, Σ² = 2

    mt::Generator gen(39);
    const Tensor a = mt::normal({5, 3}, 0, 1, gen, f64), b = mt::normal({4, 3}, 0, 1, gen, f64);
    CHECK(relative_error(meta::relu_ntk_one_hidden(a, b), meta::relu_ntk(a, b, 1) * 3.0) < 1e-14);
    CHECK(relative_error(meta::relu_ntk(b, a, 2, true), mt::transpose(meta::relu_ntk(a, b, 2, true))) < 1e-15);

    CHECK(throws_error<mt::ShapeError>([&] { meta::relu_ntk(a, mt::zeros({2, 4}, f64), 1); }, {"[5, 3]", "[2, 4]"}));
    CHECK(throws_error<mt::ShapeError>([&] { meta::relu_ntk_one_hidden(mt::zeros({3}, f64), a); }, {"first", "[3]"}));
    CHECK(throws_error<mt::ValueError>([&] { meta::relu_ntk(a, b, 0); }, {"hidden_layers", "0"}));
    CHECK(throws_error<mt::ValueError>([&] { meta::relu_ntk(a, mt::zeros({0, 3}, f64), 1); }, {"second", "empty"}));
    const Tensor bad = mt::from_vector({1, NAN, 0}, {1, 3}, f64);
    CHECK(throws_error<mt::ValueError>([&] { meta::relu_ntk_one_hidden(a, bad); }, {"second", "[0, 1]"}));
    CHECK(throws_error<mt::DTypeError>([&] { meta::relu_ntk(mt::from_indices({1, 2, 3}, {1, 3}), b, 1); }, {"f32"}));
  }

  TEST_CASE("the empirical NTK of wide NTK-parameterised ReLU networks approaches the analytic kernel") {
    mt::Generator gen(40);
    const Tensor x = mt::normal({5, 3}, 0, 1, gen, f64);
    // One hidden layer, no bias: 16 times the width, about a quarter of the error.
    const Tensor shallow = meta::relu_ntk(x, x, 1);
    const double narrow = mean_error_to_limit({3, 256, 1}, kNtkParamNoBias, x, shallow);
    const double wide = mean_error_to_limit({3, 4096, 1}, kNtkParamNoBias, x, shallow);
    CAPTURE(narrow);
    CAPTURE(wide);
    CHECK(wide < 0.5 * narrow);
    CHECK(wide < 0.05);
    // Two hidden layers with biases.
    const Tensor deep = meta::relu_ntk(x, x, 2, true);
    const double deep_narrow = mean_error_to_limit({3, 64, 64, 1}, kNtkParam, x, deep);
    const double deep_wide = mean_error_to_limit({3, 1024, 1024, 1}, kNtkParam, x, deep);
    CAPTURE(deep_narrow);
    CAPTURE(deep_wide);
    CHECK(deep_wide < 0.5 * deep_narrow);
    CHECK(deep_wide < 0.1);
  }
}
