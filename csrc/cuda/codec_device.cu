// Device driver: the Lorenzo and interpolation pipelines as per-element,
// per-chunk and per-tile functors over the shared EBZ_HD code
// (csrc/include/ebzip), run through Thrust with an explicit execution policy
// on the caller's stream. Built twice from this one file (see
// codec_device.hpp): nvcc -> CUDA device system, g++ -> OpenMP device system.
//
// Compress, on the device: range of the finite values; Lorenzo: quantization
// into the padded integer grid (one thread per element) and symbols from the
// full stencil (one thread per element); interpolation: tiles gathered
// (one thread per element), then one tile per thread through the shared
// traversal. Then histogram (sort + upper_bound), Huffman lanes (one thread
// per lane: count bits, scan, write with BitWriter), outliers and exact values
// (copy_if, scan, scatter). Then on the host, over compressed bytes only:
// codebook, payload layout, zstd, stream assembly, all through the CPU
// driver's own functions (codec_parts.hpp), so both drivers write the same bytes.
//
// Decompress: the host checks CRCs, undoes zstd and parses each payload
// (compressed bytes); the device Huffman-decodes every chunk (one thread per
// chunk, both lanes), rebuilds each block's grid (one thread per block, the
// CPU's row loop) or each tile (one thread per tile, the CPU's traversal) and
// places the exact values.
#include "codec_device.hpp"

#include <thrust/binary_search.h>
#include <thrust/copy.h>
#include <thrust/count.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/scan.h>
#include <thrust/sort.h>
#include <thrust/transform.h>
#include <thrust/transform_reduce.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "../cpu/codec_parts.hpp"
#include "ebzip/huffman.hpp"
#include "ebzip/padded_grid.hpp"
#include "ebzip/quantizer.hpp"

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
#include <cuda_runtime.h>
#include <thrust/system/cuda/execution_policy.h>
#define EBZ_DEVICE_CUDA 1
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
#include <thrust/system/omp/execution_policy.h>
#define EBZ_DEVICE_CUDA 0
#else
#error "codec_device.cu is built for the CUDA or the OpenMP Thrust device system"
#endif

namespace ebzip::device {
namespace {

using cpu::parts::Chunk;
using Counter = thrust::counting_iterator<int64_t>;

// ---------------------------------------------------------------- memory and launch

#if EBZ_DEVICE_CUDA
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}
#endif

// The caller's stream: every algorithm and copy is ordered on it.
struct Exec {
#if EBZ_DEVICE_CUDA
  cudaStream_t s;
  auto policy() const { return thrust::cuda::par_nosync.on(s); }
  void sync() const { check(cudaStreamSynchronize(s), "cudaStreamSynchronize"); }
#else
  auto policy() const { return thrust::omp::par; }
  void sync() const {}
#endif
  explicit Exec(uintptr_t stream) {
#if EBZ_DEVICE_CUDA
    s = reinterpret_cast<cudaStream_t>(stream);
#else
    (void)stream;
#endif
  }
};

// Stream-ordered device allocation (host memory on the OpenMP system).
template <class U>
struct DeviceBuffer {
  U* p = nullptr;
  size_t n = 0;
  const Exec* ex = nullptr;
  DeviceBuffer(size_t count, const Exec& e) : n(count), ex(&e) {
    if (n == 0) return;
#if EBZ_DEVICE_CUDA
    check(cudaMallocAsync(reinterpret_cast<void**>(&p), n * sizeof(U), e.s), "cudaMallocAsync");
#else
    p = static_cast<U*>(std::malloc(n * sizeof(U)));
    if (!p) throw std::bad_alloc();
#endif
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (!p) return;
#if EBZ_DEVICE_CUDA
    cudaFreeAsync(p, ex->s);
#else
    std::free(p);
#endif
  }
  U* get() const { return p; }
};

// Copies are synchronous for the host side: the host reads (or frees) its
// buffer right after.
void copy_sync(void* dst, const void* src, size_t bytes, bool device_to_host, const Exec& ex) {
  if (!bytes) return;
#if EBZ_DEVICE_CUDA
  check(cudaMemcpyAsync(dst, src, bytes, device_to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice, ex.s),
        device_to_host ? "cudaMemcpyAsync D2H" : "cudaMemcpyAsync H2D");
  ex.sync();
#else
  (void)device_to_host;
  (void)ex;
  std::memcpy(dst, src, bytes);
#endif
}
void to_host(void* dst, const void* src, size_t bytes, const Exec& ex) { copy_sync(dst, src, bytes, true, ex); }
void to_device(void* dst, const void* src, size_t bytes, const Exec& ex) { copy_sync(dst, src, bytes, false, ex); }
template <class U>
std::vector<U> download(const DeviceBuffer<U>& b, size_t count, const Exec& ex) {
  std::vector<U> h(count);
  to_host(h.data(), b.get(), count * sizeof(U), ex);
  return h;
}
template <class U>
void upload(DeviceBuffer<U>& b, const std::vector<U>& h, const Exec& ex) {
  to_device(b.get(), h.data(), h.size() * sizeof(U), ex);
}

// A block of the stream and where its padded grid lives in the scratch buffer.
struct BlockMeta {
  int64_t start, count, poff;
  PaddedGrid pg;
};

std::vector<BlockMeta> block_metas(const BlockGrid& grid, int64_t* padded_total) {
  std::vector<BlockMeta> m(size_t(grid.n_blocks));
  int64_t off = 0;
  for (int64_t b = 0; b < grid.n_blocks; ++b) {
    const auto blk = grid.block(b);
    m[size_t(b)] = BlockMeta{blk.start, blk.count, off, PaddedGrid(blk)};
    off += m[size_t(b)].pg.size;
  }
  *padded_total = off;
  return m;
}

// Calls fn(std::integral_constant<int, D>) for the block's grid dims.
template <class Fn>
EBZ_HD_INLINE auto with_dims(int ndim, Fn&& fn) {
  switch (ndim) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    default: return fn(std::integral_constant<int, 4>{});
  }
}

