// One algorithm, two drivers: everything under csrc/include/ebzip is written
// once and compiled both by g++ (CPU driver, tests) and by nvcc (CUDA driver).
#pragma once

#if defined(__CUDACC__)
#define EBZ_HD __host__ __device__
#define EBZ_HD_INLINE __host__ __device__ __forceinline__
#else
#define EBZ_HD
#define EBZ_HD_INLINE inline
#endif

#include <cstdint>
#include <cstring>

namespace ebzip {

// memcpy-based bit cast: valid C++17 on the host and in device code.
template <class To, class From>
EBZ_HD_INLINE To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast size mismatch");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

}  // namespace ebzip
