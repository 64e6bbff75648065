// Training augmentation inside the gather (rdfer::gather_clips_augmented): the per-pixel arithmetic shared by
// the CPU (augment.cpp) and CUDA (augment_cuda.cu) kernels. The twin, gather_clips_augmented_reference in
// rdfer/ops/resample.py, gathers and then runs rdfer.data.augment's steps; every function below names the
// ATen arithmetic it reproduces. Where ATen's CPU kernels fuse a multiply-add (their x86 builds contract
// a * b + c), the step is an explicit fmaf; every other product and sum rounds on its own (the CPU build
// disables contraction, and the device side uses the _rn intrinsics of resample.h).
#pragma once

#include "resample.h"

#include <cmath>
#include <cstdint>

namespace rdfer {

// Columns of the [B, 8] float32 parameter tensor, the encoding of rdfer.data.augment.params_to_tensor.
enum AugmentColumn { kY0, kX0, kBoxH, kBoxW, kFlip, kBrightness, kContrast, kSaturation, kAugmentColumns };

// One clip's parameters, decoded from its row of the tensor.
struct ClipAugment {
  int64_t y0, x0, h, w;
  bool flip;
  float brightness, contrast, saturation;
};

RDFER_HD ClipAugment decode_clip(const float* row) {
  return {static_cast<int64_t>(row[kY0]), static_cast<int64_t>(row[kX0]), static_cast<int64_t>(row[kBoxH]),
          static_cast<int64_t>(row[kBoxW]), row[kFlip] != 0.0f, row[kBrightness], row[kContrast],
          row[kSaturation]};
}

// The two source positions and weights of one output coordinate of a linear resize from `in` to `out`
// samples (align_corners=False, no scale factor): ATen's compute_source_index_and_lambda with
// guard_index_and_lambda, whose `scale * (dst + 0.5) - 0.5` its CPU build fuses.
RDFER_HD float clamp_unit(float v) {
  return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

struct Taps {
  int64_t i0, i1;
  float w0, w1;
};

RDFER_HD Taps linear_taps(int64_t dst, int64_t in, int64_t out) {
  if (in == out) return {dst, dst, 1.0f, 0.0f};
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  float src = fmaf(scale, fadd_rn(static_cast<float>(dst), 0.5f), -0.5f);
  if (src < 0.0f) src = 0.0f;
  const int64_t floor_src = static_cast<int64_t>(floorf(src));
  const int64_t i0 = floor_src < in - 1 ? floor_src : in - 1;
  const float w1 = clamp_unit(fsub_rn(src, static_cast<float>(i0)));
  return {i0, i0 + (i0 < in - 1 ? 1 : 0), fsub_rn(1.0f, w1), w1};
}

// ATen's bilinear Interpolate: t0 * w0 + t1 * w1 at each level (columns, then rows), fused as its CPU
// kernel computes it.
RDFER_HD float lerp_taps(float t0, float w0, float t1, float w1) {
  return fmaf(t0, w0, fmul_rn(t1, w1));
}

// clamp_(0, 255) of finite values.
RDFER_HD float clamp_level(float v) {
  return v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
}

// ITU-R BT.601 luma, as augment._grey: (r * wr).add_(g, alpha=wg).add_(b, alpha=wb), each add fused.
RDFER_HD float luma(float r, float g, float b) {
  return fmaf(b, 0.114f, fmaf(g, 0.587f, fmul_rn(r, 0.299f)));
}

// x.mul_(brightness).clamp_(0, 255)
RDFER_HD float apply_brightness(float v, float brightness) {
  return clamp_level(fmul_rn(v, brightness));
}

// x.mul_(contrast).add_(shift).clamp_(0, 255), shift = mean grey * (1 - contrast) (contrast_shift).
RDFER_HD float apply_contrast(float v, float contrast, float shift) {
  return clamp_level(fadd_rn(fmul_rn(v, contrast), shift));
}

RDFER_HD float contrast_shift(float mean_r, float mean_g, float mean_b, float contrast) {
  return fmul_rn(luma(mean_r, mean_g, mean_b), fsub_rn(1.0f, contrast));
}

// x.mul_(saturation).add_(grey, alpha=1 - saturation).clamp_(0, 255), the add fused.
RDFER_HD float apply_saturation(float v, float grey, float saturation) {
  return clamp_level(fmaf(grey, fsub_rn(1.0f, saturation), fmul_rn(v, saturation)));
}

// round_() (half to even) and the final clamp: the uint8 level the twin hands to the normalisation.
RDFER_HD uint8_t to_level(float v) {
  return static_cast<uint8_t>(clamp_level(rintf(v)));
}

// Checks shared by both devices (defined in augment.cpp). Returns the parameters as float32 [B, 8],
// contiguous, on the frames' device. Parameters given on the CPU are checked there (crop box inside the
// frame, whole numbers, flip 0 or 1, finite factors >= 0); on a GPU only the crop box is checked, by a
// device-side assert in the kernel.
at::Tensor check_augment(const at::Tensor& frames, const at::Tensor& params);

}  // namespace rdfer
