// The Lorenzo integer grid of one block in a padded scratch buffer, and the
// row loop that decodes it: shared by the CPU driver (one block per thread)
// and the CUDA driver (one block per device thread), so both rebuild the grid
// with the same code.
#pragma once
#include "blocks.hpp"
#include "lorenzo.hpp"
#include "quantizer.hpp"

namespace ebzip {

// Padded scratch for the integer grid of one block: one leading zero layer
// per axis, so the Lorenzo stencil never needs a bounds test.
struct PaddedGrid {
  int ndim;
  int64_t shape[kMaxPredDims];
  int64_t pstride[kMaxPredDims];
  int64_t size;

  PaddedGrid() = default;
  EBZ_HD explicit PaddedGrid(const BlockGrid::Block& blk) {
    ndim = blk.ndim == 0 ? 1 : blk.ndim;
    for (int k = 0; k < ndim; ++k) shape[k] = blk.ndim == 0 ? 1 : blk.shape[k];
    pstride[ndim - 1] = 1;
    for (int k = ndim - 1; k > 0; --k) pstride[k - 1] = pstride[k] * (shape[k] + 1);
    size = pstride[0] * (shape[0] + 1);
  }
  // Zero the padding layers (only they are read before being written).
  template <class G>
  EBZ_HD void zero_faces(G* s) const {
    for (int k = 0; k < ndim; ++k) {
      const int64_t chunk = pstride[k], period = pstride[k] * (shape[k] + 1);
      for (int64_t base = 0; base < size; base += period)
        for (int64_t j = 0; j < chunk; ++j) s[base + j] = 0;
    }
  }
  // Padded position of the block's element at flat (C-order) offset `local`.
  EBZ_HD_INLINE int64_t padded_offset(int64_t local) const {
    int64_t p = 0;
    for (int k = ndim - 1; k >= 0; --k) {
      p += (local % shape[k] + 1) * pstride[k];
      local /= shape[k];
    }
    return p;
  }
  // Calls row(padded_offset_of_first_element, flat_offset, length) per row.
  template <class RowFn>
  EBZ_HD void for_each_row(RowFn&& row) const {
    int64_t idx[kMaxPredDims] = {0, 0, 0, 0};
    const int64_t n_last = shape[ndim - 1];
    int64_t rows = 1;
    for (int k = 0; k < ndim - 1; ++k) rows *= shape[k];
    for (int64_t r = 0; r < rows; ++r) {
      int64_t base = 1;
      for (int k = 0; k < ndim - 1; ++k) base += (idx[k] + 1) * pstride[k];
      row(base, r * n_last, n_last);
      for (int k = ndim - 2; k >= 0; --k) {
        if (++idx[k] < shape[k]) break;
        idx[k] = 0;
      }
    }
  }
};

// Rebuilds a block's integer grid from its symbols and writes x_hat = T(q * 2eb).
// next_outlier() returns the next stored outlier delta (symbol 0); it may
// throw (CPU) or record an error and return 0 (device).
template <class T, int D, class G, class NextOutlier>
EBZ_HD void lorenzo_decode_block(const uint16_t* codes, const PaddedGrid& pg, const Quantizer& qz_ref, int64_t radius,
                                 G* s, NextOutlier&& next_outlier, typename T::storage* out) {
  pg.zero_faces(s);
  // Locals, not references: the hot loop then keeps them in registers.
  const Quantizer qz = qz_ref;
  const LorenzoRows<D, G> rows(pg.pstride);
  pg.for_each_row([&, qz, rows, radius](int64_t pbase, int64_t flat, int64_t len) {
    G* sr = s + pbase;
    const uint16_t* cr = codes + flat;
    typename T::storage* orow = out + flat;
    G r = 0;
    for (int64_t i = 0; i < len; ++i) {
      const uint32_t sym = cr[i];
      const int64_t delta = sym ? delta_of_symbol(sym, radius) : next_outlier();
      r += G(delta);
      sr[i] = r + rows.earlier(sr + i);
    }
    for (int64_t i = 0; i < len; ++i) orow[i] = qz.template reconstruct<T>(int64_t(sr[i]));
  });
}

// The quantizer's symbol for the element at padded position p of a block,
// predicted from the whole D-dim Lorenzo stencil (the encoders' row form
// computes the same integer: see LorenzoRows).
template <int D, class G>
EBZ_HD_INLINE int64_t lorenzo_delta(const G* s, const int64_t* pstride, int64_t p) {
  return int64_t(s[p]) - int64_t(LorenzoStencil<D, G>(pstride).predict(s + p));
}

// LEB128 varints of zigzagged outlier deltas, for writers that place each
// one at a precomputed offset.
EBZ_HD_INLINE int varint_size(uint64_t u) {
  int n = 1;
  while (u >= 0x80) { u >>= 7; ++n; }
  return n;
}
EBZ_HD_INLINE void write_varint(uint8_t* p, uint64_t u) {
  while (u >= 0x80) { *p++ = uint8_t(u) | 0x80; u >>= 7; }
  *p = uint8_t(u);
}

}  // namespace ebzip
