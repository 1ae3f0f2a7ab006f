// Placeholder of the base commit, replaced by the implementation before the
// issue is resolved: only the uniform rule.
#include "metatape/meta/task_weighting.hpp"

namespace metatape::meta {
void TaskWeightingConfig::validate() const {
  if (rule != TaskWeighting::uniform) throw ValueError("task weighting: only uniform so far");
}
}  // namespace metatape::meta
