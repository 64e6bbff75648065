// Key-expression re-sampling (docs/method.md §2): operator schemas, shared checks and the CPU kernels.
//
// rdfer::key_positions, rdfer::clip_indices, rdfer::gather_clips and rdfer::gather_clips_normalized. Each one
// computes exactly what its twin in rdfer/ops/resample.py computes; the fake (meta) implementations are
// registered in Python, next to the twins. No op has a gradient: the model gathers uint8 frames, and
// rdfer.ops.resample.gather_clips sends frames that need one to the twin.
// rdfer::gather_clips_augmented is declared here with the others; its kernels are in augment.cpp and
// augment_cuda.cu.
#include "resample.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <Python.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace rdfer {

// ---------------------------------------------------------------------------------------------------------
// Checks and allocation shared with the CUDA kernels
// ---------------------------------------------------------------------------------------------------------

int64_t check_key_positions(const at::Tensor& probs, int64_t k) {
  TORCH_CHECK_VALUE(probs.dim() == 3, "rdfer::key_positions: probs must be [B, Ls, C], got shape ",
                    probs.sizes());
  const int64_t classes = probs.size(2);
  TORCH_CHECK_VALUE(1 <= k && k <= classes, "k must be in [1, ", classes, "] (the number of classes), got ", k);
  TORCH_CHECK_VALUE(probs.size(1) >= 1, "rdfer::key_positions: probs has no instances (Ls = 0)");
  return classes;
}

void check_clip_indices(const at::Tensor& centers, const at::Tensor& strides, int64_t length, int64_t num_frames) {
  TORCH_CHECK_VALUE(centers.sizes() == strides.sizes(), "rdfer::clip_indices: centers ", centers.sizes(),
                    " and strides ", strides.sizes(), " must have the same shape");
  TORCH_CHECK_VALUE(centers.device() == strides.device(), "rdfer::clip_indices: centers on ", centers.device(),
                    " but strides on ", strides.device());
  TORCH_CHECK_VALUE(length >= 0, "rdfer::clip_indices: length must be >= 0, got ", length);
  TORCH_CHECK_VALUE(num_frames >= 1, "rdfer::clip_indices: num_frames must be >= 1, got ", num_frames);
}

at::Tensor check_gather(const at::Tensor& frames, const at::Tensor& indices) {
  TORCH_CHECK_VALUE(frames.dim() == 5, "rdfer::gather_clips: frames must be [B, T, C, H, W], got shape ",
                    frames.sizes());
  TORCH_CHECK_VALUE(indices.dim() == 3 && indices.size(0) == frames.size(0),
                    "rdfer::gather_clips: indices must be [B, K, L] with B = ", frames.size(0), ", got shape ",
                    indices.sizes());
  TORCH_CHECK_VALUE(indices.scalar_type() == at::kLong || indices.scalar_type() == at::kInt,
                    "rdfer::gather_clips: indices must be int64 or int32, got ", indices.scalar_type());
  return indices.to(frames.device(), at::kLong).contiguous();
}

std::tuple<at::Tensor, at::Tensor> check_normalize(const at::Tensor& frames, const at::Tensor& mean,
                                                   const at::Tensor& std, at::ScalarType out_dtype, const char* op) {
  const auto dtype = frames.scalar_type();
  TORCH_CHECK_VALUE(dtype == at::kByte || at::isFloatingType(dtype), op, ": frames must be uint8 or floating, got ",
                    dtype);
  TORCH_CHECK_VALUE(out_dtype == at::kFloat || out_dtype == at::kBFloat16 || out_dtype == at::kHalf ||
                        out_dtype == at::kDouble,
                    op, ": out_dtype must be float32, bfloat16, float16 or float64, got ", out_dtype);
  const int64_t channels = frames.size(2);
  auto as_channels = [&](const at::Tensor& v, const char* name) {
    auto flat = v.to(frames.device(), at::kFloat).reshape({-1});
    TORCH_CHECK_VALUE(flat.numel() == channels || flat.numel() == 1, op, ": ", name, " must hold 1 or C = ",
                      channels, " values, got ", flat.numel());
    return flat.expand({channels}).contiguous();
  };
  return {as_channels(mean, "mean"), as_channels(std, "std")};
}

