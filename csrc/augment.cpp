// rdfer::gather_clips_augmented on the CPU, and the parameter checks both devices share.
//
// Per gathered frame: crop + bilinear resize (a column pass over the crop's rows, then a row pass: the
// same two fused lerps per value as ATen's generic bilinear kernel, so the same floats), flip, brightness,
// the frame's channel means (ATen's own mean, so the twin's summation order), contrast, saturation, rounding
// to a uint8 level, and the normalisation table of gather_clips_normalized. On x86 the two pixel passes are
// also compiled for FMA hardware and picked at load time; elsewhere fmaf is the C library's, correctly
// rounded either way.
#include "augment.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mean.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RDFER_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define RDFER_FMA_CLONES
#endif

namespace rdfer {

namespace {

constexpr const char* kOp = "rdfer::gather_clips_augmented";

bool whole(float v) {
  return std::isfinite(v) && v == std::floor(v);
}

// One clip's row of host parameters, against H x W frames.
void check_clip(const float* row, int64_t clip, int64_t height, int64_t width) {
  const float y0 = row[kY0], x0 = row[kX0], h = row[kBoxH], w = row[kBoxW];
  TORCH_CHECK_VALUE(whole(y0) && whole(x0) && whole(h) && whole(w), kOp, ": params[", clip,
                    "] crop box (y0, x0, h, w) = (", y0, ", ", x0, ", ", h, ", ", w, ") must be whole pixels");
  TORCH_CHECK_VALUE(y0 >= 0 && x0 >= 0 && h >= 1 && w >= 1 && y0 + h <= height && x0 + w <= width, kOp,
                    ": params[", clip, "] crop box (y0, x0, h, w) = (", y0, ", ", x0, ", ", h, ", ", w,
                    ") does not fit in ", height, "x", width, " frames");
  TORCH_CHECK_VALUE(row[kFlip] == 0.0f || row[kFlip] == 1.0f, kOp, ": params[", clip, "] flip must be 0 or 1, got ",
                    row[kFlip]);
  for (const int col : {kBrightness, kContrast, kSaturation}) {
    TORCH_CHECK_VALUE(std::isfinite(row[col]) && row[col] >= 0.0f, kOp, ": params[", clip,
                      "] colour factors (brightness, contrast, saturation) must be finite and >= 0, got ",
                      row[kBrightness], ", ", row[kContrast], ", ", row[kSaturation]);
  }
}

}  // namespace

at::Tensor check_augment(const at::Tensor& frames, const at::Tensor& params) {
  TORCH_CHECK_VALUE(frames.scalar_type() == at::kByte, kOp, ": frames must be uint8 (decoded, not augmented), got ",
                    frames.scalar_type());
  TORCH_CHECK_VALUE(frames.size(2) == 3, kOp, ": frames must have 3 (RGB) channels, got ", frames.size(2));
  const int64_t batch = frames.size(0);
  TORCH_CHECK_VALUE(params.dim() == 2 && params.size(0) == batch && params.size(1) == kAugmentColumns, kOp,
                    ": params must be [B, 8] = (y0, x0, h, w, flip, brightness, contrast, saturation) per clip "
                    "with B = ", batch, ", got shape ", params.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(params.scalar_type()), kOp, ": params must be float32, got ",
                    params.scalar_type());
  TORCH_CHECK_VALUE(params.device().is_cpu() || params.device() == frames.device(), kOp, ": params on ",
                    params.device(), " but frames on ", frames.device(), " (pass params on the CPU or with frames)");
  auto p = params.to(at::kFloat).contiguous();
  if (p.device().is_cpu()) {
    const float* rows = p.const_data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b) check_clip(rows + b * kAugmentColumns, b, frames.size(3), frames.size(4));
  }
  if (p.device() == frames.device()) return p;
  // Through pinned memory, so that the copy to the GPU does not wait for the work already queued there.
  return p.pin_memory().to(frames.device(), at::kFloat, /*non_blocking=*/true);
}

