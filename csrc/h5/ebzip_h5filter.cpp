// The ebzip HDF5 filter plugin (dynamically loaded filter, HDF5 >= 1.10).
//
// A chunk's stored bytes are exactly one ebzip stream of the whole chunk, so
// decoding needs nothing but the chunk. Encoding reads the bound from the
// filter's cd_values (layout in python/ebzip/h5.py) and the element type and
// chunk shape that set_local records there.
//
// The plugin does not link libhdf5: the few HDF5 calls set_local makes are
// looked up in the very library that called it (dladdr on the return
// address), so one build serves h5dump/h5repack (the system HDF5) and h5py
// (its own bundled HDF5) alike, and never loads a second HDF5 into a process.
// Buffers are malloc/free, as HDF5's release builds use.
//
// EBZIP_H5_FILTER_ID comes from python/ebzip/h5.py (FILTER_ID), read by
// csrc/h5/plugin.cmake at configure time.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <H5PLextern.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/codec_cpu.hpp"

#ifndef EBZIP_H5_FILTER_ID
#error "EBZIP_H5_FILTER_ID must be defined (csrc/h5/plugin.cmake reads it from python/ebzip/h5.py)"
#endif

#define EBZIP_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr unsigned kLayout = 1;  // cd_values[0]
constexpr size_t kFixed = 6;     // layout, mode, eb (2 words), eb_abs (2 words)
constexpr int kMaxDims = 32;

