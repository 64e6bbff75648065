// Device helpers shared by the CUDA kernels of resample_cuda.cu and augment_cuda.cu.
#pragma once

#include "resample.h"

#include <c10/macros/Macros.h>

#include <cstdint>

namespace rdfer {

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// The frame an index names: negative indices count from the end, like the twin's advanced indexing.
// Out-of-range indices trip a device-side assert, as the twin's advanced indexing does on CUDA.
__device__ __forceinline__ int64_t frame_of(int64_t index, int64_t num_frames) {
  const int64_t t = index < 0 ? index + num_frames : index;
  CUDA_KERNEL_ASSERT(t >= 0 && t < num_frames && "rdfer::gather_clips: index out of bounds");
  return t;
}

}  // namespace rdfer