namespace {

// Per-thread work space of one frame.
struct Scratch {
  std::vector<Taps> rows, cols;  // source taps of every output row / column (columns already flipped)
  std::vector<float> columns;    // the column pass: [box h, W], one channel at a time
  std::vector<float> planes;     // the resized frame after brightness: [3, H, W]
  std::vector<uint8_t> levels;   // the finished frame: [3, H, W] uint8 levels
};

void clip_taps(const ClipAugment& a, int64_t height, int64_t width, Scratch& s) {
  s.rows.resize(height);
  s.cols.resize(width);
  for (int64_t y = 0; y < height; ++y) s.rows[y] = linear_taps(y, a.h, height);
  for (int64_t x = 0; x < width; ++x) s.cols[x] = linear_taps(a.flip ? width - 1 - x : x, a.w, width);
}

// Crop, resize, flip and brightness of one channel: src points at the crop box's top-left sample.
RDFER_FMA_CLONES
void resize_channel(const uint8_t* src, int64_t sh, int64_t sw, int64_t box_h, int64_t height, int64_t width,
                    const Taps* rows, const Taps* cols, float brightness, float* columns, float* out) {
  for (int64_t r = 0; r < box_h; ++r) {
    const uint8_t* line = src + r * sh;
    float* c = columns + r * width;
    for (int64_t x = 0; x < width; ++x) {
      const Taps t = cols[x];
      c[x] = lerp_taps(static_cast<float>(line[t.i0 * sw]), t.w0, static_cast<float>(line[t.i1 * sw]), t.w1);
    }
  }
  const bool bright = brightness != 1.0f;  // a factor of exactly 1 is skipped, as in the twin
  for (int64_t y = 0; y < height; ++y) {
    const Taps t = rows[y];
    const float* r0 = columns + t.i0 * width;
    const float* r1 = columns + t.i1 * width;
    float* o = out + y * width;
    for (int64_t x = 0; x < width; ++x) {
      const float v = lerp_taps(r0[x], t.w0, r1[x], t.w1);
      o[x] = bright ? apply_brightness(v, brightness) : v;
    }
  }
}

// Contrast (shift from contrast_shift), saturation and rounding, in place on [3, pixels] planes, into
// [3, pixels] levels: one flat loop per step, so that each vectorises.
RDFER_FMA_CLONES
void finish_planes(float* planes, int64_t pixels, float contrast, float shift, float saturation,
                   uint8_t* __restrict__ levels) {
  if (contrast != 1.0f) {
    for (int64_t i = 0; i < 3 * pixels; ++i) planes[i] = apply_contrast(planes[i], contrast, shift);
  }
  if (saturation != 1.0f) {
    float* __restrict__ r = planes;
    float* __restrict__ g = planes + pixels;
    float* __restrict__ b = planes + 2 * pixels;
    for (int64_t q = 0; q < pixels; ++q) {
      const float grey = luma(r[q], g[q], b[q]);
      r[q] = apply_saturation(r[q], grey, saturation);
      g[q] = apply_saturation(g[q], grey, saturation);
      b[q] = apply_saturation(b[q], grey, saturation);
    }
  }
  for (int64_t i = 0; i < 3 * pixels; ++i) levels[i] = to_level(planes[i]);
}

// The levels of one gathered frame (src: its [3, H, W] uint8 samples).
void augment_frame(const uint8_t* src, const FrameGeometry& g, const ClipAugment& a, Scratch& s) {
  const int64_t pixels = g.h * g.w;
  s.columns.resize(a.h * g.w);
  s.planes.resize(3 * pixels);
  s.levels.resize(3 * pixels);
  const uint8_t* box = src + a.y0 * g.sh + a.x0 * g.sw;
  for (int64_t c = 0; c < 3; ++c) {
    resize_channel(box + c * g.sc, g.sh, g.sw, a.h, g.h, g.w, s.rows.data(), s.cols.data(), a.brightness,
                   s.columns.data(), s.planes.data() + c * pixels);
  }
  float shift = 0.0f;
  if (a.contrast != 1.0f) {
    // The twin's x.mean(dim=(2, 3)): ATen's reduction itself, on the same floats in the same order.
    const auto planes = at::from_blob(s.planes.data(), {3, pixels}, at::TensorOptions().dtype(at::kFloat));
    const auto means = at::mean(planes, {1});
    const float* m = means.const_data_ptr<float>();
    shift = contrast_shift(m[0], m[1], m[2], a.contrast);
  }
  finish_planes(s.planes.data(), pixels, a.contrast, shift, a.saturation, s.levels.data());
}

at::Tensor gather_clips_augmented_cpu(const at::Tensor& frames, const at::Tensor& indices, const at::Tensor& params,
                                      const at::Tensor& mean, const at::Tensor& std, at::ScalarType out_dtype) {
  const auto idx = check_gather(frames, indices);
  const auto p = check_augment(frames, params);
  at::Tensor mean_c, std_c;
  std::tie(mean_c, std_c) = check_normalize(frames, mean, std, out_dtype, kOp);
  auto out = empty_normalized(frames, idx, out_dtype);
  if (out.numel() == 0) return out;
  const auto frame = resolve_indices(idx, frames.size(1), kOp);
  const int64_t clips = idx.size(1) * idx.size(2);
  const FrameGeometry g{3, frames.size(3), frames.size(4), frames.stride(2), frames.stride(3), frames.stride(4)};
  const FrameGeometry levels{3, g.h, g.w, g.h * g.w, g.w, 1};  // Scratch::levels
  const int64_t frame_elems = 3 * g.h * g.w;
  const int64_t stride_b = frames.stride(0), stride_t = frames.stride(1);
  const auto table = uint8_table(mean_c, std_c, out_dtype);
  const float* rows = p.const_data_ptr<float>();
  dispatch_out_dtype(out_dtype, [&](auto tag) {
    using out_t = decltype(tag);
    const uint8_t* src = frames.const_data_ptr<uint8_t>();
    const out_t* tab = table.const_data_ptr<out_t>();
    out_t* dst = out.data_ptr<out_t>();
    // One frame is tens of microseconds of work: one frame per task.
    at::parallel_for(0, frames.size(0) * clips, 1, [&](int64_t begin, int64_t end) {
      Scratch s;
      int64_t taps_of = -1;  // the clip whose taps s holds
      for (int64_t n = begin; n < end; ++n) {
        const int64_t b = n / clips;
        const ClipAugment a = decode_clip(rows + b * kAugmentColumns);
        if (b != taps_of) {
          clip_taps(a, g.h, g.w, s);
          taps_of = b;
        }
        augment_frame(src + b * stride_b + frame[n] * stride_t, g, a, s);
        normalize_u8_frame<out_t, 3>(levels, s.levels.data(), tab, dst + n * frame_elems);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(rdfer, CPU, m) {
  m.impl("gather_clips_augmented", &gather_clips_augmented_cpu);
}

}  // namespace rdfer
