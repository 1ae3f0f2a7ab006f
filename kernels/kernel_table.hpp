// How kernels/kernel_list.def is expanded: into declarations of a backend's
// free functions, and into the static members of its kernel table, which
// forward to them (inlined: a table costs no call). A backend writes
//
//   namespace metatape::kernels::cpu {
//   #define METATAPE_KERNEL METATAPE_DECLARE_KERNEL
//   #include "kernels/kernel_list.def"
//   #undef METATAPE_KERNEL
//   }
//
// and, inside its table struct, the same with METATAPE_FORWARD_KERNEL_CPU
// (the namespace is part of the call). The CUDA backend, a library loaded at
// run time, is reached through function pointers instead: kernels/cuda/
// table.hpp builds them from the same list and the kinds below.
#pragma once

#include <cstdint>

#include "types.hpp"

// An entry's kind (see kernel_list.def) as a template head: nothing for a
// plain function.
#define METATAPE_KERNEL_HEAD(kind) METATAPE_KERNEL_HEAD_##kind
#define METATAPE_KERNEL_HEAD_plain
#define METATAPE_KERNEL_HEAD_floating template <class T>
#define METATAPE_KERNEL_HEAD_any template <class T>
#define METATAPE_KERNEL_HEAD_conversions template <class From, class To>
// The head of an alias template for the entry's function pointer type: as
// above, and a pack that nothing uses for a plain function (so that every
// kind's pointer type is a template over its instantiation's types).
#define METATAPE_KERNEL_ALIAS_HEAD(kind) METATAPE_KERNEL_ALIAS_HEAD_##kind
#define METATAPE_KERNEL_ALIAS_HEAD_plain template <class...>
#define METATAPE_KERNEL_ALIAS_HEAD_floating template <class T>
#define METATAPE_KERNEL_ALIAS_HEAD_any template <class T>
#define METATAPE_KERNEL_ALIAS_HEAD_conversions template <class From, class To>
// The same parameters as a template's arguments: name<METATAPE_KERNEL_ARGS(kind)>.
#define METATAPE_KERNEL_ARGS(kind) METATAPE_KERNEL_ARGS_##kind
#define METATAPE_KERNEL_ARGS_plain
#define METATAPE_KERNEL_ARGS_floating T
#define METATAPE_KERNEL_ARGS_any T
#define METATAPE_KERNEL_ARGS_conversions From, To
// The instantiations every backend provides, one TypeList each.
#define METATAPE_KERNEL_INSTANCES(kind) METATAPE_KERNEL_INSTANCES_##kind
#define METATAPE_KERNEL_INSTANCES_plain ::metatape::kernels::TypeList<>
#define METATAPE_KERNEL_INSTANCES_floating ::metatape::kernels::TypeList<float>, ::metatape::kernels::TypeList<double>
#define METATAPE_KERNEL_INSTANCES_any                                          \
  ::metatape::kernels::TypeList<float>, ::metatape::kernels::TypeList<double>, \
      ::metatape::kernels::TypeList<std::int64_t>
#define METATAPE_KERNEL_INSTANCES_conversions                                                 \
  ::metatape::kernels::TypeList<float, double>, ::metatape::kernels::TypeList<double, float>, \
      ::metatape::kernels::TypeList<float, float>, ::metatape::kernels::TypeList<double, double>

// template <class T> void unary(UnaryOp op, const T* x, ...);
#define METATAPE_DECLARE_KERNEL(kind, ret, name, params, args) METATAPE_KERNEL_HEAD(kind) ret name params;

// template <class T> static void unary(UnaryOp op, ...) { return ns::unary(op, ...); }
#define METATAPE_FORWARD_KERNEL(ns, kind, ret, name, params, args) \
  METATAPE_KERNEL_HEAD(kind) static ret name params { return ns::name args; }
#define METATAPE_FORWARD_KERNEL_CPU(...) METATAPE_FORWARD_KERNEL(::metatape::kernels::cpu, __VA_ARGS__)

namespace metatape::kernels {

// The template arguments of one instantiation.
template <class... Ts>
struct TypeList {
  template <template <class...> class F>
  using apply = F<Ts...>;
};

}  // namespace metatape::kernels
