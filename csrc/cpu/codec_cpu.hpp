// CPU driver of the ebzip codec: OpenMP over independent blocks.
#pragma once
#include <cstdint>
#include <vector>

#include "ebzip/format.hpp"

namespace ebzip::cpu {

enum class Predictor { automatic, lorenzo, interp };

struct CompressParams {
  Predictor predictor = Predictor::automatic;
  InterpConfig interp;   // used when the interpolation predictor is chosen
  int pred_dims = 4;     // predict over at most this many (trailing, merged) axes
  DType dtype = DType::f32;
  Mode mode = Mode::abs;
  double eb_param = 0;   // what the user asked for (abs value, rel fraction or PSNR dB)
  double eb_abs = 0;     // the absolute bound to enforce; 0 = store exactly
  uint64_t block_elems = uint64_t(1) << 18;
  uint32_t radius = 32768;  // largest quantization radius (smaller for small arrays)
  int threads = 1;
};

// data: C-contiguous elements of params.dtype (16-bit types as raw bit patterns).
std::vector<uint8_t> compress(const void* data, const std::vector<uint64_t>& shape, const CompressParams& params);

Header inspect(const uint8_t* stream, uint64_t len);

// out: room for num_elements() elements of the stream's dtype.
void decompress(const uint8_t* stream, uint64_t len, void* out, int threads);

struct Range {
  double min, max;       // over finite values; min > max when there are none
  uint64_t n_finite;
};
Range finite_range(const void* data, uint64_t n, DType dtype, int threads);

struct ErrorStats {
  double max_abs_err;          // over elements finite in `a`
  double sum_sq_err;           // of (error / scale): no under/overflow for tiny or huge values
  uint64_t n_finite;
  uint64_t n_nonfinite_mismatch;  // non-finite in `a` whose bits differ in `b`
};
ErrorStats error_stats(const void* a, const void* b, uint64_t n, DType dtype, double scale, int threads);

}  // namespace ebzip::cpu
