// Fuzz and sanitizer driver for the ebzip C++ core (csrc/cpu/codec_cpu.cpp).
//
// One source, two builds (fuzz/build.sh):
//   * libFuzzer target (clang -fsanitize=fuzzer,address,undefined):
//       LLVMFuzzerTestOneInput runs one input of the format below.
//   * standalone stress driver (g++ or clang, -fsanitize=address,undefined,
//     -DEBZIP_STANDALONE): `codec_fuzz stress [SEED] [ARRAYS] [MUTATIONS]`
//     round-trips generated arrays (all four dtypes; NaN/Inf/denormal/huge
//     values; 0-5-D odd shapes; eb 0, tiny, huge; small blocks so that there
//     are many chunks) and decodes mutated streams; `codec_fuzz FILE...`
//     replays inputs (a corpus, or a crash file that libFuzzer wrote).
//
// Input format (shared with the Python harness fuzz/fuzz_api.py, so that one
// corpus, fuzz/corpus/, serves both):
//   'E' ...      the whole input is a stream: decompress it as it is
//   'F' stream   recompute every CRC of `stream` (where its layout parses),
//                then decompress: reaches the decoder's own checks behind
//                the checksums
//   other        compress an array built from the input (see parse_array)
//
// What counts as a failure (abort, so that libFuzzer keeps the input):
//   * anything a sanitizer reports (out-of-bounds, use after free, leaks, UB);
//   * decompress throwing anything but ebzip::StreamError;
//   * a stream changed by one byte (no CRC fix-up) that decodes without error;
//   * a round trip outside the bound, NaN/Inf not bit-exact, eb=0 not lossless;
//   * the stream depending on the number of threads.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "cpu/codec_cpu.hpp"

using namespace ebzip;
using Bytes = std::vector<uint8_t>;

