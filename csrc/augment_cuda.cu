// rdfer::gather_clips_augmented on CUDA: one thread block per gathered frame.
//
// The contrast step needs the frame's mean grey after resize and brightness, which no pixel knows alone. A
// block therefore makes two passes over its frame: the first computes every resized value and sums each
// channel (a block reduction); the second computes the values again, then contrast, saturation, rounding and
// the normalisation table, and writes them channels-last. Recomputing costs a few dozen instructions per
// pixel on input the first pass left in L1/L2; keeping the frame instead would take a 112x112x3 float frame
// (147 KiB) of shared memory per block, more than a block may hold. Without contrast the first pass is
// skipped. The resize taps of every output row and column are computed once per block, into shared memory.
// Each thread finishes four neighbouring pixels per step, twelve consecutive outputs, stored as 16-byte
// (float32, float64) or 8-byte (16-bit) words where the frame size allows.
#include "augment.h"
#include "resample_cuda.cuh"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace rdfer {
namespace {

constexpr int kBlock = 256;
constexpr int kWarps = kBlock / 32;
constexpr int kGroup = 4;  // pixels per thread per step of the output pass
constexpr int64_t kMaxTapBytes = 46 * 1024;  // of the 48 KiB a block may use without opting in

struct AugmentArgs {
  const int64_t* indices;  // [B * K * L]
  const float* params;     // [B, 8]
  int64_t clips;           // K * L
  int64_t num_frames;      // T
  int64_t stride_b, stride_t;
  int height, width;
  int sc, sh, sw;  // element strides inside a frame (its offsets fit in 32 bits, checked on the host)
};

// A Taps of one output row or column, its two source lines as element offsets from the crop box.
struct FrameTap {
  int off0, off1;
  float w0, w1;
};

__device__ __forceinline__ FrameTap frame_tap(int dst, int64_t box, int64_t size, int stride) {
  const Taps t = linear_taps(dst, box, size);
  return {static_cast<int>(t.i0) * stride, static_cast<int>(t.i1) * stride, t.w0, t.w1};
}

// The three channels of one output pixel after crop, resize, flip and brightness.
__device__ __forceinline__ void resized_pixel(const uint8_t* __restrict__ box, int sc, FrameTap row, FrameTap col,
                                              float brightness, float v[3]) {
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    const uint8_t* p = box + c * sc;
    const float top = lerp_taps(p[row.off0 + col.off0], col.w0, p[row.off0 + col.off1], col.w1);
    const float bottom = lerp_taps(p[row.off1 + col.off0], col.w0, p[row.off1 + col.off1], col.w1);
    const float value = lerp_taps(top, row.w0, bottom, row.w1);
    v[c] = brightness != 1.0f ? apply_brightness(value, brightness) : value;  // 1 is skipped, as in the twin
  }
}

// First pass: the frame's channel means, into means[3] (shared), for every thread of the block.
__device__ void channel_means(const uint8_t* __restrict__ box, const AugmentArgs& args, const FrameTap* rows,
                              const FrameTap* cols, float brightness, float* means) {
  __shared__ float partial[3][kWarps];
  const int pixels = args.height * args.width;
  float sum[3] = {0.0f, 0.0f, 0.0f};
  for (int q = threadIdx.x; q < pixels; q += blockDim.x) {
    float v[3];
    const int y = q / args.width;
    resized_pixel(box, args.sc, rows[y], cols[q - y * args.width], brightness, v);
#pragma unroll
    for (int c = 0; c < 3; ++c) sum[c] += v[c];
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    for (int offset = 16; offset > 0; offset /= 2) sum[c] += __shfl_down_sync(0xffffffffu, sum[c], offset);
    if (lane == 0) partial[c][warp] = sum[c];
  }
  __syncthreads();
  if (threadIdx.x < 3) {
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += partial[threadIdx.x][w];
    means[threadIdx.x] = total / static_cast<float>(pixels);
  }
  __syncthreads();
}

// Twelve outputs (kGroup pixels x 3 channels) of one thread: whole words where `words` allows.
template <typename out_t>
__device__ __forceinline__ void store_group(out_t* __restrict__ d, const out_t (&vals)[3 * kGroup], int count,
                                            bool words) {
  using word_t = std::conditional_t<(3 * kGroup * sizeof(out_t)) % 16 == 0, uint4, uint2>;
  constexpr int kWords = 3 * kGroup * sizeof(out_t) / sizeof(word_t);
  if (words && count == kGroup) {
#pragma unroll
    for (int i = 0; i < kWords; ++i) {
      word_t word;
      memcpy(&word, reinterpret_cast<const char*>(vals) + i * sizeof(word_t), sizeof(word_t));
      reinterpret_cast<word_t*>(d)[i] = word;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 3 * kGroup; ++i) {
      if (i < 3 * count) d[i] = vals[i];  // constant indices keep vals in registers
    }
  }
}

