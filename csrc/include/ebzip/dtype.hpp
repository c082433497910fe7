// Element types ebzip compresses and their exact conversions to and from double.
//
// float16 and bfloat16 are handled as raw 16-bit patterns. double -> narrow
// conversion rounds once, to nearest-even, straight from double (going through
// float would round twice and could break the error bound by one ulp).
#pragma once
#include "hostdevice.hpp"

namespace ebzip {

enum class DType : uint8_t { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

EBZ_HD_INLINE int dtype_size(DType t) { return t == DType::f64 ? 8 : t == DType::f32 ? 4 : 2; }

// Round a finite or infinite double to a binary format with MB explicit
// mantissa bits and EB exponent bits; returns its bit pattern.
template <int MB, int EB>
EBZ_HD_INLINE uint32_t double_to_narrow_bits(double d) {
  const uint64_t b = bit_cast<uint64_t>(d);
  const uint32_t sign = uint32_t(b >> 63) << (MB + EB);
  const uint64_t a = b & 0x7fffffffffffffffull;
  const uint32_t inf_bits = ((1u << EB) - 1u) << MB;
  if (a >= 0x7ff0000000000000ull)  // inf, or nan (quiet, payload dropped)
    return sign | inf_bits | (a > 0x7ff0000000000000ull ? (1u << (MB - 1)) : 0u);
  if ((a >> 52) == 0) return sign;  // double subnormals are far below any narrow subnormal
  const int bias = (1 << (EB - 1)) - 1;
  const int te = int(a >> 52) - 1023 + bias;  // biased exponent in the narrow format
  const uint64_t mant = (a & ((1ull << 52) - 1)) | (1ull << 52);
  const int shift = te >= 1 ? 52 - MB : 52 - MB + (1 - te);
  if (shift > 53) return sign;  // below half the smallest subnormal
  uint64_t kept = mant >> shift;
  const uint64_t rem = mant & ((1ull << shift) - 1);
  const uint64_t half = 1ull << (shift - 1);
  if (rem > half || (rem == half && (kept & 1))) ++kept;
  if (te < 1) return sign | uint32_t(kept);  // subnormal (kept == 1<<MB is the smallest normal)
  uint32_t e = uint32_t(te);
  if (kept == (1ull << (MB + 1))) { kept >>= 1; ++e; }
  if (e >= (1u << EB) - 1u) return sign | inf_bits;
  return sign | (e << MB) | uint32_t(kept & ((1ull << MB) - 1));
}

template <int MB, int EB>
EBZ_HD_INLINE double narrow_bits_to_double(uint32_t h) {
  const int bias = (1 << (EB - 1)) - 1;
  const uint32_t e = (h >> MB) & ((1u << EB) - 1u);
  const uint32_t m = h & ((1u << MB) - 1u);
  const bool neg = (h >> (MB + EB)) & 1u;
  double v;
  if (e == (1u << EB) - 1u) {
    v = m ? bit_cast<double>(0x7ff8000000000000ull) : bit_cast<double>(0x7ff0000000000000ull);
  } else {
    // value = m' * 2^(e' - bias - MB); built from exact powers of two.
    const int exp2 = (e == 0 ? 1 : int(e)) - bias - MB;
    const double scale = bit_cast<double>(uint64_t(exp2 + 1023) << 52);  // exp2 in [-1074+, 1023]
    v = double(e == 0 ? m : (m | (1u << MB))) * scale;
  }
  return neg ? -v : v;
}

// Traits: the storage type of each dtype and its conversions.
struct F32 {
  using storage = float;
  static constexpr DType code = DType::f32;
  EBZ_HD_INLINE static double to_double(float x) { return double(x); }
  EBZ_HD_INLINE static float from_double(double x) { return float(x); }  // IEEE RNE
};
struct F64 {
  using storage = double;
  static constexpr DType code = DType::f64;
  EBZ_HD_INLINE static double to_double(double x) { return x; }
  EBZ_HD_INLINE static double from_double(double x) { return x; }
};
struct F16 {
  using storage = uint16_t;
  static constexpr DType code = DType::f16;
  EBZ_HD_INLINE static double to_double(uint16_t x) { return narrow_bits_to_double<10, 5>(x); }
  EBZ_HD_INLINE static uint16_t from_double(double x) { return uint16_t(double_to_narrow_bits<10, 5>(x)); }
};
struct BF16 {
  using storage = uint16_t;
  static constexpr DType code = DType::bf16;
  EBZ_HD_INLINE static double to_double(uint16_t x) { return narrow_bits_to_double<7, 8>(x); }
  EBZ_HD_INLINE static uint16_t from_double(double x) { return uint16_t(double_to_narrow_bits<7, 8>(x)); }
};

// Is the stored pattern a finite number? (NaN/Inf take the exact path.)
template <class T>
EBZ_HD_INLINE bool is_finite_value(typename T::storage x) {
  const double d = T::to_double(x);
  return d - d == 0.0;
}

}  // namespace ebzip
