// validate_inputs: the arguments of every public meta:: entry point checked
// against the model, the loss and the config before anything is recorded, so
// a mistake is reported in the caller's terms (the tensor's name, the shape
// passed, the shape expected) instead of as an out-of-bounds read or an
// error about an internally expanded copy.
#include <string>

#include "metatape/meta/maml.hpp"

namespace metatape::meta {
namespace {

// Checks the parameter-like tensors one by one; `reference` (the first model
// parameter) fixes the dtype and the device everything else must share.
// These checks run on every meta-step, so a check that passes builds no
// string: `what` is a callable that names the tensor, called only for a
// message.
class Checker {
 public:
  explicit Checker(const char* caller) : caller_(caller) {}

  // Throws E with the caller's name in front of `message`.
  template <class E>
  [[noreturn]] void fail(const std::string& message) const {
    throw E(std::string(caller_) + ": " + message);
  }

  template <class Name>
  void tensor(const Tensor& t, const Name& what, const Shape& expected, const Tensor& reference) const {
    if (!t.defined()) fail<ValueError>(what() + " is undefined");
    if (t.shape() != expected)
      fail<ShapeError>(what() + " has shape " + t.shape().str() + ", expected " + expected.str());
    same_kind(t, what, reference);
  }

  template <class Name>
  void same_kind(const Tensor& t, const Name& what, const Tensor& reference) const {
    if (t.dtype() != reference.dtype())
      fail<DTypeError>(what() + " is " + dtype_name(t.dtype()) + ", the parameters are " +
                       dtype_name(reference.dtype()));
    device(t, what, reference);
  }

  template <class Name>
  void device(const Tensor& t, const Name& what, const Tensor& reference) const {
    if (t.device() != reference.device() && !(host_allowed_ && t.device() == Device::cpu))
      fail<DeviceError>(what() + " is on " + device_name(t.device()) + ", the parameters on " +
                        device_name(reference.device()));
  }

  // This checker, with tensors on the host accepted wherever the parameters
  // are: a captured step copies its inputs into its graph's buffers.
  Checker allowing_host() const {
    Checker copy = *this;
    copy.host_allowed_ = true;
    return copy;
  }