// ---------------------------------------------------------------- compress functors

struct FiniteRange {
  double lo, hi;
  uint64_t n;
};
template <class T>
struct FiniteOf {
  const typename T::storage* x;
  EBZ_HD FiniteRange operator()(int64_t i) const {
    const double v = T::to_double(x[i]);
    if (v - v == 0.0) return FiniteRange{v, v, 1};
    return FiniteRange{INFINITY, -INFINITY, 0};
  }
};
struct MergeRange {
  EBZ_HD FiniteRange operator()(const FiniteRange& a, const FiniteRange& b) const {
    return FiniteRange{a.lo < b.lo ? a.lo : b.lo, a.hi > b.hi ? a.hi : b.hi, a.n + b.n};
  }
};

// Pre-quantization: q depends on x alone, so every element is independent.
template <class T, class G>
struct QuantizeElement {
  const typename T::storage* x;
  const BlockMeta* meta;
  BlockGrid grid;
  Quantizer qz;
  G* scratch;
  uint8_t* exact;
  EBZ_HD void operator()(int64_t i) const {
    const BlockMeta& m = meta[grid.block_of(i)];
    int64_t q;
    exact[i] = !qz.quantize<T>(x[i], q);
    scratch[m.poff + m.pg.padded_offset(i - m.start)] = G(q);
  }
};

// The Lorenzo delta of element i, from its block's padded grid.
template <class G>
struct DeltaOf {
  const BlockMeta* meta;
  BlockGrid grid;
  const G* scratch;
  EBZ_HD_INLINE int64_t operator()(int64_t i) const {
    const BlockMeta& m = meta[grid.block_of(i)];
    const G* s = scratch + m.poff;
    const int64_t p = m.pg.padded_offset(i - m.start);
    return with_dims(m.pg.ndim, [&](auto D) { return lorenzo_delta<decltype(D)::value, G>(s, m.pg.pstride, p); });
  }
};

template <class G>
struct SymbolElement {
  DeltaOf<G> delta;
  int64_t radius;
  uint16_t* codes;
  EBZ_HD void operator()(int64_t i) const { codes[i] = uint16_t(symbol_of_delta(delta(i), radius)); }
};

// A chunk's symbols are codes[start, start + count): for Lorenzo the block's
// elements, for interpolation the tile's points in visiting order.
struct ChunkSpan {
  int64_t start, count;
};

// Lane l = 2b + k: symbols [lane_begin(count, k), lane_begin(count, k + 1)) of chunk b.
struct LaneRange {
  const ChunkSpan* span;
  EBZ_HD_INLINE void operator()(int64_t l, int64_t& begin, int64_t& end) const {
    const ChunkSpan& m = span[l / kHuffmanLanes];
    const int k = int(l % kHuffmanLanes);
    begin = m.start + int64_t(lane_begin(uint64_t(m.count), k));
    end = m.start + int64_t(lane_begin(uint64_t(m.count), k + 1));
  }
};
struct LaneBits {
  LaneRange range;
  const uint16_t* codes;
  const HuffmanEncoderEntry* enc;
  uint64_t* bits;
  EBZ_HD void operator()(int64_t l) const {
    int64_t b, e;
    range(l, b, e);
    uint64_t total = 0;
    for (int64_t i = b; i < e; ++i) total += enc[codes[i]].len;
    bits[l] = total;
  }
};

struct BitsToBytes {
  EBZ_HD uint64_t operator()(uint64_t bits) const { return (bits + 7) / 8; }
};

// The CPU driver's lane writer, one lane per thread, into its packed place.
struct LaneWrite {
  LaneRange range;
  const uint16_t* codes;
  const HuffmanEncoderEntry* enc;
  const uint64_t* offset;
  uint8_t* out;
  EBZ_HD void operator()(int64_t l) const {
    int64_t b, e;
    range(l, b, e);
    BitWriter bw(out + offset[l]);
    for (int64_t i = b; i < e; ++i) {
      const HuffmanEncoderEntry c = enc[codes[i]];
      bw.put(c.code, int(c.len));
    }
    bw.finish();
  }
};

struct IsZero {
  EBZ_HD bool operator()(uint16_t c) const { return c == 0; }
};
struct IsSet {
  EBZ_HD bool operator()(uint8_t f) const { return f != 0; }
};

template <class G>
struct OutlierSize {
  DeltaOf<G> delta;
  EBZ_HD uint64_t operator()(int64_t i) const { return uint64_t(varint_size(zigzag(delta(i)))); }
};
template <class G>
struct OutlierWrite {
  DeltaOf<G> delta;
  const int64_t* index;
  const uint64_t* offset;
  uint8_t* out;
  EBZ_HD void operator()(int64_t k) const { write_varint(out + offset[k], zigzag(delta(index[k]))); }
};

template <class S>
struct Gather {
  const S* x;
  EBZ_HD S operator()(int64_t i) const { return x[i]; }
};

