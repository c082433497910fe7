// CPU driver: runs the shared algorithm (csrc/include/ebzip) block by block
// on OpenMP threads. Blocks are independent, so the bytes written do not
// depend on the number of threads.
#include "codec_cpu.hpp"
#include "codec_parts.hpp"

#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>

#include "ebzip/huffman.hpp"
#include "ebzip/interpolation.hpp"
#include "ebzip/lorenzo.hpp"
#include "ebzip/padded_grid.hpp"
#include "ebzip/quantizer.hpp"

namespace ebzip::cpu {
using namespace parts;  // stages shared with the CUDA driver (codec_parts.hpp)
namespace {

static_assert(sizeof(void*) == 8, "ebzip needs a 64-bit platform");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ebzip streams are little-endian; big-endian hosts are not supported"
#endif

constexpr int kZstdLevel = 1;  // ratio as level 3 on Huffman output (measured), faster

// ---------------------------------------------------------------- helpers

// Runs body(b, state) for every block on `threads` threads, with per-thread
// state from body.make_thread_state() handed to body.thread_done() at the
// end; the first exception thrown by any block is rethrown on the caller.
template <class Body>
void parallel_blocks(int64_t n_blocks, int threads, Body&& body) {
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
  // No more threads than blocks: an idle team member still costs a wake-up
  // and a barrier, which on a busy machine can take milliseconds.
  const int team = int(std::max<int64_t>(1, std::min<int64_t>(threads, n_blocks)));
#pragma omp parallel num_threads(team)
  {
    decltype(auto) state = body.make_thread_state();
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < n_blocks; ++b) {
      if (failed.load(std::memory_order_relaxed)) continue;
      try {
        body(b, state);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
    body.thread_done(state);
  }
  if (error) std::rethrow_exception(error);
}

// Per-thread working memory, kept across calls: reallocating (and page-
// faulting) megabytes of tables and zstd contexts on every call would cost
// more than compressing a small array.
template <class State>
State& thread_cached() {
  thread_local State state;
  return state;
}

// Not ByteSource::uvar: an outlier varint past 64 bits is read as the device
// decoder reads it (codec_device.cu), so both backends take the same streams.
uint64_t get_varint(ByteSource& src) {
  uint64_t u = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    const uint8_t byte = src.get<uint8_t>();
    u |= uint64_t(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return u;
  }
  throw StreamError("corrupted ebzip stream (bad varint in outliers)");
}

}  // namespace

// Drops size-1 axes and merges leading axes beyond max_dims (at most four)
// into the first: fewer prediction axes pay where an axis is barely
// correlated (levels, ensemble members, stacked variables).
PredShape parts::prediction_shape(const std::vector<uint64_t>& shape, int max_dims) {
  std::vector<int64_t> dims;
  for (auto d : shape)
    if (d != 1) dims.push_back(int64_t(d));
  while (dims.size() > size_t(std::max(1, std::min(max_dims, kMaxPredDims)))) {
    dims[1] *= dims[0];
    dims.erase(dims.begin());
  }
  PredShape ps;
  ps.ndim = int(dims.size());
  for (int k = 0; k < ps.ndim; ++k) ps.n[k] = dims[size_t(k)];
  return ps;
}

namespace {


// ---------------------------------------------------------------- Huffman

}  // namespace

// Length-limited Huffman code lengths (two-queue Huffman, then the Kraft
// repair used by miniz/zlib to cap the depth at kMaxCodeLen).
Codebook parts::build_codebook(const std::vector<uint64_t>& freq) {
  std::vector<uint32_t> used;
  for (uint32_t s = 0; s < freq.size(); ++s)
    if (freq[s]) used.push_back(s);
  Codebook cb;
  if (used.empty()) return cb;
  cb.first_symbol = used.front();
  cb.lengths.assign(used.back() - used.front() + 1, 0);
  if (used.size() == 1) {
    cb.lengths[0] = 1;
    return cb;
  }
  std::sort(used.begin(), used.end(), [&](uint32_t a, uint32_t b) {
    return freq[a] != freq[b] ? freq[a] < freq[b] : a < b;
  });
  const size_t n = used.size();
  std::vector<uint64_t> weight(2 * n - 1);
  std::vector<uint32_t> parent(2 * n - 1, 0);
  for (size_t i = 0; i < n; ++i) weight[i] = freq[used[i]];
  size_t leaf = 0, inode = n;
  auto pick = [&](size_t k) {
    if (leaf < n && (inode >= k || weight[leaf] <= weight[inode])) return leaf++;
    return inode++;
  };
  for (size_t k = n; k < 2 * n - 1; ++k) {
    const size_t a = pick(k), b = pick(k);
    weight[k] = weight[a] + weight[b];
    parent[a] = parent[b] = uint32_t(k);
  }
  std::vector<uint32_t> depth(2 * n - 1, 0);
  for (size_t k = 2 * n - 1; k-- > 0;)
    if (k != 2 * n - 2) depth[k] = depth[parent[k]] + 1;
  std::vector<uint64_t> count(std::max<uint32_t>(kMaxCodeLen, *std::max_element(depth.begin(), depth.begin() + n)) + 1, 0);
  for (size_t i = 0; i < n; ++i) ++count[std::min<uint32_t>(depth[i], kMaxCodeLen)];
  uint64_t total = 0;
  for (int L = kMaxCodeLen; L > 0; --L) total += count[L] << (kMaxCodeLen - L);
  while (total != (uint64_t(1) << kMaxCodeLen)) {
    --count[kMaxCodeLen];
    for (int L = kMaxCodeLen - 1; L > 0; --L)
      if (count[L]) {
        --count[L];
        count[L + 1] += 2;
        break;
      }
    --total;
  }
  // Most frequent symbols (end of `used`) get the shortest codes.
  size_t i = n;
  for (int L = 1; L <= kMaxCodeLen; ++L)
    for (uint64_t c = 0; c < count[L]; ++c) cb.lengths[used[--i] - cb.first_symbol] = uint8_t(L);
  return cb;
}

CanonicalCode parts::make_canonical(const Codebook& cb, uint32_t alphabet) {
  CanonicalCode cc;
  cc.enc.assign(alphabet, HuffmanEncoderEntry{0, 0});
  cc.dec = std::make_unique<HuffmanDecoder>();
  HuffmanDecoder& d = *cc.dec;
  uint32_t count[kMaxCodeLen + 2] = {0};
  for (auto L : cb.lengths) {
    if (L > kMaxCodeLen) throw StreamError("corrupted ebzip codebook (code too long)");
    ++count[L];
  }
  count[0] = 0;
  uint64_t kraft = 0;
  for (int L = 1; L <= kMaxCodeLen; ++L) kraft += uint64_t(count[L]) << (kMaxCodeLen - L);
  if (kraft > (uint64_t(1) << kMaxCodeLen)) throw StreamError("corrupted ebzip codebook (oversubscribed)");
  if (uint64_t(cb.first_symbol) + cb.lengths.size() > alphabet) throw StreamError("corrupted ebzip codebook (symbols)");
  // Canonical order is (length, symbol): place symbols with a counting sort.
  uint32_t next[kMaxCodeLen + 2] = {0};
  for (int L = 1; L <= kMaxCodeLen; ++L) next[L + 1] = next[L] + count[L];
  cc.sorted_syms.resize(next[kMaxCodeLen + 1]);
  for (uint32_t j = 0; j < cb.lengths.size(); ++j)
    if (cb.lengths[j]) cc.sorted_syms[next[cb.lengths[j]]++] = uint16_t(cb.first_symbol + j);
  uint32_t code = 0, idx = 0;
  d.max_len = 0;
  std::fill(std::begin(d.lut), std::end(d.lut), 0u);
  for (int L = 1; L <= kMaxCodeLen; ++L) {
    d.first[L] = code;
    d.count[L] = count[L];
    d.index[L] = idx;
    for (uint32_t k = 0; k < count[L]; ++k, ++code) {
      const uint32_t sym = cc.sorted_syms[idx++];
      cc.enc[sym] = HuffmanEncoderEntry{code, uint32_t(L)};
      if (L <= kLutBits) {
        const uint32_t lo = code << (kLutBits - L), hi = (code + 1) << (kLutBits - L);
        for (uint32_t w = lo; w < hi; ++w) d.lut[w] = (sym << 5) | uint32_t(L);
      }
    }
    if (count[L]) d.max_len = L;
    code <<= 1;
  }
  d.first[0] = d.count[0] = d.index[0] = 0;
  d.sorted_syms = cc.sorted_syms.data();
  const uint32_t mask = (1u << kLutBits) - 1;
  for (uint32_t w = 0; w <= mask; ++w) {
    MultiSymbol m{{0, 0, 0}, 0, 0};
    while (m.count < 3) {
      const uint32_t e = d.lut[(w << m.bits) & mask];
      const uint32_t len = e & 31u;
      if (len == 0 || m.bits + len > uint32_t(kLutBits)) break;
      m.sym[m.count++] = uint16_t(e >> 5);
      m.bits = uint8_t(m.bits + len);
    }
    d.multi[w] = m;
  }
  return cc;
}

namespace {

// ---------------------------------------------------------------- zstd

struct ZstdCtx {
  ZSTD_CCtx* c = nullptr;
  ZSTD_DCtx* d = nullptr;
  ZstdCtx() = default;
  ZstdCtx(const ZstdCtx&) = delete;
  ~ZstdCtx() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
  std::vector<uint8_t> scratch;  // per thread (ZstdCtx is thread-cached), reused across chunks

