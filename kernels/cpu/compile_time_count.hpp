// A count known only at run time, handed to code that needs it at compile
// time: the register kernels (a tile's rows and vectors, a row's vectors)
// keep one accumulator per register, and an array of registers must have a
// constant size for the compiler to keep it out of memory. Each kernel is
// instantiated for every count up to its maximum and one of them is called.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace metatape::kernels::cpu {

// f(std::integral_constant<int, count>{}) for count in [1, kMax]; false,
// with nothing called, for any other count. Inside f, the count is
// decltype(argument)::value.
template <int kMax, class F>
inline bool with_count(std::int64_t count, F&& f) {
  return [&]<int... I>(std::integer_sequence<int, I...>) {
    return ((count == I + 1 && (f(std::integral_constant<int, I + 1>{}), true)) || ...);
  }(std::make_integer_sequence<int, kMax>{});
}

}  // namespace metatape::kernels::cpu
