#include "gradcheck.hpp"

#include <cmath>
#include <sstream>

namespace metatape::testing {
namespace {

// Turns inf-poisoning of fresh allocations on for one scope.
class Poison {
 public:
  Poison() { set_poison_allocations(true); }
  ~Poison() { set_poison_allocations(false); }
  Poison(const Poison&) = delete;
  Poison& operator=(const Poison&) = delete;
};

// f's outputs, concatenated, for constant inputs. f may record (the
// function of gradgradcheck takes a gradient inside), so it runs in a scope.
std::vector<std::vector<double>> evaluate(const Function& f, const std::vector<Tensor>& inputs) {
  TapeScope scope;
  std::vector<std::vector<double>> values;
  for (const Tensor& out : f(inputs)) values.push_back(out.to_vector());
  return values;
}

Tensor with_entry_moved(const Tensor& t, std::int64_t entry, double delta) {
  std::vector<double> v = t.to_vector();
  v[static_cast<std::size_t>(entry)] += delta;
  return from_vector(v, t.shape(), t.dtype()).to(t.device());
}

// Inputs as fresh leaves: the differentiable ones marked requires_grad_.
std::vector<Tensor> as_leaves(const std::vector<Tensor>& inputs, const std::vector<bool>& differentiable) {
  std::vector<Tensor> leaves;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    leaves.push_back(inputs[i].detach());
    if (differentiable[i]) leaves.back().requires_grad_();
  }
  return leaves;
}

std::vector<Tensor> selected(const std::vector<Tensor>& xs, const std::vector<bool>& mask) {
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < xs.size(); ++i)
    if (mask[i]) out.push_back(xs[i]);
  return out;
}

bool close(double analytic, double numeric, const GradcheckOptions& o) {
  return std::abs(analytic - numeric) <= o.atol + o.rtol * std::abs(numeric);  // false for NaN
}

CheckResult full_check(const Function& f, const std::vector<Tensor>& inputs, const std::vector<bool>& differentiable,
                       const GradcheckOptions& o) {
  CheckResult result;
  // Analytic Jacobian, one backward per output entry: rows[output][entry][input][j].
  std::vector<std::vector<std::vector<std::vector<double>>>> rows;
  {
    TapeScope scope;
    const std::vector<Tensor> leaves = as_leaves(inputs, differentiable);
    const std::vector<Tensor> wrt = selected(leaves, differentiable);
    const std::vector<Tensor> outputs = f(leaves);
    Poison poison;
    for (const Tensor& out : outputs) {
      rows.emplace_back();
      for (std::int64_t e = 0; e < out.numel(); ++e) {
        std::vector<std::vector<double>> row;
        if (out.requires_grad()) {
          const Tensor seed = with_entry_moved(zeros(out.shape(), out.dtype(), out.device()), e, 1.0);
          for (const Tensor& g : grad({out}, wrt, {seed}, {.allow_unused = true})) row.push_back(g.to_vector());
        } else {  // a constant output: its Jacobian is zero
          for (const Tensor& x : wrt) row.emplace_back(static_cast<std::size_t>(x.numel()), 0.0);
        }
        rows.back().push_back(std::move(row));
      }
    }
  }
  // Numeric Jacobian, one column per input entry, compared as it comes.
  std::size_t wrt_index = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!differentiable[i]) continue;
    for (std::int64_t j = 0; j < inputs[i].numel(); ++j) {
      std::vector<Tensor> plus = inputs, minus = inputs;
      plus[i] = with_entry_moved(inputs[i], j, o.eps);
      minus[i] = with_entry_moved(inputs[i], j, -o.eps);
      const auto vp = evaluate(f, plus), vm = evaluate(f, minus);
      for (std::size_t out = 0; out < vp.size(); ++out) {
        for (std::size_t e = 0; e < vp[out].size(); ++e) {
          const double numeric = (vp[out][e] - vm[out][e]) / (2 * o.eps);
          const double analytic = rows[out][e][wrt_index][static_cast<std::size_t>(j)];
          ++result.entries;
          if (result.ok && !close(analytic, numeric, o)) {
            std::ostringstream msg;
            msg.precision(12);
            msg << "d output " << out << "[" << e << "] / d input " << i << "[" << j << "]: analytic " << analytic
                << ", numeric " << numeric;
            result.ok = false;
            result.message = msg.str();
          }
        }
      }
    }
    ++wrt_index;
  }
  return result;
}