// Positions in a sorted index list where each block's elements begin (and n).
std::vector<int64_t> per_block_begin(const DeviceBuffer<int64_t>& sorted_index, int64_t count,
                                     const std::vector<BlockMeta>& meta, int64_t n, const Exec& ex) {
  std::vector<int64_t> starts(meta.size() + 1);
  for (size_t b = 0; b < meta.size(); ++b) starts[b] = meta[b].start;
  starts[meta.size()] = n;
  DeviceBuffer<int64_t> d_starts(starts.size(), ex), d_pos(starts.size(), ex);
  upload(d_starts, starts, ex);
  thrust::lower_bound(ex.policy(), sorted_index.get(), sorted_index.get() + count, d_starts.get(),
                      d_starts.get() + starts.size(), d_pos.get());
  return download(d_pos, starts.size(), ex);
}

// ---------------------------------------------------------------- compress


// What each chunk stores beside its Huffman lanes, gathered on the host.
template <class S>
struct HostSides {
  std::vector<uint8_t> outliers;        // all chunks' varints, in chunk order
  std::vector<int64_t> outlier_begin;   // per chunk (+1): first outlier (index into outlier_off)
  std::vector<uint64_t> outlier_off;    // byte offset of each outlier (+1)
  std::vector<S> exact;                 // all chunks' exact values, in chunk order
  std::vector<int64_t> exact_begin;     // per chunk (+1)
  std::vector<uint32_t> exact_index;    // chunk-local indices (Lorenzo), empty for interpolation
};

// From the chunks' symbols on the device to the stream: histogram, codebook
// (host), Huffman lanes (device), payloads, zstd and assembly (host).
template <class S>
std::vector<uint8_t> finish_stream(const Header& h, const std::vector<ChunkSpan>& spans, const uint16_t* codes,
                                   int64_t n_codes, const HostSides<S>& sides, bool with_index, int host_threads,
                                   const Exec& ex) {
  const int64_t nb = int64_t(spans.size());
  const uint32_t alphabet = 2 * h.radius;
  // Histogram: sorted copy of the symbols, then where each symbol's run ends.
  std::vector<uint64_t> hist(alphabet);
  {
    DeviceBuffer<uint16_t> sorted(size_t(n_codes), ex);
    thrust::copy_n(ex.policy(), codes, n_codes, sorted.get());
    thrust::sort(ex.policy(), sorted.get(), sorted.get() + n_codes);
    DeviceBuffer<int64_t> ends(alphabet, ex);
    thrust::upper_bound(ex.policy(), sorted.get(), sorted.get() + n_codes, thrust::counting_iterator<uint32_t>(0),
                        thrust::counting_iterator<uint32_t>(alphabet), ends.get());
    const std::vector<int64_t> e = download(ends, alphabet, ex);
    for (uint32_t a = 0; a < alphabet; ++a) hist[a] = uint64_t(e[a] - (a ? e[a - 1] : 0));
  }
  const cpu::parts::Codebook cb = cpu::parts::build_codebook(hist);
  const cpu::parts::CanonicalCode cc = cpu::parts::make_canonical(cb, alphabet);
  DeviceBuffer<HuffmanEncoderEntry> enc(alphabet, ex);
  upload(enc, cc.enc, ex);

  // Huffman lanes: bits per lane, packed byte offsets, then the bits.
  const int64_t lanes = nb * kHuffmanLanes;
  DeviceBuffer<ChunkSpan> d_spans(spans.size(), ex);
  upload(d_spans, spans, ex);
  const LaneRange range{d_spans.get()};
  DeviceBuffer<uint64_t> lane_bits(size_t(lanes), ex), lane_off(size_t(lanes) + 1, ex);
  thrust::for_each_n(ex.policy(), Counter(0), lanes, LaneBits{range, codes, enc.get(), lane_bits.get()});
  thrust::fill_n(ex.policy(), lane_off.get() + lanes, 1, uint64_t(0));
  thrust::transform(ex.policy(), lane_bits.get(), lane_bits.get() + lanes, lane_off.get(), BitsToBytes{});
  thrust::exclusive_scan(ex.policy(), lane_off.get(), lane_off.get() + lanes + 1, lane_off.get());
  const std::vector<uint64_t> h_lane_bits = download(lane_bits, size_t(lanes), ex);
  const std::vector<uint64_t> h_lane_off = download(lane_off, size_t(lanes) + 1, ex);
  DeviceBuffer<uint8_t> lane_bytes(h_lane_off.back(), ex);
  thrust::for_each_n(ex.policy(), Counter(0), lanes, LaneWrite{range, codes, enc.get(), lane_off.get(), lane_bytes.get()});
  const std::vector<uint8_t> h_lanes = download(lane_bytes, h_lane_off.back(), ex);

  // Host: payloads from the compressed pieces (the CPU driver's layout), zstd, the stream.
  std::vector<std::vector<uint8_t>> raw(static_cast<size_t>(nb));
  std::vector<uint8_t> try_zstd(static_cast<size_t>(nb));
  for (int64_t b = 0; b < nb; ++b) {
    const size_t l0 = size_t(b) * kHuffmanLanes;
    const uint64_t nbits[kHuffmanLanes] = {h_lane_bits[l0], h_lane_bits[l0 + 1]};
    const uint8_t* lane[kHuffmanLanes] = {h_lanes.data() + h_lane_off[l0], h_lanes.data() + h_lane_off[l0 + 1]};
    const uint64_t lane_len[kHuffmanLanes] = {h_lane_off[l0 + 1] - h_lane_off[l0], h_lane_off[l0 + 2] - h_lane_off[l0 + 1]};
    cpu::parts::SideView side;
    if (!sides.outlier_begin.empty()) {
      const int64_t o0 = sides.outlier_begin[size_t(b)], o1 = sides.outlier_begin[size_t(b) + 1];
      side.n_outliers = uint32_t(o1 - o0);
      side.outliers = sides.outliers.data() + sides.outlier_off[size_t(o0)];
      side.outlier_bytes = sides.outlier_off[size_t(o1)] - sides.outlier_off[size_t(o0)];
    }
    const int64_t e0 = sides.exact_begin[size_t(b)], e1 = sides.exact_begin[size_t(b) + 1];
    side.n_exact = uint32_t(e1 - e0);
    side.exact_index = with_index ? sides.exact_index.data() + e0 : nullptr;
    side.exact_bytes = reinterpret_cast<const uint8_t*>(sides.exact.data() + e0);
    side.exact_nbytes = uint64_t(e1 - e0) * sizeof(S);
    raw[size_t(b)] = cpu::parts::payload_bytes(nbits, lane, lane_len, side);
    try_zstd[size_t(b)] = cpu::parts::zstd_may_pay(nbits[0] + nbits[1], uint64_t(spans[size_t(b)].count));
  }
  std::vector<Chunk> chunks = cpu::parts::store_chunks(raw, try_zstd, host_threads);
  return cpu::parts::write_stream(h, cpu::parts::codebook_section(cb), chunks);
}

