// Placeholder of the base commit, replaced by the implementation before the
// issue is resolved: refuses.
#include "algorithms.hpp"

namespace metatape::meta::detail {
MetaStepTensors metarkhs1_gradient(const Model&, Loss, const MetaConfig&, const MetaParams&, const TaskBatch&) {
  throw ValueError("metarkhs1: not implemented yet");
}
}  // namespace metatape::meta::detail
