// Error-bounded linear quantization (cuSZ-style pre-quantization).
//
// Each value x becomes an integer q = round(x / (2 eb)) and is reconstructed
// as T(q * 2eb). In exact arithmetic |x - q*2eb| <= eb; in floating point the
// last rounding can push it over, so every element is checked the way a user
// will check it, and values that fail (or are NaN/Inf, or too large for the
// integer grid) are flagged to be stored exactly instead.
#pragma once
#include <cmath>

#include "dtype.hpp"

namespace ebzip {

// |q| stays below 2^50: q * step is exact in double and a 4-D Lorenzo sum of
// 15 neighbours cannot overflow int64.
constexpr double kQuantLimit = 1125899906842624.0;  // 2^50

// Round to nearest, ties to even, for |v| < 2^51: adding 1.5 * 2^52 leaves no
// fraction bits, so the FPU's own rounding does the work. Inline on every
// compiler (llrint is a libm call on the host) and identical on a GPU.
EBZ_HD_INLINE int64_t round_half_even(double v) {
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  return int64_t((v + magic) - magic);
}

struct Quantizer {
  double eb;        // absolute bound, > 0
  double step;      // 2 * eb
  double inv_step;  // 1 / step
  double eb_in_type;  // eb rounded to the element type, as a user's check in that type sees it

  template <class T>
  EBZ_HD static Quantizer make(double eb_abs) {
    Quantizer qz;
    qz.eb = eb_abs;
    qz.step = 2.0 * eb_abs;
    qz.inv_step = 1.0 / qz.step;
    qz.eb_in_type = T::to_double(T::from_double(eb_abs));
    return qz;
  }

  template <class T>
  EBZ_HD_INLINE typename T::storage reconstruct(int64_t q) const {
    return T::from_double(double(q) * step);
  }

  // The bound as the user checks it: in double, and in the element type
  // (|T(x - x_hat)| <= T(eb)), so neither a numpy float64 check nor a
  // float16/bfloat16 check in the array's own type can see a violation.
  template <class T>
  EBZ_HD_INLINE bool within_bound(double x, typename T::storage xr) const {
    const double diff = x - T::to_double(xr);
    if (!(fabs(diff) <= eb)) return false;
    return fabs(T::to_double(T::from_double(diff))) <= eb_in_type;
  }

  // Quantize one value. Returns false if it must be stored exactly
  // (non-finite, off the integer grid, or failing the bound check); q is
  // still set, since it takes part in its neighbours' predictions.
  template <class T>
  EBZ_HD_INLINE bool quantize(typename T::storage x, int64_t& q) const {
    const double xd = T::to_double(x);
    const double v = xd * inv_step;
    if (!(fabs(v) < kQuantLimit)) {  // also catches NaN/Inf
      q = 0;  // a function of x alone, so a GPU can quantize every element independently
      return false;
    }
    q = round_half_even(v);
    return within_bound<T>(xd, reconstruct<T>(q));
  }
};

}  // namespace ebzip
