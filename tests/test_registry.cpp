// Every op in the registry, gradchecked to second order in float64, checked
// for float32 against float64, and found in the registry by name; and the
// checker itself: its fast (u, v) mode against the full Jacobian, on correct
// derivatives and on derivatives made wrong on purpose.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <string>

#include "gradcheck.hpp"
#include "metatape/registry.hpp"
#include "test_util.hpp"

namespace mt = metatape;
using mt::testing::as_function;

namespace {

std::uint64_t seed_for(const char* name) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a: a stable seed per op
  for (const char* p = name; *p; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 1099511628211ull;
  return h;
}

// A sample with its derivatives made wrong on purpose and its value kept.
// With h = Σ ‖x_i‖² over the differentiable inputs and h̄ = h detached,
// h − h̄ is 0 in value but has h's derivatives: y + (h − h̄) adds ∇h to every
// first derivative; y + (h − h̄)² leaves them (its gradient 2(h − h̄)∇h is 0)
// but adds 2∇h∇hᵀ to every second one. A finite difference sees neither.
enum class Fault { none, first_derivative, second_derivative };

mt::testing::Function with_fault(const mt::OpSample& s, Fault fault) {
  return [&s, fault](const std::vector<mt::Tensor>& in) {
    const mt::Tensor y = s.call(in);
    if (fault == Fault::none) return std::vector<mt::Tensor>{y};
    mt::Tensor h;
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (!s.differentiable[i]) continue;
      const mt::Tensor squares = mt::sum(mt::square(in[i])).to(y.dtype());
      h = h.defined() ? h + squares : squares;
    }
    const mt::Tensor zero = h - h.detach();
    return std::vector<mt::Tensor>{y + (fault == Fault::first_derivative ? zero : zero * zero)};
  };
}

}  // namespace

