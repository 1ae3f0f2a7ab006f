// Internal: the one way meta:: reads a name into an enum. Each enum has its
// list (kAlgorithms, kTaskWeightings, kKernelForms, ...) and its name
// function in its header; parsing and the error's list of choices derive
// from those two.
#pragma once

#include <cstddef>
#include <string>

#include "metatape/error.hpp"

namespace metatape::meta::detail {

// The value of `name` among `choices`; ValueError naming `what` and listing
// the choices otherwise.
template <class Enum, std::size_t N, class NameOf>
Enum parse_choice(const std::string& name, const Enum (&choices)[N], NameOf name_of, const char* what) {
  std::string listed;
  for (Enum e : choices) {
    if (name == name_of(e)) return e;
    listed += (listed.empty() ? "" : ", ") + std::string(name_of(e));
  }
  throw ValueError("unknown " + std::string(what) + " '" + name + "': choose one of " + listed);
}

}  // namespace metatape::meta::detail
