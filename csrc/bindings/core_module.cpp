// pybind11 bindings of the CPU codec: ebzip._core. Thin: arrays in, bytes
// out; argument checking that needs Python types happens in ebzip/api.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "../cpu/codec_cpu.hpp"
#include "binding_args.hpp"
#include "zstd.h"

namespace py = pybind11;
using namespace ebzip;

namespace {

// Owns a compressed stream and exports it through the buffer protocol
// (read-only), so bytes(c), memoryview(c) and np.frombuffer(c) need no copy.
// ebzip.Compressed subclasses it in Python.
struct StreamBuffer {
  std::vector<uint8_t> data;
};

py::dict header_dict(const Header& h) {
  py::dict d;
  py::tuple shape(h.shape.size());
  for (size_t i = 0; i < h.shape.size(); ++i) shape[i] = h.shape[i];
  d["shape"] = shape;
  d["dtype"] = int(h.dtype);
  d["mode"] = int(h.mode);
  d["pipeline"] = int(h.pipeline);
  d["eb_param"] = h.eb_param;
  d["eb_abs"] = h.eb_abs;
  d["radius"] = h.radius;
  d["block_elems"] = h.block_elems;
  d["grid_bits"] = int(h.grid_bits);
  py::tuple pred(h.pred.ndim);
  for (int k = 0; k < h.pred.ndim; ++k) pred[k] = h.pred.n[k];
  d["pred_shape"] = pred;
  if (h.pipeline == Pipeline::interp) {
    d["interp"] = py::dict(py::arg("cubic") = bool(h.interp.stencil), py::arg("stencil") = int(h.interp.stencil),
                           py::arg("fill") = int(h.interp.fill), py::arg("fill_bits") = h.interp.fill_bits,
                           py::arg("alpha") = h.interp.alpha,
                           py::arg("beta") = h.interp.beta,
                           py::arg("order") = py::make_tuple(h.interp.order[0], h.interp.order[1], h.interp.order[2],
                                                             h.interp.order[3]),
                           py::arg("tile") = py::make_tuple(h.tile[0], h.tile[1], h.tile[2], h.tile[3]));
  }
  d["format_version"] = int(h.version);
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "ebzip CPU codec (C++/OpenMP)";
  py::register_exception<StreamError>(m, "StreamError", PyExc_ValueError);
  m.attr("FORMAT_VERSION") = int(kFormatVersion);
  m.attr("ZSTD_VERSION") = ZSTD_versionString();
  m.attr("DEFAULT_BLOCK_ELEMS") = cpu::CompressParams{}.block_elems;

  py::class_<StreamBuffer>(m, "StreamBuffer", py::buffer_protocol())
      .def(py::init<>())
      .def(py::init([](py::buffer b) {
             const StreamBytes s(b);
             return StreamBuffer{std::vector<uint8_t>(s.data, s.data + s.len)};
           }),
           py::arg("data"))
      .def("__len__", [](const StreamBuffer& s) { return s.data.size(); })
      .def_buffer([](StreamBuffer& s) {
        return py::buffer_info(s.data.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {py::ssize_t(s.data.size())}, {py::ssize_t(1)}, /*readonly=*/true);
      });

  m.def(
      "compress",
      [](py::array arr, int dtype, int mode, double eb_param, double eb_abs, StreamBuffer& out, int threads,
         uint64_t block_elems, int predictor, int interp_cubic, double interp_alpha, double interp_beta,
         int pred_dims, std::vector<int> interp_order, int interp_fill, uint64_t interp_fill_bits) {
        if (!(arr.flags() & py::array::c_style)) throw std::invalid_argument("array must be C-contiguous");
        cpu::CompressParams p = compress_params(dtype, mode, eb_param, eb_abs, threads, block_elems, predictor);
        if (interp_cubic < 0 || interp_cubic > 2)
          throw std::invalid_argument("interp_cubic must be 0 (linear), 1 (cubic, linear edges) or 2 (cubic, quadratic edges)");
        p.interp.stencil = uint8_t(interp_cubic);
        if (interp_fill < 0 || interp_fill > 1) throw std::invalid_argument("interp_fill must be 0 or 1");
        p.interp.fill = uint8_t(interp_fill);
        p.interp.fill_bits = interp_fill_bits;
        if (!(interp_alpha >= 1 && interp_alpha <= 16 && interp_beta >= 1 && interp_beta <= 1e6))
          throw std::invalid_argument("interpolation level bounds out of range");
        p.interp.alpha = interp_alpha;
        p.interp.beta = interp_beta;
        if (!interp_order.empty()) {  // a permutation of the 4 padded axes
          bool seen[4] = {false, false, false, false};
          if (interp_order.size() != 4) throw std::invalid_argument("interp_order must list 4 axes");
          for (int k = 0; k < 4; ++k) {
            const int a = interp_order[size_t(k)];
            if (a < 0 || a > 3 || seen[a]) throw std::invalid_argument("interp_order must be a permutation of 0..3");
            seen[a] = true;
            p.interp.order[k] = uint8_t(a);
          }
        }
        if (pred_dims < 1 || pred_dims > 4) throw std::invalid_argument("pred_dims must be in [1, 4]");
        p.pred_dims = pred_dims;
        if (arr.itemsize() != dtype_size(p.dtype)) throw std::invalid_argument("array itemsize does not match dtype");
        std::vector<uint64_t> shape(arr.shape(), arr.shape() + arr.ndim());
        const void* src = arr.data();
        py::gil_scoped_release release;
        out.data = cpu::compress(src, shape, p);
      },
      py::arg("array"), py::arg("dtype"), py::arg("mode"), py::arg("eb_param"), py::arg("eb_abs"), py::arg("out"),
      py::arg("threads") = 1, py::arg("block_elems") = 0, py::arg("predictor") = 0, py::arg("interp_cubic") = 2,
      py::arg("interp_alpha") = 1.0, py::arg("interp_beta") = 1.0, py::arg("pred_dims") = 4,
      py::arg("interp_order") = std::vector<int>{}, py::arg("interp_fill") = 0, py::arg("interp_fill_bits") = 0);

  m.def(
      "header_extent",
      [](py::buffer stream) {
        const StreamBytes s(stream);
        return header_extent(s.data, s.len);
      },
      py::arg("stream"), "Length of the stream's header without its CRC, or 0 where it does not parse (for tools).");

  m.def(
      "inspect",
      [](py::buffer stream) {
        const StreamBytes s(stream);
        return header_dict(cpu::inspect(s.data, s.len));
      },
      py::arg("stream"));

  m.def(
      "decompress_into",
      [](py::buffer stream, py::array out, int threads) {
        const StreamBytes s(stream);
        const Header h = cpu::inspect(s.data, s.len);
        if (!(out.flags() & py::array::c_style) || !out.writeable()) throw std::invalid_argument("out must be a writable C-contiguous array");
        if (uint64_t(out.size()) != h.num_elements() || out.itemsize() != dtype_size(h.dtype))
          throw std::invalid_argument("out does not match the stream's size or dtype");
        void* dst = out.mutable_data();
        py::gil_scoped_release release;
        cpu::decompress(s.data, s.len, dst, threads);
      },
      py::arg("stream"), py::arg("out"), py::arg("threads") = 1);

  m.def(
      "finite_range",
      [](py::array arr, int dtype, int threads) {
        if (!(arr.flags() & py::array::c_style)) throw std::invalid_argument("array must be C-contiguous");
        const void* p = arr.data();
        const uint64_t n = uint64_t(arr.size());
        cpu::Range r;
        {
          py::gil_scoped_release release;
          r = cpu::finite_range(p, n, DType(dtype), threads);
        }
        return py::make_tuple(r.min, r.max, r.n_finite);
      },
      py::arg("array"), py::arg("dtype"), py::arg("threads") = 1);

  m.def(
      "error_stats",
      [](py::array a, py::array b, int dtype, double scale, int threads) {
        if (!(a.flags() & py::array::c_style) || !(b.flags() & py::array::c_style) || a.size() != b.size() ||
            a.itemsize() != b.itemsize())
          throw std::invalid_argument("arrays must be C-contiguous with the same size and itemsize");
        const void* pa = a.data();
        const void* pb = b.data();
        const uint64_t n = uint64_t(a.size());
        cpu::ErrorStats e;
        {
          py::gil_scoped_release release;
          e = cpu::error_stats(pa, pb, n, DType(dtype), scale, threads);
        }
        return py::make_tuple(e.max_abs_err, e.sum_sq_err, e.n_finite, e.n_nonfinite_mismatch);
      },
      py::arg("a"), py::arg("b"), py::arg("dtype"), py::arg("scale") = 1.0, py::arg("threads") = 1);
}