  // Compresses `raw`; returns true and fills `out` only if that is smaller.
  // zstd writes into the scratch buffer and `out` gets exactly the result,
  // so a chunk held until assembly costs its compressed size, not its raw size.
  bool compress(const std::vector<uint8_t>& raw, std::vector<uint8_t>& out) {
    if (!c) c = ZSTD_createCCtx();
    // (full compressBound capacity: with less, zstd gives up on some results that would fit)
    const size_t bound = ZSTD_compressBound(raw.size());
    if (scratch.size() < bound) scratch.resize(bound);
    const size_t r = ZSTD_compressCCtx(c, scratch.data(), bound, raw.data(), raw.size(), kZstdLevel);
    if (ZSTD_isError(r) || r >= raw.size()) return false;
    out.assign(scratch.data(), scratch.data() + r);
    return true;
  }
  void decompress(const uint8_t* src, uint64_t len, std::vector<uint8_t>& out, uint64_t max_size) {
    if (!d) d = ZSTD_createDCtx();
    const unsigned long long size = ZSTD_getFrameContentSize(src, len);
    // A zstd block of at most 128 KiB costs at least 4 bytes (an RLE block), so
    // no valid frame expands more than 32768x: a tiny forged frame claiming
    // gigabytes fails here, before the allocation.
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > max_size ||
        size / 32768 > len)
      throw StreamError("corrupted ebzip stream (bad zstd frame)");
    out.resize(size);
    const size_t r = ZSTD_decompressDCtx(d, out.data(), out.size(), src, len);
    if (ZSTD_isError(r) || r != size) throw StreamError("corrupted ebzip stream (zstd frame does not decode)");
  }
};

std::vector<uint8_t> zstd_compress_whole(const std::vector<uint8_t>& raw) {
  std::vector<uint8_t> out(ZSTD_compressBound(raw.size()));
  const size_t r = ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), kZstdLevel);
  if (ZSTD_isError(r)) throw std::runtime_error("zstd compression failed");
  out.resize(r);
  return out;
}

// ---------------------------------------------------------------- chunks

// try_zstd: false where zstd is known not to pay (it finds repeats in runs
// of short Huffman codes; measured: worth it up to ~5 bits per symbol, e.g. on quantized sources).
void store_chunk(Chunk& chunk, std::vector<uint8_t>& raw, ZstdCtx& z, bool try_zstd = true) {
  std::vector<uint8_t> packed;
  if (try_zstd && z.compress(raw, packed)) {
    chunk.bytes = std::move(packed);
    chunk.flags = kChunkZstd;
  } else {
    chunk.bytes = std::move(raw);
    chunk.flags = 0;
  }
}

// Byte-plane shuffle helps zstd on the exact (lossless) pipeline.
void shuffle_bytes(const uint8_t* in, uint8_t* out, uint64_t n, int size) {
  for (uint64_t i = 0; i < n; ++i)
    for (int b = 0; b < size; ++b) out[uint64_t(b) * n + i] = in[i * size + b];
}
void unshuffle_bytes(const uint8_t* in, uint8_t* out, uint64_t n, int size) {
  for (uint64_t i = 0; i < n; ++i)
    for (int b = 0; b < size; ++b) out[i * size + b] = in[uint64_t(b) * n + i];
}

struct BlockSide {  // what a block stores beside its Huffman bits
  std::vector<uint8_t> outliers;  // zigzag varints of out-of-range deltas
  uint32_t n_outliers = 0;
  uint32_t exact_count = 0;
  std::vector<uint32_t> exact_index;  // Lorenzo only
  std::vector<uint8_t> exact_bytes;
  double sse = 0;  // sum of squared errors, when the predictor tracks it ("auto" sampling)
};

// ---------------------------------------------------------------- Lorenzo

template <class T, int D, class G>
void quantize_block(const typename T::storage* x, const PaddedGrid& pg, const Quantizer& qz_ref, int64_t radius,
                    G* s, uint16_t* codes, BlockSide& side) {
  pg.zero_faces(s);
  // Locals, not references: the hot loop then keeps them in registers.
  const Quantizer qz = qz_ref;
  const LorenzoRows<D, G> rows(pg.pstride);
  pg.for_each_row([&, qz, rows, radius](int64_t pbase, int64_t flat, int64_t len) {
    G* sr = s + pbase;
    const typename T::storage* xr = x + flat;
    uint16_t* cr = codes + flat;
    int64_t r_prev = 0;  // r = q - A is 0 in the padding
    bool rare = false;   // an exact value or an outlier in this row
    for (int64_t i = 0; i < len; ++i) {
      int64_t q;
      const bool ok = qz.quantize<T>(xr[i], q);
      sr[i] = G(q);
      const int64_t r = q - int64_t(rows.earlier(sr + i));
      const uint32_t sym = symbol_of_delta(r - r_prev, radius);
      r_prev = r;
      cr[i] = uint16_t(sym);
      rare |= !ok | (sym == 0);
    }
    if (!rare) return;
    // Second look at the rare row: record exact values and outlier deltas.
    r_prev = 0;
    for (int64_t i = 0; i < len; ++i) {
      const int64_t r = int64_t(sr[i]) - int64_t(rows.earlier(sr + i));
      if (!cr[i]) {
        ByteSink{side.outliers}.uvar(zigzag(r - r_prev));
        ++side.n_outliers;
      }
      r_prev = r;
      int64_t q;
      if (!qz.quantize<T>(xr[i], q)) {
        side.exact_index.push_back(uint32_t(flat + i));
        ++side.exact_count;
        const auto* p = reinterpret_cast<const uint8_t*>(xr + i);
        side.exact_bytes.insert(side.exact_bytes.end(), p, p + sizeof(xr[i]));
      }
    }
  });
}

// Histogram with four interleaved tables: runs of one symbol (the common
// case) would otherwise serialise on a single counter. One per thread,
// folded into 64-bit totals before any 32-bit counter could overflow.
// Only the range of symbols seen is folded and cleared: the alphabet has
// 2 * radius = 65536 symbols, and clearing all of it for every sample
// "auto" encodes cost more than encoding the sample.
struct Histogram {
  uint32_t alphabet = 0;
  std::vector<uint32_t> sub;    // zero between uses (fold clears what it read)
  std::vector<uint64_t> total;  // zero outside [lo, hi)
  uint64_t pending = 0;         // counts in sub not yet folded
  uint32_t lo = 0, hi = 0;      // the symbols seen lie in [lo, hi)

  void reset(uint32_t a) {
    if (a != alphabet || pending != 0) {  // new size, or a use that never folded (an exception)
      alphabet = a;
      sub.assign(size_t(a) * 4, 0);
      total.assign(a, 0);
    } else if (lo < hi) {
      std::fill(total.begin() + lo, total.begin() + hi, 0);
    }
    lo = a;
    hi = 0;
    pending = 0;
  }
  void add(const uint16_t* codes, int64_t n) {
    if (n <= 0) return;
    if (pending + uint64_t(n) >= (uint64_t(1) << 32)) fold();
    pending += uint64_t(n);
    uint16_t mn = codes[0], mx = codes[0];
    for (int64_t i = 1; i < n; ++i) {  // vectorizes; the counting below does not
      mn = std::min(mn, codes[i]);
      mx = std::max(mx, codes[i]);
    }
    lo = std::min<uint32_t>(lo, mn);
    hi = std::max<uint32_t>(hi, uint32_t(mx) + 1);
    uint32_t* s0 = sub.data();
    uint32_t* s1 = s0 + alphabet;
    uint32_t* s2 = s1 + alphabet;
    uint32_t* s3 = s2 + alphabet;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      ++s0[codes[i]];
      ++s1[codes[i + 1]];
      ++s2[codes[i + 2]];
      ++s3[codes[i + 3]];
    }
    for (; i < n; ++i) ++s0[codes[i]];
  }
  void fold() {
    for (uint32_t a = lo; a < hi; ++a) {
      total[a] += uint64_t(sub[a]) + sub[alphabet + a] + sub[2 * size_t(alphabet) + a] + sub[3 * size_t(alphabet) + a];
      sub[a] = sub[alphabet + a] = sub[2 * size_t(alphabet) + a] = sub[3 * size_t(alphabet) + a] = 0;
    }
    pending = 0;
  }
};

// Outlier deltas are rare; reading them stays out of the hot loop.
[[gnu::noinline]] int64_t next_outlier(ByteSource& outliers, uint32_t& seen, uint32_t n_outliers) {
  if (++seen > n_outliers) throw StreamError("corrupted ebzip stream (more outliers than stored)");
  return unzigzag(get_varint(outliers));
}

