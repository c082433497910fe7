// Lorenzo prediction on the integer grid (cuSZ-style).
//
// Values are pre-quantized to integers q first, then each q is predicted from
// its already-visited neighbours: the D-dimensional Lorenzo predictor is the
// inclusion-exclusion sum over the 2^D - 1 corners of the unit cell behind the
// point. Working on integers makes prediction exact, so the decoder rebuilds
// exactly the same q, and neighbours outside a block read as 0 from a padded
// scratch buffer, so every block is encoded and decoded on its own.
#pragma once
#include "hostdevice.hpp"

namespace ebzip {

constexpr int kMaxPredDims = 4;

// The D-dim Lorenzo prediction at p from the padded buffer: the signed sum
// over the 2^D - 1 corners behind p (written out so offsets stay in registers).
template <int D, class G = int64_t>
struct LorenzoStencil {
  int64_t o[D];  // padded strides of the D axes
  EBZ_HD explicit LorenzoStencil(const int64_t* padded_stride) {
    for (int k = 0; k < D; ++k) o[k] = padded_stride[k];
  }
  EBZ_HD_INLINE G predict(const G* p) const {
    if constexpr (D == 1) {
      return p[-o[0]];
    } else if constexpr (D == 2) {
      return p[-o[0]] + p[-o[1]] - p[-o[0] - o[1]];
    } else if constexpr (D == 3) {
      return p[-o[0]] + p[-o[1]] + p[-o[2]] - p[-o[0] - o[1]] - p[-o[0] - o[2]] - p[-o[1] - o[2]] +
             p[-o[0] - o[1] - o[2]];
    } else {
      static_assert(D == 4, "Lorenzo prediction supports 1-4 dimensions");
      const G* a = p - o[0];  // the same 3-D stencil one step back along axis 0, subtracted
      return p[-o[0]] + LorenzoStencil<3, G>(o + 1).predict(p) - LorenzoStencil<3, G>(o + 1).predict(a);
    }
  }
};

template <class G>
struct LorenzoStencil<0, G> {
  EBZ_HD explicit LorenzoStencil(const int64_t*) {}
  EBZ_HD_INLINE G predict(const G*) const { return 0; }
};

// Row form used by the drivers. The D-dim Lorenzo residual factors as
// (1 - S_last) P q, with P the (D-1)-dim Lorenzo operator over the leading
// axes. So along a row, delta is the first difference of r = q - A, where
// A = q - P q is the (D-1)-dim prediction from earlier rows only. Decoding a
// row is then a running sum of deltas plus A, whose terms do not depend on
// the row being decoded: no store-to-load chain, and A vectorizes.
template <int D, class G>
struct LorenzoRows {
  LorenzoStencil<D - 1, G> from_earlier_rows;  // strides of the leading D-1 axes
  EBZ_HD explicit LorenzoRows(const int64_t* padded_stride) : from_earlier_rows(padded_stride) {}
  EBZ_HD_INLINE G earlier(const G* p) const { return from_earlier_rows.predict(p); }
};

// The integer grid is int32 when every |q| < 2^26 (the common case: half the
// memory traffic, and int32 -> double converts in SIMD), else int64 with
// |q| < 2^50. Either way the Lorenzo sums cannot overflow for valid data;
// drivers build with wrapping arithmetic so forged streams cannot cause UB.
constexpr double kInt32GridLimit = 67108864.0;  // 2^26

// Quantization codes: symbol 0 marks an outlier whose delta is stored apart;
// deltas in (-radius, radius) map to 1 .. 2*radius-1.
EBZ_HD_INLINE uint32_t symbol_of_delta(int64_t delta, int64_t radius) {
  return (delta > -radius && delta < radius) ? uint32_t(delta + radius) : 0u;
}
EBZ_HD_INLINE int64_t delta_of_symbol(uint32_t sym, int64_t radius) { return int64_t(sym) - radius; }

// Zigzag maps signed deltas to unsigned for varint storage of outliers.
EBZ_HD_INLINE uint64_t zigzag(int64_t v) { return (uint64_t(v) << 1) ^ uint64_t(v >> 63); }
EBZ_HD_INLINE int64_t unzigzag(uint64_t u) { return int64_t(u >> 1) ^ -int64_t(u & 1); }

}  // namespace ebzip
