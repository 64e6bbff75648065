// Key-expression re-sampling (docs/method.md §2): the CUDA kernels of the rdfer:: operators defined in resample.cpp.
// Out-of-range frame indices trip a device-side assert, as the twin's advanced indexing does on CUDA.
#include "resample_cuda.cuh"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

namespace rdfer {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;        // independent 16-byte loads in flight per thread
constexpr int64_t kMaxGridY = 65535;

// ---------------------------------------------------------------------------------------------------------
// Indices
// ---------------------------------------------------------------------------------------------------------

// One thread per (batch, class): the first maximum over instances (the first NaN if any), as max(dim) does.
__global__ void class_peaks_kernel(const float* __restrict__ probs, float* __restrict__ score,
                                   int64_t* __restrict__ instance, int64_t batch, int64_t instances,
                                   int64_t classes) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= batch * classes) return;
  const int64_t b = i / classes, c = i - b * classes;
  const float* p = probs + b * instances * classes + c;
  float best = p[0];
  int64_t at_t = 0;
  for (int64_t t = 1; t < instances && best == best; ++t) {
    const float v = p[t * classes];
    if (v != v || v > best) {
      best = v;
      at_t = t;
    }
  }
  score[i] = best;
  instance[i] = at_t;
}

// One thread per batch row: k selection rounds = the first k of a stable descending sort of the scores.
__global__ void top_classes_kernel(const float* __restrict__ score, const int64_t* __restrict__ instance,
                                   float* __restrict__ positions, int64_t* __restrict__ peak_classes,
                                   int64_t batch, int64_t classes, int64_t k, float scale) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= batch) return;
  const float* s = score + b * classes;
  int64_t* cls = peak_classes + b * k;
  for (int64_t r = 0; r < k; ++r) {
    int64_t pick = -1;
    for (int64_t c = 0; c < classes; ++c) {
      bool taken = false;
      for (int64_t q = 0; q < r; ++q) taken = taken || cls[q] == c;
      if (!taken && (pick < 0 || ranks_above(s[c], s[pick]))) pick = c;
    }
    cls[r] = pick;
    positions[b * k + r] = key_position(instance[b * classes + pick], scale);
  }
}

std::tuple<at::Tensor, at::Tensor> key_positions_cuda(const at::Tensor& probs, int64_t k, int64_t num_frames) {
  const int64_t classes = check_key_positions(probs, k);
  const c10::cuda::CUDAGuard guard(probs.device());
  const auto p = probs.to(at::kFloat).contiguous();
  const int64_t batch = p.size(0), instances = p.size(1);
  auto positions = at::empty({batch, k}, p.options());
  auto peak_classes = at::empty({batch, k}, p.options().dtype(at::kLong));
  if (batch == 0) return {positions, peak_classes};
  auto score = at::empty({batch, classes}, p.options());
  auto instance = at::empty({batch, classes}, p.options().dtype(at::kLong));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  class_peaks_kernel<<<ceil_div(batch * classes, kThreads), kThreads, 0, stream>>>(
      p.const_data_ptr<float>(), score.data_ptr<float>(), instance.data_ptr<int64_t>(), batch, instances,
      classes);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  top_classes_kernel<<<ceil_div(batch, kThreads), kThreads, 0, stream>>>(
      score.const_data_ptr<float>(), instance.const_data_ptr<int64_t>(), positions.data_ptr<float>(),
      peak_classes.data_ptr<int64_t>(), batch, classes, k, timeline_scale(num_frames, instances));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {positions, peak_classes};
}

__global__ void clip_indices_kernel(const float* __restrict__ centers, const float* __restrict__ strides,
                                    int64_t* __restrict__ out, int64_t total, int64_t length, float half,
                                    int64_t num_frames) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t clip = i / length, j = i - clip * length;
  // A NaN converts to 0 here, as it does in the CUDA twin's .long().
  out[i] = static_cast<int64_t>(clip_position(centers[clip], strides[clip], j, half, num_frames));
}