template <class T, int D, class G>
void reconstruct_block(const uint16_t* codes, const PaddedGrid& pg, const Quantizer& qz_ref, int64_t radius,
                       G* s, ByteSource& outliers, uint32_t n_outliers, typename T::storage* out) {
  uint32_t seen = 0;
  lorenzo_decode_block<T, D, G>(codes, pg, qz_ref, radius, s, [&] { return next_outlier(outliers, seen, n_outliers); }, out);
  if (seen != n_outliers || outliers.pos != outliers.len)
    throw StreamError("corrupted ebzip stream (outlier count mismatch)");
}

template <class Fn>
void dispatch_dims(int ndim, Fn&& fn) {
  switch (ndim) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    default: throw StreamError("corrupted ebzip stream (block dims)");
  }
}

// ---------------------------------------------------------------- payloads

// A predictive chunk: Huffman lanes of its codes plus its BlockSide (see
// format.hpp). Lorenzo chunks list the index of each exact value; the
// interpolation predictor visits points in a fixed order, so its exact
// values need no index.
struct PayloadWriter {
  std::vector<uint8_t> bits;

  // Returns the payload; total Huffman bits go to *huffman_bits.
  std::vector<uint8_t> write(const uint16_t* codes, uint64_t count, const CanonicalCode& cc, const BlockSide& sd,
                             bool with_index, uint64_t* huffman_bits) {
    const size_t lane_room = size_t(count) * kMaxCodeLen / 8 + 8;
    bits.resize(lane_room * kHuffmanLanes);
    uint64_t nbits[kHuffmanLanes], nbytes[kHuffmanLanes];
    for (int lane = 0; lane < kHuffmanLanes; ++lane) {
      BitWriter bw(bits.data() + lane * lane_room);
      uint64_t total = 0;
      for (uint64_t i = lane_begin(count, lane); i < lane_begin(count, lane + 1); ++i) {
        const auto e = cc.enc[codes[i]];
        bw.put(e.code, int(e.len));
        total += e.len;
      }
      nbits[lane] = total;
      nbytes[lane] = bw.finish();
    }
    *huffman_bits = nbits[0] + nbits[1];
    const uint8_t* lane[kHuffmanLanes] = {bits.data(), bits.data() + lane_room};
    SideView sv;
    sv.n_outliers = sd.n_outliers;
    sv.outliers = sd.outliers.data();
    sv.outlier_bytes = sd.outliers.size();
    sv.n_exact = sd.exact_count;
    sv.exact_index = with_index ? sd.exact_index.data() : nullptr;
    sv.exact_bytes = sd.exact_bytes.data();
    sv.exact_nbytes = sd.exact_bytes.size();
    return payload_bytes(nbits, lane, nbytes, sv);
  }
};

}  // namespace

std::vector<uint8_t> parts::payload_bytes(const uint64_t nbits[kHuffmanLanes], const uint8_t* const lane[kHuffmanLanes],
                                          const uint64_t lane_bytes[kHuffmanLanes], const SideView& sd) {
  std::vector<uint8_t> raw;
  raw.reserve(32 + lane_bytes[0] + lane_bytes[1] + sd.outlier_bytes + (sd.exact_index ? sd.n_exact * 4 : 0) +
              sd.exact_nbytes);
  ByteSink s{raw};
  for (int l = 0; l < kHuffmanLanes; ++l) s.put<uint64_t>(nbits[l]);
  // kMaxBlockElems keeps these within 32 bits; a future change must not wrap them silently
  if (sd.outlier_bytes > UINT32_MAX) throw std::length_error("ebzip chunk too large for its 32-bit counts");
  s.put<uint32_t>(sd.n_outliers);
  s.put<uint32_t>(uint32_t(sd.outlier_bytes));
  s.put<uint32_t>(sd.n_exact);
  for (int l = 0; l < kHuffmanLanes; ++l) s.bytes(lane[l], lane_bytes[l]);
  s.bytes(sd.outliers, sd.outlier_bytes);
  if (sd.exact_index)
    for (uint32_t e = 0; e < sd.n_exact; ++e) s.put<uint32_t>(sd.exact_index[e]);
  s.bytes(sd.exact_bytes, sd.exact_nbytes);
  return raw;
}

parts::PayloadView parts::parse_payload(const uint8_t* p, uint64_t len, uint64_t count, int dsize, bool with_index) {
  ByteSource src(p, len, "chunk");
  PayloadView v;
  for (auto& b : v.nbits) b = src.get<uint64_t>();
  v.n_outliers = src.get<uint32_t>();
  v.outlier_bytes = src.get<uint32_t>();
  v.n_exact = src.get<uint32_t>();
  // Every Huffman code is 1..kMaxCodeLen bits, so each lane's bit count is
  // bounded both ways by its symbol count: a forged chunk claiming many
  // symbols in few bits fails here, not after decoding them all.
  const uint64_t mid = lane_begin(count, 1);
  if (v.n_outliers > count || v.n_exact > count || v.nbits[0] > mid * kMaxCodeLen ||
      v.nbits[1] > (count - mid) * kMaxCodeLen || v.nbits[0] < mid || v.nbits[1] < count - mid)
    throw StreamError("corrupted ebzip stream (chunk counts)");
  for (int l = 0; l < kHuffmanLanes; ++l) v.lane[l] = src.take((v.nbits[l] + 7) / 8);
  v.outliers = src.take(v.outlier_bytes);
  v.exact_index = with_index ? src.take(uint64_t(v.n_exact) * 4) : nullptr;
  v.exact_vals = src.take(uint64_t(v.n_exact) * dsize);
  if (src.pos != src.len) throw StreamError("corrupted ebzip stream (chunk length)");
  return v;
}

namespace {

struct Payload {
  ByteSource outliers{nullptr, 0, "outliers"};
  uint32_t n_outliers = 0, n_exact = 0;
  const uint8_t* exact_index = nullptr;  // Lorenzo only
  const uint8_t* exact_vals = nullptr;
};

// Parses a chunk payload and Huffman-decodes its `count` codes into `codes`
// (sized here, only once the payload's lengths have been checked).
Payload read_payload(const uint8_t* p, uint64_t len, uint64_t count, int dsize, bool with_index,
                     const HuffmanDecoder& dec, std::vector<uint16_t>& code_buf) {
  const PayloadView v = parse_payload(p, len, count, dsize, with_index);
  const uint64_t* nbits = v.nbits;
  Payload pl;
  pl.n_outliers = v.n_outliers;
  pl.n_exact = v.n_exact;
  pl.outliers = ByteSource(v.outliers, v.outlier_bytes, "outliers");
  pl.exact_index = v.exact_index;
  pl.exact_vals = v.exact_vals;
  code_buf.resize(count);  // only now that parse_payload has checked the lengths
  uint16_t* codes = code_buf.data();
  static_assert(kHuffmanLanes == 2, "decoder interleaves exactly two lanes");
  BitReader br0(v.lane[0], (nbits[0] + 7) / 8), br1(v.lane[1], (nbits[1] + 7) / 8);
  const uint64_t mid = lane_begin(count, 1);
  if (!dec.decode_two_lanes(br0, codes, mid, br1, codes + mid, count - mid))
    throw StreamError("corrupted ebzip stream (invalid Huffman code)");
  if (br0.bits_consumed() != nbits[0] || br1.bits_consumed() != nbits[1])
    throw StreamError("corrupted ebzip stream (Huffman length mismatch)");
  return pl;
}

struct Encoded {
  std::vector<uint8_t> codebook;  // stored (zstd) codebook section payload
  std::vector<Chunk> chunks;
  double sse = 0;  // sum of the blocks' squared errors (predictors that track it)
};

// ---------------------------------------------------------------- predictors
//
// A predictor turns block b into codes + BlockSide (quantize) and back
// (reconstruct). encode_predictive / decode_predictive do the rest: the
// global histogram and codebook, Huffman lanes, zstd, chunk assembly.

template <class T>
struct LorenzoPredictor {
  using S = typename T::storage;
  const S* x;  // compress input, or
  S* out;      // decompress output
  BlockGrid grid;
  Quantizer qz;
  int64_t radius;
  uint8_t grid_bits;
  static constexpr bool kWithIndex = true;
  struct State { std::vector<int64_t> scratch; };

  int64_t n_blocks() const { return grid.n_blocks; }
  uint64_t block_count(int64_t b) const { return uint64_t(grid.block(b).count); }

