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

// Offsets (in the padded buffer) and signs of the 2^D - 1 Lorenzo neighbours.
template <int D>
struct LorenzoStencil {
  static constexpr int kTerms = (1 << D) - 1;
  int64_t offset[kTerms];
  int64_t sign[kTerms];

  EBZ_HD explicit LorenzoStencil(const int64_t* padded_stride) {
    for (int m = 1; m <= kTerms; ++m) {
      int64_t off = 0;
      int bits = 0;
      for (int k = 0; k < D; ++k)
        if (m & (1 << k)) { off += padded_stride[k]; ++bits; }
      offset[m - 1] = off;
      sign[m - 1] = (bits & 1) ? 1 : -1;
    }
  }

  EBZ_HD_INLINE int64_t predict(const int64_t* p) const {
    int64_t s = 0;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int t = 0; t < kTerms; ++t) s += sign[t] * p[-offset[t]];
    return s;
  }
};

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