namespace {

// Largest output a fuzzed stream may declare; forged headers may claim up to
// 2^32 elements, which is a legitimate (huge) allocation, not a bug.
constexpr uint64_t kMaxArrayElems = 4096;
constexpr uint64_t kMaxDecodeElems = uint64_t(1) << 16;  // (also keeps executions fast)

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "codec_fuzz FAILURE: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

int dsize_of(DType t) { return dtype_size(t); }

double to_double(DType t, const uint8_t* p) {
  switch (t) {
    case DType::f32: { float v; memcpy(&v, p, 4); return F32::to_double(v); }
    case DType::f64: { double v; memcpy(&v, p, 8); return v; }
    case DType::f16: { uint16_t v; memcpy(&v, p, 2); return F16::to_double(v); }
    default: { uint16_t v; memcpy(&v, p, 2); return BF16::to_double(v); }
  }
}

// ------------------------------------------------------------ CRC fix-up

uint32_t rd32(const Bytes& s, size_t o) { uint32_t v; memcpy(&v, s.data() + o, 4); return v; }
uint64_t rd64(const Bytes& s, size_t o) { uint64_t v; memcpy(&v, s.data() + o, 8); return v; }
void wr32(Bytes& s, size_t o, uint32_t v) { memcpy(s.data() + o, &v, 4); }

// The pipeline byte of a stream (255 if too short): byte 9 in format
// versions 1-2, byte 8 since version 3.
uint8_t stream_pipeline(const Bytes& s) {
  if (s.size() < 10) return 255;
  return s[4] >= 3 || s[5] != 0 ? s[8] : s[9];
}

// Recomputes the header, codebook, table and chunk CRCs of a (mutated)
// stream, as far as its layout parses (docs/format.md).
void fix_crcs(Bytes& s) {
  const size_t hlen = ebzip::header_extent(s.data(), s.size());
  if (hlen == 0 || s.size() < hlen + 4) return;
  wr32(s, hlen, crc32(s.data(), hlen));
  size_t pos = hlen + 4;
  const uint8_t pipeline = stream_pipeline(s);
  if (pipeline == 1 || pipeline == 2) {  // lorenzo, interp: codebook section
    if (s.size() < pos + 8) return;
    const uint64_t cb = rd32(s, pos);
    if (s.size() - pos - 8 < cb) return;
    wr32(s, pos + 4, crc32(s.data() + pos + 8, cb));
    pos += 8 + cb;
  }
  if (s.size() < pos + 8) return;
  const uint64_t n = rd64(s, pos);
  if (n > (s.size() - pos - 8) / 16 || s.size() - pos - 8 - 16 * n < 4) return;
  const size_t table = pos, table_end = pos + 8 + 16 * n;
  uint64_t p = table_end + 4;
  for (uint64_t k = 0; k < n; ++k) {
    const uint64_t len = rd64(s, table + 8 + 16 * k);
    if (len > s.size() - p) break;
    wr32(s, table + 8 + 16 * k + 12, crc32(s.data() + p, len));
    p += len;
  }
  wr32(s, table_end, crc32(s.data() + table, table_end - table));
}

// ------------------------------------------------------------ decode

enum class Outcome { ok, stream_error, too_big };

// Decodes a stream into a buffer of exactly the declared size (so ASan sees
// any write past it) with 1 and 2 threads; both must agree.
Outcome try_decode(const uint8_t* p, size_t len, Bytes* out = nullptr, uint64_t max_elems = kMaxDecodeElems) {
  try {
    const Header h = cpu::inspect(p, len);
    const uint64_t n = h.num_elements();
    if (n > max_elems) return Outcome::too_big;
    const size_t nb = size_t(n) * size_t(dsize_of(h.dtype));
    // exact-size heap blocks (no slack) so that ASan catches a write past the end
    std::unique_ptr<uint8_t[]> a(new uint8_t[nb ? nb : 1]), b(new uint8_t[nb ? nb : 1]);
    cpu::decompress(p, len, a.get(), 1);
    cpu::decompress(p, len, b.get(), 2);
    if (memcmp(a.get(), b.get(), nb) != 0) fail("decoding depends on the number of threads");
    if (out) out->assign(a.get(), a.get() + nb);
    return Outcome::ok;
  } catch (const StreamError&) {
    return Outcome::stream_error;
  } catch (const std::exception& e) {
    fail(std::string("decompress threw a non-StreamError exception: ") + e.what());
  } catch (...) {
    fail("decompress threw a non-std exception");
  }
}

// ------------------------------------------------------------ round trip

struct Case {
  cpu::Predictor predictor = cpu::Predictor::automatic;
  int pred_dims = 4;
  InterpConfig interp;
  DType dtype;
  std::vector<uint64_t> shape;
  Mode mode;
  double eb_abs;
  uint64_t block_elems;
  Bytes data;
};

void check_bound(const Case& c, const Bytes& y, double eb_abs) {
  const int ds = dsize_of(c.dtype);
  const uint64_t n = c.data.size() / ds;
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t* xp = c.data.data() + i * ds;
    const uint8_t* yp = y.data() + i * ds;
    const double x = to_double(c.dtype, xp), v = to_double(c.dtype, yp);
    if (eb_abs == 0 || !std::isfinite(x)) {
      if (memcmp(xp, yp, size_t(ds)) != 0)
        fail("element " + std::to_string(i) + " not bit-exact (eb 0 or non-finite): " + std::to_string(x));
    } else if (!(std::fabs(x - v) <= eb_abs)) {
      char msg[200];
      std::snprintf(msg, sizeof msg, "bound violated at %llu: x=%.17g y=%.17g eb=%.17g dtype=%d",
                    (unsigned long long)i, x, v, eb_abs, int(c.dtype));
      fail(msg);
    }
  }
}

// Compresses with 1 and 3 threads (same bytes), decodes, checks the bound;
// returns the stream.
Bytes round_trip(const Case& c) {
  cpu::CompressParams p;
  p.predictor = c.predictor;
  p.pred_dims = c.pred_dims;
  p.interp = c.interp;
  p.dtype = c.dtype;
  p.mode = c.mode;
  p.eb_param = c.eb_abs;
  p.eb_abs = c.eb_abs;
  p.block_elems = c.block_elems;
  p.threads = 1;
  Bytes s1;
  try {
    s1 = cpu::compress(c.data.data(), c.shape, p);
  } catch (const std::exception& e) {
    fail(std::string("compress threw: ") + e.what());
  }
  p.threads = 3;
  if (cpu::compress(c.data.data(), c.shape, p) != s1) fail("stream depends on the number of threads");
  Bytes y;
  if (try_decode(s1.data(), s1.size(), &y, UINT64_MAX) != Outcome::ok) fail("a fresh stream does not decode");
  if (y.size() != c.data.size()) fail("decoded size differs");
  check_bound(c, y, c.eb_abs);
  return s1;
}