  template <class Fn>
  void with_block(int64_t b, State& st, Fn&& fn) const {
    const auto blk = grid.block(b);
    const PaddedGrid pg(blk);
    if (st.scratch.size() < size_t(pg.size)) st.scratch.resize(size_t(pg.size));
    dispatch_grid(grid_bits, [&](auto g) {
      using G = decltype(g);
      dispatch_dims(pg.ndim, [&](auto D) { fn(blk, pg, reinterpret_cast<G*>(st.scratch.data()), D); });
    });
  }
  void quantize(int64_t b, State& st, uint16_t* codes, BlockSide& side) const {
    with_block(b, st, [&](const BlockGrid::Block& blk, const PaddedGrid& pg, auto* scratch, auto D) {
      quantize_block<T, decltype(D)::value>(x + blk.start, pg, qz, radius, scratch, codes, side);
    });
  }
  void reconstruct(int64_t b, State& st, const uint16_t* codes, Payload& pl) const {
    const int dsize = dtype_size(T::code);
    with_block(b, st, [&](const BlockGrid::Block& blk, const PaddedGrid& pg, auto* scratch, auto D) {
      S* o = out + blk.start;
      reconstruct_block<T, decltype(D)::value>(codes, pg, qz, radius, scratch, pl.outliers, pl.n_outliers, o);
      for (uint32_t e = 0; e < pl.n_exact; ++e) {
        uint32_t idx;
        memcpy(&idx, pl.exact_index + 4 * uint64_t(e), 4);
        if (idx >= uint64_t(blk.count)) throw StreamError("corrupted ebzip stream (exact value index)");
        memcpy(o + idx, pl.exact_vals + uint64_t(e) * dsize, size_t(dsize));
      }
    });
  }
};

// Interpolation tiles hold this many times block_elems: fewer tile faces
// (where points must be extrapolated) measured +2-3% ratio going from 2^18
// to 2^20 elements, while Lorenzo slabs did best at 2^18.
constexpr int64_t kInterpTileFactor = 4;
// ... but never so large that an array of n elements gets fewer than about
// four tiles while block_elems would give it more: tiles are the unit of
// parallel work.
int64_t interp_tile_budget(uint64_t block_elems, uint64_t n) {
  const int64_t big = std::min<int64_t>(kInterpTileFactor * int64_t(block_elems), int64_t(kMaxBlockElems));
  return std::min<int64_t>(big, std::max<int64_t>(int64_t(block_elems), int64_t(n / 4)));
}

template <class T>
struct InterpPredictor {
  using S = typename T::storage;
  const S* x;
  S* out;
  TileGrid grid;
  Quantizer qz;  // the user's bound: every value is checked against it
  InterpConfig cfg;
  int64_t radius;
  static constexpr bool kWithIndex = false;
  InterpLevels lv;
  bool track_error = false;  // sum squared errors into BlockSide::sse ("auto" sampling)

  InterpPredictor(const S* x_, S* out_, const TileGrid& g, double eb, const InterpConfig& c, int64_t r)
      : x(x_), out(out_), grid(g), qz(Quantizer::make<T>(eb)), cfg(c), radius(r), lv(InterpLevels::make(eb, c)) {}

  using B = std::conditional_t<sizeof(S) == 8, double, float>;  // see interp_predict
  struct State { std::vector<S> tile; std::vector<B> buf; };

  int64_t n_blocks() const { return grid.n_blocks; }
  uint64_t block_count(int64_t b) const { return uint64_t(grid.block(b).size); }

  // Calls row(global_offset, tile_offset, length) for each row of tile t.
  template <class RowFn>
  void for_rows(const TileGrid::Tile& t, RowFn&& row) const {
    int64_t k = 0;
    for (int64_t i0 = 0; i0 < t.ext[0]; ++i0)
      for (int64_t i1 = 0; i1 < t.ext[1]; ++i1)
        for (int64_t i2 = 0; i2 < t.ext[2]; ++i2) {
          const int64_t g = (((t.origin[0] + i0) * grid.n[1] + t.origin[1] + i1) * grid.n[2] + t.origin[2] + i2) *
                                grid.n[3] + t.origin[3];
          row(g, k, t.ext[3]);
          k += t.ext[3];
        }
  }

  void quantize(int64_t b, State& st, uint16_t* codes, BlockSide& side) const {
    const auto t = grid.block(b);
    st.tile.resize(size_t(t.size));
    st.buf.resize(size_t(t.size));
    for_rows(t, [&](int64_t g, int64_t k, int64_t len) { memcpy(&st.tile[size_t(k)], x + g, size_t(len) * sizeof(S)); });
    const S* xt = st.tile.data();
    uint64_t next = 0;
    const double lim = interp_code_limit(cfg, radius);
    const bool with_fill = cfg.fill != kNoFill;
    interp_traverse(st.buf.data(), t.ext, cfg, [&](int64_t i, double pred, int level) -> double {
      uint16_t& code = codes[next++];
      const double v = interp_encode<T>(xt[i], pred, lv, level, lim, qz, radius, cfg, code);
      if (code == 0) {
        ++side.exact_count;
        const auto* p = reinterpret_cast<const uint8_t*>(xt + i);
        side.exact_bytes.insert(side.exact_bytes.end(), p, p + sizeof(S));
      } else if (track_error && !(with_fill && code == kFillSymbol)) {  // fill points come back exactly
        const double xv = T::to_double(xt[i]);
        side.sse += (xv - v) * (xv - v);
      }
      return v;
    });
  }

  void reconstruct(int64_t b, State& st, const uint16_t* codes, Payload& pl) const {
    const auto t = grid.block(b);
    st.tile.resize(size_t(t.size));
    st.buf.resize(size_t(t.size));
    S* ot = st.tile.data();
    uint64_t next = 0;
    uint32_t exact = 0;
    interp_traverse(st.buf.data(), t.ext, cfg, [&](int64_t i, double pred, int level) -> double {
      const uint32_t sym = codes[next++];
      if (sym) return interp_decode<T>(sym, pred, lv, level, radius, cfg, ot + i);
      if (exact == pl.n_exact) throw StreamError("corrupted ebzip stream (more exact values than stored)");
      memcpy(ot + i, pl.exact_vals + uint64_t(exact++) * sizeof(S), sizeof(S));
      return interp_exact_stand_in(T::to_double(ot[i]), pred);
    });
    if (exact != pl.n_exact) throw StreamError("corrupted ebzip stream (exact value count)");
    for_rows(t, [&](int64_t g, int64_t k, int64_t len) { memcpy(out + g, ot + k, size_t(len) * sizeof(S)); });
  }
};

// Quantizes the blocks, builds the stream's codebook, encodes the chunks.
template <class Predictor>
Encoded encode_predictive(const Predictor& pred, uint32_t alphabet, int threads) {
  const int64_t nb = pred.n_blocks();
  std::vector<uint64_t> offset(size_t(nb) + 1, 0);
  for (int64_t i = 0; i < nb; ++i) offset[size_t(i) + 1] = offset[size_t(i)] + pred.block_count(i);
  std::vector<uint16_t> codes(offset.back());
  std::vector<BlockSide> side(static_cast<size_t>(nb));
  std::vector<uint64_t> hist(alphabet, 0);
  std::mutex hist_mutex;

  struct QuantizeBody {
    const Predictor& pred; const std::vector<uint64_t>& offset; uint16_t* codes;
    std::vector<BlockSide>& side; uint32_t alphabet; std::vector<uint64_t>& hist; std::mutex& hist_mutex;
    struct State { typename Predictor::State pst; Histogram h; };
    State& make_thread_state() {
      auto& st = thread_cached<State>();
      st.h.reset(alphabet);
      return st;
    }
    void thread_done(State& st) {
      st.h.fold();
      std::lock_guard<std::mutex> lock(hist_mutex);
      for (uint32_t a = st.h.lo; a < st.h.hi; ++a) hist[a] += st.h.total[a];
    }
    void operator()(int64_t i, State& st) {
      uint16_t* c = codes + offset[size_t(i)];
      pred.quantize(i, st.pst, c, side[size_t(i)]);
      st.h.add(c, int64_t(offset[size_t(i) + 1] - offset[size_t(i)]));
    }
  } qbody{pred, offset, codes.data(), side, alphabet, hist, hist_mutex};
  parallel_blocks(nb, threads, qbody);

  const Codebook cb = build_codebook(hist);
  const CanonicalCode cc = make_canonical(cb, alphabet);
  Encoded enc;
  for (const auto& sd : side) enc.sse += sd.sse;
  enc.codebook = codebook_section(cb);
  enc.chunks.resize(size_t(nb));

  struct EncodeBody {
    const std::vector<uint64_t>& offset; const uint16_t* codes; const CanonicalCode& cc;
    std::vector<BlockSide>& side; std::vector<Chunk>& chunks;
    struct State { PayloadWriter w; ZstdCtx z; };
    State& make_thread_state() { return thread_cached<State>(); }
    void thread_done(State&) {}
    void operator()(int64_t b, State& st) {
      const uint64_t count = offset[size_t(b) + 1] - offset[size_t(b)];
      uint64_t bits;
      std::vector<uint8_t> raw =
          st.w.write(codes + offset[size_t(b)], count, cc, side[size_t(b)], Predictor::kWithIndex, &bits);
      side[size_t(b)] = BlockSide{};  // free early
      store_chunk(chunks[size_t(b)], raw, st.z, zstd_may_pay(bits, count));
    }
  } ebody{offset, codes.data(), cc, side, enc.chunks};
  parallel_blocks(nb, threads, ebody);
  return enc;
}

std::vector<Chunk> encode_exact(const uint8_t* x, int dsize, const BlockGrid& grid, int threads) {
  std::vector<Chunk> chunks(size_t(grid.n_blocks));
  struct Body {
    const uint8_t* x; int dsize; const BlockGrid& grid; std::vector<Chunk>& chunks;
    ZstdCtx& make_thread_state() { return thread_cached<ZstdCtx>(); }
    void thread_done(ZstdCtx&) {}
    void operator()(int64_t b, ZstdCtx& z) {
      const auto blk = grid.block(b);
      std::vector<uint8_t> raw(size_t(blk.count) * dsize);
      shuffle_bytes(x + blk.start * dsize, raw.data(), uint64_t(blk.count), dsize);
      store_chunk(chunks[size_t(b)], raw, z);
    }
  } body{x, dsize, grid, chunks};
  parallel_blocks(grid.n_blocks, threads, body);
  return chunks;
}

// ---------------------------------------------------------------- decompress

// Checks a chunk's CRC and undoes its zstd stage; returns the payload.
std::pair<const uint8_t*, uint64_t> open_chunk(const ChunkRef& ref, std::vector<uint8_t>& raw, ZstdCtx& z,
                                               uint64_t max_size) {
  if (crc32(ref.p, ref.len) != ref.crc) throw StreamError("ebzip chunk checksum mismatch (corrupted stream)");
  if (!(ref.flags & kChunkZstd)) return {ref.p, ref.len};
  z.decompress(ref.p, ref.len, raw, max_size);
  return {raw.data(), raw.size()};
}

template <class Predictor>
void decode_predictive(const Predictor& pred, int dsize, const CanonicalCode& cc, const std::vector<ChunkRef>& refs,
                       int threads) {
  struct Body {
    const Predictor& pred; int dsize; const CanonicalCode& cc; const std::vector<ChunkRef>& refs;
    struct State { std::vector<uint8_t> raw; std::vector<uint16_t> codes; typename Predictor::State pst; ZstdCtx z; };
    State& make_thread_state() { return thread_cached<State>(); }
    void thread_done(State&) {}
    void operator()(int64_t b, State& st) {
      const uint64_t count = pred.block_count(b);
      const auto payload = open_chunk(refs[size_t(b)], st.raw, st.z, max_payload_size(count, dsize));
      Payload pl = read_payload(payload.first, payload.second, count, dsize, Predictor::kWithIndex, *cc.dec, st.codes);
      pred.reconstruct(b, st.pst, st.codes.data(), pl);
    }
  } body{pred, dsize, cc, refs};
  parallel_blocks(pred.n_blocks(), threads, body);
}

void decode_exact(const Header& h, const BlockGrid& grid, const std::vector<ChunkRef>& refs, uint8_t* out, int threads) {
  struct Body {
    const Header& h; const BlockGrid& grid; const std::vector<ChunkRef>& refs; uint8_t* out;
    struct State { std::vector<uint8_t> raw; ZstdCtx z; };
    State& make_thread_state() { return thread_cached<State>(); }
    void thread_done(State&) {}
    void operator()(int64_t b, State& st) {
      const auto blk = grid.block(b);
      const int dsize = dtype_size(h.dtype);
      const uint64_t nbytes = uint64_t(blk.count) * dsize;
      const auto data = open_chunk(refs[size_t(b)], st.raw, st.z, nbytes);
      if (data.second != nbytes) throw StreamError("corrupted ebzip stream (exact chunk length)");
      unshuffle_bytes(data.first, out + uint64_t(blk.start) * dsize, uint64_t(blk.count), dsize);
    }
  } body{h, grid, refs, out};
  parallel_blocks(grid.n_blocks, threads, body);
}

}  // namespace

