// Test kernels for the warp-level primitives of
// csrc/cuda/conv2d_warp_primitives.cuh, run through the CPU emulation and
// bound into the emulation module (tests/test_cuda_warp_primitives.py checks
// them against plain matmuls and sums). Each kernel runs one warp per
// problem: warp w of the block takes problem w of a batch.
#include "cuda_emulation.h"  // must precede the kernel headers

#include <torch/extension.h>

#include "../../csrc/cuda/conv2d_cuda_common.cuh"
#include "../../csrc/cuda/conv2d_warp_primitives.cuh"

namespace {

namespace cuda = conv_ext::cuda;

// D = A (16x16) * B (16x8) + C, fragments filled straight from global
// memory by the documented layout (no ldmatrix).
template <typename half_t>
__global__ void mma_m16n8k16_direct_kernel(const half_t* A, const half_t* B, const float* C,
                                           float* D) {
  const int w = threadIdx.x / 32, l = cuda::lane_id(), g = l / 4, t = l % 4;
  A += w * 256, B += w * 128, C += w * 128, D += w * 128;
  const auto a_at = [&](int r, int c) { return A[r * 16 + c]; };
  const auto b_at = [&](int r, int c) { return B[r * 8 + c]; };
  const uint32_t a[4] = {cuda::pack_pair(a_at(g, 2 * t), a_at(g, 2 * t + 1)),
                         cuda::pack_pair(a_at(g + 8, 2 * t), a_at(g + 8, 2 * t + 1)),
                         cuda::pack_pair(a_at(g, 2 * t + 8), a_at(g, 2 * t + 9)),
                         cuda::pack_pair(a_at(g + 8, 2 * t + 8), a_at(g + 8, 2 * t + 9))};
  const uint32_t b[2] = {cuda::pack_pair(b_at(2 * t, g), b_at(2 * t + 1, g)),
                         cuda::pack_pair(b_at(2 * t + 8, g), b_at(2 * t + 9, g))};
  float d[4];
  for (int i = 0; i < 4; ++i) d[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  cuda::mma_m16n8k16<half_t>(d, a, b);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

// The same product with the fragments loaded by ldmatrix from shared memory:
//   mode 0: A row-major [m][k] by one x4, B as [n][k] by one x2
//   mode 1: A stored transposed [k][m] by x4.trans, B as [k][n] by x2.trans
//   mode 2: A by four x1, B ([n][k]) by two x1
// One warp (the shared arrays hold one problem).
template <typename half_t>
__global__ void mma_m16n8k16_ldmatrix_kernel(const half_t* A, const half_t* B, const float* C,
                                             float* D, int mode) {
  half_t* As = cuda::shared_array<half_t, 256, 0>();
  half_t* Bs = cuda::shared_array<half_t, 128, 1>();
  const int l = cuda::lane_id(), g = l / 4, t = l % 4;
  for (int i = l; i < 256; i += 32) {
    const int r = i / 16, c = i % 16;  // A[r][c]
    As[mode == 1 ? c * 16 + r : i] = A[i];
  }
  for (int i = l; i < 128; i += 32) {
    const int k = i / 8, n = i % 8;  // B[k][n]
    Bs[mode == 1 ? i : n * 16 + k] = B[i];
  }
  __syncthreads();
  uint32_t a[4], b[2];
  if (mode == 0) {
    cuda::ldmatrix<4>(a, As + (l % 16) * 16 + 8 * (l / 16));
    cuda::ldmatrix<2>(b, Bs + (l % 8) * 16 + 8 * ((l / 8) % 2));
  } else if (mode == 1) {
    const int j = l / 8, i = l % 8;
    cuda::ldmatrix<4, true>(a, As + (i + 8 * (j / 2)) * 16 + 8 * (j % 2));
    cuda::ldmatrix<2, true>(b, Bs + (l % 16) * 8);
  } else {
    for (int j = 0; j < 4; ++j) {
      uint32_t r[1];
      cuda::ldmatrix<1>(r, As + ((l % 8) + 8 * (j % 2)) * 16 + 8 * (j / 2));
      a[j] = r[0];
    }
    for (int j = 0; j < 2; ++j) {
      uint32_t r[1];
      cuda::ldmatrix<1>(r, Bs + (l % 8) * 16 + 8 * j);
      b[j] = r[0];
    }
  }
  float d[4];
  for (int i = 0; i < 4; ++i) d[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  cuda::mma_m16n8k16<half_t>(d, a, b);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

// D = A (16x8) * B (8x8) + C in tf32. use_ldmatrix false: fragments from
// global memory through cvt.rna.tf32; true: A [m][k] and B as [n][k] in
// shared memory, loaded with ldmatrix x4 / x2 (32-bit elements as pairs of
// 16-bit ones), raw bits (the tensor core truncates). One warp per problem
// (direct) or one warp (ldmatrix).
__global__ void mma_m16n8k8_tf32_kernel(const float* A, const float* B, const float* C,
                                        float* D, bool use_ldmatrix) {
  const int w = threadIdx.x / 32, l = cuda::lane_id(), g = l / 4, t = l % 4;
  A += w * 128, B += w * 64, C += w * 128, D += w * 128;
  uint32_t a[4], b[2];
  if (use_ldmatrix) {
    float* As = cuda::shared_array<float, 128, 2>();
    float* Bs = cuda::shared_array<float, 64, 3>();
    for (int i = l; i < 128; i += 32) As[i] = A[i];
    for (int i = l; i < 64; i += 32) Bs[(i % 8) * 8 + i / 8] = B[i];  // B[k][n] -> Bs[n][k]
    __syncthreads();
    cuda::ldmatrix<4>(a, As + (l % 16) * 8 + 4 * (l / 16));
    cuda::ldmatrix<2>(b, Bs + (l % 8) * 8 + 4 * ((l / 8) % 2));
  } else {
    a[0] = cuda::cvt_rna_tf32(A[g * 8 + t]);
    a[1] = cuda::cvt_rna_tf32(A[(g + 8) * 8 + t]);
    a[2] = cuda::cvt_rna_tf32(A[g * 8 + t + 4]);
    a[3] = cuda::cvt_rna_tf32(A[(g + 8) * 8 + t + 4]);
    b[0] = cuda::cvt_rna_tf32(B[t * 8 + g]);
    b[1] = cuda::cvt_rna_tf32(B[(t + 4) * 8 + g]);
  }
  float d[4];
  for (int i = 0; i < 4; ++i) d[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  cuda::mma_m16n8k8_tf32(d, a, b);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

__global__ void cvt_rna_tf32_kernel(const float* x, int32_t* out, int64_t n) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    out[i] = static_cast<int32_t>(cuda::cvt_rna_tf32(x[i]));
  }
}

// Per lane of each warp: the xor-butterfly sum, the shfl_down sum (whole in
// lane 0), the value of lane `src`, and a double through shfl_xor 31.
__global__ void shuffle_kernel(const float* x, const double* y, float* out, double* out64,
                               int src) {
  const int w = threadIdx.x / 32, l = cuda::lane_id();
  const float v = x[w * 32 + l];
  float butterfly = v, down = v;
  for (int m = 16; m >= 1; m /= 2) butterfly += cuda::warp_shfl_xor(butterfly, m);
  for (int d = 16; d >= 1; d /= 2) down += cuda::warp_shfl_down(down, d);
  const float broadcast = cuda::warp_shfl(v, src);
  out[(w * 32 + l) * 3 + 0] = butterfly;
  out[(w * 32 + l) * 3 + 1] = down;
  out[(w * 32 + l) * 3 + 2] = broadcast;
  out64[w * 32 + l] = cuda::warp_shfl_xor(y[w * 32 + l], 31);
}

// Two stages of 8 x 8 floats copied global -> shared with cp.async of Bytes,
// rows >= valid_rows zero-filled (their source address points past the
// stages: it must not be read), one commit per stage, then
//   wait_mode 0: wait_group 0   1: wait_group 1   2: no wait at all
// and __syncthreads, then every thread copies the shared stages out.
template <int Bytes>
__global__ void cp_async_kernel(const float* src, float* out, int valid_rows, int wait_mode) {
  float* stages = cuda::shared_array<float, 128, 4>();
  constexpr int kFloats = Bytes / 4, kCopies = 64 / kFloats;
  for (int stage = 0; stage < 2; ++stage) {
    for (int i = threadIdx.x; i < kCopies; i += blockDim.x) {
      const int row = i * kFloats / 8;
      const bool valid = row < valid_rows;
      const float* from = valid ? src + stage * 64 + i * kFloats : src + 1000000;
      cuda::cp_async<Bytes>(stages + stage * 64 + i * kFloats, from, valid);
    }
    cuda::cp_async_commit();
  }
  if (wait_mode == 0) cuda::cp_async_wait<0>();
  if (wait_mode == 1) cuda::cp_async_wait<1>();
  __syncthreads();
  for (int i = threadIdx.x; i < 128; i += blockDim.x) out[i] = stages[i];
}

void launch(auto kernel, uint32_t threads, const auto&... args) {
  const uint32_t grid[3] = {1, 1, 1};
  cuda_emulation::emulate_launch(kernel, grid, threads, args...);
}

// A: [warps, 16, 16], B: [warps, 16, 8] (bf16 or fp16), C: [warps, 16, 8] float.
at::Tensor mma_m16n8k16(const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                        int64_t ldmatrix_mode) {
  auto D = at::empty_like(C);
  const auto warps = static_cast<uint32_t>(A.size(0));
  TORCH_CHECK(ldmatrix_mode < 0 || warps == 1, "the ldmatrix test runs one warp");
  TORCH_CHECK(A.scalar_type() == at::kBFloat16 || A.scalar_type() == at::kHalf, "bf16 or fp16");
  const auto run = [&](auto tag) {
    using half_t = decltype(tag);
    const auto* a = reinterpret_cast<const half_t*>(A.const_data_ptr());
    const auto* b = reinterpret_cast<const half_t*>(B.const_data_ptr());
    if (ldmatrix_mode < 0) {
      launch(mma_m16n8k16_direct_kernel<half_t>, 32 * warps, a, b, C.const_data_ptr<float>(),
             D.mutable_data_ptr<float>());
    } else {
      launch(mma_m16n8k16_ldmatrix_kernel<half_t>, 32, a, b, C.const_data_ptr<float>(),
             D.mutable_data_ptr<float>(), static_cast<int>(ldmatrix_mode));
    }
  };
  if (A.scalar_type() == at::kBFloat16) {
    run(c10::BFloat16{});
  } else {
    run(c10::Half{});
  }
  return D;
}

at::Tensor mma_m16n8k8_tf32(const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                            bool use_ldmatrix) {
  auto D = at::empty_like(C);
  const auto warps = static_cast<uint32_t>(A.size(0));
  TORCH_CHECK(!use_ldmatrix || warps == 1, "the ldmatrix test runs one warp");
  launch(mma_m16n8k8_tf32_kernel, 32 * warps, A.const_data_ptr<float>(),
         B.const_data_ptr<float>(), C.const_data_ptr<float>(), D.mutable_data_ptr<float>(),
         use_ldmatrix);
  return D;
}

at::Tensor cvt_rna_tf32(const at::Tensor& x) {
  auto out = at::empty(x.sizes(), x.options().dtype(at::kInt));
  launch(cvt_rna_tf32_kernel, 32, x.const_data_ptr<float>(), out.mutable_data_ptr<int32_t>(),
         x.numel());
  return out;
}

std::tuple<at::Tensor, at::Tensor> shuffles(const at::Tensor& x, const at::Tensor& y,
                                            int64_t src) {
  auto out = at::empty({x.numel(), 3}, x.options());
  auto out64 = at::empty_like(y);
  launch(shuffle_kernel, static_cast<uint32_t>(x.numel()), x.const_data_ptr<float>(),
         y.const_data_ptr<double>(), out.mutable_data_ptr<float>(),
         out64.mutable_data_ptr<double>(), static_cast<int>(src));
  return {out, out64};
}

at::Tensor cp_async_stages(const at::Tensor& src, int64_t bytes, int64_t valid_rows,
                           int64_t wait_mode, int64_t threads) {
  auto out = at::empty({2, 8, 8}, src.options());
  const auto args = std::make_tuple(src.const_data_ptr<float>(), out.mutable_data_ptr<float>(),
                                    static_cast<int>(valid_rows), static_cast<int>(wait_mode));
  const auto t = static_cast<uint32_t>(threads);
  if (bytes == 16) {
    std::apply([&](auto... a) { launch(cp_async_kernel<16>, t, a...); }, args);
  } else if (bytes == 8) {
    std::apply([&](auto... a) { launch(cp_async_kernel<8>, t, a...); }, args);
  } else {
    TORCH_CHECK(bytes == 4, "cp.async copies 4, 8 or 16 bytes");
    std::apply([&](auto... a) { launch(cp_async_kernel<4>, t, a...); }, args);
  }
  return out;
}

}  // namespace

void register_warp_primitive_tests(pybind11::module& m) {
  m.def("mma_m16n8k16", &mma_m16n8k16,
        "D = A B + C per warp; ldmatrix_mode -1: direct fragments, 0/1/2: ldmatrix variants");
  m.def("mma_m16n8k8_tf32", &mma_m16n8k8_tf32);
  m.def("cvt_rna_tf32", &cvt_rna_tf32);
  m.def("shuffles", &shuffles);
  m.def("cp_async_stages", &cp_async_stages);
}