// Reads an array and its parameters from fuzz input (byte 0 is not 'E'/'F'):
//   [0] dtype (low 2 bits) and bound kind (bits 2-4)   [1] ndim 0..5 (mod 6)
//   [2..9] f64 bound parameter   [10] block size kind (bits 0-2), predictor (bits 3-4), linear
//   interpolation (bit 5), prediction over the last 2 axes (bit 6)   [11..11+ndim) dims (mod 17; the largest
//   halved while there are more than kMaxArrayElems elements)
//   rest: element bytes, repeated to fill the array (none: zeros)
bool parse_array(const uint8_t* d, size_t n, Case& c) {
  if (n < 11) return false;
  c.dtype = DType(d[0] & 3);
  const int eb_kind = (d[0] >> 2) & 7;
  const int ndim = d[1] % 6;
  double ebp;
  memcpy(&ebp, d + 2, 8);
  static const uint64_t kBlocks[8] = {1, 2, 7, 16, 64, 333, 4096, uint64_t(1) << 18};
  c.block_elems = kBlocks[d[10] & 7];
  c.predictor = cpu::Predictor((d[10] >> 3) % 3);  // automatic, lorenzo, interp
  c.interp.stencil = (d[10] >> 5) & 1;
  c.pred_dims = (d[10] >> 6) & 1 ? 2 : 4;
  size_t pos = 11;
  c.shape.clear();
  for (int k = 0; k < ndim; ++k) c.shape.push_back(pos < n ? d[pos++] % 17 : 3);
  uint64_t count = 1;
  for (auto s : c.shape) count *= s;
  while (count > kMaxArrayElems) {  // halve the largest axis: keeps executions fast
    auto big = std::max_element(c.shape.begin(), c.shape.end());
    count = count / *big * (*big / 2);
    *big /= 2;
  }
  const int ds = dsize_of(c.dtype);
  c.data.assign(size_t(count) * ds, 0);
  if (pos < n)
    for (size_t i = 0; i < c.data.size(); ++i) c.data[i] = d[pos + i % (n - pos)];
  // The bound: as given (abs), or one of the extremes and special cases.
  c.mode = Mode::abs;
  switch (eb_kind) {
    case 0: c.eb_abs = std::fabs(ebp); break;
    case 1: c.eb_abs = 0; break;
    case 2: c.eb_abs = 5e-324; break;
    case 3: c.eb_abs = 1e-3; break;
    case 4: c.eb_abs = 0.5; break;
    case 5: c.eb_abs = 1.7976931348623157e308; break;
    case 6: c.eb_abs = std::ldexp(1.0, int(d[2] % 64) - 40); break;
    default: c.eb_abs = 1e-30; break;
  }
  if (!std::isfinite(c.eb_abs)) c.eb_abs = 1.0;
  return true;
}

void run_one(const uint8_t* d, size_t n) {
  if (n >= 1 && d[0] == 'E') {
    try_decode(d, n);
    return;
  }
  if (n >= 1 && d[0] == 'F') {
    Bytes s(d + 1, d + n);
    fix_crcs(s);
    try_decode(s.data(), s.size());
    return;
  }
  Case c;
  if (!parse_array(d, n, c)) {
    // short input: random bytes that are no stream must be refused
    if (try_decode(d, n) == Outcome::ok && n < 48) fail("a short foreign input decoded");
    return;
  }
  const Bytes s = round_trip(c);
  // and one-byte damage to the fresh stream is always detected
  if (!s.empty() && n > 12) {
    Bytes m = s;
    const size_t at = (d[n - 1] * 2654435761u + n) % m.size();
    m[at] ^= uint8_t(d[n - 2] | 1);
    if (try_decode(m.data(), m.size(), nullptr, UINT64_MAX) == Outcome::ok)
      fail("a one-byte corruption was not detected");
  }
}

// ------------------------------------------------------------ standalone stress

#ifdef EBZIP_STANDALONE

// Bit patterns of a value of the dtype, from a double (16-bit types: RNE).
void put_value(DType t, uint8_t* p, double v) {
  switch (t) {
    case DType::f32: { float f = float(v); memcpy(p, &f, 4); break; }
    case DType::f64: memcpy(p, &v, 8); break;
    case DType::f16: { uint16_t u = F16::from_double(v); memcpy(p, &u, 2); break; }
    default: { uint16_t u = BF16::from_double(v); memcpy(p, &u, 2); break; }
  }
}