std::vector<uint8_t> parts::codebook_section(const Codebook& cb) {
  std::vector<uint8_t> raw;
  ByteSink s{raw};
  s.put<uint32_t>(cb.first_symbol);
  s.put<uint32_t>(uint32_t(cb.lengths.size()));
  s.bytes(cb.lengths.data(), cb.lengths.size());
  return zstd_compress_whole(raw);
}

std::vector<Chunk> parts::store_chunks(std::vector<std::vector<uint8_t>>& raw, const std::vector<uint8_t>& try_zstd,
                                       int threads) {
  std::vector<Chunk> chunks(raw.size());
  struct Body {
    std::vector<std::vector<uint8_t>>& raw; const std::vector<uint8_t>& try_zstd; std::vector<Chunk>& chunks;
    ZstdCtx& make_thread_state() { return thread_cached<ZstdCtx>(); }
    void thread_done(ZstdCtx&) {}
    void operator()(int64_t b, ZstdCtx& z) { store_chunk(chunks[size_t(b)], raw[size_t(b)], z, try_zstd[size_t(b)] != 0); }
  } body{raw, try_zstd, chunks};
  parallel_blocks(int64_t(raw.size()), threads, body);
  return chunks;
}

std::pair<const uint8_t*, uint64_t> parts::open_chunk(const ChunkRef& ref, std::vector<uint8_t>& raw,
                                                      uint64_t max_size) {
  return cpu::open_chunk(ref, raw, thread_cached<ZstdCtx>(), max_size);
}

// ---------------------------------------------------------------- public

Header parts::plan_header(const std::vector<uint64_t>& shape, const CompressParams& p) {
  Header h;
  h.dtype = p.dtype;
  h.mode = p.mode;
  h.eb_param = p.eb_param;
  h.eb_abs = p.eb_abs;
  h.block_elems = p.block_elems;
  h.shape = shape;
  const uint64_t n = h.num_elements();
  h.pred = n == 0 ? PredShape{} : prediction_shape(shape, p.pred_dims);
  // A zero bound (or a constant array in rel mode) is served exactly;
  // an empty array has nothing to quantize.
  if (!(p.eb_abs > 0) || n == 0) {
    h.pipeline = Pipeline::exact;
  } else {
    h.pipeline = p.predictor == Predictor::interp ? Pipeline::interp : Pipeline::lorenzo;
  }
  // Small arrays get a smaller alphabet: the per-call tables scale with it,
  // and with few elements the rare large deltas cost little as outliers.
  uint32_t radius = p.radius;
  while (radius > 512 && uint64_t(radius) / 2 >= n) radius /= 2;
  h.radius = h.pipeline != Pipeline::exact ? radius : 0;
  h.grid_bits = h.pipeline == Pipeline::lorenzo ? 32 : 0;  // widened below if the data needs it
  if (h.pipeline == Pipeline::interp) {
    h.interp = p.interp;
    TileGrid::choose_tile(h.pred, interp_tile_budget(h.block_elems, n), h.tile);
  }
  return h;
}

uint8_t parts::lorenzo_grid_bits(const Range& r, double eb_abs) {
  const double max_abs = std::max(std::fabs(r.min), std::fabs(r.max));
  return r.n_finite > 0 && !(max_abs / (2.0 * eb_abs) < kInt32GridLimit - 1) ? 64 : 32;
}

namespace {

// Compresses with the predictor p names (automatic is taken as Lorenzo).
std::vector<uint8_t> compress_fixed(const void* data, const std::vector<uint64_t>& shape, const CompressParams& p) {
  Header h = plan_header(shape, p);
  const uint64_t n = h.num_elements();
  Encoded enc;
  if (h.pipeline == Pipeline::exact) {
    if (n > 0) {
      const BlockGrid grid = BlockGrid::make(h.pred, int64_t(h.block_elems));
      enc.chunks = encode_exact(static_cast<const uint8_t*>(data), dtype_size(h.dtype), grid, p.threads);
    }
  } else {
    if (h.pipeline == Pipeline::lorenzo) h.grid_bits = lorenzo_grid_bits(finite_range(data, n, h.dtype, p.threads), h.eb_abs);
    dispatch_dtype(h.dtype, [&](auto t) {
      using T = decltype(t);
      const auto* x = static_cast<const typename T::storage*>(data);
      if (h.pipeline == Pipeline::lorenzo) {
        const LorenzoPredictor<T> pr{x, nullptr, BlockGrid::make(h.pred, int64_t(h.block_elems)),
                                     Quantizer::make<T>(h.eb_abs), int64_t(h.radius), h.grid_bits};
        enc = encode_predictive(pr, 2 * h.radius, p.threads);
      } else {
        const InterpPredictor<T> pr(x, nullptr, TileGrid::make(h.pred, h.tile), h.eb_abs, h.interp, int64_t(h.radius));
        enc = encode_predictive(pr, 2 * h.radius, p.threads);
      }
    });
  }

  return write_stream(h, enc.codebook, enc.chunks);
}

}  // namespace

std::vector<uint8_t> parts::write_stream(const Header& h, const std::vector<uint8_t>& codebook,
                                         std::vector<Chunk>& chunks) {
  std::vector<uint8_t> out;
  write_header(out, h);
  ByteSink s{out};
  if (h.pipeline != Pipeline::exact) {
    s.put<uint32_t>(uint32_t(codebook.size()));
    s.put<uint32_t>(crc32(codebook.data(), codebook.size()));
    s.bytes(codebook.data(), codebook.size());
  }
  const size_t table_begin = out.size();
  s.put<uint64_t>(uint64_t(chunks.size()));
  uint64_t payload = 0;
  for (const auto& c : chunks) {
    s.put<uint64_t>(uint64_t(c.bytes.size()));
    s.put<uint32_t>(c.flags);
    s.put<uint32_t>(crc32(c.bytes.data(), c.bytes.size()));
    payload += c.bytes.size();
  }
  s.put<uint32_t>(crc32(out.data() + table_begin, out.size() - table_begin));
  out.reserve(out.size() + payload);
  // Free each chunk once copied: for incompressible data (eb=0, noise) the
  // chunks are as big as the input, and holding them all beside the stream
  // would double the peak memory.
  for (auto& c : chunks) {
    s.bytes(c.bytes.data(), c.bytes.size());
    std::vector<uint8_t>().swap(c.bytes);
  }
  return out;
}

