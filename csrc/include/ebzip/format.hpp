// The ebzip stream, format version 3 (all integers little-endian; "uvar" is
// an unsigned LEB128 varint, at most 10 bytes):
//
//   header     "EBZP", u16 version (3; versions 1 and 2 are still read, see
//              below), u8 dtype, u8 mode, u8 pipeline, u8 grid_bits (32/64:
//              integer width of the Lorenzo grid; else 0), u8 ndim,
//              u8 pred_ndim, u8 flags (bit 0: eb_param follows eb_abs; without
//              it eb_param = eb_abs, as in mode abs), uvar radius, f64 eb_abs,
//              [f64 eb_param], uvar block_elems, uvar shape[ndim],
//              uvar pred_shape[pred_ndim],
//              pipeline 2 only: u8 stencil (0 linear, 1 cubic with linear
//              edges, 2 cubic with quadratic edges), u8 axis order (2 bits per
//              position, position k in bits 2k..2k+1), f64 alpha, f64 beta,
//              uvar tile[4], u8 fill (0 none, 1 a fill value follows, see
//              interpolation.hpp), [fill value: the dtype's bytes];
//              then u32 crc32(header)
//   codebook   (pipelines 1, 2) u32 stored_len, u32 crc32, stored bytes =
//              zstd(u32 first_symbol, u32 n_symbols, u8 code_length[n_symbols])
//   chunks     u64 n_chunks, then per chunk: u64 stored_len, u32 flags, u32 crc32;
//              then u32 crc32 of this table
//   payloads   the chunks' stored bytes, back to back, to the end of the stream
//
// A chunk's payload (after zstd, if flag 1 is set):
//   pipeline 0 (exact):   the block's bytes, byte-plane shuffled
//   pipeline 1 (lorenzo): u64 lane_bits[2], u32 n_outliers, u32 outlier_bytes,
//                         u32 n_exact, Huffman bytes of lane 0 then lane 1
//                         (symbols [0, n/2) and [n/2, n)), zigzag-varint
//                         outlier deltas, u32 exact_index[n_exact], exact values
//   pipeline 2 (interp):  the same with n_outliers = 0 and no exact_index:
//                         exact values come in the tile's visiting order;
//                         with a fill value, symbol 1 is a fill point
//
// Versions 1 and 2 differ only in the header: fixed-width fields, u8 dtype,
// u8 ndim, u8 mode, u8 pipeline, u8 grid_bits, u8 reserved, u32 radius,
// f64 eb_param, f64 eb_abs, u64 block_elems, u8 pred_ndim, 7 reserved bytes,
// u64 shape[ndim], u64 pred_shape[pred_ndim], and (version 2, pipeline 2)
// u8 cubic (0/1), u8 axis_order[4], 3 reserved bytes, f64 alpha, f64 beta,
// u64 tile[4]. Version 3 made the header ~100 bytes smaller (it matters for
// small arrays at loose bounds) and added the quadratic-edge stencil and the
// fill value.
//
// The format version changes only when these bytes change; it is independent
// of the package version. Every length is checked against the buffer before use.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "blocks.hpp"
#include "crc32.hpp"
#include "dtype.hpp"
#include "interpolation.hpp"

namespace ebzip {

constexpr uint16_t kFormatVersion = 3;     // written
constexpr uint16_t kOldestFormatVersion = 1;  // still read (v1 has no interpolation pipeline)
constexpr char kMagic[4] = {'E', 'B', 'Z', 'P'};
constexpr int kMaxNdim = 32;
// Largest chunk (block or tile) a writer makes: a chunk's outlier bytes (up
// to 10 per element) and exact-value count are stored in 32 bits. Readers
// accept block_elems up to 2^32, which older writers allowed.
constexpr uint64_t kMaxBlockElems = uint64_t(1) << 28;

enum class Mode : uint8_t { abs = 0, rel = 1, psnr = 2 };
enum class Pipeline : uint8_t { exact = 0, lorenzo = 1, interp = 2 };
enum ChunkFlags : uint32_t { kChunkZstd = 1 };

// Raised for anything wrong with a stream: truncated, corrupted, foreign,
// or from a newer format. Surfaces in Python as ebzip.StreamError.
struct StreamError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Calls fn(F32{}), fn(F64{}), ... for a stream's element type, and fn(int32_t{})
// or fn(int64_t{}) for its Lorenzo grid width: how both drivers instantiate
// their per-type code.
template <class Fn>
void dispatch_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: fn(F32{}); break;
    case DType::f64: fn(F64{}); break;
    case DType::f16: fn(F16{}); break;
    case DType::bf16: fn(BF16{}); break;
    default: throw StreamError("corrupted ebzip stream (dtype)");
  }
}
template <class Fn>
void dispatch_grid(uint8_t grid_bits, Fn&& fn) {
  if (grid_bits == 32) fn(int32_t{});
  else fn(int64_t{});
}

