// The CPU kernels, declared from kernels/kernel_list.def (what each computes
// is documented there). Pointers are host memory. Defined in this folder's
// .cpp files, one per topic; the topic headers declare only the helpers
// that the kernels share among themselves.
#pragma once

#include "../kernel_table.hpp"

namespace metatape::kernels::cpu {

#define METATAPE_KERNEL METATAPE_DECLARE_KERNEL
#include "../kernel_list.def"
#undef METATAPE_KERNEL

}  // namespace metatape::kernels::cpu
