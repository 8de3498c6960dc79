// Dense grad-weight on the CPU (groups == 1, float and double), on NHWC
// copies of the input and grad_output, into the packed-weight layout.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "conv2d_cpu_common.h"
#include "conv2d_dense_kernels.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// grad-weight of a dense convolution: gw[k][c][r][s] = sum over (n, oh, ow)
// of gy[n][oh][ow][k] * x[n][oh*sh + r*dh][ow*sw + s*dw][c] on NHWC copies.
// Each thread owns a set of register tiles (NB vectors of k x UC values of
// the (s, c) index, one r) of the result and sums all pixels into them in
// one fixed order: results identical run to run and for any thread count,
// without partial buffers or atomics. Pixels go in chunks of output rows so
// a chunk of gy and x stays in cache while the thread's tiles sweep it.
inline constexpr int kWgradUC = 6;

template <typename T, int UC, int NB>
void weight_grad_tile(const T* x, const T* gy, int64_t rows, int64_t Q, int64_t x_row,
                      int64_t x_pixel, int64_t gy_row, int64_t gy_pixel, T* gw, int64_t gw_kb,
                      bool accumulate) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[UC][NB];
  for (int u = 0; u < UC; ++u)
    for (int j = 0; j < NB; ++j)
      acc[u][j] = accumulate ? V::load(gw + j * gw_kb + u * L) : V::zero();
  for (int64_t row = 0; row < rows; ++row) {
    const T* xr = x + row * x_row;
    const T* gr = gy + row * gy_row;
    for (int64_t q = 0; q < Q; ++q) {
      typename V::type gv[NB];
      for (int j = 0; j < NB; ++j) gv[j] = V::load(gr + q * gy_pixel + j * L);
      for (int u = 0; u < UC; ++u) {
        const typename V::type xb = V::broadcast(xr[q * x_pixel + u]);
        for (int j = 0; j < NB; ++j) acc[u][j] = simd::fmadd(xb, gv[j], acc[u][j]);
      }
    }
  }
  for (int u = 0; u < UC; ++u)
    for (int j = 0; j < NB; ++j) V::store(gw + j * gw_kb + u * L, acc[u][j]);
}

template <typename T>
using WeightGradTileFn = void (*)(const T*, const T*, int64_t, int64_t, int64_t, int64_t,
                                  int64_t, int64_t, T*, int64_t, bool);

// weight_grad_tile<T, uc, nb> for every uc <= kWgradUC, nb <= kTileNB (tails).
template <typename T>
const TileTable<WeightGradTileFn<T>, kWgradUC, kTileNB>& weight_grad_tile_table() {
  static const TileTable<WeightGradTileFn<T>, kWgradUC, kTileNB> table(
      []<int UC, int NB>() { return &weight_grad_tile<T, UC, NB>; });
  return table;
}

// x: padded NHWC [N][Hp][Wp][C]; gy: NHWC [N][P][Q][Kp] with Kp = Kb * L
// (zero channels past K); gw: [Kb][R][S][C][L] (the packed-weight layout).
template <typename T>
void dense_backward_weight(const T* x, const T* gy, T* gw, const Conv2dShape& p, int64_t Hp,
                           int64_t Wp) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t Kb = (p.K + L - 1) / L, Kp = Kb * L;
  const int64_t KG = (Kb + kTileNB - 1) / kTileNB;
  const bool fused = p.dilation_w == 1;
  const int64_t S_outer = fused ? 1 : p.S, inner = fused ? p.S * p.C : p.C;
  const int64_t inner_tiles = (inner + kWgradUC - 1) / kWgradUC;
  const int64_t items = KG * p.R * S_outer * inner_tiles;
  const int64_t gw_kb = p.R * p.S * p.C * L;
  // Chunks of output rows: about 64 pixels.
  const int64_t chunk_rows = std::max<int64_t>(1, 64 / std::max<int64_t>(p.Q, 1));
  const int64_t total_rows = p.N * p.P;
  const auto& table = weight_grad_tile_table<T>();
  at::parallel_for(0, items, grain_for(total_rows * p.Q * kWgradUC * kTileNB), [&](int64_t begin, int64_t end) {
    for (int64_t row0 = 0; row0 < total_rows; row0 += chunk_rows) {
      const int64_t row1 = std::min(total_rows, row0 + chunk_rows);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t it = item % inner_tiles;
        const int64_t so = (item / inner_tiles) % S_outer;
        const int64_t r = (item / (inner_tiles * S_outer)) % p.R;
        const int64_t kg = item / (inner_tiles * S_outer * p.R);
        const int64_t kb0 = kg * kTileNB;
        const int nb = static_cast<int>(std::min<int64_t>(kTileNB, Kb - kb0));
        const int64_t i0 = it * kWgradUC;
        const int uc = static_cast<int>(std::min<int64_t>(kWgradUC, inner - i0));
        T* g = gw + kb0 * gw_kb + ((r * S_outer + so) * inner + i0) * L;
        // Rows of one image at a time (x rows are not evenly spaced across images).
        for (int64_t row = row0; row < row1;) {
          const int64_t n = row / p.P, oh = row % p.P;
          const int64_t rows = std::min(row1, (n + 1) * p.P) - row;
          const T* xp = x + ((n * Hp + oh * p.stride_h + r * p.dilation_h) * Wp) * p.C +
                        so * p.dilation_w * p.C + i0;
          const T* gp = gy + ((n * p.P + oh) * p.Q) * Kp + kb0 * L;
          table(uc, nb)(xp, gp, rows, p.Q, p.stride_h * Wp * p.C, p.stride_w * p.C,
                                   p.Q * Kp, Kp, g, gw_kb, row > 0);
          row += rows;
        }
      }
    }
  });
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