at::Tensor empty_normalized(const at::Tensor& frames, const at::Tensor& indices, at::ScalarType out_dtype) {
  // The strides _normalized_strides() gives the fake kernel in Python: [B*K*L, C, H, W] channels-last,
  // viewed as [B, K, L, C, H, W].
  const int64_t b = frames.size(0), k = indices.size(1), l = indices.size(2);
  const int64_t c = frames.size(2), h = frames.size(3), w = frames.size(4);
  const int64_t frame = c * h * w;
  return at::empty_strided({b, k, l, c, h, w}, {k * l * frame, l * frame, frame, 1, w * c, c},
                           frames.options().dtype(out_dtype));
}

at::Tensor uint8_table(const at::Tensor& mean, const at::Tensor& std, at::ScalarType out_dtype) {
  // The twin's sequence of ops: x.float() / 255.0, then (x - mean) / std, then .to(out_dtype).
  auto levels = at::arange(256, mean.options().dtype(at::kFloat)).div(255.0).unsqueeze(0);
  return levels.sub(mean.unsqueeze(1)).div(std.unsqueeze(1)).to(out_dtype).contiguous();
}

float timeline_scale(int64_t num_frames, int64_t instances) {
  // The twin forms float(T) / float(Ls) in double precision; the float32 multiply rounds it once.
  return static_cast<float>(static_cast<double>(num_frames) / static_cast<double>(instances));
}

float half_span(int64_t length) {
  return static_cast<float>(static_cast<double>(length - 1) * 0.5);
}

bool frame_is_contiguous(const at::Tensor& frames) {
  // Only dims longer than 1 constrain the layout.
  int64_t expected = 1;
  for (int64_t d = 4; d >= 2; --d) {
    if (frames.size(d) != 1 && frames.stride(d) != expected) return false;
    expected *= frames.size(d);
  }
  return true;
}

std::vector<int64_t> resolve_indices(const at::Tensor& indices, int64_t num_frames, const char* op) {
  const int64_t n = indices.numel();
  const int64_t* src = indices.data_ptr<int64_t>();
  std::vector<int64_t> frame(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = src[i] < 0 ? src[i] + num_frames : src[i];
    TORCH_CHECK_INDEX(t >= 0 && t < num_frames, op, ": index ", src[i], " is out of bounds for ", num_frames,
                      " frames");
    frame[i] = t;
  }
  return frame;
}

namespace {

// ---------------------------------------------------------------------------------------------------------
// CPU kernels
// ---------------------------------------------------------------------------------------------------------

// Items per OpenMP task, so that each task moves about 256 KiB: a small call stays on one thread, where a
// parallel region would cost more than the work (milliseconds when the cores are busy).
int64_t grain(int64_t bytes_per_item) {
  constexpr int64_t kTaskBytes = int64_t{1} << 18;
  return std::max<int64_t>(1, kTaskBytes / std::max<int64_t>(1, bytes_per_item));
}

std::tuple<at::Tensor, at::Tensor> key_positions_cpu(const at::Tensor& probs, int64_t k, int64_t num_frames) {
  const int64_t classes = check_key_positions(probs, k);
  const auto p = probs.to(at::kFloat).contiguous();  // the twin reads probs.float()
  const int64_t batch = p.size(0), instances = p.size(1);
  auto positions = at::empty({batch, k}, p.options());
  auto peak_classes = at::empty({batch, k}, p.options().dtype(at::kLong));
  const float scale = timeline_scale(num_frames, instances);
  const float* src = p.data_ptr<float>();
  float* pos = positions.data_ptr<float>();
  int64_t* cls = peak_classes.data_ptr<int64_t>();
  at::parallel_for(0, batch, grain(instances * classes * 4), [&](int64_t begin, int64_t end) {
    std::vector<float> score(classes);
    std::vector<int64_t> instance(classes);
    std::vector<char> taken(classes);
    for (int64_t b = begin; b < end; ++b) {
      const float* pb = src + b * instances * classes;
      for (int64_t c = 0; c < classes; ++c) {
        // max(dim) semantics: the first maximum, and the first NaN if there is one.
        float best = pb[c];
        int64_t at_t = 0;
        for (int64_t t = 1; t < instances && best == best; ++t) {
          const float v = pb[t * classes + c];
          if (v != v || v > best) {
            best = v;
            at_t = t;
          }
        }
        score[c] = best;
        instance[c] = at_t;
        taken[c] = 0;
      }
      // k rounds of selection = the first k of a stable descending sort (ties: lower class first).
      for (int64_t r = 0; r < k; ++r) {
        int64_t pick = -1;
        for (int64_t c = 0; c < classes; ++c) {
          if (!taken[c] && (pick < 0 || ranks_above(score[c], score[pick]))) pick = c;
        }
        taken[pick] = 1;
        cls[b * k + r] = pick;
        pos[b * k + r] = key_position(instance[pick], scale);
      }
    }
  });
  return {positions, peak_classes};
}

at::Tensor clip_indices_cpu(const at::Tensor& centers, const at::Tensor& strides, int64_t length,
                            int64_t num_frames) {
  check_clip_indices(centers, strides, length, num_frames);
  const auto c = centers.to(at::kFloat).contiguous();
  const auto s = strides.to(at::kFloat).contiguous();
  auto shape = c.sizes().vec();
  shape.push_back(length);
  auto out = at::empty(shape, c.options().dtype(at::kLong));
  const int64_t n = c.numel();
  const float half = half_span(length);
  const float* pc = c.data_ptr<float>();
  const float* ps = s.data_ptr<float>();
  int64_t* po = out.data_ptr<int64_t>();
  at::parallel_for(0, n, grain(length * 8), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t j = 0; j < length; ++j) {
        const float v = clip_position(pc[i], ps[i], j, half, num_frames);
        // NaN: the value x86's float->int64 conversion gives, which is what the CPU twin's .long() returns.
        po[i * length + j] = std::isnan(v) ? std::numeric_limits<int64_t>::min() : static_cast<int64_t>(v);
      }
    }
  });
  return out;
}