template <class T, class G>
std::vector<uint8_t> compress_lorenzo(const typename T::storage* x, const Header& h, int host_threads, const Exec& ex) {
  using S = typename T::storage;
  const int64_t n = int64_t(h.num_elements());
  const BlockGrid grid = BlockGrid::make(h.pred, int64_t(h.block_elems));
  int64_t padded_total = 0;
  const std::vector<BlockMeta> meta = block_metas(grid, &padded_total);
  DeviceBuffer<BlockMeta> d_meta(meta.size(), ex);
  upload(d_meta, meta, ex);

  // Quantize into the padded grid, then symbols from the full stencil.
  DeviceBuffer<G> scratch(size_t(padded_total), ex);
  DeviceBuffer<uint8_t> exact(size_t(n), ex);
  DeviceBuffer<uint16_t> codes(size_t(n), ex);
  thrust::fill_n(ex.policy(), scratch.get(), padded_total, G(0));
  thrust::for_each_n(ex.policy(), Counter(0), n,
                     QuantizeElement<T, G>{x, d_meta.get(), grid, Quantizer::make<T>(h.eb_abs), scratch.get(), exact.get()});
  const DeltaOf<G> delta{d_meta.get(), grid, scratch.get()};
  thrust::for_each_n(ex.policy(), Counter(0), n, SymbolElement<G>{delta, int64_t(h.radius), codes.get()});

  HostSides<S> sides;
  // Outliers (symbol 0): their indices in order, varint sizes, offsets, bytes.
  const int64_t n_out = thrust::count_if(ex.policy(), codes.get(), codes.get() + n, IsZero{});
  {
    DeviceBuffer<int64_t> out_index(size_t(n_out), ex);
    DeviceBuffer<uint64_t> out_off(size_t(n_out) + 1, ex);
    thrust::copy_if(ex.policy(), Counter(0), Counter(n), codes.get(), out_index.get(), IsZero{});
    thrust::fill_n(ex.policy(), out_off.get() + n_out, 1, uint64_t(0));
    thrust::transform(ex.policy(), out_index.get(), out_index.get() + n_out, out_off.get(), OutlierSize<G>{delta});
    thrust::exclusive_scan(ex.policy(), out_off.get(), out_off.get() + n_out + 1, out_off.get());
    sides.outlier_off = download(out_off, size_t(n_out) + 1, ex);
    DeviceBuffer<uint8_t> out_bytes(sides.outlier_off.back(), ex);
    thrust::for_each_n(ex.policy(), Counter(0), n_out,
                       OutlierWrite<G>{delta, out_index.get(), out_off.get(), out_bytes.get()});
    sides.outliers = download(out_bytes, sides.outlier_off.back(), ex);
    sides.outlier_begin = per_block_begin(out_index, n_out, meta, n, ex);
  }
  // Exact values: indices in order and the raw values.
  const int64_t n_exact = thrust::count_if(ex.policy(), exact.get(), exact.get() + n, IsSet{});
  {
    DeviceBuffer<int64_t> ex_index(size_t(n_exact), ex);
    DeviceBuffer<S> ex_vals(size_t(n_exact), ex);
    thrust::copy_if(ex.policy(), Counter(0), Counter(n), exact.get(), ex_index.get(), IsSet{});
    thrust::transform(ex.policy(), ex_index.get(), ex_index.get() + n_exact, ex_vals.get(), Gather<S>{x});
    const std::vector<int64_t> global = download(ex_index, size_t(n_exact), ex);
    sides.exact = download(ex_vals, size_t(n_exact), ex);
    sides.exact_begin = per_block_begin(ex_index, n_exact, meta, n, ex);
    sides.exact_index.resize(global.size());
    for (size_t b = 0; b < meta.size(); ++b)
      for (int64_t e = sides.exact_begin[b]; e < sides.exact_begin[b + 1]; ++e)
        sides.exact_index[size_t(e)] = uint32_t(global[size_t(e)] - meta[b].start);
  }
  std::vector<ChunkSpan> spans(meta.size());
  for (size_t b = 0; b < meta.size(); ++b) spans[b] = ChunkSpan{meta[b].start, meta[b].count};
  return finish_stream<S>(h, spans, codes.get(), n, sides, true, host_threads, ex);
}

// ---------------------------------------------------------------- interpolation

