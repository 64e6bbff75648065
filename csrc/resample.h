// Key-expression re-sampling (docs/method.md §2): shared declarations of the CPU (resample.cpp) and CUDA
// (resample_cuda.cu) kernels. The PyTorch twins in rdfer/ops/resample.py define what every op computes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#if defined(__CUDACC__)
#define RDFER_HD __host__ __device__ __forceinline__
#else
#define RDFER_HD inline
#endif

namespace rdfer {

// Index arithmetic is float32 with one rounding per operation, in the twin's order, so that the indices are
// bit-identical to it. On the GPU the _rn intrinsics forbid FMA contraction; on the CPU setup.py compiles
// with -ffp-contract=off for the same reason.
RDFER_HD float fadd_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

RDFER_HD float fsub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

RDFER_HD float fmul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// Twin: (instance + 0.5) * (float(T) / float(Ls)) - 0.5, with the scale rounded once from double.
RDFER_HD float key_position(int64_t instance, float scale) {
  return fsub_rn(fmul_rn(fadd_rn(static_cast<float>(instance), 0.5f), scale), 0.5f);
}

// Twin: floor(center + (j - (L-1)/2) * stride + 0.5) clamped to [0, T-1], still as a float (NaN stays NaN;
// the caller converts, as the twin's .long() does on its device).
RDFER_HD float clip_position(float center, float stride, int64_t j, float half_span, int64_t num_frames) {
  const float offset = fsub_rn(static_cast<float>(j), half_span);
  const float v = floorf(fadd_rn(fadd_rn(center, fmul_rn(offset, stride)), 0.5f));
  const float hi = static_cast<float>(num_frames - 1);
  return v < 0.0f ? 0.0f : (v > hi ? hi : v);
}

// torch.sort(descending=True, stable=True) order on scores: NaN ranks above every number.
RDFER_HD bool ranks_above(float a, float b) {
  return (a != a && b == b) || a > b;
}

// Validation and allocation shared by both devices (defined in resample.cpp).
int64_t check_key_positions(const at::Tensor& probs, int64_t k);
void check_clip_indices(const at::Tensor& centers, const at::Tensor& strides, int64_t length, int64_t num_frames);
// Returns the indices as int64, contiguous, on the frames' device (the twin accepts int32 and CPU indices).
at::Tensor check_gather(const at::Tensor& frames, const at::Tensor& indices);
// mean/std as float32 [C] on the frames' device; a single value applies to every channel, as in the twin.
std::tuple<at::Tensor, at::Tensor> check_normalize(const at::Tensor& frames, const at::Tensor& mean,
                                                   const at::Tensor& std, at::ScalarType out_dtype,
                                                   const char* op = "rdfer::gather_clips_normalized");
// CPU: the frame number of every index of `indices` (int64, contiguous, on the CPU), in [0, T). Negative
// indices count from the end, as in the twin's advanced indexing; anything else out of range is an IndexError.
std::vector<int64_t> resolve_indices(const at::Tensor& indices, int64_t num_frames, const char* op);
// [B, K, L, C, H, W] with each frame channels-last, the twin's layout for the normalised output.
at::Tensor empty_normalized(const at::Tensor& frames, const at::Tensor& indices, at::ScalarType out_dtype);
// [C, 256] table of the normalised value of every uint8 level, computed with the twin's own ATen ops on the
// frames' device, so it holds exactly the twin's values (on CUDA the twin divides by 255 as a reciprocal
// multiply, on the CPU as a true division; the table inherits whichever the device does).
at::Tensor uint8_table(const at::Tensor& mean, const at::Tensor& std, at::ScalarType out_dtype);
float timeline_scale(int64_t num_frames, int64_t instances);
float half_span(int64_t length);
// True when each frame's [C, H, W] block is dense in C, H, W order (dims of size 1 do not count).
bool frame_is_contiguous(const at::Tensor& frames);

// One input frame's sizes and element strides.
struct FrameGeometry {
  int64_t c, h, w, sc, sh, sw;
};

// CPU: one uint8 frame normalised through the [C, 256] table and written channels-last,
// out[(h*W + w)*C + c] = table[c][src[c, h, w]]. kChannels > 0 fixes C at compile time (RGB), so the
// per-pixel channel loop unrolls.
template <typename out_t, int kChannels>
void normalize_u8_frame(const FrameGeometry& g, const uint8_t* src, const out_t* table, out_t* out) {
  const int64_t channels = kChannels > 0 ? kChannels : g.c;
  for (int64_t h = 0; h < g.h; ++h) {
    const uint8_t* row = src + h * g.sh;
    out_t* o = out + h * g.w * channels;
    for (int64_t w = 0; w < g.w; ++w) {
      for (int64_t c = 0; c < channels; ++c) o[w * channels + c] = table[c * 256 + row[w * g.sw + c * g.sc]];
    }
  }
}

// Calls fn(out_t{}) with the C++ type of a supported out_dtype of the normalised gather.
template <typename Fn>
void dispatch_out_dtype(at::ScalarType out_dtype, Fn&& fn) {
  switch (out_dtype) {
    case at::kFloat: return fn(float{});
    case at::kBFloat16: return fn(c10::BFloat16{});
    case at::kHalf: return fn(c10::Half{});
    case at::kDouble: return fn(double{});
    default: TORCH_CHECK(false, "rdfer: unsupported out_dtype ", out_dtype);
  }
}

}  // namespace rdfer
