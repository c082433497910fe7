// CompressParams from the integer codes the Python layer passes (ebzip/api.py),
// checked; shared by the bindings of both drivers.
#pragma once
#include <stdexcept>

#include "../cpu/codec_cpu.hpp"

namespace ebzip {

inline cpu::CompressParams compress_params(int dtype, int mode, double eb_param, double eb_abs, int threads,
                                           uint64_t block_elems, int predictor) {
  if (dtype < 0 || dtype > 3 || mode < 0 || mode > 2) throw std::invalid_argument("bad dtype or mode code");
  if (predictor < 0 || predictor > 2) throw std::invalid_argument("bad predictor code");
  cpu::CompressParams p;
  p.dtype = DType(dtype);
  p.mode = Mode(mode);
  p.eb_param = eb_param;
  p.eb_abs = eb_abs;
  p.threads = threads;
  if (block_elems) p.block_elems = block_elems;
  p.predictor = cpu::Predictor(predictor);
  return p;
}

}  // namespace ebzip