// Tiles are gathered into one tile-major buffer (tile b at tile_off[b], its
// elements in C order), so each tile's thread reads and writes contiguously.
template <class S>
struct GatherTiles {
  TileGrid grid;
  const int64_t* tile_off;
  const S* from;
  S* to;
  bool into_tiles;  // false: scatter tiles back to the array
  EBZ_HD void operator()(int64_t i) const {
    int64_t b, local;
    grid.locate(i, b, local);
    if (into_tiles) to[tile_off[b] + local] = from[i];
    else to[i] = from[tile_off[b] + local];
  }
};

template <class T>
using InterpBuffer = typename std::conditional<sizeof(typename T::storage) == 8, double, float>::type;  // as the CPU's

// One tile per thread: the CPU driver's traversal and point encoder.
template <class T>
struct InterpEncodeTile {
  using S = typename T::storage;
  using B = InterpBuffer<T>;
  TileGrid grid;
  const int64_t* tile_off;
  const S* xt;
  B* buf;
  uint16_t* codes;
  S* exact_room;  // tile b's exact values at tile_off[b], in visiting order
  int64_t* exact_count;
  const InterpLevels* lv;
  InterpConfig cfg;
  Quantizer qz;
  int64_t radius;
  EBZ_HD void operator()(int64_t b) const {
    const TileGrid::Tile t = grid.block(b);
    const int64_t off = tile_off[b];
    const S* x = xt + off;
    uint16_t* c = codes + off;
    S* room = exact_room + off;
    int64_t next = 0, n_exact = 0;
    const double lim = interp_code_limit(cfg, radius);
    interp_traverse(buf + off, t.ext, cfg, [&](int64_t i, double pred, int level) -> double {
      uint16_t& code = c[next++];
      const double v = interp_encode<T>(x[i], pred, *lv, level, lim, qz, radius, cfg, code);
      if (code == 0) room[n_exact++] = x[i];
      return v;
    });
    exact_count[b] = n_exact;
  }
};

// Packs each tile's exact values (room[tile_off[b] ..]) to exact_off[b] in out.
template <class S>
struct PackExact {
  const int64_t* tile_off;
  const int64_t* exact_off;
  const S* room;
  S* out;
  EBZ_HD void operator()(int64_t b) const {
    for (int64_t k = 0; k < exact_off[b + 1] - exact_off[b]; ++k) out[exact_off[b] + k] = room[tile_off[b] + k];
  }
};

std::vector<int64_t> tile_offsets(const TileGrid& grid) {
  std::vector<int64_t> off(size_t(grid.n_blocks) + 1, 0);
  for (int64_t b = 0; b < grid.n_blocks; ++b) off[size_t(b) + 1] = off[size_t(b)] + grid.block(b).size;
  return off;
}

template <class T>
std::vector<uint8_t> compress_interp(const typename T::storage* x, const Header& h, int host_threads, const Exec& ex) {
  using S = typename T::storage;
  const int64_t n = int64_t(h.num_elements());
  const TileGrid grid = TileGrid::make(h.pred, h.tile);
  const int64_t nb = grid.n_blocks;
  const std::vector<int64_t> off = tile_offsets(grid);
  DeviceBuffer<int64_t> d_off(off.size(), ex);
  upload(d_off, off, ex);
  const std::vector<InterpLevels> lv(1, InterpLevels::make(h.eb_abs, h.interp));
  DeviceBuffer<InterpLevels> d_lv(1, ex);
  upload(d_lv, lv, ex);

  DeviceBuffer<S> xt(size_t(n), ex), room(size_t(n), ex);
  DeviceBuffer<InterpBuffer<T>> buf(size_t(n), ex);
  DeviceBuffer<uint16_t> codes(size_t(n), ex);
  DeviceBuffer<int64_t> exact_count(size_t(nb) + 1, ex);
  thrust::for_each_n(ex.policy(), Counter(0), n, GatherTiles<S>{grid, d_off.get(), x, xt.get(), true});
  thrust::for_each_n(ex.policy(), Counter(0), nb,
                     InterpEncodeTile<T>{grid, d_off.get(), xt.get(), buf.get(), codes.get(), room.get(),
                                         exact_count.get(), d_lv.get(), h.interp, Quantizer::make<T>(h.eb_abs),
                                         int64_t(h.radius)});
  // Exact values: offsets by a scan of the per-tile counts, packed on the device.
  HostSides<S> sides;
  thrust::fill_n(ex.policy(), exact_count.get() + nb, 1, int64_t(0));
  thrust::exclusive_scan(ex.policy(), exact_count.get(), exact_count.get() + nb + 1, exact_count.get());
  sides.exact_begin = download(exact_count, size_t(nb) + 1, ex);
  DeviceBuffer<S> packed(size_t(sides.exact_begin.back()), ex);
  thrust::for_each_n(ex.policy(), Counter(0), nb, PackExact<S>{d_off.get(), exact_count.get(), room.get(), packed.get()});
  sides.exact = download(packed, size_t(sides.exact_begin.back()), ex);
  std::vector<ChunkSpan> spans(static_cast<size_t>(nb));
  for (int64_t b = 0; b < nb; ++b) spans[size_t(b)] = ChunkSpan{off[size_t(b)], off[size_t(b) + 1] - off[size_t(b)]};
  return finish_stream<S>(h, spans, codes.get(), n, sides, false, host_threads, ex);
}

// ---------------------------------------------------------------- decompress

struct ChunkDesc {
  uint64_t lane_off[kHuffmanLanes], lane_len[kHuffmanLanes], nbits[kHuffmanLanes];
  uint64_t outlier_off, outlier_len, exact_index_off, exact_val_off;
  uint32_t n_outliers, n_exact;
};

enum DecodeError : uint8_t { kOk = 0, kBadCode, kLengthMismatch, kOutlierCount, kExactIndex, kExactCount };