struct Header {
  uint16_t version = kFormatVersion;  // as read (streams are always written at kFormatVersion)
  DType dtype = DType::f32;
  Mode mode = Mode::abs;
  Pipeline pipeline = Pipeline::lorenzo;
  uint8_t grid_bits = 0;
  uint32_t radius = 0;
  double eb_param = 0, eb_abs = 0;
  uint64_t block_elems = 0;
  std::vector<uint64_t> shape;
  PredShape pred;
  InterpConfig interp;               // pipeline 2 only
  int64_t tile[4] = {1, 1, 1, 1};    // pipeline 2 only

  uint64_t num_elements() const {
    uint64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
};

// Appends little-endian values to a byte vector.
struct ByteSink {
  std::vector<uint8_t>& v;
  template <class U>
  void put(U x) {
    uint8_t b[sizeof(U)];
    memcpy(b, &x, sizeof(U));  // little-endian hosts only (checked at build time)
    v.insert(v.end(), b, b + sizeof(U));
  }
  void bytes(const uint8_t* p, size_t n) { v.insert(v.end(), p, p + n); }
  void uvar(uint64_t x) {
    for (; x >= 0x80; x >>= 7) v.push_back(uint8_t(x | 0x80));
    v.push_back(uint8_t(x));
  }
};

// Bounds-checked reader: every read is validated against the buffer.
struct ByteSource {
  const uint8_t* p;
  uint64_t len;
  uint64_t pos = 0;
  const char* what;  // for error messages

  ByteSource(const uint8_t* b, uint64_t n, const char* w) : p(b), len(n), what(w) {}

  void need(uint64_t n) const {
    if (n > len - pos)
      throw StreamError(std::string("ebzip stream truncated or corrupted (") + what + " needs " +
                        std::to_string(n) + " more bytes, " + std::to_string(len - pos) + " left)");
  }
  template <class U>
  U get() {
    need(sizeof(U));
    U x;
    memcpy(&x, p + pos, sizeof(U));
    pos += sizeof(U);
    return x;
  }
  uint64_t uvar() {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const uint8_t b = get<uint8_t>();
      if (shift == 63 && b > 1) break;  // more than 64 bits
      x |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return x;
    }
    throw StreamError(std::string("corrupted ebzip stream (") + what + ": bad varint)");
  }
  const uint8_t* take(uint64_t n) {
    need(n);
    const uint8_t* r = p + pos;
    pos += n;
    return r;
  }
};

inline void write_header(std::vector<uint8_t>& out, const Header& h) {
  ByteSink s{out};
  const size_t begin = out.size();
  const bool own_param = h.eb_param != h.eb_abs;
  s.bytes(reinterpret_cast<const uint8_t*>(kMagic), 4);
  s.put<uint16_t>(kFormatVersion);
  for (uint8_t b : {uint8_t(h.dtype), uint8_t(h.mode), uint8_t(h.pipeline), h.grid_bits, uint8_t(h.shape.size()),
                    uint8_t(h.pred.ndim), uint8_t(own_param ? 1 : 0)})
    s.put<uint8_t>(b);
  s.uvar(h.radius);
  s.put<double>(h.eb_abs);
  if (own_param) s.put<double>(h.eb_param);
  s.uvar(h.block_elems);
  for (auto d : h.shape) s.uvar(d);
  for (int k = 0; k < h.pred.ndim; ++k) s.uvar(uint64_t(h.pred.n[k]));
  if (h.pipeline == Pipeline::interp) {
    s.put<uint8_t>(h.interp.stencil);
    uint8_t order = 0;
    for (int k = 0; k < 4; ++k) order |= uint8_t((h.interp.order[k] & 3) << (2 * k));
    s.put<uint8_t>(order);
    s.put<double>(h.interp.alpha);
    s.put<double>(h.interp.beta);
    for (int k = 0; k < 4; ++k) s.uvar(uint64_t(h.tile[k]));
    s.put<uint8_t>(h.interp.fill);
    if (h.interp.fill != kNoFill)
      for (int k = 0; k < dtype_size(h.dtype); ++k) s.put<uint8_t>(uint8_t(h.interp.fill_bits >> (8 * k)));
  }
  s.put<uint32_t>(crc32(out.data() + begin, out.size() - begin));
}

