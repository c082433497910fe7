// pybind11 bindings of the device driver (csrc/cuda/codec_device.hpp), built
// twice: ebzip._cuda (nvcc build of the driver; pointers are CUDA device
// pointers) and ebzip._shared_path (the same driver for Thrust's OpenMP
// system; pointers are host pointers). Pointers and streams travel as
// integers (torch data_ptr(), cupy .data.ptr, numpy .ctypes.data);
// ebzip/_device.py checks them against the arrays before calling in.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "../cuda/codec_device.hpp"
#include "binding_args.hpp"
#include "ebzip/format.hpp"

#ifndef EBZIP_DEVICE_MODULE
#error "define EBZIP_DEVICE_MODULE (_cuda or _shared_path)"
#endif
#ifndef EBZIP_CUDA_ARCHITECTURES
#define EBZIP_CUDA_ARCHITECTURES ""
#endif

namespace py = pybind11;
using namespace ebzip;

PYBIND11_MODULE(EBZIP_DEVICE_MODULE, m) {
  m.doc() = "ebzip device driver (Thrust; see csrc/cuda/README.md)";
  // The one ebzip.StreamError (ebzip._core's), whichever module raises it.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StreamError& e) {
      py::object cls = py::module_::import("ebzip._core").attr("StreamError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });
  m.attr("DEVICE_SYSTEM") = device::device_system();
  m.attr("CUDA_ARCHITECTURES") = EBZIP_CUDA_ARCHITECTURES;
  m.def("can_run", &device::can_run, "whether this build can run here (CUDA: a GPU is visible)");
  m.def("runtime_info", &device::runtime_info);
  m.def("pool_high_water", &device::pool_high_water, py::arg("reset") = false,
        "bytes: high-water of the driver's device allocations (-1 where not measured)");
  m.def(
      "supports",
      [](int predictor, double eb_abs, uint64_t n) {
        cpu::CompressParams p;
        p.predictor = cpu::Predictor(predictor);
        p.eb_abs = eb_abs;
        return device::supports(p, n);
      },
      py::arg("predictor"), py::arg("eb_abs"), py::arg("n"));

  m.def(
      "compress",
      [](uintptr_t ptr, std::vector<uint64_t> shape, int dtype, int mode, double eb_param, double eb_abs,
         int threads, uint64_t block_elems, int predictor, uintptr_t stream) {
        const cpu::CompressParams p = compress_params(dtype, mode, eb_param, eb_abs, threads, block_elems, predictor);
        std::vector<uint8_t> out;
        {
          py::gil_scoped_release release;
          out = device::compress(reinterpret_cast<const void*>(ptr), shape, p, stream);
        }
        return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
      },
      py::arg("ptr"), py::arg("shape"), py::arg("dtype"), py::arg("mode"), py::arg("eb_param"), py::arg("eb_abs"),
      py::arg("threads") = 1, py::arg("block_elems") = 0, py::arg("predictor") = 1, py::arg("stream") = 0);

  m.def(
      "can_decode",
      [](py::buffer stream) {
        const StreamBytes s(stream);
        return device::can_decode(s.data, s.len);
      },
      py::arg("stream"));

  m.def(
      "decompress_into",
      [](py::buffer stream, uintptr_t out_ptr, uint64_t out_nbytes, uintptr_t cuda_stream) {
        const StreamBytes s(stream);
        const Header h = cpu::inspect(s.data, s.len);
        if (h.num_elements() * uint64_t(dtype_size(h.dtype)) != out_nbytes)
          throw std::invalid_argument("out does not match the stream's size or dtype");
        py::gil_scoped_release release;
        device::decompress(s.data, s.len, reinterpret_cast<void*>(out_ptr), cuda_stream);
      },
      py::arg("stream"), py::arg("out_ptr"), py::arg("out_nbytes"), py::arg("cuda_stream") = 0);
}