void throw_first_error(const std::vector<uint8_t>& err) {
  for (uint8_t e : err) {
    switch (e) {
      case kOk: break;
      case kBadCode: throw StreamError("corrupted ebzip stream (invalid Huffman code)");
      case kLengthMismatch: throw StreamError("corrupted ebzip stream (Huffman length mismatch)");
      case kOutlierCount: throw StreamError("corrupted ebzip stream (outlier count mismatch)");
      case kExactIndex: throw StreamError("corrupted ebzip stream (exact value index)");
      default: throw StreamError("corrupted ebzip stream (exact value count)");
    }
  }
}

struct HuffmanDecodeChunk {
  const ChunkSpan* span;
  const ChunkDesc* desc;
  const uint8_t* blob;
  const HuffmanDecoder* dec;  // in device memory (~24 KB: too big for a kernel argument); sorted_syms too
  uint16_t* codes;
  uint8_t* error;
  EBZ_HD void operator()(int64_t b) const {
    const ChunkSpan& m = span[b];
    const ChunkDesc& d = desc[b];
    BitReader br0(blob + d.lane_off[0], d.lane_len[0]), br1(blob + d.lane_off[1], d.lane_len[1]);
    const uint64_t mid = lane_begin(uint64_t(m.count), 1);
    uint16_t* c = codes + m.start;
    if (!dec->decode_two_lanes(br0, c, mid, br1, c + mid, uint64_t(m.count) - mid)) {
      error[b] = kBadCode;
    } else if (br0.bits_consumed() != d.nbits[0] || br1.bits_consumed() != d.nbits[1]) {
      error[b] = kLengthMismatch;
    }
  }
};

// The chunks on the device, Huffman-decoded: the host checks CRCs, undoes
// zstd and parses each payload (compressed bytes only), uploads them once,
// and the device decodes one chunk per thread into codes.
struct DecodedChunks {
  std::vector<ChunkDesc> desc;
  DeviceBuffer<uint8_t> blob;
  DeviceBuffer<ChunkDesc> d_desc;
  DeviceBuffer<uint16_t> codes;
  DeviceBuffer<uint8_t> error;

  static std::vector<ChunkDesc> open(const cpu::parts::Layout& L, const std::vector<ChunkSpan>& spans, int dsize,
                                     bool with_index, std::vector<uint8_t>& blob) {
    std::vector<ChunkDesc> desc(spans.size());
    std::vector<uint8_t> raw;
    for (size_t b = 0; b < spans.size(); ++b) {
      const uint64_t count = uint64_t(spans[b].count);
      const auto payload = cpu::parts::open_chunk(L.refs[b], raw, cpu::parts::max_payload_size(count, dsize));
      const cpu::parts::PayloadView v = cpu::parts::parse_payload(payload.first, payload.second, count, dsize, with_index);
      const uint64_t base = blob.size();
      blob.insert(blob.end(), payload.first, payload.first + payload.second);
      ChunkDesc& d = desc[b];
      for (int k = 0; k < kHuffmanLanes; ++k) {
        d.lane_off[k] = base + uint64_t(v.lane[k] - payload.first);
        d.lane_len[k] = (v.nbits[k] + 7) / 8;
        d.nbits[k] = v.nbits[k];
      }
      d.outlier_off = base + uint64_t(v.outliers - payload.first);
      d.outlier_len = v.outlier_bytes;
      d.exact_index_off = with_index ? base + uint64_t(v.exact_index - payload.first) : 0;
      d.exact_val_off = base + uint64_t(v.exact_vals - payload.first);
      d.n_outliers = v.n_outliers;
      d.n_exact = v.n_exact;
    }
    return desc;
  }

  DecodedChunks(const cpu::parts::Layout& L, const std::vector<ChunkSpan>& spans, int64_t n_codes, int dsize,
                bool with_index, const Exec& ex, std::vector<uint8_t> host_blob = {})
      : desc(open(L, spans, dsize, with_index, host_blob)),
        blob(host_blob.size(), ex),
        d_desc(spans.size(), ex),
        codes(size_t(n_codes), ex),
        error(spans.size(), ex) {
    const cpu::parts::CanonicalCode cc = cpu::parts::make_canonical(cpu::parts::read_codebook(L), 2 * L.h.radius);
    DeviceBuffer<ChunkSpan> d_spans(spans.size(), ex);
    DeviceBuffer<uint16_t> d_syms(cc.sorted_syms.size() + 1, ex);
    DeviceBuffer<HuffmanDecoder> d_dec(1, ex);
    std::vector<HuffmanDecoder> dec(1, *cc.dec);
    dec[0].sorted_syms = d_syms.get();
    upload(blob, host_blob, ex);
    upload(d_desc, desc, ex);
    upload(d_spans, spans, ex);
    upload(d_syms, cc.sorted_syms, ex);
    upload(d_dec, dec, ex);
    thrust::fill_n(ex.policy(), error.get(), spans.size(), uint8_t(kOk));
    thrust::for_each_n(ex.policy(), Counter(0), int64_t(spans.size()),
                       HuffmanDecodeChunk{d_spans.get(), d_desc.get(), blob.get(), d_dec.get(), codes.get(), error.get()});
    // d_spans, d_syms, d_dec are freed on return, ordered after the decode on the stream.
  }
};

// Reads the block's outlier varints in order; records errors instead of throwing.
struct DeviceOutliers {
  const uint8_t* p;
  uint64_t len, pos;
  uint32_t seen, count;
  bool bad;
  EBZ_HD int64_t operator()() {
    if (++seen > count) { bad = true; return 0; }
    uint64_t u = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= len) { bad = true; return 0; }
      const uint8_t byte = p[pos++];
      u |= uint64_t(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return unzigzag(u);
    }
    bad = true;
    return 0;
  }
};