template <typename word_t>
void copy_frame_strided(const at::Tensor& frames, const char* src, char* dst) {
  const int64_t c_n = frames.size(2), h_n = frames.size(3), w_n = frames.size(4);
  const int64_t sc = frames.stride(2), sh = frames.stride(3), sw = frames.stride(4);
  const auto* s = reinterpret_cast<const word_t*>(src);
  auto* d = reinterpret_cast<word_t*>(dst);
  for (int64_t c = 0; c < c_n; ++c)
    for (int64_t h = 0; h < h_n; ++h)
      for (int64_t w = 0; w < w_n; ++w) *d++ = s[c * sc + h * sh + w * sw];
}

at::Tensor gather_clips_cpu(const at::Tensor& frames, const at::Tensor& indices) {
  const auto idx = check_gather(frames, indices);
  const int64_t batch = frames.size(0), num_frames = frames.size(1);
  const int64_t clips = idx.size(1) * idx.size(2);
  auto out_shape = frames.sizes().vec();
  out_shape.erase(out_shape.begin() + 1);
  out_shape.insert(out_shape.begin() + 1, {idx.size(1), idx.size(2)});
  auto out = at::empty(out_shape, frames.options());
  if (out.numel() == 0) return out;
  const auto frame = resolve_indices(idx, num_frames, "rdfer::gather_clips");
  const int64_t item = frames.element_size();
  const int64_t frame_bytes = frames.size(2) * frames.size(3) * frames.size(4) * item;
  const int64_t stride_b = frames.stride(0) * item, stride_t = frames.stride(1) * item;
  const char* src = static_cast<const char*>(frames.const_data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  const bool contiguous = frame_is_contiguous(frames);
  TORCH_CHECK(contiguous || item == 1 || item == 2 || item == 4 || item == 8,
              "rdfer::gather_clips: strided frames of ", item, "-byte elements are not supported");
  at::parallel_for(0, batch * clips, grain(2 * frame_bytes), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const char* s = src + (n / clips) * stride_b + frame[n] * stride_t;
      char* d = dst + n * frame_bytes;
      if (contiguous) {
        std::memcpy(d, s, frame_bytes);
      } else if (item == 1) {
        copy_frame_strided<uint8_t>(frames, s, d);
      } else if (item == 2) {
        copy_frame_strided<uint16_t>(frames, s, d);
      } else if (item == 4) {
        copy_frame_strided<uint32_t>(frames, s, d);
      } else {
        copy_frame_strided<uint64_t>(frames, s, d);
      }
    }
  });
  return out;
}

template <typename in_t, typename out_t, int kChannels>
void normalize_float_frame(const FrameGeometry& g, const in_t* src, const float* mean, const float* std,
                           out_t* out) {
  const int64_t channels = kChannels > 0 ? kChannels : g.c;
  for (int64_t h = 0; h < g.h; ++h) {
    for (int64_t w = 0; w < g.w; ++w) {
      const in_t* px = src + h * g.sh + w * g.sw;
      out_t* o = out + (h * g.w + w) * channels;
      // Two roundings, (x - m) then / s, as the twin's two elementwise ops.
      for (int64_t c = 0; c < channels; ++c) {
        o[c] = static_cast<out_t>((static_cast<float>(px[c * g.sc]) - mean[c]) / std[c]);
      }
    }
  }
}