double max_of(DType t) {
  switch (t) {
    case DType::f32: return 3.4028234663852886e38;
    case DType::f64: return 1.7976931348623157e308;
    case DType::f16: return 65504.0;
    default: return 3.3895313892515355e38;
  }
}
double tiny_of(DType t) {
  switch (t) {
    case DType::f32: return std::ldexp(1.0, -149);
    case DType::f64: return 5e-324;
    case DType::f16: return std::ldexp(1.0, -24);
    default: return std::ldexp(1.0, -133);
  }
}

Case make_case(std::mt19937_64& rng) {
  auto uni = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  auto pick = [&](uint64_t k) { return uint64_t(rng() % k); };
  Case c;
  c.dtype = DType(pick(4));
  const int ds = dsize_of(c.dtype);
  // shape: 0-d, empty, 1..5-D with odd and size-1 axes, <= ~3000 elements
  const int ndim = int(pick(6));
  static const uint64_t kSides[] = {1, 1, 2, 3, 5, 7, 13, 31, 64, 100};
  uint64_t count = 1;
  for (int k = 0; k < ndim; ++k) {
    uint64_t s = kSides[pick(10)];
    if (count * s > 3000) s = 1;
    c.shape.push_back(s);
    count *= s;
  }
  if (ndim && pick(12) == 0) { c.shape[pick(uint64_t(ndim))] = 0; count = 0; }
  static const uint64_t kBlocks[] = {1, 3, 16, 100, 1000, uint64_t(1) << 18};
  c.block_elems = kBlocks[pick(6)];
  c.predictor = cpu::Predictor(pick(3));
  c.pred_dims = pick(3) == 0 ? 2 : 4;
  c.interp.stencil = uint8_t(pick(2));
  if (pick(3) == 0) {  // QoZ-style level bounds and another axis order
    c.interp.alpha = 1.0 + double(pick(10)) / 4;
    c.interp.beta = 1.0 + double(pick(20));
    c.interp.order[0] = 3; c.interp.order[1] = 2; c.interp.order[2] = 1; c.interp.order[3] = 0;
  }
  c.mode = Mode(pick(3));  // recorded only; the driver is given the absolute bound
  c.data.assign(size_t(count) * ds, 0);
  const double m = max_of(c.dtype), tiny = tiny_of(c.dtype);
  const int kind = int(pick(8));
  const double scale = std::pow(10.0, uni(-6, 6));
  double walk = 0;
  for (uint64_t i = 0; i < count; ++i) {
    uint8_t* p = c.data.data() + i * ds;
    double v = 0;
    switch (kind) {
      case 0: v = uni(-1, 1) * scale; break;                              // noise
      case 1: walk += uni(-1, 1); v = walk * scale; break;                 // random walk
      case 2: v = std::sin(0.01 * double(i)) * scale; break;               // smooth
      case 3: v = 42.5; break;                                             // constant
      case 4: v = uni(-1, 1) * m; break;                                   // the whole range
      case 5: v = double(int64_t(pick(81)) - 40) * tiny; break;             // denormals
      case 6: for (int b = 0; b < ds; ++b) p[b] = uint8_t(rng()); continue; // any bits: NaN payloads too
      default: {                                                           // specials sprinkled in
        static const double kSpecial[] = {NAN, INFINITY, -INFINITY, -0.0, 0.0, 1.0};
        const uint64_t r = pick(10);
        v = r < 6 ? kSpecial[r] : r == 6 ? m : r == 7 ? -m : r == 8 ? tiny : uni(-1, 1) * scale;
      }
    }
    put_value(c.dtype, p, v);
  }
  // bound: 0, smallest, tiny, data-relative, huge, largest
  double lo = INFINITY, hi = -INFINITY;
  for (uint64_t i = 0; i < count; ++i) {
    const double x = to_double(c.dtype, c.data.data() + i * ds);
    if (std::isfinite(x)) { lo = std::min(lo, x); hi = std::max(hi, x); }
  }
  const double range = hi > lo && std::isfinite(hi - lo) ? hi - lo : 1.0;
  switch (pick(8)) {
    case 0: c.eb_abs = 0; break;
    case 1: c.eb_abs = 5e-324; break;
    case 2: c.eb_abs = tiny; break;
    case 3: c.eb_abs = 1e300; break;
    case 4: c.eb_abs = 1.7976931348623157e308; break;
    default: c.eb_abs = range * std::pow(10.0, uni(-9, 0)); break;
  }
  return c;
}