// A header's enum and count bytes as stored, checked by read_header once
// the header's checksum has passed.
struct RawHeaderBytes {
  uint8_t dtype = 0, mode = 0, pipeline = 0, ndim = 0, pred_ndim = 0;
};

// The fields of a version 1/2 header (fixed widths, see the top of this file).
inline void read_header_v2(ByteSource& src, Header& h, RawHeaderBytes& raw) {
  raw.dtype = src.get<uint8_t>();
  raw.ndim = src.get<uint8_t>();
  raw.mode = src.get<uint8_t>();
  raw.pipeline = src.get<uint8_t>();
  h.grid_bits = src.get<uint8_t>();
  src.get<uint8_t>();
  h.radius = src.get<uint32_t>();
  h.eb_param = src.get<double>();
  h.eb_abs = src.get<double>();
  h.block_elems = src.get<uint64_t>();
  raw.pred_ndim = src.get<uint8_t>();
  src.take(7);
  if (raw.ndim > kMaxNdim || raw.pred_ndim > kMaxPredDims) throw StreamError("corrupted ebzip header (ndim)");
  for (int i = 0; i < raw.ndim; ++i) h.shape.push_back(src.get<uint64_t>());
  h.pred.ndim = raw.pred_ndim;
  for (int k = 0; k < raw.pred_ndim; ++k) h.pred.n[k] = int64_t(src.get<uint64_t>());
  if (h.version >= 2 && raw.pipeline == uint8_t(Pipeline::interp)) {
    h.interp.stencil = src.get<uint8_t>() != 0;  // version 2 knew linear and cubic with linear edges
    for (int k = 0; k < 4; ++k) h.interp.order[k] = src.get<uint8_t>();
    src.take(3);
    h.interp.alpha = src.get<double>();
    h.interp.beta = src.get<double>();
    for (int k = 0; k < 4; ++k) h.tile[k] = int64_t(src.get<uint64_t>());
  }
}

inline void read_header_v3(ByteSource& src, Header& h, RawHeaderBytes& raw) {
  raw.dtype = src.get<uint8_t>();
  raw.mode = src.get<uint8_t>();
  raw.pipeline = src.get<uint8_t>();
  h.grid_bits = src.get<uint8_t>();
  raw.ndim = src.get<uint8_t>();
  raw.pred_ndim = src.get<uint8_t>();
  const uint8_t flags = src.get<uint8_t>();
  if (raw.ndim > kMaxNdim || raw.pred_ndim > kMaxPredDims || flags > 1)
    throw StreamError("corrupted ebzip header (ndim)");
  const uint64_t radius = src.uvar();
  h.radius = radius > 0xFFFFFFFFu ? 0 : uint32_t(radius);  // 0 is refused below
  h.eb_abs = src.get<double>();
  h.eb_param = (flags & 1) ? src.get<double>() : h.eb_abs;
  h.block_elems = src.uvar();
  for (int i = 0; i < raw.ndim; ++i) h.shape.push_back(src.uvar());
  h.pred.ndim = raw.pred_ndim;
  for (int k = 0; k < raw.pred_ndim; ++k) {
    const uint64_t d = src.uvar();
    h.pred.n[k] = d > (uint64_t(1) << 62) ? 0 : int64_t(d);  // 0 is refused below
  }
  if (raw.pipeline == uint8_t(Pipeline::interp)) {
    h.interp.stencil = src.get<uint8_t>();
    if (h.interp.stencil > 2) throw StreamError("corrupted ebzip header (interpolation stencil)");
    const uint8_t order = src.get<uint8_t>();
    for (int k = 0; k < 4; ++k) h.interp.order[k] = uint8_t((order >> (2 * k)) & 3);
    h.interp.alpha = src.get<double>();
    h.interp.beta = src.get<double>();
    for (int k = 0; k < 4; ++k) {
      const uint64_t t = src.uvar();
      h.tile[k] = t > (uint64_t(1) << 62) ? 0 : int64_t(t);  // 0 is refused below
    }
    h.interp.fill = src.get<uint8_t>();
    if (h.interp.fill > kFillMasked || raw.dtype > 3) throw StreamError("corrupted ebzip header (fill value)");
    if (h.interp.fill != kNoFill)
      for (int k = 0; k < dtype_size(DType(raw.dtype)); ++k)
        h.interp.fill_bits |= uint64_t(src.get<uint8_t>()) << (8 * k);
  }
}

// The fields after the version, as h.version lays them out.
inline RawHeaderBytes read_header_fields(ByteSource& src, Header& h) {
  RawHeaderBytes raw;
  if (h.version >= 3) read_header_v3(src, h, raw);
  else read_header_v2(src, h, raw);
  return raw;
}

