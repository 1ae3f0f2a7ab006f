// Placeholder of the base commit, replaced by the implementation before the
// issue is resolved: every entry point refuses.
#include "metatape/meta/kernel_adaptation.hpp"

#include "algorithms.hpp"

namespace metatape::meta {

void KernelConfig::validate() const {}

KernelAdapted kernel_adapt(const Model&, Loss, const MetaConfig&, const MetaParams&, const TaskBatch&, bool) {
  throw ValueError("kernel_adapt: not implemented yet");
}

namespace detail {
MetaStepTensors kernel_gradient(const Model&, Loss, const MetaConfig&, const MetaParams&, const TaskBatch&) {
  throw ValueError("kernel adaptation: not implemented yet");
}
}  // namespace detail

}  // namespace metatape::meta