 private:
  const char* caller_;
  bool host_allowed_ = false;
};

// A name for Checker, built only when a message needs it.
auto named(const char* text) {
  return [text] { return std::string(text); };
}

void check_model_params(const Checker& check, const Model& model, const MetaParams& params) {
  const std::vector<ParamInfo>& infos = model.parameters();
  if (params.model.size() != infos.size())
    check.fail<ValueError>("params.model holds " + std::to_string(params.model.size()) + " tensors, " +
                           model.describe() + " has " + std::to_string(infos.size()) + " parameters");
  if (infos.empty()) return;
  const Tensor& first = params.model.front();
  if (!first.defined()) check.fail<ValueError>("params.model[0] (" + infos[0].name + ") is undefined");
  if (!is_floating(first.dtype()))
    check.fail<DTypeError>("params.model[0] (" + infos[0].name + ") is " + dtype_name(first.dtype()) +
                           ", parameters must be f32 or f64");
  for (std::size_t i = 0; i < infos.size(); ++i)
    check.tensor(
        params.model[i], [&] { return "params.model[" + std::to_string(i) + "] (" + infos[i].name + ")"; },
        infos[i].shape, first);
}

void check_rates(const Checker& check, const Model& model, const MetaConfig& config, const MetaParams& params) {
  const std::vector<ParamInfo>& infos = model.parameters();
  const std::size_t count = params.rates.size();
  const auto wrong_count = [&](const std::string& expected) {
    check.fail<ValueError>(std::string(algorithm_name(config.algorithm)) +
                           (config.learned_layer_rates ? " with LSLR" : "") + " learns " + expected +
                           ", params.rates holds " + std::to_string(count) + " tensors");
  };
  if (config.algorithm == Algorithm::metasgd) {
    if (count != infos.size()) wrong_count(std::to_string(infos.size()) + " rate tensors (one per parameter)");
    for (std::size_t i = 0; i < count; ++i)
      check.tensor(
          params.rates[i], [&] { return "rates[" + std::to_string(i) + "] (for " + infos[i].name + ")"; },
          infos[i].shape, params.model.front());
  } else if (config.learned_layer_rates) {
    if (count != 1) wrong_count("one [layers, inner_steps] rate tensor");
    check.tensor(params.rates[0], named("rates[0] (per layer and inner step)"),
                 Shape{model.num_layers(), config.inner_steps}, params.model.front());
  } else if (count != 0) {
    wrong_count("no inner rates (it uses the fixed inner_lr)");
  }
}

// x: [T, n] + the model's input shape; y: what `loss` compares predictions
// [T, n, outputs] with.
void check_batch(const Checker& check, const Model& model, Loss loss, const TaskBatch& batch, const Tensor& reference) {
  const std::pair<const Tensor*, const char*> fields[] = {{&batch.support_x, "batch.support_x"},
                                                          {&batch.support_y, "batch.support_y"},
                                                          {&batch.query_x, "batch.query_x"},
                                                          {&batch.query_y, "batch.query_y"}};
  for (const auto& [t, name] : fields) {
    if (!t->defined()) check.fail<ValueError>(std::string(name) + " is undefined");
    if (t->rank() < 2)
      check.fail<ShapeError>(std::string(name) + " must be [tasks, points, ...], got " + t->shape().str());
  }
  const std::int64_t tasks = batch.support_x.dim(0);
  if (tasks < 1) check.fail<ShapeError>("batch.support_x " + batch.support_x.shape().str() + " holds no tasks");
  for (const auto& [t, name] : fields)
    if (t->dim(0) != tasks)
      check.fail<ShapeError>(std::string(name) + " " + t->shape().str() + " holds " + std::to_string(t->dim(0)) +
                             " tasks, batch.support_x " + batch.support_x.shape().str() + " holds " +
                             std::to_string(tasks));
  for (int set = 0; set < 2; ++set) {
    const Tensor& x = set == 0 ? batch.support_x : batch.query_x;
    const Tensor& y = set == 0 ? batch.support_y : batch.query_y;
    const char* const xs_name = set == 0 ? "batch.support_x" : "batch.query_x";
    const char* const ys_name = set == 0 ? "batch.support_y" : "batch.query_y";
    const std::string xs = xs_name, ys = ys_name;  // short: kept inline, no allocation
    Shape expected_x{tasks, x.dim(1)};
    for (std::int64_t d : model.input_shape()) expected_x.push_back(d);
    if (x.dim(1) < 1) check.fail<ShapeError>(xs + " " + x.shape().str() + " has no points");
    if (x.shape() != expected_x)
      check.fail<ShapeError>(xs + " has shape " + x.shape().str() + ", " + model.describe() + " takes " +
                             expected_x.str());
    check.same_kind(x, named(xs_name), reference);
    if (loss == Loss::mse) {
      check.tensor(
          y, [&] { return ys + " (mse targets)"; }, Shape{tasks, x.dim(1), model.outputs()}, reference);
      continue;
    }
    if (y.dtype() != DType::i64)
      check.fail<DTypeError>(ys + " (cross-entropy labels) must be i64, got " + dtype_name(y.dtype()));
    if (y.shape() != Shape{tasks, x.dim(1)})
      check.fail<ShapeError>(ys + " (cross-entropy labels) has shape " + y.shape().str() + ", expected " +
                             Shape{tasks, x.dim(1)}.str());
    check.device(y, named(ys_name), reference);
  }
}

}  // namespace

void validate_inputs(const char* caller, const Model& model, Loss loss, const MetaConfig& config,
                     const MetaParams& params, const TaskBatch* batch, BatchPlace batch_place) {
  config.validate();
  const Checker check(caller);
  check_model_params(check, model, params);
  if (model.parameters().empty()) check.fail<ValueError>(model.describe() + " has no parameters");
  check_rates(check, model, config, params);
  if (batch)
    check_batch(batch_place == BatchPlace::host_or_params ? check.allowing_host() : check, model, loss, *batch,
                params.model.front());
}

}  // namespace metatape::meta