at::Tensor clip_indices_cuda(const at::Tensor& centers, const at::Tensor& strides, int64_t length,
                             int64_t num_frames) {
  check_clip_indices(centers, strides, length, num_frames);
  const c10::cuda::CUDAGuard guard(centers.device());
  const auto c = centers.to(at::kFloat).contiguous();
  const auto s = strides.to(at::kFloat).contiguous();
  auto shape = c.sizes().vec();
  shape.push_back(length);
  auto out = at::empty(shape, c.options().dtype(at::kLong));
  const int64_t total = out.numel();
  if (total == 0) return out;
  clip_indices_kernel<<<ceil_div(total, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      c.const_data_ptr<float>(), s.const_data_ptr<float>(), out.data_ptr<int64_t>(), total, length,
      half_span(length), num_frames);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Gather
// ---------------------------------------------------------------------------------------------------------

struct GatherArgs {
  const int64_t* indices;  // [B * K * L]
  int64_t clips;           // K * L
  int64_t num_frames;      // T
  int64_t stride_b, stride_t;  // in words (contiguous frames) or elements (strided frames)
};

// Contiguous frames: blockIdx.x = output frame, each thread moves kUnroll words of type word_t per step, all
// loads issued before the stores. word_t is the widest of 16/8/4/2/1 bytes that divides every address.
template <typename word_t>
__global__ void gather_words_kernel(const word_t* __restrict__ src, word_t* __restrict__ dst, GatherArgs a,
                                    int64_t frame_words) {
  const int64_t n = blockIdx.x;
  const int64_t t = frame_of(a.indices[n], a.num_frames);
  const word_t* s = src + (n / a.clips) * a.stride_b + t * a.stride_t;
  word_t* d = dst + n * frame_words;
  const int64_t step = static_cast<int64_t>(gridDim.y) * blockDim.x * kUnroll;
  for (int64_t base = static_cast<int64_t>(blockIdx.y) * blockDim.x * kUnroll + threadIdx.x; base < frame_words;
       base += step) {
    word_t r[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + u * blockDim.x;
      if (i < frame_words) r[u] = s[i];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + u * blockDim.x;
      if (i < frame_words) d[i] = r[u];
    }
  }
}

struct FrameShape {
  int64_t c, h, w, sc, sh, sw;  // sizes and element strides of one input frame
};

// Frames whose [C, H, W] part is not contiguous: one element per thread, output in [C, H, W] order.
template <typename elem_t>
__global__ void gather_strided_kernel(const elem_t* __restrict__ src, elem_t* __restrict__ dst, GatherArgs a,
                                      FrameShape f) {
  const int64_t n = blockIdx.x;
  const int64_t t = frame_of(a.indices[n], a.num_frames);
  const elem_t* s = src + (n / a.clips) * a.stride_b + t * a.stride_t;
  const int64_t hw = f.h * f.w, frame_elems = f.c * hw;
  elem_t* d = dst + n * frame_elems;
  for (int64_t e = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; e < frame_elems;
       e += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t c = e / hw, p = e - c * hw, h = p / f.w, w = p - h * f.w;
    d[e] = s[c * f.sc + h * f.sh + w * f.sw];
  }
}

dim3 frame_grid(int64_t frames, int64_t per_frame_blocks) {
  return dim3(static_cast<unsigned>(frames), static_cast<unsigned>(std::clamp<int64_t>(per_frame_blocks, 1, kMaxGridY)));
}

template <typename word_t>
void launch_words(const at::Tensor& frames, const at::Tensor& idx, at::Tensor& out, int64_t frame_bytes) {
  const int64_t words = sizeof(word_t);
  const int64_t item = frames.element_size();
  const GatherArgs a{idx.const_data_ptr<int64_t>(), idx.size(1) * idx.size(2), frames.size(1),
                     frames.stride(0) * item / words, frames.stride(1) * item / words};
  const int64_t frame_words = frame_bytes / words;
  const dim3 grid = frame_grid(out.size(0) * a.clips, ceil_div(frame_words, kThreads * kUnroll));
  gather_words_kernel<word_t><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      static_cast<const word_t*>(frames.const_data_ptr()), static_cast<word_t*>(out.data_ptr()), a, frame_words);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename elem_t>
void launch_strided(const at::Tensor& frames, const at::Tensor& idx, at::Tensor& out) {
  const GatherArgs a{idx.const_data_ptr<int64_t>(), idx.size(1) * idx.size(2), frames.size(1), frames.stride(0),
                     frames.stride(1)};
  const FrameShape f{frames.size(2), frames.size(3), frames.size(4), frames.stride(2), frames.stride(3),
                     frames.stride(4)};
  const dim3 grid = frame_grid(out.size(0) * a.clips, ceil_div(f.c * f.h * f.w, kThreads));
  gather_strided_kernel<elem_t><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      static_cast<const elem_t*>(frames.const_data_ptr()), static_cast<elem_t*>(out.data_ptr()), a, f);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor gather_clips_cuda(const at::Tensor& frames, const at::Tensor& indices) {
  const c10::cuda::CUDAGuard guard(frames.device());
  const auto idx = check_gather(frames, indices);
  auto out_shape = frames.sizes().vec();
  out_shape.erase(out_shape.begin() + 1);
  out_shape.insert(out_shape.begin() + 1, {idx.size(1), idx.size(2)});
  auto out = at::empty(out_shape, frames.options());
  if (out.numel() == 0) return out;
  const int64_t item = frames.element_size();
  if (frame_is_contiguous(frames)) {
    const int64_t frame_bytes = frames.size(2) * frames.size(3) * frames.size(4) * item;
    // The widest word that divides the frame size, both frame strides and both base addresses.
    const auto align = static_cast<uint64_t>(frame_bytes) | static_cast<uint64_t>(frames.stride(0) * item) |
                       static_cast<uint64_t>(frames.stride(1) * item) |
                       reinterpret_cast<uint64_t>(frames.const_data_ptr()) |
                       reinterpret_cast<uint64_t>(out.data_ptr());
    if (align % 16 == 0) {
      launch_words<uint4>(frames, idx, out, frame_bytes);
    } else if (align % 8 == 0) {
      launch_words<uint2>(frames, idx, out, frame_bytes);
    } else if (align % 4 == 0) {
      launch_words<uint32_t>(frames, idx, out, frame_bytes);
    } else if (align % 2 == 0) {
      launch_words<uint16_t>(frames, idx, out, frame_bytes);
    } else {
      launch_words<uint8_t>(frames, idx, out, frame_bytes);
    }
    return out;
  }
  switch (item) {
    case 1: launch_strided<uint8_t>(frames, idx, out); break;
    case 2: launch_strided<uint16_t>(frames, idx, out); break;
    case 4: launch_strided<uint32_t>(frames, idx, out); break;
    case 8: launch_strided<uint64_t>(frames, idx, out); break;
    default: TORCH_CHECK(false, "rdfer::gather_clips: strided frames of ", item, "-byte elements are not supported");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Fused gather + normalise, channels-last output: one thread per pixel, all C channels of it.
// ---------------------------------------------------------------------------------------------------------

template <typename out_t>
__global__ void gather_normalize_u8_kernel(const uint8_t* __restrict__ src, out_t* __restrict__ dst, GatherArgs a,
                                           FrameShape f, const out_t* __restrict__ table) {
  const int64_t n = blockIdx.x;
  const int64_t t = frame_of(a.indices[n], a.num_frames);
  const uint8_t* s = src + (n / a.clips) * a.stride_b + t * a.stride_t;
  const int64_t hw = f.h * f.w;
  out_t* d = dst + n * hw * f.c;
  for (int64_t p = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; p < hw;
       p += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t h = p / f.w, w = p - h * f.w;
    const uint8_t* px = s + h * f.sh + w * f.sw;
    for (int64_t c = 0; c < f.c; ++c) d[p * f.c + c] = table[c * 256 + px[c * f.sc]];
  }
}

template <typename in_t, typename out_t>
__global__ void gather_normalize_float_kernel(const in_t* __restrict__ src, out_t* __restrict__ dst, GatherArgs a,
                                              FrameShape f, const float* __restrict__ mean,
                                              const float* __restrict__ std) {
  const int64_t n = blockIdx.x;
  const int64_t t = frame_of(a.indices[n], a.num_frames);
  const in_t* s = src + (n / a.clips) * a.stride_b + t * a.stride_t;
  const int64_t hw = f.h * f.w;
  out_t* d = dst + n * hw * f.c;
  for (int64_t p = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; p < hw;
       p += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t h = p / f.w, w = p - h * f.w;
    const in_t* px = s + h * f.sh + w * f.sw;
    for (int64_t c = 0; c < f.c; ++c) {
      // (x - mean) / std with IEEE rounding at each step, as the twin's two elementwise kernels.
      const float y = __fdiv_rn(__fsub_rn(static_cast<float>(px[c * f.sc]), mean[c]), std[c]);
      d[p * f.c + c] = static_cast<out_t>(y);
    }
  }
}

at::Tensor gather_clips_normalized_cuda(const at::Tensor& frames, const at::Tensor& indices, const at::Tensor& mean,
                                        const at::Tensor& std, at::ScalarType out_dtype) {
  const c10::cuda::CUDAGuard guard(frames.device());
  const auto idx = check_gather(frames, indices);
  at::Tensor mean_c, std_c;
  std::tie(mean_c, std_c) = check_normalize(frames, mean, std, out_dtype);
  auto out = empty_normalized(frames, idx, out_dtype);
  if (out.numel() == 0) return out;
  const GatherArgs a{idx.const_data_ptr<int64_t>(), idx.size(1) * idx.size(2), frames.size(1), frames.stride(0),
                     frames.stride(1)};
  const FrameShape f{frames.size(2), frames.size(3), frames.size(4), frames.stride(2), frames.stride(3),
                     frames.stride(4)};
  const dim3 grid = frame_grid(frames.size(0) * a.clips, ceil_div(f.h * f.w, kThreads));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (frames.scalar_type() == at::kByte) {
    const auto table = uint8_table(mean_c, std_c, out_dtype);
    dispatch_out_dtype(out_dtype, [&](auto tag) {
      using out_t = decltype(tag);
      gather_normalize_u8_kernel<out_t><<<grid, kThreads, 0, stream>>>(
          frames.const_data_ptr<uint8_t>(), out.data_ptr<out_t>(), a, f, table.const_data_ptr<out_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, frames.scalar_type(), "gather_clips_normalized", [&] {
    using in_t = scalar_t;
    dispatch_out_dtype(out_dtype, [&](auto tag) {
      using out_t = decltype(tag);
      gather_normalize_float_kernel<in_t, out_t><<<grid, kThreads, 0, stream>>>(
          frames.const_data_ptr<in_t>(), out.data_ptr<out_t>(), a, f, mean_c.const_data_ptr<float>(),
          std_c.const_data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(rdfer, CUDA, m) {
  m.impl("key_positions", &key_positions_cuda);
  m.impl("clip_indices", &clip_indices_cuda);
  m.impl("gather_clips", &gather_clips_cuda);
  m.impl("gather_clips_normalized", &gather_clips_normalized_cuda);
}

}  // namespace rdfer
