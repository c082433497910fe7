// Arguments the bindings of both drivers take from Python, checked in one
// place: CompressParams from the integer codes of ebzip/api.py, and the bytes
// of a stream passed through the buffer protocol.
#pragma once
#include <pybind11/pybind11.h>

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

// The bytes of a stream given as any C-contiguous buffer (bytes, memoryview,
// a numpy array of any shape), held while this lives.
struct StreamBytes {
  pybind11::buffer_info keep;
  const uint8_t* data = nullptr;
  uint64_t len = 0;

  explicit StreamBytes(const pybind11::buffer& b) : keep(b.request()) {
    pybind11::ssize_t expect = keep.itemsize;  // C-contiguous strides, innermost first
    for (pybind11::ssize_t k = keep.ndim; k-- > 0;) {
      if (keep.shape[size_t(k)] > 1 && keep.strides[size_t(k)] != expect)
        throw std::invalid_argument("an ebzip stream must be a C-contiguous buffer (e.g. bytes); got a strided view");
      expect *= keep.shape[size_t(k)];
    }
    len = uint64_t(keep.size) * uint64_t(keep.itemsize);
    data = static_cast<const uint8_t*>(keep.ptr);
  }
};

}  // namespace ebzip