template <typename out_t>
__global__ void __launch_bounds__(kBlock)
    gather_augment_kernel(const uint8_t* __restrict__ src, out_t* __restrict__ dst, AugmentArgs args,
                          const out_t* __restrict__ table, bool word_stores) {
  extern __shared__ FrameTap taps[];  // [height] rows, then [width] columns
  __shared__ float means[3];
  const int height = args.height, width = args.width, pixels = height * width;
  const int64_t n = blockIdx.x, b = n / args.clips;
  const ClipAugment a = decode_clip(args.params + b * kAugmentColumns);
  CUDA_KERNEL_ASSERT(a.y0 >= 0 && a.x0 >= 0 && a.h >= 1 && a.w >= 1 && a.y0 + a.h <= height &&
                     a.x0 + a.w <= width && "rdfer::gather_clips_augmented: crop box outside the frame");
  const int64_t t = frame_of(args.indices[n], args.num_frames);
  const uint8_t* box = src + b * args.stride_b + t * args.stride_t + a.y0 * args.sh + a.x0 * args.sw;
  for (int i = threadIdx.x; i < height + width; i += blockDim.x) {
    const int x = i - height;
    taps[i] = i < height ? frame_tap(i, a.h, height, args.sh)
                         : frame_tap(a.flip ? width - 1 - x : x, a.w, width, args.sw);
  }
  __syncthreads();
  const FrameTap* rows = taps;
  const FrameTap* cols = taps + height;
  float shift = 0.0f;
  if (a.contrast != 1.0f) {
    channel_means(box, args, rows, cols, a.brightness, means);
    shift = contrast_shift(means[0], means[1], means[2], a.contrast);
  }
  out_t* d = dst + n * pixels * 3;
  for (int first = threadIdx.x * kGroup; first < pixels; first += blockDim.x * kGroup) {
    out_t vals[3 * kGroup];
    int y = first / width, x = first - y * width;
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      if (first + k < pixels) {
        float v[3];
        resized_pixel(box, args.sc, rows[y], cols[x], a.brightness, v);
        if (a.contrast != 1.0f) {
#pragma unroll
          for (int c = 0; c < 3; ++c) v[c] = apply_contrast(v[c], a.contrast, shift);
        }
        if (a.saturation != 1.0f) {
          const float grey = luma(v[0], v[1], v[2]);
#pragma unroll
          for (int c = 0; c < 3; ++c) v[c] = apply_saturation(v[c], grey, a.saturation);
        }
#pragma unroll
        for (int c = 0; c < 3; ++c) vals[3 * k + c] = table[c * 256 + to_level(v[c])];
      }
      if (++x == width) {
        x = 0;
        ++y;
      }
    }
    store_group(d + first * 3, vals, min(kGroup, pixels - first), word_stores);
  }
}

at::Tensor gather_clips_augmented_cuda(const at::Tensor& frames, const at::Tensor& indices,
                                       const at::Tensor& params, const at::Tensor& mean, const at::Tensor& std,
                                       at::ScalarType out_dtype) {
  const c10::cuda::CUDAGuard guard(frames.device());
  const auto idx = check_gather(frames, indices);
  const auto p = check_augment(frames, params);
  at::Tensor mean_c, std_c;
  std::tie(mean_c, std_c) = check_normalize(frames, mean, std, out_dtype, "rdfer::gather_clips_augmented");
  auto out = empty_normalized(frames, idx, out_dtype);
  if (out.numel() == 0) return out;
  const int64_t height = frames.size(3), width = frames.size(4);
  const int64_t span = 2 * frames.stride(2) + (height - 1) * frames.stride(3) + (width - 1) * frames.stride(4);
  TORCH_CHECK_VALUE(span < (int64_t{1} << 31) && 3 * height * width < (int64_t{1} << 31),
                    "rdfer::gather_clips_augmented: frames of ", height, "x", width,
                    " pixels are too large (a frame must span less than 2^31 elements)");
  const int64_t tap_bytes = (height + width) * static_cast<int64_t>(sizeof(FrameTap));
  TORCH_CHECK_VALUE(tap_bytes <= kMaxTapBytes, "rdfer::gather_clips_augmented: frames of ", height, "x", width,
                    " pixels are too large (H + W must be at most ", kMaxTapBytes / sizeof(FrameTap), ")");
  const AugmentArgs args{idx.const_data_ptr<int64_t>(), p.const_data_ptr<float>(), idx.size(1) * idx.size(2),
                         frames.size(1), frames.stride(0), frames.stride(1), static_cast<int>(height),
                         static_cast<int>(width), static_cast<int>(frames.stride(2)),
                         static_cast<int>(frames.stride(3)), static_cast<int>(frames.stride(4))};
  const auto table = uint8_table(mean_c, std_c, out_dtype);
  // Whole words need every frame, hence every group of kGroup pixels, to start on a word boundary.
  const bool word_stores = (height * width) % kGroup == 0 && reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0;
  const int64_t total = frames.size(0) * args.clips;
  TORCH_CHECK_VALUE(total < (int64_t{1} << 31), "rdfer::gather_clips_augmented: at most 2^31 - 1 frames, got ",
                    total);
  dispatch_out_dtype(out_dtype, [&](auto tag) {
    using out_t = decltype(tag);
    gather_augment_kernel<out_t>
        <<<static_cast<unsigned>(total), kBlock, tap_bytes, c10::cuda::getCurrentCUDAStream()>>>(
            frames.const_data_ptr<uint8_t>(), out.data_ptr<out_t>(), args, table.const_data_ptr<out_t>(),
            word_stores);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(rdfer, CUDA, m) {
  m.impl("gather_clips_augmented", &gather_clips_augmented_cuda);
}

}  // namespace rdfer