TEST_SUITE("registry") {
  TEST_CASE("every op has samples") {
    for (const mt::OpInfo& op : mt::op_registry()) {
      mt::Generator gen(seed_for(op.name));
      INFO(std::string(op.name));
      CHECK(!op.samples(gen, mt::DType::f64).empty());
    }
  }

  TEST_CASE("the registry covers every op the engine promises") {
    std::set<std::string> names;
    for (const mt::OpInfo& op : mt::op_registry()) names.insert(op.name);
    for (const char* expected : {"add",
                                 "add_scaled",
                                 "sub",
                                 "mul",
                                 "div",
                                 "neg",
                                 "scale",
                                 "shift",
                                 "pow",
                                 "exp",
                                 "log",
                                 "sqrt",
                                 "tanh",
                                 "sigmoid",
                                 "relu",
                                 "abs",
                                 "sum",
                                 "mean",
                                 "max",
                                 "logsumexp",
                                 "sum_to",
                                 "expand",
                                 "reshape",
                                 "permute",
                                 "transpose",
                                 "slice",
                                 "gather_rows",
                                 "concat",
                                 "stack",
                                 "matmul",
                                 "linear",
                                 "linear_relu",
                                 "log_softmax",
                                 "softmax",
                                 "cross_entropy",
                                 "mse_loss",
                                 "conv2d",
                                 "max_pool2d",
                                 "batch_norm",
                                 "batch_norm_max_pool2d",
                                 "cholesky",
                                 "solve_triangular",
                                 "cholesky_solve",
                                 "eigh"}) {
      INFO(expected);
      CHECK(names.count(expected) == 1);
    }
  }

  TEST_CASE("gradcheck: first derivatives of every op in float64") {
    for (const mt::OpInfo& op : mt::op_registry()) {
      mt::Generator gen(seed_for(op.name));
      for (const mt::OpSample& s : op.samples(gen, mt::DType::f64)) {
        const auto r = mt::testing::gradcheck(as_function(s), s.inputs, s.differentiable, mt::testing::options_for(s));
        INFO(std::string(op.name) << " (" << s.label << "): " << r.message);
        CHECK(r.ok);
        CHECK(r.entries > 0);
      }
    }
  }

  // gradgradcheck differentiates the recorded first backward against finite
  // differences of that same recorded backward, so a recorded rule that
  // computes a wrong (but smooth) first derivative passes it. Here the
  // recorded vᵀJ must equal the unrecorded one, which gradcheck checked.
  TEST_CASE("the recorded backward gives every op's first derivatives: vᵀJ with create_graph as without") {
    for (const mt::OpInfo& op : mt::op_registry()) {
      mt::Generator gen(seed_for(op.name));
      for (const mt::OpSample& s : op.samples(gen, mt::DType::f64)) {
        INFO(std::string(op.name) << " (" << s.label << ")");
        mt::Generator seed_gen(seed_for(op.name) + 1);
        mt::Tensor v;
        std::vector<std::vector<double>> by_mode[2];
        for (const bool create_graph : {false, true}) {
          mt::TapeScope scope;
          std::vector<mt::Tensor> leaves, wrt;
          for (std::size_t i = 0; i < s.inputs.size(); ++i) {
            leaves.push_back(s.inputs[i].detach());
            if (s.differentiable[i]) wrt.push_back(leaves.back().requires_grad_());
          }
          const mt::Tensor y = s.call(leaves);
          if (!y.requires_grad() || wrt.empty()) break;
          if (!v.defined()) v = mt::normal(y.shape(), 0, 1, seed_gen, y.dtype()).to(y.device());
          for (const mt::Tensor& g : mt::grad({y}, wrt, {v}, {.create_graph = create_graph, .allow_unused = true}))
            by_mode[create_graph ? 1 : 0].push_back(g.to_vector());
        }
        REQUIRE(by_mode[0].size() == by_mode[1].size());
        for (std::size_t i = 0; i < by_mode[0].size(); ++i)
          for (std::size_t j = 0; j < by_mode[0][i].size(); ++j) {
            const double plain = by_mode[0][i][j], recorded = by_mode[1][i][j];
            INFO("input " << i << " entry " << j << ": " << plain << " without a graph, " << recorded << " with");
            CHECK(std::abs(plain - recorded) <= 1e-12 + 1e-10 * std::abs(plain));
          }
      }
    }
  }

  TEST_CASE("gradgradcheck: second derivatives of every op in float64") {
    for (const mt::OpInfo& op : mt::op_registry()) {
      mt::Generator gen(seed_for(op.name));
      for (const mt::OpSample& s : op.samples(gen, mt::DType::f64)) {
        const auto r =
            mt::testing::gradgradcheck(as_function(s), s.inputs, s.differentiable, mt::testing::options_for(s));
        INFO(std::string(op.name) << " (" << s.label << "): " << r.message);
        CHECK(r.ok);
      }
    }
  }

  TEST_CASE("fast (u, v) mode agrees with the full check on every op, and both catch a wrong derivative") {
    const std::pair<Fault, const char*> faults[] = {{Fault::none, "correct"},
                                                    {Fault::first_derivative, "wrong first derivative"},
                                                    {Fault::second_derivative, "wrong second derivative"}};
    for (const mt::OpInfo& op : mt::op_registry()) {
      mt::Generator gen(seed_for(op.name));
      for (const mt::OpSample& s : op.samples(gen, mt::DType::f64)) {
        REQUIRE(std::count(s.differentiable.begin(), s.differentiable.end(), true) > 0);
        for (const auto& [fault, fault_name] : faults) {
          const mt::testing::Function f = with_fault(s, fault);
          for (int order : {1, 2}) {
            const auto check = order == 1 ? mt::testing::gradcheck : mt::testing::gradgradcheck;
            const auto full = check(f, s.inputs, s.differentiable, mt::testing::options_for(s));
            const auto fast = check(f, s.inputs, s.differentiable, mt::testing::options_for(s, {.fast = true}));
            const bool wrong =
                (fault == Fault::first_derivative && order == 1) || (fault == Fault::second_derivative && order == 2);
            INFO(std::string(op.name) << " (" << s.label << "), " << fault_name << ", order " << order
                                      << "; full: " << full.message << "; fast: " << fast.message);
            CHECK(full.ok == !wrong);
            CHECK(fast.ok == !wrong);
          }
        }
      }
    }
  }

  TEST_CASE("fast (u, v) mode on shapes too large for a full Jacobian") {
    mt::Generator gen(77);
    const auto f64 = mt::DType::f64;
    struct Case {
      const char* name;
      std::vector<mt::Tensor> inputs;
      std::function<mt::Tensor(const std::vector<mt::Tensor>&)> call;
    };
    const std::vector<Case> cases = {
        {"matmul [48, 64] @ [64, 40]",
         {mt::normal({48, 64}, 0, 1, gen, f64), mt::normal({64, 40}, 0, 1, gen, f64)},
         [](const std::vector<mt::Tensor>& in) { return mt::matmul(in[0], in[1]); }},
        {"conv2d [4, 6, 12, 12] * [8, 6, 3, 3]",
         {mt::normal({4, 6, 12, 12}, 0, 1, gen, f64), mt::normal({8, 6, 3, 3}, 0, 1, gen, f64)},
         [](const std::vector<mt::Tensor>& in) { return mt::conv2d(in[0], in[1], {.padding = 1}); }},
        {"batch_norm + relu [16, 8, 6, 6]",
         {mt::normal({16, 8, 6, 6}, 0, 1, gen, f64), mt::uniform({8}, 0.5, 1.5, gen, f64),
          mt::uniform({8}, -0.5, 0.5, gen, f64)},
         [](const std::vector<mt::Tensor>& in) { return mt::batch_norm(in[0], in[1], in[2], {.relu = true}); }},
        {"log_softmax [64, 100]",
         {mt::normal({64, 100}, 0, 1, gen, f64)},
         [](const std::vector<mt::Tensor>& in) { return mt::log_softmax(in[0], 1); }},
    };
    for (const Case& c : cases) {
      INFO(c.name);
      const mt::testing::Function f = [&c](const std::vector<mt::Tensor>& in) {
        return std::vector<mt::Tensor>{c.call(in)};
      };
      const std::vector<bool> all(c.inputs.size(), true);
      const auto first = mt::testing::gradcheck(f, c.inputs, all, {.fast = true, .probes = 4});
      INFO(first.message);
      CHECK(first.ok);
      const auto second = mt::testing::gradgradcheck(f, c.inputs, all, {.fast = true, .probes = 2});
      INFO(second.message);
      CHECK(second.ok);
    }
  }

  TEST_CASE("float32 forward and backward agree with float64") {
    for (const mt::OpInfo& op : mt::op_registry()) {
      // The same random draws in both precisions: f32 inputs are f64 inputs rounded.
      mt::Generator g64(seed_for(op.name)), g32(seed_for(op.name));
      const auto s64 = op.samples(g64, mt::DType::f64), s32 = op.samples(g32, mt::DType::f32);
      REQUIRE(s64.size() == s32.size());
      for (std::size_t k = 0; k < s64.size(); ++k) {
        INFO(std::string(op.name) << " (" << s64[k].label << ")");
        std::vector<mt::Tensor> in32;
        for (const mt::Tensor& t : s64[k].inputs) in32.push_back(mt::is_floating(t.dtype()) ? t.to(mt::DType::f32) : t);
        mt::TapeScope scope;
        for (std::size_t i = 0; i < in32.size(); ++i)
          if (s64[k].differentiable[i]) in32[i].requires_grad_();
        const mt::Tensor y32 = s32[k].call(in32), y64 = s64[k].call(s64[k].inputs);
        CHECK(y32.dtype() == mt::DType::f32);
        CHECK(mt::testing::relative_error(y32, y64) < 1e-5);
        // The float32 backward against the float64 one at the same point.
        std::vector<mt::Tensor> in64 = s64[k].inputs, wrt32, wrt64;
        for (std::size_t i = 0; i < in64.size(); ++i) {
          if (!s64[k].differentiable[i]) continue;
          in64[i] = in64[i].detach().requires_grad_();
          wrt32.push_back(in32[i]);
          wrt64.push_back(in64[i]);
        }
        const mt::Tensor z64 = s64[k].call(in64);
        if (!z64.requires_grad()) continue;
        mt::Generator gs(1);
        const mt::Tensor seed = mt::normal(z64.shape(), 0, 1, gs, mt::DType::f64);
        const auto g64 = mt::grad({z64}, wrt64, {seed}, {.allow_unused = true});
        const auto g32 = mt::grad({y32}, wrt32, {seed.to(mt::DType::f32)}, {.allow_unused = true});
        for (std::size_t i = 0; i < g64.size(); ++i) CHECK(mt::testing::relative_error(g32[i], g64[i]) < 1e-5);
      }
    }
  }
}
