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
// and, inside its table struct, the same with METATAPE_FORWARD_KERNEL_CPU /
// _CUDA (a macro per backend, since the namespace is part of the call).
#pragma once

#include <cstdint>

#include "types.hpp"

// (a, b) -> a, b: strips the parentheses that keep commas inside one macro
// argument (template heads, parameter lists).
#define METATAPE_KERNEL_UNPAREN(...) __VA_ARGS__

// template <class T> void unary(UnaryOp op, const T* x, ...);
#define METATAPE_DECLARE_KERNEL(head, ret, name, params, args) METATAPE_KERNEL_UNPAREN head ret name params;

// template <class T> static void unary(UnaryOp op, ...) { return ns::unary(op, ...); }
#define METATAPE_FORWARD_KERNEL(ns, head, ret, name, params, args) \
  METATAPE_KERNEL_UNPAREN head static ret name params { return ns::name args; }
#define METATAPE_FORWARD_KERNEL_CPU(...) METATAPE_FORWARD_KERNEL(::metatape::kernels::cpu, __VA_ARGS__)
#define METATAPE_FORWARD_KERNEL_CUDA(...) METATAPE_FORWARD_KERNEL(::metatape::kernels::cuda, __VA_ARGS__)
