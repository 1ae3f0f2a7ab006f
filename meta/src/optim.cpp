#include "metatape/meta/optim.hpp"

#include <cmath>
#include <sstream>

namespace metatape::meta {
namespace {

void check_pairs(const char* who, const std::vector<Tensor>& params, const std::vector<Tensor>& grads) {
  if (params.size() != grads.size())
    throw ValueError(std::string(who) + ": " + std::to_string(grads.size()) + " gradients for " +
                     std::to_string(params.size()) + " parameters");
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i].shape() != grads[i].shape())
      throw ShapeError(std::string(who) + ": gradient " + std::to_string(i) + " has shape " + grads[i].shape().str() +
                       " but its parameter has " + params[i].shape().str());
}

}  // namespace

Sgd::Sgd(double lr) : lr_(lr) {
  if (!(lr > 0)) throw ValueError("sgd: the learning rate must be > 0, got " + std::to_string(lr));
}

void Sgd::step(std::vector<Tensor>& params, const std::vector<Tensor>& grads) {
  check_pairs("sgd", params, grads);
  NoGradScope no_grad;
  for (std::size_t i = 0; i < params.size(); ++i) params[i] = sub(params[i].detach(), scale(grads[i], lr_));
  ++steps_;
}

void Sgd::load_state(const std::vector<Tensor>& state, std::int64_t steps) {
  if (!state.empty()) throw ValueError("sgd: its state is empty, got " + std::to_string(state.size()) + " tensors");
  steps_ = steps;
}

std::string Sgd::describe() const {
  std::ostringstream out;
  out << "sgd(lr=" << lr_ << ")";
  return out.str();
}

Adam::Adam(double lr, double beta1, double beta2, double eps) : lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps) {
  if (!(lr > 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps >= 0))
    throw ValueError("adam: need lr > 0, 0 <= beta1, beta2 < 1 and eps >= 0");
}

void Adam::step(std::vector<Tensor>& params, const std::vector<Tensor>& grads) {
  check_pairs("adam", params, grads);
  NoGradScope no_grad;
  if (m_.empty()) {
    for (const Tensor& p : params) {
      m_.push_back(zeros(p.shape(), p.dtype(), p.device()));
      v_.push_back(zeros(p.shape(), p.dtype(), p.device()));
    }
  }
  if (m_.size() != params.size()) throw ValueError("adam: the number of parameters changed between steps");
  ++steps_;
  const double t = static_cast<double>(steps_);
  const double correction1 = 1 - std::pow(beta1_, t), correction2 = 1 - std::pow(beta2_, t);
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Tensor g = grads[i].detach();
    m_[i] = add(scale(m_[i], beta1_), scale(g, 1 - beta1_));
    v_[i] = add(scale(v_[i], beta2_), scale(square(g), 1 - beta2_));
    const Tensor denominator = shift(scale(sqrt(v_[i]), 1 / std::sqrt(correction2)), eps_);
    params[i] = sub(params[i].detach(), scale(div(m_[i], denominator), lr_ / correction1));
  }
}

std::vector<Tensor> Adam::state() const {
  std::vector<Tensor> out = m_;
  out.insert(out.end(), v_.begin(), v_.end());
  return out;
}

void Adam::load_state(const std::vector<Tensor>& state, std::int64_t steps) {
  if (state.size() % 2 != 0) throw ValueError("adam: its state holds m and v for each parameter, got an odd count");
  const std::size_t n = state.size() / 2;
  m_.assign(state.begin(), state.begin() + static_cast<std::ptrdiff_t>(n));
  v_.assign(state.begin() + static_cast<std::ptrdiff_t>(n), state.end());
  steps_ = steps;
}

std::vector<TensorSpec> Adam::state_layout(const std::vector<Tensor>& params, std::int64_t steps) const {
  std::vector<TensorSpec> out;
  if (steps == 0) return out;
  for (int moment = 0; moment < 2; ++moment)
    for (const Tensor& p : params) out.push_back({p.shape(), p.dtype()});
  return out;
}

std::string Adam::describe() const {
  std::ostringstream out;
  out << "adam(lr=" << lr_ << ", betas=(" << beta1_ << ", " << beta2_ << "), eps=" << eps_ << ")";
  return out.str();
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, double lr) {
  if (name == "sgd") return std::make_unique<Sgd>(lr);
  if (name == "adam") return std::make_unique<Adam>(lr);
  std::string choices;
  for (const char* known : kOptimizerNames) choices += (choices.empty() ? "" : ", ") + std::string(known);
  throw ValueError("unknown optimizer '" + name + "': choose one of " + choices);
}

double global_norm(const std::vector<Tensor>& grads) {
  if (grads.empty()) return 0;
  NoGradScope no_grad;
  // One host read for all the tensors (on a GPU each read is a wait), then
  // the sum in double, in order.
  std::vector<Tensor> squares;
  for (const Tensor& g : grads) squares.push_back(sum(square(g.detach())));
  double total = 0;
  for (double s : stack(squares).to_vector()) total += s;
  return std::sqrt(total);
}

double clip_grad_norm(std::vector<Tensor>& grads, double max_norm) {
  if (!(max_norm > 0)) throw ValueError("clip_grad_norm: max_norm must be > 0, got " + std::to_string(max_norm));
  const double norm = global_norm(grads);
  if (norm > max_norm) {
    NoGradScope no_grad;
    const double factor = max_norm / (norm + 1e-6);  // PyTorch's clip_coef
    for (Tensor& g : grads) g = scale(g.detach(), factor);
  }
  return norm;
}

}  // namespace metatape::meta