// One block per thread: the CPU driver's row loop (lorenzo_decode_block).
template <class T, class G>
struct ReconstructBlock {
  const BlockMeta* meta;
  const ChunkDesc* desc;
  const uint8_t* blob;
  const uint16_t* codes;
  Quantizer qz;
  int64_t radius;
  G* scratch;
  typename T::storage* out;
  uint8_t* error;
  EBZ_HD void operator()(int64_t b) const {
    using S = typename T::storage;
    if (error[b]) return;
    const BlockMeta& m = meta[b];
    const ChunkDesc& d = desc[b];
    DeviceOutliers outl{blob + d.outlier_off, d.outlier_len, 0, 0, d.n_outliers, false};
    S* o = out + m.start;
    with_dims(m.pg.ndim, [&](auto D) {
      lorenzo_decode_block<T, decltype(D)::value, G>(codes + m.start, m.pg, qz, radius, scratch + m.poff, outl, o);
      return 0;
    });
    if (outl.bad || outl.seen != d.n_outliers || outl.pos != outl.len) { error[b] = kOutlierCount; return; }
    for (uint32_t e = 0; e < d.n_exact; ++e) {
      const uint8_t* ip = blob + d.exact_index_off + 4 * uint64_t(e);
      const uint32_t idx = uint32_t(ip[0]) | uint32_t(ip[1]) << 8 | uint32_t(ip[2]) << 16 | uint32_t(ip[3]) << 24;
      if (idx >= uint64_t(m.count)) { error[b] = kExactIndex; return; }
      memcpy(o + idx, blob + d.exact_val_off + uint64_t(e) * sizeof(S), sizeof(S));
    }
  }
};

template <class T, class G>
void decompress_lorenzo(const cpu::parts::Layout& L, void* out, const Exec& ex) {
  const Header& h = L.h;
  const int64_t n = int64_t(h.num_elements());
  const BlockGrid grid = BlockGrid::make(h.pred, int64_t(h.block_elems));
  int64_t padded_total = 0;
  const std::vector<BlockMeta> meta = block_metas(grid, &padded_total);
  std::vector<ChunkSpan> spans(meta.size());
  for (size_t b = 0; b < meta.size(); ++b) spans[b] = ChunkSpan{meta[b].start, meta[b].count};
  DecodedChunks dc(L, spans, n, dtype_size(h.dtype), true, ex);
  DeviceBuffer<BlockMeta> d_meta(meta.size(), ex);
  DeviceBuffer<G> scratch(size_t(padded_total), ex);
  upload(d_meta, meta, ex);
  thrust::for_each_n(ex.policy(), Counter(0), grid.n_blocks,
                     ReconstructBlock<T, G>{d_meta.get(), dc.d_desc.get(), dc.blob.get(), dc.codes.get(),
                                            Quantizer::make<T>(h.eb_abs), int64_t(h.radius), scratch.get(),
                                            static_cast<typename T::storage*>(out), dc.error.get()});
  throw_first_error(download(dc.error, meta.size(), ex));
}

// One tile per thread: the CPU driver's traversal and point decoder, into
// the tile-major buffer.
template <class T>
struct InterpDecodeTile {
  using S = typename T::storage;
  using B = InterpBuffer<T>;
  TileGrid grid;
  const int64_t* tile_off;
  const ChunkDesc* desc;
  const uint8_t* blob;
  const uint16_t* codes;
  B* buf;
  S* tiles;
  const InterpLevels* lv;
  InterpConfig cfg;
  int64_t radius;
  uint8_t* error;
  EBZ_HD void operator()(int64_t b) const {
    if (error[b]) return;
    const TileGrid::Tile t = grid.block(b);
    const int64_t off = tile_off[b];
    const ChunkDesc& d = desc[b];
    const uint16_t* c = codes + off;
    S* ot = tiles + off;
    int64_t next = 0;
    uint32_t exact = 0;
    bool bad = false;
    interp_traverse(buf + off, t.ext, cfg, [&](int64_t i, double pred, int level) -> double {
      const uint32_t sym = c[next++];
      if (sym) return interp_decode<T>(sym, pred, *lv, level, radius, cfg, ot + i);
      if (exact == d.n_exact) {
        bad = true;
        return 0.0;
      }
      memcpy(ot + i, blob + d.exact_val_off + uint64_t(exact++) * sizeof(S), sizeof(S));
      return interp_exact_stand_in(T::to_double(ot[i]), pred);
    });
    if (bad || exact != d.n_exact) error[b] = kExactCount;
  }
};