namespace {

// Level-wise bounds "auto" gives interpolation (QoZ): coarse levels, whose
// points every finer prediction leans on, get eb / 1.25^(level-1), at most
// eb / 2 (SZ3's default). In a model of 7 of our fields at 9 bounds, against
// uniform bounds at equal bits/value: mean -0.04 to +0.6 dB per field, and
// +6.8 dB on a field of plateaus (cmip6_siconc at rel 1e-3).
constexpr double kAutoAlpha = 1.25, kAutoBeta = 2.0;

// The predictors "auto" tries first (each won on some of our real fields at
// some bound); the best interpolation among them is then tried with its axis
// order reversed, with stronger level bounds, and cubic <-> linear
// (see compress_auto).
std::vector<CompressParams> candidates(const CompressParams& p, const std::vector<uint64_t>& shape) {
  auto make = [&](Predictor pred, bool cubic, int dims) {
    CompressParams c = p;
    c.predictor = pred;
    c.interp.stencil = cubic ? kCubicQuadraticEdges : kLinear;
    c.interp.alpha = kAutoAlpha;
    c.interp.beta = kAutoBeta;
    c.pred_dims = dims;
    return c;
  };
  std::vector<CompressParams> c = {make(Predictor::lorenzo, false, 4), make(Predictor::interp, true, 4),
                                   make(Predictor::interp, false, 4)};
  if (prediction_shape(shape).ndim > 2) {
    c.push_back(make(Predictor::lorenzo, false, 2));
    c.push_back(make(Predictor::interp, false, 2));
    c.push_back(make(Predictor::interp, true, 2));
  }
  return c;
}

constexpr uint64_t kWholeTrialElems = uint64_t(1) << 15;  // below this, "auto" tries every predictor on it all
constexpr uint64_t kSampleFraction = 16;                   // otherwise each candidate encodes ~1/16 of it

// What encoding a sample with one candidate tells "auto".
struct Estimate {
  double bytes = 0;  // the whole stream's estimated size
  double mse = 0;    // mean squared error over the sampled elements
};

// Squared error of Lorenzo's pre-quantization (x -> q * 2eb) over x[0, count):
// Lorenzo's reconstruction is exactly that, whatever the deltas cost.
template <class T>
double prequant_sse(const typename T::storage* x, int64_t count, const Quantizer& qz) {
  double sse = 0;
  for (int64_t i = 0; i < count; ++i) {
    int64_t q;
    if (qz.quantize<T>(x[i], q)) {  // values stored exactly have no error
      const double d = T::to_double(x[i]) - T::to_double(qz.reconstruct<T>(q));
      sse += d * d;
    }
  }
  return sse;
}

// The sample "auto" estimates every candidate on: a few boxes of the array
// (sub-arrays of its 4-axis prediction shape, each copied out contiguously),
// together about 1/kSampleFraction of it, spread along the diagonal with a
// different offset per axis. Every candidate, whatever its prediction axes
// or tiling, encodes exactly these boxes: when candidates sampled their own
// blocks or tiles, 2-axis and all-axis tilings saw different regions and
// the region, not the predictor, decided between them (cmip3_tos).
struct SampleBoxes {
  std::vector<uint64_t> array_shape;       // the array's
  std::vector<uint64_t> box_shape;         // every box's, as an array shape
  uint64_t box_elems = 0;                  // elements in one box
  std::vector<std::vector<uint8_t>> data;  // each box's values, C order
  uint64_t elems() const { return box_elems * data.size(); }
};

// Four boxes of at least 2^14 elements, together at least 2^16 (or the whole
// array): on our 21 fields, four boxes of 2^14 chose as well as four of 2^15
// (RD 17/21 both) at half the estimation time; two boxes of 2^15 chose
// worse (13/21), so the number of places sampled matters more than their size.
constexpr uint64_t kMinBoxElems = uint64_t(1) << 14;
constexpr int kMaxBoxes = 4;
constexpr uint64_t kMinSampleElems = uint64_t(1) << 16;

SampleBoxes sample_boxes(const void* data, const std::vector<uint64_t>& shape, int dsize) {
  const PredShape ps = prediction_shape(shape);
  uint64_t n = 1;
  for (int k = 0; k < ps.ndim; ++k) n *= uint64_t(ps.n[k]);
  const uint64_t want = std::min(n, std::max<uint64_t>(n / kSampleFraction, kMinSampleElems));
  const int n_boxes = int(std::clamp<uint64_t>(want / kMinBoxElems, 1, kMaxBoxes));
  const double per_box = double(want) / n_boxes;
  // Box extents: the same fraction s of every axis, except that an axis is
  // never cut below 16 (or its length); s is solved again for the others.
  int64_t ext[kMaxPredDims] = {1, 1, 1, 1};
  bool fixed[kMaxPredDims] = {false, false, false, false};
  for (int pass = 0; pass < kMaxPredDims; ++pass) {
    double fixed_prod = 1, free_prod = 1;
    int n_free = 0;
    for (int k = 0; k < ps.ndim; ++k) {
      if (fixed[k]) fixed_prod *= double(ext[k]);
      else { free_prod *= double(ps.n[k]); ++n_free; }
    }
    if (n_free == 0) break;
    const double s = std::min(1.0, std::pow(per_box / fixed_prod / free_prod, 1.0 / n_free));
    bool changed = false;
    for (int k = 0; k < ps.ndim; ++k) {
      if (fixed[k]) continue;
      const int64_t floor_k = std::min<int64_t>(ps.n[k], 16);
      ext[k] = std::clamp<int64_t>(int64_t(std::llround(double(ps.n[k]) * s)), floor_k, ps.n[k]);
      if (ext[k] == floor_k && double(ps.n[k]) * s < double(floor_k)) { fixed[k] = true; changed = true; }
    }
    if (!changed) break;
  }
  SampleBoxes sb;
  sb.array_shape = shape;
  sb.box_shape.assign(ext, ext + std::max(ps.ndim, 1));
  int64_t stride[kMaxPredDims] = {1, 1, 1, 1};
  for (int k = ps.ndim - 2; k >= 0; --k) stride[k] = stride[k + 1] * ps.n[k + 1];
  const int64_t box_elems = ext[0] * ext[1] * ext[2] * ext[3];
  sb.box_elems = uint64_t(box_elems);
  for (int b = 0; b < n_boxes; ++b) {
    int64_t origin[kMaxPredDims] = {0, 0, 0, 0};
    for (int k = 0; k < ps.ndim; ++k) {
      // Box b's centre lies at fraction (b + 1/2) / n_boxes of axis 0 and at
      // that fraction shifted by k * golden ratio (mod 1) of axis k.
      const double f = std::fmod((b + 0.5) / n_boxes + 0.6180339887 * k, 1.0);
      origin[k] = std::clamp<int64_t>(int64_t(f * double(ps.n[k])) - ext[k] / 2, 0, ps.n[k] - ext[k]);
    }
    std::vector<uint8_t> buf(size_t(box_elems) * size_t(dsize));
    const auto* src = static_cast<const uint8_t*>(data);
    uint8_t* dst = buf.data();
    const int last = std::max(ps.ndim - 1, 0);
    const size_t row = size_t(ext[last]) * size_t(dsize);
    int64_t idx[kMaxPredDims] = {0, 0, 0, 0};  // over the box's axes before the last
    for (int64_t r = 0; r < box_elems / ext[last]; ++r) {
      int64_t off = origin[last];
      for (int k = 0; k < last; ++k) off += (origin[k] + idx[k]) * stride[k];
      memcpy(dst, src + size_t(off) * size_t(dsize), row);
      dst += row;
      for (int k = last - 1; k >= 0; --k) {
        if (++idx[k] < ext[k]) break;
        idx[k] = 0;
      }
    }
    sb.data.push_back(std::move(buf));
  }
  return sb;
}

// Several predictors as one: the blocks of each, one predictor after the
// other. "auto" encodes all its sample boxes in one go, with one codebook as
// in the stream (and one codebook to build, not one per box).
template <class P>
struct PredictorSequence {
  std::vector<P> parts;
  std::vector<int64_t> first{0};  // each part's first block, then the total
  static constexpr bool kWithIndex = P::kWithIndex;
  using State = typename P::State;