double words_f64(unsigned lo, unsigned hi) {
  uint64_t bits = (uint64_t(hi) << 32) | uint64_t(lo);
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

int default_threads() {
  if (const char* s = std::getenv("EBZIP_NUM_THREADS")) {
    int n = std::atoi(s);
    if (n > 0) return n;
  }
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// The HDF5 functions set_local needs, from the library that called us.
struct H5Api {
  H5T_class_t (*Tget_class)(hid_t);
  size_t (*Tget_size)(hid_t);
  H5T_order_t (*Tget_order)(hid_t);
  herr_t (*Tget_fields)(hid_t, size_t*, size_t*, size_t*, size_t*, size_t*);
  int (*Pget_chunk)(hid_t, int, hsize_t*);
  herr_t (*Pget_filter_by_id2)(hid_t, H5Z_filter_t, unsigned int*, size_t*, unsigned int*, size_t, char*,
                               unsigned int*);
  herr_t (*Pmodify_filter)(hid_t, H5Z_filter_t, unsigned int, size_t, const unsigned int*);
};

template <class F>
bool load(void* handle, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(handle, name));
  return fn != nullptr;
}

bool load_all(void* h, H5Api& a) {
  return load(h, "H5Tget_class", a.Tget_class) && load(h, "H5Tget_size", a.Tget_size) &&
         load(h, "H5Tget_order", a.Tget_order) && load(h, "H5Tget_fields", a.Tget_fields) &&
         load(h, "H5Pget_chunk", a.Pget_chunk) && load(h, "H5Pget_filter_by_id2", a.Pget_filter_by_id2) &&
         load(h, "H5Pmodify_filter", a.Pmodify_filter);
}

bool find_api(void* caller, H5Api& a) {
  Dl_info info;
  if (caller && dladdr(caller, &info) && info.dli_fname) {
    void* h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (h) {
      bool ok = load_all(h, a);
      dlclose(h);  // RTLD_NOLOAD took a reference; the library stays loaded by its owner
      if (ok) return true;
    }
  }
  return load_all(RTLD_DEFAULT, a);
}

herr_t set_local(hid_t dcpl, hid_t type, hid_t /*space*/) {
  H5Api api;
  if (!find_api(__builtin_return_address(0), api)) return -1;
  if (api.Tget_class(type) != H5T_FLOAT || api.Tget_order(type) != H5T_ORDER_LE) return -1;
  const size_t size = api.Tget_size(type);
  unsigned code;
  if (size == 4) {
    code = 0;
  } else if (size == 8) {
    code = 1;
  } else if (size == 2) {
    size_t spos, epos, esize, mpos, msize;
    if (api.Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return -1;
    if (esize == 5 && msize == 10) code = 2;        // IEEE half
    else if (esize == 8 && msize == 7) code = 3;    // bfloat16
    else return -1;
  } else {
    return -1;
  }
  hsize_t dims[kMaxDims];
  const int ndims = api.Pget_chunk(dcpl, kMaxDims, dims);
  if (ndims <= 0 || ndims > kMaxDims) return -1;
  unsigned flags = 0;
  size_t n = 64;
  unsigned values[64] = {0};
  if (api.Pget_filter_by_id2(dcpl, EBZIP_H5_FILTER_ID, &flags, &n, values, 0, nullptr, nullptr) < 0) return -1;
  std::vector<unsigned> cd(values, values + (n < kFixed ? n : kFixed));
  if (cd.empty()) cd.push_back(kLayout);
  if (cd[0] != kLayout) return -1;
  // defaults for values left out: mode rel, eb 1e-3, per-chunk bound
  const unsigned defaults[kFixed] = {kLayout, 1, 0xd2f1a9fc, 0x3f50624d, 0, 0xbff00000};
  while (cd.size() < kFixed) cd.push_back(defaults[cd.size()]);
  cd.push_back(code);
  cd.push_back(unsigned(ndims));
  for (int i = 0; i < ndims; ++i) {
    if (dims[i] > 0xffffffffu) return -1;
    cd.push_back(unsigned(dims[i]));
  }
  return api.Pmodify_filter(dcpl, EBZIP_H5_FILTER_ID, flags, cd.size(), cd.data()) < 0 ? -1 : 1;
}

size_t fail() { return 0; }

size_t decode(size_t nbytes, size_t* buf_size, void** buf) {
  const uint8_t* in = static_cast<const uint8_t*>(*buf);
  const ebzip::Header h = ebzip::cpu::inspect(in, nbytes);
  const size_t out_bytes = size_t(h.num_elements()) * size_t(ebzip::dtype_size(h.dtype));
  void* out = std::malloc(out_bytes ? out_bytes : 1);
  if (!out) return fail();
  try {
    ebzip::cpu::decompress(in, nbytes, out, default_threads());
  } catch (...) {
    std::free(out);
    throw;
  }
  std::free(*buf);
  *buf = out;
  *buf_size = out_bytes;
  return out_bytes;
}

// PSNR from the sum of squared errors already divided by the value range (as api._psnr_of).
double psnr_of(const ebzip::cpu::ErrorStats& s) {
  const double mse = s.n_finite ? s.sum_sq_err / double(s.n_finite) : 0.0;
  return mse == 0 ? std::numeric_limits<double>::infinity() : -10 * std::log10(mse);
}

size_t encode(size_t cd_nelmts, const unsigned cd[], size_t nbytes, size_t* buf_size, void** buf) {
  if (cd_nelmts < kFixed + 2 || cd[0] != kLayout || cd[1] > 2 || cd[kFixed] > 3) return fail();
  const unsigned ndim = cd[kFixed + 1];
  if (ndim == 0 || ndim > unsigned(kMaxDims) || cd_nelmts < kFixed + 2 + ndim) return fail();
  ebzip::cpu::CompressParams p;
  p.dtype = ebzip::DType(cd[kFixed]);
  p.mode = ebzip::Mode(cd[1]);
  p.eb_param = words_f64(cd[2], cd[3]);
  p.threads = default_threads();
  std::vector<uint64_t> shape(cd + kFixed + 2, cd + kFixed + 2 + ndim);
  uint64_t n = 1;
  for (auto s : shape) n *= s;
  if (n * uint64_t(ebzip::dtype_size(p.dtype)) != nbytes) return fail();
  const double fixed = words_f64(cd[4], cd[5]);
  double range = 0;
  if (fixed >= 0) {
    p.mode = ebzip::Mode::abs;  // one bound for every chunk, as the dataset's recorded
    p.eb_param = p.eb_abs = fixed;
  } else if (p.mode == ebzip::Mode::abs) {
    p.eb_abs = p.eb_param;
  } else {  // as ebzip.compress does for this chunk alone (python/ebzip/api.py)
    const ebzip::cpu::Range r = ebzip::cpu::finite_range(*buf, n, p.dtype, p.threads);
    range = r.n_finite ? r.max - r.min : 0.0;
    if (!std::isfinite(range)) range = std::numeric_limits<double>::max();
    p.eb_abs = p.mode == ebzip::Mode::rel ? p.eb_param * range
                                          : (std::sqrt(3.0) * std::pow(10.0, -p.eb_param / 20)) * range;
    p.eb_abs = std::min(p.eb_abs, std::numeric_limits<double>::max());
  }
  std::vector<uint8_t> stream = ebzip::cpu::compress(*buf, shape, p);
  if (p.mode == ebzip::Mode::psnr && fixed < 0 && p.eb_abs > 0) {
    // the PSNR target is a promise: measure, tighten until it holds, else store exactly
    std::vector<uint8_t> recon(nbytes);
    double previous = -std::numeric_limits<double>::infinity();
    bool met = false;
    for (int it = 0; it < 8 && !met; ++it) {
      ebzip::cpu::decompress(stream.data(), stream.size(), recon.data(), p.threads);
      const auto st = ebzip::cpu::error_stats(*buf, recon.data(), n, p.dtype, range, p.threads);
      const double achieved = psnr_of(st);
      if (achieved >= p.eb_param) {
        met = true;
        break;
      }
      const double shrink = achieved > previous ? std::pow(10.0, (achieved - p.eb_param) / 20) * 0.97 : 0.5;
      previous = achieved;
      p.eb_abs *= shrink;
      stream = ebzip::cpu::compress(*buf, shape, p);
    }
    if (!met) {
      p.eb_abs = 0.0;
      stream = ebzip::cpu::compress(*buf, shape, p);
    }
  }
  void* out = std::malloc(stream.size());
  if (!out) return fail();
  std::memcpy(out, stream.data(), stream.size());
  std::free(*buf);
  *buf = out;
  *buf_size = stream.size();
  return stream.size();
}

size_t filter(unsigned flags, size_t cd_nelmts, const unsigned cd_values[], size_t nbytes, size_t* buf_size,
              void** buf) {
  try {
    if (flags & H5Z_FLAG_REVERSE) return decode(nbytes, buf_size, buf);
    return encode(cd_nelmts, cd_values, nbytes, buf_size, buf);
  } catch (...) {  // a bad stream or no memory: HDF5 reports the filter's failure
    return fail();
  }
}

const H5Z_class2_t kClass = {
    H5Z_CLASS_T_VERS,
    H5Z_filter_t(EBZIP_H5_FILTER_ID),
    1,  // encoder present
    1,  // decoder present
    "ebzip: error-bounded lossy compression of floating-point data",
    nullptr,  // can_apply
    set_local,
    filter,
};

}  // namespace

EBZIP_EXPORT H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }
EBZIP_EXPORT const void* H5PLget_plugin_info(void) { return &kClass; }
// For tests: the id this build was configured with.
EBZIP_EXPORT int ebzip_h5filter_id(void) { return EBZIP_H5_FILTER_ID; }