template <class T>
void decompress_interp(const cpu::parts::Layout& L, void* out, const Exec& ex) {
  using S = typename T::storage;
  const Header& h = L.h;
  const int64_t n = int64_t(h.num_elements());
  const TileGrid grid = TileGrid::make(h.pred, h.tile);
  const std::vector<int64_t> off = tile_offsets(grid);
  std::vector<ChunkSpan> spans(static_cast<size_t>(grid.n_blocks));
  for (int64_t b = 0; b < grid.n_blocks; ++b) spans[size_t(b)] = ChunkSpan{off[size_t(b)], off[size_t(b) + 1] - off[size_t(b)]};
  DecodedChunks dc(L, spans, n, dtype_size(h.dtype), false, ex);
  const std::vector<InterpLevels> lv(1, InterpLevels::make(h.eb_abs, h.interp));
  DeviceBuffer<InterpLevels> d_lv(1, ex);
  DeviceBuffer<int64_t> d_off(off.size(), ex);
  DeviceBuffer<InterpBuffer<T>> buf(size_t(n), ex);
  DeviceBuffer<S> tiles(size_t(n), ex);
  upload(d_lv, lv, ex);
  upload(d_off, off, ex);
  thrust::for_each_n(ex.policy(), Counter(0), grid.n_blocks,
                     InterpDecodeTile<T>{grid, d_off.get(), dc.d_desc.get(), dc.blob.get(), dc.codes.get(), buf.get(),
                                         tiles.get(), d_lv.get(), h.interp, int64_t(h.radius), dc.error.get()});
  throw_first_error(download(dc.error, spans.size(), ex));
  thrust::for_each_n(ex.policy(), Counter(0), n,
                     GatherTiles<S>{grid, d_off.get(), tiles.get(), static_cast<S*>(out), false});
  ex.sync();
}

}  // namespace

// ---------------------------------------------------------------- public

const char* device_system() { return EBZ_DEVICE_CUDA ? "cuda" : "omp"; }

bool can_run() {
#if EBZ_DEVICE_CUDA
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
  return true;
#endif
}

std::string runtime_info() {
#if EBZ_DEVICE_CUDA
  std::string s = "compiled with CUDA " + std::to_string(CUDART_VERSION / 1000) + "." +
                  std::to_string(CUDART_VERSION % 1000 / 10);
  int rt = 0, drv = 0, count = 0;
  if (cudaRuntimeGetVersion(&rt) == cudaSuccess)
    s += "; runtime " + std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10);
  if (cudaDriverGetVersion(&drv) == cudaSuccess && drv > 0)
    s += "; driver supports " + std::to_string(drv / 1000) + "." + std::to_string(drv % 1000 / 10);
  else
    s += "; no CUDA driver";
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    s += std::string("; no device (") + cudaGetErrorString(e) + ")";
    cudaGetLastError();  // clear the sticky error
  } else {
    for (int d = 0; d < count; ++d) {
      cudaDeviceProp prop;
      if (cudaGetDeviceProperties(&prop, d) == cudaSuccess)
        s += "; device " + std::to_string(d) + ": " + prop.name + " (sm_" + std::to_string(prop.major) +
             std::to_string(prop.minor) + ")";
    }
  }
  return s;
#else
  return "Thrust OpenMP device system (the CUDA driver's source, run on the CPU)";
#endif
}

int64_t pool_high_water(bool reset) {
#if EBZ_DEVICE_CUDA
  int dev = 0;
  cudaMemPool_t pool;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetDefaultMemPool(&pool, dev), "cudaDeviceGetDefaultMemPool");
  uint64_t used = 0;  // (cuuint64_t)
  check(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &used), "cudaMemPoolGetAttribute");
  if (reset) {
    uint64_t zero = 0;
    check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero), "cudaMemPoolSetAttribute");
  }
  return int64_t(used);
#else
  (void)reset;
  return -1;
#endif
}

bool supports(const cpu::CompressParams& p, uint64_t n) {
  return p.predictor != cpu::Predictor::automatic && p.eb_abs > 0 && n > 0;
}

std::vector<uint8_t> compress(const void* data, const std::vector<uint64_t>& shape, const cpu::CompressParams& p,
                              uintptr_t stream) {
  const uint64_t n = cpu::parts::checked_count(shape, p);
  if (!supports(p, n))
    throw std::invalid_argument("the device driver runs predictor='lorenzo' or 'interp' with a bound > 0 on "
                                "non-empty arrays; use the CPU driver for the others (same stream format)");
  const Exec ex(stream);
  Header h = cpu::parts::plan_header(shape, p);
  std::vector<uint8_t> result;
  dispatch_dtype(h.dtype, [&](auto t) {
    using T = decltype(t);
    const auto* x = static_cast<const typename T::storage*>(data);
    if (h.pipeline == Pipeline::interp) {
      result = compress_interp<T>(x, h, p.threads, ex);
      return;
    }
    const FiniteRange r = thrust::transform_reduce(ex.policy(), Counter(0), Counter(int64_t(n)), FiniteOf<T>{x},
                                                   FiniteRange{INFINITY, -INFINITY, 0}, MergeRange{});
    h.grid_bits = cpu::parts::lorenzo_grid_bits(cpu::Range{r.lo, r.hi, r.n}, h.eb_abs);
    dispatch_grid(h.grid_bits, [&](auto g) { result = compress_lorenzo<T, decltype(g)>(x, h, p.threads, ex); });
  });
  return result;
}

bool can_decode(const uint8_t* stream_bytes, uint64_t len) {
  const Header h = cpu::inspect(stream_bytes, len);
  return h.pipeline != Pipeline::exact && h.num_elements() > 0;
}

void decompress(const uint8_t* stream_bytes, uint64_t len, void* out, uintptr_t stream) {
  const cpu::parts::Layout L = cpu::parts::parse_layout(stream_bytes, len);
  if (L.h.pipeline == Pipeline::exact || L.h.num_elements() == 0)
    throw std::invalid_argument("the device driver decodes lorenzo and interp streams; use the CPU driver for this one");
  const Exec ex(stream);
  dispatch_dtype(L.h.dtype, [&](auto t) {
    if (L.h.pipeline == Pipeline::interp) {
      decompress_interp<decltype(t)>(L, out, ex);
      return;
    }
    dispatch_grid(L.h.grid_bits, [&](auto g) { decompress_lorenzo<decltype(t), decltype(g)>(L, out, ex); });
  });
}

}  // namespace ebzip::device