  void add(const P& p) {
    first.push_back(first.back() + p.n_blocks());
    parts.push_back(p);
  }
  int64_t n_blocks() const { return first.back(); }
  size_t part(int64_t b) const { return size_t(std::upper_bound(first.begin(), first.end(), b) - first.begin() - 1); }
  uint64_t block_count(int64_t b) const {
    const size_t i = part(b);
    return parts[i].block_count(b - first[i]);
  }
  void quantize(int64_t b, State& st, uint16_t* codes, BlockSide& side) const {
    const size_t i = part(b);
    parts[i].quantize(b - first[i], st, codes, side);
  }
};

// Estimated stream size and error of a predictor on an array of n elements
// (value range r), from encoding the sample boxes with it.
template <class T>
Estimate estimate(const SampleBoxes& sb, uint64_t n, const CompressParams& p, const Range& r) {
  uint32_t radius = p.radius;
  while (radius > 512 && uint64_t(radius) / 2 >= n) radius /= 2;
  Encoded e;
  double sse = 0;
  if (p.predictor == Predictor::interp) {
    PredictorSequence<InterpPredictor<T>> boxes;
    for (size_t i = 0; i < sb.data.size(); ++i) {
      const PredShape pred = prediction_shape(sb.box_shape, p.pred_dims);
      int64_t tile[kMaxPredDims];
      TileGrid::choose_tile(pred, interp_tile_budget(p.block_elems, n), tile);
      InterpPredictor<T> pr(reinterpret_cast<const typename T::storage*>(sb.data[i].data()), nullptr,
                            TileGrid::make(pred, tile), p.eb_abs, p.interp, radius);
      pr.track_error = true;
      boxes.add(pr);
    }
    e = encode_predictive(boxes, 2 * radius, p.threads);
    sse = e.sse;
  } else {
    // Lorenzo restarts its prediction at every chunk boundary, so the boxes
    // are cut as the stream's chunks cut the array: the same run along the
    // split axis, single indices before it. Boxes cut by block_elems alone
    // predicted across boundaries the stream does not, and looked cheaper
    // (Gray-Scott, 32 time steps in chunks of 4: 2.9 bits/value estimated,
    // 3.8 written).
    const BlockGrid chunks = BlockGrid::make(prediction_shape(sb.array_shape, p.pred_dims), int64_t(p.block_elems));
    PredictorSequence<LorenzoPredictor<T>> boxes;
    for (size_t i = 0; i < sb.data.size(); ++i) {
      const auto* x = reinterpret_cast<const typename T::storage*>(sb.data[i].data());
      const PredShape box = prediction_shape(sb.box_shape, p.pred_dims);
      int64_t box_block = 1;
      for (int k = 0; k < box.ndim; ++k) box_block *= box.n[k];  // one chunk: the whole box
      if (chunks.n_blocks > 1 && box.ndim == chunks.ndim) {
        box_block = std::min(chunks.seg, box.n[chunks.split_axis]);
        for (int k = chunks.split_axis + 1; k < box.ndim; ++k) box_block *= box.n[k];
      }
      const LorenzoPredictor<T> pr{x, nullptr, BlockGrid::make(box, box_block), Quantizer::make<T>(p.eb_abs),
                                   int64_t(radius), lorenzo_grid_bits(r, p.eb_abs)};
      sse += prequant_sse<T>(x, int64_t(sb.box_elems), pr.qz);
      boxes.add(pr);
    }
    e = encode_predictive(boxes, 2 * radius, p.threads);
  }
  double chunk_bytes = 0;
  for (const auto& c : e.chunks) chunk_bytes += double(c.bytes.size() + 16);
  const double elems = double(std::max<uint64_t>(sb.elems(), 1));
  return Estimate{chunk_bytes * double(n) / elems + double(e.codebook.size()), sse / elems};
}

// Rate-distortion score of an estimate: its PSNR minus 6.02 dB per bit/value
// (what one more bit per value buys a uniform quantizer), so that of two
// candidates the one with the higher PSNR at equal bits/value scores higher.
// The value range is the same for every candidate and left out.
constexpr double kDbPerBit = 6.02;
double rd_score(const Estimate& e, double n, double eb) {
  const double mse = std::max(e.mse, eb * eb * 1e-12);  // lossless samples: finite, and all alike
  return -10.0 * std::log10(mse) - kDbPerBit * (8.0 * e.bytes / n);
}

// The storage bits of a value at least kFillShare of the array holds, judged
// on kFillSamples evenly spaced elements; false when there is none.
constexpr uint64_t kFillSamples = 4096;
constexpr double kFillShare = 0.2;
bool frequent_value(const void* data, uint64_t n, DType dtype, uint64_t& bits) {
  const int dsize = dtype_size(dtype);
  const uint64_t m = std::min(n, kFillSamples);
  std::vector<uint64_t> v(m);
  for (uint64_t i = 0; i < m; ++i) {
    v[i] = 0;
    memcpy(&v[i], static_cast<const uint8_t*>(data) + (i * n / m) * uint64_t(dsize), size_t(dsize));
  }
  std::sort(v.begin(), v.end());
  uint64_t best = 0, run = 0;
  for (uint64_t i = 0; i < m; ++i) {
    run = i > 0 && v[i] == v[i - 1] ? run + 1 : 1;
    if (run > best) { best = run; bits = v[i]; }
  }
  return double(best) >= kFillShare * double(m);
}

// "auto": tiny arrays are compressed with every candidate and the smallest
// stream kept. Larger ones estimate size and error of each candidate on the
// shared sample boxes (side by side, one thread each), then of the best
// interpolation with its axis order reversed, stronger level bounds, the
// other stencil and a fill value, then of the tweaks that helped together,
// and compress once with the candidate of the best rate-distortion score
// (rd_score; see docs/design.md for why not simply the smallest).
std::vector<uint8_t> compress_auto(const void* data, const std::vector<uint64_t>& shape, const CompressParams& p,
                                   uint64_t n) {
  auto cands = candidates(p, shape);
  if (n <= kWholeTrialElems) {
    std::vector<uint8_t> best;
    for (const auto& c : cands) {
      auto s = compress_fixed(data, shape, c);
      if (best.empty() || s.size() < best.size()) best = std::move(s);
    }
    return best;
  }
  const SampleBoxes boxes = sample_boxes(data, shape, int(dtype_size(p.dtype)));
  // Lorenzo's estimate needs a value range only to pick its integer width
  // (32 bits unless values are huge against the bound): the sample's will do,
  // and the array's own is computed only if Lorenzo is chosen (a pass over
  // the array: 6 % of "auto"'s time).
  Range range{INFINITY, -INFINITY, 0};
  for (const auto& box : boxes.data) {
    const Range r = finite_range(box.data(), boxes.box_elems, p.dtype, 1);
    range = Range{std::min(range.min, r.min), std::max(range.max, r.max), range.n_finite + r.n_finite};
  }
  std::vector<Estimate> est;
  auto run = [&](size_t first) {
    est.resize(cands.size());
    std::exception_ptr error;
    const int m = int(cands.size() - first);
    if (m == 1) {  // a lone candidate gets every thread (no nested parallel region)
      dispatch_dtype(p.dtype, [&](auto t) { est[first] = estimate<decltype(t)>(boxes, n, cands[first], range); });
      return;
    }
#pragma omp parallel for num_threads(std::max(1, std::min<int>(p.threads, m))) schedule(dynamic, 1)
    for (int c = 0; c < m; ++c) {
      try {
        CompressParams q = cands[first + size_t(c)];
        q.threads = 1;
        dispatch_dtype(p.dtype, [&](auto t) { est[first + size_t(c)] = estimate<decltype(t)>(boxes, n, q, range); });
      } catch (...) {
#pragma omp critical
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  };
  auto best_of = [&](bool interp_only) {
    size_t best = cands.size();
    double best_score = -INFINITY;
    for (size_t c = 0; c < cands.size(); ++c) {
      if (interp_only && cands[c].predictor != Predictor::interp) continue;
      const double sc = rd_score(est[c], double(n), p.eb_abs);
      if (best == cands.size() || sc > best_score) { best = c; best_score = sc; }
    }
    return best;
  };
  run(0);
  const size_t first_round = cands.size();
  const size_t bi = best_of(true);
  // The second round runs even when Lorenzo leads: a reversed axis order
  // alone moved the Gray-Scott field's interpolation from 3-5 dB behind
  // Lorenzo to 4-5 dB ahead (rel 1e-3, 1e-4).
  if (bi < cands.size() && prediction_shape(shape, cands[bi].pred_dims).ndim > 1) {
    CompressParams rev = cands[bi];
    for (int k = 0; k < 4; ++k) rev.interp.order[k] = uint8_t(3 - k);
    CompressParams strong = cands[bi];
    strong.interp.alpha = 2.0;
    strong.interp.beta = 4.0;
    CompressParams flip = cands[bi];
    flip.interp.stencil = flip.interp.stencil ? kLinear : kCubicQuadraticEdges;
    bool have_flip = false;
    for (const auto& c : cands)
      have_flip |= c.predictor == Predictor::interp && c.pred_dims == flip.pred_dims && c.interp.stencil == flip.interp.stencil;
    const size_t i_rev = cands.size();
    cands.push_back(rev);
    const size_t i_strong = cands.size();
    cands.push_back(strong);
    const size_t i_flip = have_flip ? SIZE_MAX : cands.size();
    if (!have_flip) cands.push_back(flip);
    // A value a fifth of the array holds (a land mask's fill, zero
    // precipitation, an MRI's background): stored as a fill value.
    size_t i_fill = SIZE_MAX;
    uint64_t fill_bits;
    if (frequent_value(data, n, p.dtype, fill_bits)) {
      CompressParams f = cands[bi];
      f.interp.fill = kFillMasked;
      f.interp.fill_bits = fill_bits;
      i_fill = cands.size();
      cands.push_back(f);
    }
    run(first_round);
    // Tweaks that each beat the base interpolation often add up (cmip3_tos:
    // reversed order saves bits, stronger level bounds buy dB): try them together.
    const auto score = [&](size_t c) { return c == SIZE_MAX ? -INFINITY : rd_score(est[c], double(n), p.eb_abs); };
    const double base = score(bi);
    CompressParams both = cands[bi];
    int improved = 0;
    if (score(i_rev) > base) { std::copy(rev.interp.order, rev.interp.order + 4, both.interp.order); ++improved; }
    if (score(i_strong) > base) { both.interp.alpha = strong.interp.alpha; both.interp.beta = strong.interp.beta; ++improved; }
    if (score(i_flip) > base) { both.interp.stencil = flip.interp.stencil; ++improved; }
    if (score(i_fill) > base) {
      both.interp.fill = kFillMasked;
      both.interp.fill_bits = fill_bits;
      ++improved;
    }
    if (improved >= 2) {
      const size_t second_round = cands.size();
      cands.push_back(both);
      run(second_round);
    }
  }
  const size_t best = best_of(false);
  return compress_fixed(data, shape, cands[best]);
}

}  // namespace

uint64_t parts::checked_count(const std::vector<uint64_t>& shape, const CompressParams& p) {
  if (shape.size() > size_t(kMaxNdim)) throw std::invalid_argument("ebzip supports at most 32 dimensions");
  if (!(p.eb_abs >= 0) || std::isinf(p.eb_abs)) throw std::invalid_argument("error bound must be finite and >= 0");
  if (p.radius < 1 || p.radius > 32768) throw std::invalid_argument("radius must be in [1, 32768]");
  if (p.block_elems == 0 || p.block_elems > kMaxBlockElems) throw std::invalid_argument("bad block size");
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<uint8_t> compress(const void* data, const std::vector<uint64_t>& shape, const CompressParams& p) {
  const uint64_t n = checked_count(shape, p);
  if (p.predictor != Predictor::automatic || !(p.eb_abs > 0) || n == 0) return compress_fixed(data, shape, p);
  return compress_auto(data, shape, p, n);
}

// Where everything is in a stream: header, codebook section, chunks. Checks
// the header and table CRCs and that the sections add up to the stream's
// exact length, so a bad stream fails here, before any output is allocated.
Layout parts::parse_layout(const uint8_t* stream, uint64_t len) {
  Layout L;
  ByteSource src(stream, len, "header");
  L.h = read_header(src);
  const uint64_t n = L.h.num_elements();
  if (n > 0)
    L.n_blocks = L.h.pipeline == Pipeline::interp ? TileGrid::make(L.h.pred, L.h.tile).n_blocks
                                                  : BlockGrid::make(L.h.pred, int64_t(L.h.block_elems)).n_blocks;
  if (L.h.pipeline != Pipeline::exact) {
    src.what = "codebook";  // (error messages name the section that is short)
    L.codebook_len = src.get<uint32_t>();
    const uint32_t crc = src.get<uint32_t>();
    L.codebook = src.take(L.codebook_len);
    if (crc32(L.codebook, L.codebook_len) != crc)
      throw StreamError("ebzip codebook checksum mismatch (corrupted stream)");
  }
  src.what = "chunk table";
  const size_t table_begin = src.pos;
  const uint64_t n_chunks = src.get<uint64_t>();
  if (n_chunks != uint64_t(L.n_blocks) || n_chunks > (len - src.pos) / 16)
    throw StreamError("corrupted ebzip stream (chunk count)");
  L.refs.resize(n_chunks);
  for (auto& r : L.refs) {
    r.len = src.get<uint64_t>();
    r.flags = src.get<uint32_t>();
    r.crc = src.get<uint32_t>();
  }
  const uint32_t table_crc = src.get<uint32_t>();
  if (crc32(stream + table_begin, src.pos - 4 - table_begin) != table_crc)
    throw StreamError("ebzip chunk table checksum mismatch (corrupted stream)");
  src.what = "chunk payloads";
  for (auto& r : L.refs) r.p = src.take(r.len);
  if (src.pos != src.len) throw StreamError("ebzip stream has trailing bytes (corrupted or concatenated stream)");
  return L;
}

Codebook parts::read_codebook(const Layout& L) {
  std::vector<uint8_t> raw;
  ZstdCtx z;
  const uint32_t alphabet = 2 * L.h.radius;
  z.decompress(L.codebook, L.codebook_len, raw, 8 + uint64_t(alphabet));
  ByteSource cs(raw.data(), raw.size(), "codebook");
  Codebook cb;
  cb.first_symbol = cs.get<uint32_t>();
  const uint32_t nsym = cs.get<uint32_t>();
  if (nsym > alphabet) throw StreamError("corrupted ebzip codebook (size)");
  const uint8_t* lens = cs.take(nsym);
  cb.lengths.assign(lens, lens + nsym);
  return cb;
}

Header inspect(const uint8_t* stream, uint64_t len) { return parse_layout(stream, len).h; }

void decompress(const uint8_t* stream, uint64_t len, void* out, int threads) {
  const Layout L = parse_layout(stream, len);
  const Header& h = L.h;
  if (h.num_elements() == 0) return;
  if (h.pipeline == Pipeline::exact) {
    decode_exact(h, BlockGrid::make(h.pred, int64_t(h.block_elems)), L.refs, static_cast<uint8_t*>(out), threads);
    return;
  }
  const CanonicalCode cc = make_canonical(read_codebook(L), 2 * h.radius);
  dispatch_dtype(h.dtype, [&](auto t) {
    using T = decltype(t);
    auto* o = static_cast<typename T::storage*>(out);
    if (h.pipeline == Pipeline::lorenzo) {
      const LorenzoPredictor<T> pr{nullptr, o, BlockGrid::make(h.pred, int64_t(h.block_elems)),
                                   Quantizer::make<T>(h.eb_abs), int64_t(h.radius), h.grid_bits};
      decode_predictive(pr, dtype_size(h.dtype), cc, L.refs, threads);
    } else {
      const InterpPredictor<T> pr(nullptr, o, TileGrid::make(h.pred, h.tile), h.eb_abs, h.interp, int64_t(h.radius));
      decode_predictive(pr, dtype_size(h.dtype), cc, L.refs, threads);
    }
  });
}

Range finite_range(const void* data, uint64_t n, DType dtype, int threads) {
  Range r{INFINITY, -INFINITY, 0};
  dispatch_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    const auto* x = static_cast<const typename T::storage*>(data);
    double lo = INFINITY, hi = -INFINITY;
    uint64_t count = 0;
    // Branch-free and "omp simd", so that the min/max reductions vectorize
    // (this pass was 7% of "auto"'s time).
    // One thread per 2^16 elements at most (also caps an absurd `threads`).
    const int team = int(std::clamp<int64_t>(int64_t(n >> 16), 1, std::max(1, threads)));
#pragma omp parallel for simd num_threads(team) reduction(min : lo) \
    reduction(max : hi) reduction(+ : count)
    for (int64_t i = 0; i < int64_t(n); ++i) {
      const double v = T::to_double(x[i]);
      const bool finite = v - v == 0.0;
      lo = std::min(lo, finite ? v : INFINITY);
      hi = std::max(hi, finite ? v : -INFINITY);
      count += finite;
    }
    r = Range{lo, hi, count};
  });
  return r;
}

ErrorStats error_stats(const void* a, const void* b, uint64_t n, DType dtype, double scale, int threads) {
  ErrorStats es{0, 0, 0, 0};
  dispatch_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    using S = typename T::storage;
    const auto* x = static_cast<const S*>(a);
    const auto* y = static_cast<const S*>(b);
    const double inv_scale = scale > 0 && std::isfinite(scale) ? 1.0 / scale : 1.0;
    // Fixed pieces summed in order: the result (and so a PSNR-mode stream)
    // must not depend on the number of threads.
    constexpr int64_t kPiece = 1 << 16;
    const int64_t pieces = int64_t((n + kPiece - 1) / kPiece);
    std::vector<ErrorStats> part(static_cast<size_t>(pieces), ErrorStats{0, 0, 0, 0});
    const int team = int(std::clamp<int64_t>(pieces, 1, std::max(1, threads)));
#pragma omp parallel for num_threads(team) schedule(static)
    for (int64_t pc = 0; pc < pieces; ++pc) {
      ErrorStats& ps = part[size_t(pc)];
      const int64_t end = std::min<int64_t>(int64_t(n), (pc + 1) * kPiece);
      for (int64_t i = pc * kPiece; i < end; ++i) {
        const double u = T::to_double(x[i]);
        if (u - u == 0.0) {
          const double e = std::fabs(u - T::to_double(y[i]));
          ps.max_abs_err = std::max(ps.max_abs_err, e != e ? INFINITY : e);
          const double r = e * inv_scale;
          ps.sum_sq_err += r * r;
          ++ps.n_finite;
        } else if (memcmp(&x[i], &y[i], sizeof(S)) != 0) {
          ++ps.n_nonfinite_mismatch;
        }
      }
    }
    for (const auto& ps : part) {
      es.max_abs_err = std::max(es.max_abs_err, ps.max_abs_err);
      es.sum_sq_err += ps.sum_sq_err;
      es.n_finite += ps.n_finite;
      es.n_nonfinite_mismatch += ps.n_nonfinite_mismatch;
    }
  });
  return es;
}

}  // namespace ebzip::cpu
