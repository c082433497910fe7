// Multilevel interpolation prediction (SZ3-style, QoZ level-wise bounds),
// on one tile at a time.
//
// Points are visited coarse to fine: at stride s (a power of two, halving
// down to 1) and for each axis d in the configured order, the points whose
// coordinate along d is an odd multiple of s (along axes earlier in the order:
// multiples of s; later: multiples of 2s) are predicted from already
// reconstructed neighbours at +-s (linear) or +-s, +-3s (cubic) along d.
// The residual is quantized with the level's bound, so the decoder, visiting
// the same points in the same order with the same arithmetic, rebuilds the
// same values. Tiles are independent: the decoder parallelizes over them.
#pragma once
#include <type_traits>

#include "hostdevice.hpp"
#include "quantizer.hpp"

namespace ebzip {

// Stencils (InterpConfig::stencil): linear; cubic where 4 neighbours exist,
// else linear (format version 2); cubic, else SZ3's quadratic through the 3
// neighbours there are (version 3: +0.1-0.4 dB at equal bits on our CFD
// fields, the same elsewhere).
enum InterpStencil : uint8_t { kLinear = 0, kCubicLinearEdges = 1, kCubicQuadraticEdges = 2 };

// A fill value (format version 3): points holding exactly its bits get
// symbol kFillSymbol and come back exactly; later predictions read their
// own prediction there, as if the point were masked out (land in an ocean
// field then no longer drags the coast's predictions towards the fill).
enum InterpFill : uint8_t { kNoFill = 0, kFillMasked = 1 };
constexpr uint16_t kFillSymbol = 1;  // with a fill value, quantized residuals keep |q| <= radius - 2

struct InterpConfig {
  uint8_t stencil = kCubicQuadraticEdges;  // an InterpStencil
  uint8_t order[4] = {0, 1, 2, 3};        // axis order within a level
  double alpha = 1.0, beta = 1.0;         // level bound: eb / min(alpha^(level-1), beta)
  uint8_t fill = kNoFill;                 // an InterpFill
  uint64_t fill_bits = 0;                 // the fill value's storage bits
};

// Level 1 is the finest (stride 1). Coarse levels get tighter bounds: their
// points are the anchors every finer prediction leans on (QoZ).
EBZ_HD_INLINE double level_bound(double eb, const InterpConfig& cfg, int level) {
  double f = 1.0;
  for (int l = 1; l < level && f < cfg.beta; ++l) f *= cfg.alpha;
  return eb / (f < cfg.beta ? f : cfg.beta);
}

// Quantization steps of every level (2 * level bound) and their inverses.
struct InterpLevels {
  static constexpr int kMaxLevels = 66;
  double step[kMaxLevels], inv_step[kMaxLevels];
  EBZ_HD static InterpLevels make(double eb, const InterpConfig& cfg) {
    InterpLevels L;
    for (int l = 0; l < kMaxLevels; ++l) {
      L.step[l] = 2.0 * level_bound(eb, cfg, l);
      L.inv_step[l] = 1.0 / L.step[l];
    }
    return L;
  }
};

// The value later predictions read where a point is stored exactly: itself
// if finite, else the (finite) prediction, else 0.
EBZ_HD_INLINE double interp_exact_stand_in(double v, double pred) {
  return v - v == 0.0 ? v : (pred - pred == 0.0 ? pred : 0.0);
}

// Encodes the point x predicted as `pred` at a level with quantization step
// `step`: code = q + radius, or 0 where it must be stored exactly. Returns
// the reconstructed value later predictions read (the decoder's, exactly).
// lim = radius - 0.5.
template <class T>
EBZ_HD_INLINE double interp_encode_point(double xv, double pred, double step, double inv_step, double lim,
                                         const Quantizer& qz, int64_t radius, uint16_t& code) {
  const double d = (xv - pred) * inv_step;
  if (fabs(d) < lim) {  // false for NaN/Inf too
    const int64_t q = round_half_even(d);
    const typename T::storage xr = T::from_double(pred + double(q) * step);
    if (qz.within_bound<T>(xv, xr)) {
      code = uint16_t(q + radius);
      return T::to_double(xr);
    }
  }
  code = 0;
  return interp_exact_stand_in(xv, pred);
}

template <class S>
EBZ_HD_INLINE uint64_t storage_bits(const S& x) {
  uint64_t b = 0;
  memcpy(&b, &x, sizeof(S));
  return b;
}

// |d| bound for quantized points: radius - 0.5, one less with a fill value
// (its symbol takes the code of q = 1 - radius).
EBZ_HD_INLINE double interp_code_limit(const InterpConfig& cfg, int64_t radius) {
  return double(radius) - (cfg.fill != kNoFill ? 1.5 : 0.5);
}

// The value later predictions read at a fill point: its prediction.
EBZ_HD_INLINE double interp_fill_stand_in(double pred) { return pred - pred == 0.0 ? pred : 0.0; }

// interp_encode_point, with the fill value first; lim from interp_code_limit.
template <class T>
EBZ_HD_INLINE double interp_encode(const typename T::storage& x, double pred, const InterpLevels& lv, int level,
                                   double lim, const Quantizer& qz, int64_t radius, const InterpConfig& cfg,
                                   uint16_t& code) {
  if (cfg.fill != kNoFill && storage_bits(x) == cfg.fill_bits) {
    code = kFillSymbol;
    return interp_fill_stand_in(pred);
  }
  return interp_encode_point<T>(T::to_double(x), pred, lv.step[level], lv.inv_step[level], lim, qz, radius, code);
}

// Decodes a point with symbol sym > 0 into *out; returns the value later predictions read.
template <class T>
EBZ_HD_INLINE double interp_decode_point(uint32_t sym, double pred, double step, int64_t radius,
                                         typename T::storage* out) {
  *out = T::from_double(pred + double(int64_t(sym) - radius) * step);
  return T::to_double(*out);
}

// interp_decode_point, with the fill value first.
template <class T>
EBZ_HD_INLINE double interp_decode(uint32_t sym, double pred, const InterpLevels& lv, int level, int64_t radius,
                                   const InterpConfig& cfg, typename T::storage* out) {
  if (cfg.fill != kNoFill && sym == kFillSymbol) {
    memcpy(out, &cfg.fill_bits, sizeof(*out));  // little-endian: the low bytes
    return interp_fill_stand_in(pred);
  }
  return interp_decode_point<T>(sym, pred, lv.step[level], radius, out);
}

// Prediction at p, coordinate c along an axis of extent n, neighbours at
// +-s (memory distance `step`). c >= s always holds, so c - s exists.
// B is the buffer's element type: float for 16/32-bit data (the reconstructed
// values are exact in it, and it halves the memory traffic), double for f64;
// the arithmetic is in double either way.
//
// How a point at coordinate c (an odd multiple of s) along an axis of extent
// n is predicted from neighbours s apart (memory distance `step`):
enum class InterpCase { cubic, linear, extrapolate, copy, quad_first, quad_last };

EBZ_HD_INLINE InterpCase interp_case(int64_t c, int64_t n, int64_t s, int stencil) {
  if (c + s < n) {
    if (stencil == kLinear) return InterpCase::linear;
    const bool lo = c >= 3 * s, hi = c + 3 * s < n;
    if (lo && hi) return InterpCase::cubic;
    if (stencil == kCubicQuadraticEdges && hi) return InterpCase::quad_first;
    if (stencil == kCubicQuadraticEdges && lo) return InterpCase::quad_last;
    return InterpCase::linear;
  }
  return c >= 3 * s ? InterpCase::extrapolate : InterpCase::copy;  // at the far face
}

template <InterpCase K, class B>
EBZ_HD_INLINE double interp_predict(const B* p, int64_t step) {
  if constexpr (K == InterpCase::cubic)
    return (-double(p[-3 * step]) + 9.0 * double(p[-step]) + 9.0 * double(p[step]) - double(p[3 * step])) * 0.0625;
  else if constexpr (K == InterpCase::linear)
    return (double(p[-step]) + double(p[step])) * 0.5;
  else if constexpr (K == InterpCase::quad_first)  // quadratic through -s, +s, +3s
    return (3.0 * double(p[-step]) + 6.0 * double(p[step]) - double(p[3 * step])) * 0.125;
  else if constexpr (K == InterpCase::quad_last)  // quadratic through -3s, -s, +s
    return (-double(p[-3 * step]) + 6.0 * double(p[-step]) + 3.0 * double(p[step])) * 0.125;
  else if constexpr (K == InterpCase::extrapolate)
    return 1.5 * double(p[-step]) - 0.5 * double(p[-3 * step]);
  else
    return double(p[-step]);
}

template <class B>
EBZ_HD_INLINE double interp_predict(const B* p, int64_t step, InterpCase k) {
  switch (k) {
    case InterpCase::cubic: return interp_predict<InterpCase::cubic>(p, step);
    case InterpCase::linear: return interp_predict<InterpCase::linear>(p, step);
    case InterpCase::extrapolate: return interp_predict<InterpCase::extrapolate>(p, step);
    case InterpCase::quad_first: return interp_predict<InterpCase::quad_first>(p, step);
    case InterpCase::quad_last: return interp_predict<InterpCase::quad_last>(p, step);
    default: return interp_predict<InterpCase::copy>(p, step);
  }
}

// Visits every point of a tile of shape ext[0..3] (unused leading axes = 1)
// exactly once, coarse to fine. visit(index, prediction, level) returns the
// reconstructed value, which later predictions read from buf.
template <class B, class Visit>
EBZ_HD void interp_traverse(B* buf, const int64_t* ext, const InterpConfig& cfg, Visit&& visit) {
  int64_t stride[4];
  stride[3] = 1;
  for (int k = 3; k > 0; --k) stride[k - 1] = stride[k] * ext[k];
  int64_t maxext = 1;
  for (int k = 0; k < 4; ++k) maxext = ext[k] > maxext ? ext[k] : maxext;
  int64_t top = 1;
  int levels = 1;
  while (top * 2 < maxext) { top *= 2; ++levels; }
  buf[0] = B(visit(int64_t(0), 0.0, maxext > 1 ? levels + 1 : 1));
  if (maxext == 1) return;
  const int stencil = cfg.stencil;
  for (int64_t s = top; s >= 1; s /= 2, --levels) {
    for (int j = 0; j < 4; ++j) {
      const int d = cfg.order[j];
      if (ext[d] <= s) continue;
      int64_t start[4], step[4];
      for (int k = 0; k < 4; ++k) {
        int pos = 0;
        while (cfg.order[pos] != k) ++pos;
        start[k] = 0;
        step[k] = pos < j ? s : 2 * s;
      }
      start[d] = s;
      step[d] = 2 * s;
      const int64_t sd = s * stride[d];
      const int level = levels;
      // One row along the last axis: along d != 3 the case is the same for
      // the whole row, so the inner loop runs without boundary tests.
      auto row = [&](int64_t base, int64_t c_outer) {
        if (d == 3) {
          for (int64_t i3 = start[3]; i3 < ext[3]; i3 += step[3]) {
            const int64_t idx = base + i3;
            buf[idx] = B(visit(idx, interp_predict(buf + idx, sd, interp_case(i3, ext[3], s, stencil)), level));
          }
          return;
        }
        auto run = [&](auto kind) {
          constexpr InterpCase K = decltype(kind)::value;
          for (int64_t i3 = start[3]; i3 < ext[3]; i3 += step[3]) {
            const int64_t idx = base + i3;
            buf[idx] = B(visit(idx, interp_predict<K>(buf + idx, sd), level));
          }
        };
        switch (interp_case(c_outer, ext[d], s, stencil)) {
          case InterpCase::cubic: run(std::integral_constant<InterpCase, InterpCase::cubic>{}); break;
          case InterpCase::linear: run(std::integral_constant<InterpCase, InterpCase::linear>{}); break;
          case InterpCase::extrapolate: run(std::integral_constant<InterpCase, InterpCase::extrapolate>{}); break;
          case InterpCase::quad_first: run(std::integral_constant<InterpCase, InterpCase::quad_first>{}); break;
          case InterpCase::quad_last: run(std::integral_constant<InterpCase, InterpCase::quad_last>{}); break;
          default: run(std::integral_constant<InterpCase, InterpCase::copy>{}); break;
        }
      };
      for (int64_t i0 = start[0]; i0 < ext[0]; i0 += step[0])
        for (int64_t i1 = start[1]; i1 < ext[1]; i1 += step[1])
          for (int64_t i2 = start[2]; i2 < ext[2]; i2 += step[2])
            row(i0 * stride[0] + i1 * stride[1] + i2 * stride[2], d == 0 ? i0 : d == 1 ? i1 : i2);
    }
  }
}

}  // namespace ebzip