CheckResult fast_check(const Function& f, const std::vector<Tensor>& inputs, const std::vector<bool>& differentiable,
                       const GradcheckOptions& o) {
  CheckResult result;
  Generator gen(0x5eed);
  for (int probe = 0; probe < o.probes; ++probe) {
    std::vector<Tensor> u(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i)
      if (differentiable[i]) u[i] = normal(inputs[i].shape(), 0, 1, gen, inputs[i].dtype()).to(inputs[i].device());
    // (vᵀJ) u by one backward.
    double analytic = 0;
    std::vector<Tensor> v;
    {
      TapeScope scope;
      const std::vector<Tensor> leaves = as_leaves(inputs, differentiable);
      const std::vector<Tensor> outputs = f(leaves);
      std::vector<Tensor> live, seeds;
      for (const Tensor& out : outputs) {
        v.push_back(normal(out.shape(), 0, 1, gen, out.dtype()).to(out.device()));
        if (out.requires_grad()) {
          live.push_back(out);
          seeds.push_back(v.back());
        }
      }
      Poison poison;
      if (!live.empty()) {
        const std::vector<Tensor> g = grad(live, selected(leaves, differentiable), seeds, {.allow_unused = true});
        const std::vector<Tensor> us = selected(u, differentiable);
        for (std::size_t i = 0; i < g.size(); ++i) analytic += sum(mul(g[i], us[i])).item();
      }
    }
    // vᵀ(J u) by one central difference along u.
    std::vector<Tensor> plus = inputs, minus = inputs;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      if (!differentiable[i]) continue;
      plus[i] = add(inputs[i], scale(u[i], o.eps));
      minus[i] = sub(inputs[i], scale(u[i], o.eps));
    }
    const auto vp = evaluate(f, plus), vm = evaluate(f, minus);
    double numeric = 0;
    for (std::size_t out = 0; out < vp.size(); ++out) {
      const std::vector<double> vv = v[out].to_vector();
      for (std::size_t e = 0; e < vp[out].size(); ++e) numeric += vv[e] * (vp[out][e] - vm[out][e]) / (2 * o.eps);
    }
    ++result.entries;
    if (result.ok && !close(analytic, numeric, o)) {
      std::ostringstream msg;
      msg.precision(12);
      msg << "probe " << probe << ": (vᵀJ)u = " << analytic << " but vᵀ(Ju) = " << numeric;
      result.ok = false;
      result.message = msg.str();
    }
  }
  return result;
}

}  // namespace

CheckResult gradcheck(const Function& f, const std::vector<Tensor>& inputs, const std::vector<bool>& differentiable,
                      const GradcheckOptions& options) {
  return options.fast ? fast_check(f, inputs, differentiable, options) : full_check(f, inputs, differentiable, options);
}

CheckResult gradgradcheck(const Function& f, const std::vector<Tensor>& inputs, const std::vector<bool>& differentiable,
                          const GradcheckOptions& options) {
  const std::size_t n = inputs.size();
  // h(x, v) = vᵀ J_f(x): the first backward, recorded.
  const Function h = [&f, &differentiable, n](const std::vector<Tensor>& xv) {
    std::vector<Tensor> xs(xv.begin(), xv.begin() + static_cast<std::ptrdiff_t>(n));
    for (std::size_t i = 0; i < n; ++i)  // constants (finite-difference calls) become leaves
      if (differentiable[i] && !xs[i].requires_grad()) xs[i] = xs[i].detach().requires_grad_();
    const std::vector<Tensor> outputs = f(xs);
    std::vector<Tensor> live, seeds;
    for (std::size_t o = 0; o < outputs.size(); ++o) {
      if (!outputs[o].requires_grad()) continue;
      live.push_back(outputs[o]);
      seeds.push_back(xv[n + o]);
    }
    std::vector<Tensor> wrt = selected(xs, differentiable);
    if (live.empty()) {
      std::vector<Tensor> zero;
      for (const Tensor& x : wrt) zero.push_back(zeros(x.shape(), x.dtype(), x.device()));
      return zero;
    }
    return grad(live, wrt, seeds, {.create_graph = true, .allow_unused = true});
  };
  // Random cotangents v, shaped like f's outputs, join the inputs.
  std::vector<Tensor> xv = inputs;
  std::vector<bool> xv_differentiable = differentiable;
  Generator gen(0xc0ffee);
  {
    TapeScope scope;
    for (const Tensor& out : f(inputs)) {
      xv.push_back(normal(out.shape(), 0, 1, gen, out.dtype()).to(out.device()));
      xv_differentiable.push_back(true);
    }
  }
  return gradcheck(h, xv, xv_differentiable, options);
}

Function as_function(const OpSample& sample) {
  return [call = sample.call](const std::vector<Tensor>& in) { return std::vector<Tensor>{call(in)}; };
}

GradcheckOptions options_for(const OpSample& sample, GradcheckOptions base) {
  if (sample.fd_step > 0) base.eps = sample.fd_step;
  return base;
}

}  // namespace metatape::testing