at::Tensor gather_clips_normalized_cpu(const at::Tensor& frames, const at::Tensor& indices, const at::Tensor& mean,
                                       const at::Tensor& std, at::ScalarType out_dtype) {
  const auto idx = check_gather(frames, indices);
  at::Tensor mean_c, std_c;
  std::tie(mean_c, std_c) = check_normalize(frames, mean, std, out_dtype);
  auto out = empty_normalized(frames, idx, out_dtype);
  if (out.numel() == 0) return out;
  const auto frame = resolve_indices(idx, frames.size(1), "rdfer::gather_clips_normalized");
  const int64_t clips = idx.size(1) * idx.size(2);
  const FrameGeometry g{frames.size(2), frames.size(3), frames.size(4),
                        frames.stride(2), frames.stride(3), frames.stride(4)};
  const int64_t frame_elems = g.c * g.h * g.w;
  const int64_t stride_b = frames.stride(0), stride_t = frames.stride(1);
  const int64_t total = frames.size(0) * clips;
  const int64_t frame_bytes = frame_elems * (frames.element_size() + c10::elementSize(out_dtype));
  if (frames.scalar_type() == at::kByte) {
    const auto table = uint8_table(mean_c, std_c, out_dtype);
    dispatch_out_dtype(out_dtype, [&](auto tag) {
      using out_t = decltype(tag);
      const uint8_t* src = frames.const_data_ptr<uint8_t>();
      const out_t* tab = table.const_data_ptr<out_t>();
      out_t* dst = out.data_ptr<out_t>();
      at::parallel_for(0, total, grain(frame_bytes), [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const uint8_t* s = src + (n / clips) * stride_b + frame[n] * stride_t;
          if (g.c == 3) {
            normalize_u8_frame<out_t, 3>(g, s, tab, dst + n * frame_elems);
          } else {
            normalize_u8_frame<out_t, 0>(g, s, tab, dst + n * frame_elems);
          }
        }
      });
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, frames.scalar_type(), "gather_clips_normalized", [&] {
    using in_t = scalar_t;
    dispatch_out_dtype(out_dtype, [&](auto tag) {
      using out_t = decltype(tag);
      const in_t* src = frames.const_data_ptr<in_t>();
      const float* m = mean_c.const_data_ptr<float>();
      const float* s = std_c.const_data_ptr<float>();
      out_t* dst = out.data_ptr<out_t>();
      at::parallel_for(0, total, grain(frame_bytes), [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const in_t* x = src + (n / clips) * stride_b + frame[n] * stride_t;
          if (g.c == 3) {
            normalize_float_frame<in_t, out_t, 3>(g, x, m, s, dst + n * frame_elems);
          } else {
            normalize_float_frame<in_t, out_t, 0>(g, x, m, s, dst + n * frame_elems);
          }
        }
      });
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(rdfer, m) {
  // Fake implementations live in Python (rdfer/ops/resample.py), next to the twins.
  m.set_python_module("rdfer.ops.resample");
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def("key_positions(Tensor probs, int k, int num_frames) -> (Tensor, Tensor)", tags);
  m.def("clip_indices(Tensor centers, Tensor strides, int length, int num_frames) -> Tensor", tags);
  m.def("gather_clips(Tensor frames, Tensor indices) -> Tensor", tags);
  m.def("gather_clips_normalized(Tensor frames, Tensor indices, Tensor mean, Tensor std, ScalarType out_dtype)"
        " -> Tensor", tags);
  m.def("gather_clips_augmented(Tensor frames, Tensor indices, Tensor params, Tensor mean, Tensor std,"
        " ScalarType out_dtype) -> Tensor", tags);
}

TORCH_LIBRARY_IMPL(rdfer, CPU, m) {
  m.impl("key_positions", &key_positions_cpu);
  m.impl("clip_indices", &clip_indices_cpu);
  m.impl("gather_clips", &gather_clips_cpu);
  m.impl("gather_clips_normalized", &gather_clips_normalized_cpu);
}

}  // namespace rdfer

// `import rdfer._C` loads this library, whose static initialisers register the operators above. The module
// itself is empty; plain CPython API instead of pybind11 keeps the build short.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "rdfer's C++/CUDA operators (torch.ops.rdfer)", -1,
                               nullptr};
  return PyModule_Create(&module);
}