inline Header read_header(ByteSource& src) {
  if (src.len < 4 || memcmp(src.p, kMagic, 4) != 0)
    throw StreamError("not an ebzip stream (bad magic bytes)");
  src.take(4);
  const uint16_t version = src.get<uint16_t>();
  // The version is read before the header checksum (a newer header may be
  // laid out differently), so a flipped version field lands here too: the
  // message names both causes.
  if (version < kOldestFormatVersion)
    throw StreamError("corrupted ebzip header (format version " + std::to_string(version) + " was never written)");
  if (version > kFormatVersion)
    throw StreamError("ebzip stream format version " + std::to_string(version) +
                      " is newer than this build reads (versions " + std::to_string(kOldestFormatVersion) + " to " +
                      std::to_string(kFormatVersion) +
                      "): upgrade ebzip to read it; if no newer ebzip wrote it, the stream is corrupted");
  Header h;
  h.version = version;
  const RawHeaderBytes raw = read_header_fields(src, h);
  const uint8_t dtype = raw.dtype, mode = raw.mode, pipeline = raw.pipeline, pred_ndim = raw.pred_ndim;
  const bool interp = version >= 2 && pipeline == uint8_t(Pipeline::interp);
  const uint64_t header_len = src.pos;
  const uint32_t crc = src.get<uint32_t>();
  if (crc != crc32(src.p, header_len)) throw StreamError("ebzip header checksum mismatch (corrupted stream)");
  // The checksum passed; these checks guard against a forged header.
  if (dtype > 3 || mode > 2 || pipeline > (version >= 2 ? 2 : 1))
    throw StreamError("corrupted ebzip header (enum out of range)");
  h.dtype = DType(dtype);
  h.mode = Mode(mode);
  h.pipeline = Pipeline(pipeline);
  uint64_t n = 1, np = 1;
  for (auto d : h.shape) {
    if (d != 0 && n > (uint64_t(1) << 62) / d) throw StreamError("corrupted ebzip header (shape too large)");
    n *= d;
  }
  for (int k = 0; k < pred_ndim; ++k) {
    if (h.pred.n[k] <= 0 || np > (uint64_t(1) << 62) / uint64_t(h.pred.n[k]))
      throw StreamError("corrupted ebzip header (prediction shape)");
    np *= uint64_t(h.pred.n[k]);
  }
  if (n != 0 && np != n) throw StreamError("corrupted ebzip header (prediction shape != shape)");
  if (h.block_elems == 0 || h.block_elems > (uint64_t(1) << 32)) throw StreamError("corrupted ebzip header (block size)");
  if (h.pipeline != Pipeline::exact && (h.radius < 1 || h.radius > 32768 || !(h.eb_abs > 0) || n == 0))
    throw StreamError("corrupted ebzip header (quantizer)");
  if (h.pipeline == Pipeline::lorenzo && h.grid_bits != 32 && h.grid_bits != 64)
    throw StreamError("corrupted ebzip header (grid)");
  if (interp) {
    bool seen[4] = {false, false, false, false};
    for (int k = 0; k < 4; ++k) {
      if (h.interp.order[k] > 3 || seen[h.interp.order[k]]) throw StreamError("corrupted ebzip header (axis order)");
      seen[h.interp.order[k]] = true;
    }
    if (!(h.interp.alpha >= 1 && h.interp.alpha <= 16 && h.interp.beta >= 1 && h.interp.beta <= 1e6))
      throw StreamError("corrupted ebzip header (level bounds)");
    uint64_t tile_elems = 1;
    for (int k = 0; k < 4; ++k) {
      if (h.tile[k] < 1 || h.tile[k] > (int64_t(1) << 32)) throw StreamError("corrupted ebzip header (tile)");
      tile_elems *= uint64_t(h.tile[k]);
      if (tile_elems > (uint64_t(1) << 32)) throw StreamError("corrupted ebzip header (tile)");
    }
  }
  return h;
}

// Length of a stream's header without its CRC, as its version lays it out,
// or 0 where that does not parse; nothing else is checked (for tools that
// rewrite CRCs of deliberately damaged streams: the fuzzers, docs/errors.md).
inline uint64_t header_extent(const uint8_t* p, uint64_t n) {
  if (n < 6 || memcmp(p, kMagic, 4) != 0) return 0;
  ByteSource src(p, n, "header");
  src.take(4);
  Header h;
  h.version = src.get<uint16_t>();
  if (h.version < kOldestFormatVersion || h.version > kFormatVersion) return 0;
  try {
    read_header_fields(src, h);
  } catch (const StreamError&) {
    return 0;
  }
  return src.pos;
}

}  // namespace ebzip