Bytes mutate(const Bytes& s, std::mt19937_64& rng, bool& single_byte) {
  Bytes m = s;
  single_byte = false;
  auto pick = [&](uint64_t k) { return k ? uint64_t(rng() % k) : 0; };
  switch (pick(7)) {
    case 0: case 1: {  // one byte changed
      m[pick(m.size())] ^= uint8_t(1 + pick(255));
      single_byte = true;
      break;
    }
    case 2: m.resize(pick(m.size())); break;                        // truncated
    case 3: m.push_back(uint8_t(rng())); break;                      // trailing byte
    case 4: {                                                        // a span overwritten
      const size_t at = pick(m.size()), len = 1 + pick(16);
      for (size_t i = at; i < std::min(m.size(), at + len); ++i) m[i] = uint8_t(rng());
      break;
    }
    case 5: {  // a plausible field value: 0, 1, all ones, a power of two
      const size_t at = pick(m.size());
      static const uint8_t kVals[] = {0, 1, 0x7f, 0x80, 0xff, 0x20, 0x40};
      m[at] = kVals[pick(7)];
      const int w = int(pick(4));
      for (int b = 1; b <= w && at + b < m.size(); ++b) m[at + b] = rng() & 1 ? 0xff : 0;
      break;
    }
    default: m.insert(m.begin() + long(pick(m.size() + 1)), uint8_t(rng())); break;  // a byte inserted
  }
  return m;
}

int stress(uint64_t seed, int arrays, int mutations) {
  std::mt19937_64 rng(seed);
  uint64_t n_mut = 0, n_fixed_ok = 0, n_detected = 0, n_single = 0;
  uint64_t by_pipeline[4] = {0, 0, 0, 0};  // exact, lorenzo, interp, other
  for (int a = 0; a < arrays; ++a) {
    const Case c = make_case(rng);
    const Bytes s = round_trip(c);
    ++by_pipeline[std::min<uint8_t>(stream_pipeline(s), 3)];
    for (int k = 0; k < mutations; ++k) {
      bool single;
      Bytes m = mutate(s, rng, single);
      if (m == s) continue;
      ++n_mut;
      const bool fix = rng() % 2 == 0;
      if (fix) fix_crcs(m);
      const Outcome o = try_decode(m.data(), m.size());
      if (o == Outcome::ok && fix) ++n_fixed_ok;
      if (o == Outcome::stream_error) ++n_detected;
      if (single && !fix) {
        ++n_single;
        if (o == Outcome::ok) fail("a one-byte corruption was not detected (array " + std::to_string(a) + ")");
      }
    }
    // random bytes, with and without a valid-looking prefix
    Bytes r(size_t(rng() % 300));
    for (auto& b : r) b = uint8_t(rng());
    try_decode(r.data(), r.size());
    if (r.size() >= 6) { memcpy(r.data(), "EBZP\x01\x00", 6); fix_crcs(r); try_decode(r.data(), r.size()); }
  }
  std::printf("codec_fuzz stress: seed %llu, %d arrays round-tripped within their bounds (pipelines: %llu exact, "
              "%llu lorenzo, %llu interp), %llu mutated streams "
              "decoded (%llu rejected with StreamError, %llu decoded after CRC fix-up), %llu one-byte corruptions "
              "all detected\n",
              (unsigned long long)seed, arrays, (unsigned long long)by_pipeline[0], (unsigned long long)by_pipeline[1],
              (unsigned long long)by_pipeline[2], (unsigned long long)n_mut, (unsigned long long)n_detected,
              (unsigned long long)n_fixed_ok, (unsigned long long)n_single);
  return 0;
}

#endif  // EBZIP_STANDALONE

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  run_one(data, size);
  return 0;
}

#ifdef EBZIP_STANDALONE
int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "stress") {
    const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
    const int arrays = argc > 3 ? std::atoi(argv[3]) : 300;
    const int mutations = argc > 4 ? std::atoi(argv[4]) : 40;
    return stress(seed, arrays, mutations);
  }
  // replay files (a corpus, or crash inputs)
  int n = 0;
  for (int i = 1; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    if (!f) { std::fprintf(stderr, "cannot read %s\n", argv[i]); return 2; }
    const Bytes d((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    run_one(d.data(), d.size());
    ++n;
  }
  std::printf("codec_fuzz: %d input(s) replayed, no failure\n", n);
  return 0;
}
#endif
