// Device driver: the Lorenzo pipeline as per-element and per-chunk functors
// over the shared EBZ_HD code (csrc/include/ebzip), run through Thrust with
// an explicit execution policy. Built twice from this one file (see
// codec_device.hpp): nvcc -> CUDA device system, g++ -> OpenMP device system.
//
// Compress, on the device: range of the finite values, quantization into the
// padded integer grid (one thread per element), Lorenzo symbols (one thread
// per element, the full stencil), histogram (sort + upper_bound), Huffman
// lanes (one thread per lane: count bits, scan, write with BitWriter),
// outliers and exact values (copy_if, scan, scatter). Then on the host, over
// compressed bytes only: codebook, payload layout, zstd, stream assembly,
// all through the CPU driver's own functions (codec_parts.hpp).
//
// Decompress: the host checks CRCs, undoes zstd and parses each payload
// (compressed bytes); the device Huffman-decodes every chunk (one thread per
// chunk, both lanes), rebuilds each block's grid (one thread per block, the
// CPU's row loop) and scatters the exact values.
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
void to_host(void* dst, const void* src, size_t bytes, const Exec& ex) {
  if (!bytes) return;
#if EBZ_DEVICE_CUDA
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ex.s), "cudaMemcpyAsync D2H");
  ex.sync();
#else
  (void)ex;
  std::memcpy(dst, src, bytes);
#endif
}
void to_device(void* dst, const void* src, size_t bytes, const Exec& ex) {
  if (!bytes) return;
#if EBZ_DEVICE_CUDA
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ex.s), "cudaMemcpyAsync H2D");
  ex.sync();
#else
  (void)ex;
  std::memcpy(dst, src, bytes);
#endif
}
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

template <class Fn>
void dispatch_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: fn(F32{}); break;
    case DType::f64: fn(F64{}); break;
    case DType::f16: fn(F16{}); break;
    default: fn(BF16{}); break;
  }
}
template <class Fn>
void dispatch_grid(uint8_t grid_bits, Fn&& fn) {
  if (grid_bits == 32) fn(int32_t{});
  else fn(int64_t{});
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

// Lane l = 2b + k: symbols [lane_begin(count, k), lane_begin(count, k + 1)) of block b.
struct LaneRange {
  const BlockMeta* meta;
  EBZ_HD_INLINE void operator()(int64_t l, int64_t& begin, int64_t& end) const {
    const BlockMeta& m = meta[l / kHuffmanLanes];
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

template <class T, class G>
std::vector<uint8_t> compress_lorenzo(const typename T::storage* x, Header h, int host_threads, const Exec& ex) {
  using S = typename T::storage;
  const int64_t n = int64_t(h.num_elements());
  const BlockGrid grid = BlockGrid::make(h.pred, int64_t(h.block_elems));
  int64_t padded_total = 0;
  const std::vector<BlockMeta> meta = block_metas(grid, &padded_total);
  const int64_t nb = grid.n_blocks;
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

  // Histogram: sorted copy of the symbols, then where each symbol's run ends.
  const uint32_t alphabet = 2 * h.radius;
  std::vector<uint64_t> hist(alphabet);
  {
    DeviceBuffer<uint16_t> sorted(size_t(n), ex);
    thrust::copy_n(ex.policy(), codes.get(), n, sorted.get());
    thrust::sort(ex.policy(), sorted.get(), sorted.get() + n);
    DeviceBuffer<int64_t> ends(alphabet, ex);
    thrust::upper_bound(ex.policy(), sorted.get(), sorted.get() + n, thrust::counting_iterator<uint32_t>(0),
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
  const LaneRange range{d_meta.get()};
  DeviceBuffer<uint64_t> lane_bits(size_t(lanes), ex), lane_off(size_t(lanes) + 1, ex);
  thrust::for_each_n(ex.policy(), Counter(0), lanes, LaneBits{range, codes.get(), enc.get(), lane_bits.get()});
  thrust::fill_n(ex.policy(), lane_off.get() + lanes, 1, uint64_t(0));
  thrust::transform(ex.policy(), lane_bits.get(), lane_bits.get() + lanes, lane_off.get(), BitsToBytes{});
  thrust::exclusive_scan(ex.policy(), lane_off.get(), lane_off.get() + lanes + 1, lane_off.get());
  const std::vector<uint64_t> h_lane_bits = download(lane_bits, size_t(lanes), ex);
  const std::vector<uint64_t> h_lane_off = download(lane_off, size_t(lanes) + 1, ex);
  DeviceBuffer<uint8_t> lane_bytes(h_lane_off.back(), ex);
  thrust::for_each_n(ex.policy(), Counter(0), lanes,
                     LaneWrite{range, codes.get(), enc.get(), lane_off.get(), lane_bytes.get()});
  const std::vector<uint8_t> h_lanes = download(lane_bytes, h_lane_off.back(), ex);

  // Outliers (symbol 0): their indices in order, varint sizes, offsets, bytes.
  const int64_t n_out = thrust::count_if(ex.policy(), codes.get(), codes.get() + n, IsZero{});
  DeviceBuffer<int64_t> out_index(size_t(n_out), ex);
  DeviceBuffer<uint64_t> out_off(size_t(n_out) + 1, ex);
  thrust::copy_if(ex.policy(), Counter(0), Counter(n), codes.get(), out_index.get(), IsZero{});
  thrust::fill_n(ex.policy(), out_off.get() + n_out, 1, uint64_t(0));
  thrust::transform(ex.policy(), out_index.get(), out_index.get() + n_out, out_off.get(), OutlierSize<G>{delta});
  thrust::exclusive_scan(ex.policy(), out_off.get(), out_off.get() + n_out + 1, out_off.get());
  const std::vector<uint64_t> h_out_off = download(out_off, size_t(n_out) + 1, ex);
  DeviceBuffer<uint8_t> out_bytes(h_out_off.back(), ex);
  thrust::for_each_n(ex.policy(), Counter(0), n_out,
                     OutlierWrite<G>{delta, out_index.get(), out_off.get(), out_bytes.get()});
  const std::vector<uint8_t> h_out_bytes = download(out_bytes, h_out_off.back(), ex);
  const std::vector<int64_t> out_begin = per_block_begin(out_index, n_out, meta, n, ex);

  // Exact values: indices in order and the raw values.
  const int64_t n_exact = thrust::count_if(ex.policy(), exact.get(), exact.get() + n, IsSet{});
  DeviceBuffer<int64_t> ex_index(size_t(n_exact), ex);
  DeviceBuffer<S> ex_vals(size_t(n_exact), ex);
  thrust::copy_if(ex.policy(), Counter(0), Counter(n), exact.get(), ex_index.get(), IsSet{});
  thrust::transform(ex.policy(), ex_index.get(), ex_index.get() + n_exact, ex_vals.get(), Gather<S>{x});
  const std::vector<int64_t> h_ex_index = download(ex_index, size_t(n_exact), ex);
  const std::vector<S> h_ex_vals = download(ex_vals, size_t(n_exact), ex);
  const std::vector<int64_t> ex_begin = per_block_begin(ex_index, n_exact, meta, n, ex);

  // Host: payloads from the compressed pieces, zstd, the stream.
  std::vector<std::vector<uint8_t>> raw(static_cast<size_t>(nb));
  std::vector<uint8_t> try_zstd(static_cast<size_t>(nb));
  std::vector<uint32_t> local;
  for (int64_t b = 0; b < nb; ++b) {
    const size_t l0 = size_t(b) * kHuffmanLanes;
    const uint64_t nbits[kHuffmanLanes] = {h_lane_bits[l0], h_lane_bits[l0 + 1]};
    const uint8_t* lane[kHuffmanLanes] = {h_lanes.data() + h_lane_off[l0], h_lanes.data() + h_lane_off[l0 + 1]};
    const uint64_t lane_len[kHuffmanLanes] = {h_lane_off[l0 + 1] - h_lane_off[l0], h_lane_off[l0 + 2] - h_lane_off[l0 + 1]};
    const int64_t o0 = out_begin[size_t(b)], o1 = out_begin[size_t(b) + 1];
    const int64_t e0 = ex_begin[size_t(b)], e1 = ex_begin[size_t(b) + 1];
    local.resize(size_t(e1 - e0));
    for (int64_t e = e0; e < e1; ++e) local[size_t(e - e0)] = uint32_t(h_ex_index[size_t(e)] - meta[size_t(b)].start);
    cpu::parts::SideView side;
    side.n_outliers = uint32_t(o1 - o0);
    side.outliers = h_out_bytes.data() + h_out_off[size_t(o0)];
    side.outlier_bytes = h_out_off[size_t(o1)] - h_out_off[size_t(o0)];
    side.n_exact = uint32_t(e1 - e0);
    side.exact_index = local.data();
    side.exact_bytes = reinterpret_cast<const uint8_t*>(h_ex_vals.data() + e0);
    side.exact_nbytes = uint64_t(e1 - e0) * sizeof(S);
    raw[size_t(b)] = cpu::parts::payload_bytes(nbits, lane, lane_len, side);
    try_zstd[size_t(b)] = cpu::parts::zstd_may_pay(nbits[0] + nbits[1], uint64_t(meta[size_t(b)].count));
  }
  const std::vector<Chunk> chunks = cpu::parts::store_chunks(raw, try_zstd, host_threads);
  return cpu::parts::write_stream(h, cpu::parts::codebook_section(cb), chunks);
}

// ---------------------------------------------------------------- decompress functors

struct ChunkDesc {
  uint64_t lane_off[kHuffmanLanes], lane_len[kHuffmanLanes], nbits[kHuffmanLanes];
  uint64_t outlier_off, outlier_len, exact_index_off, exact_val_off;
  uint32_t n_outliers, n_exact;
};

enum DecodeError : uint8_t { kOk = 0, kBadCode, kLengthMismatch, kOutlierCount, kExactIndex };

struct HuffmanDecodeChunk {
  const BlockMeta* meta;
  const ChunkDesc* desc;
  const uint8_t* blob;
  const HuffmanDecoder* dec;  // in device memory (~24 KB: too big for a kernel argument); sorted_syms too
  uint16_t* codes;
  uint8_t* error;
  EBZ_HD void operator()(int64_t b) const {
    const BlockMeta& m = meta[b];
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
  const int dsize = dtype_size(h.dtype);
  const cpu::parts::CanonicalCode cc = cpu::parts::make_canonical(cpu::parts::read_codebook(L), 2 * h.radius);
  const BlockGrid grid = BlockGrid::make(h.pred, int64_t(h.block_elems));
  int64_t padded_total = 0;
  const std::vector<BlockMeta> meta = block_metas(grid, &padded_total);
  const int64_t nb = grid.n_blocks;

  // Host, over compressed bytes: CRC, zstd, payload parsing; one upload.
  std::vector<ChunkDesc> desc(static_cast<size_t>(nb));
  std::vector<uint8_t> blob, raw;
  for (int64_t b = 0; b < nb; ++b) {
    const uint64_t count = uint64_t(meta[size_t(b)].count);
    const auto payload = cpu::parts::open_chunk(L.refs[size_t(b)], raw, cpu::parts::max_payload_size(count, dsize));
    const cpu::parts::PayloadView v = cpu::parts::parse_payload(payload.first, payload.second, count, dsize, true);
    const uint64_t base = blob.size();
    blob.insert(blob.end(), payload.first, payload.first + payload.second);
    ChunkDesc& d = desc[size_t(b)];
    for (int k = 0; k < kHuffmanLanes; ++k) {
      d.lane_off[k] = base + uint64_t(v.lane[k] - payload.first);
      d.lane_len[k] = (v.nbits[k] + 7) / 8;
      d.nbits[k] = v.nbits[k];
    }
    d.outlier_off = base + uint64_t(v.outliers - payload.first);
    d.outlier_len = v.outlier_bytes;
    d.exact_index_off = base + uint64_t(v.exact_index - payload.first);
    d.exact_val_off = base + uint64_t(v.exact_vals - payload.first);
    d.n_outliers = v.n_outliers;
    d.n_exact = v.n_exact;
  }
  DeviceBuffer<uint8_t> d_blob(blob.size(), ex);
  DeviceBuffer<ChunkDesc> d_desc(desc.size(), ex);
  DeviceBuffer<BlockMeta> d_meta(meta.size(), ex);
  DeviceBuffer<uint16_t> d_syms(cc.sorted_syms.size() + 1, ex);
  upload(d_blob, blob, ex);
  upload(d_desc, desc, ex);
  upload(d_meta, meta, ex);
  upload(d_syms, cc.sorted_syms, ex);
  std::vector<HuffmanDecoder> dec(1, *cc.dec);
  dec[0].sorted_syms = d_syms.get();
  DeviceBuffer<HuffmanDecoder> d_dec(1, ex);
  upload(d_dec, dec, ex);

  DeviceBuffer<uint16_t> codes(size_t(n), ex);
  DeviceBuffer<uint8_t> error(size_t(nb), ex);
  DeviceBuffer<G> scratch(size_t(padded_total), ex);
  thrust::fill_n(ex.policy(), error.get(), nb, uint8_t(kOk));
  thrust::for_each_n(ex.policy(), Counter(0), nb,
                     HuffmanDecodeChunk{d_meta.get(), d_desc.get(), d_blob.get(), d_dec.get(), codes.get(), error.get()});
  thrust::for_each_n(ex.policy(), Counter(0), nb,
                     ReconstructBlock<T, G>{d_meta.get(), d_desc.get(), d_blob.get(), codes.get(),
                                            Quantizer::make<T>(h.eb_abs), int64_t(h.radius), scratch.get(),
                                            static_cast<typename T::storage*>(out), error.get()});
  const std::vector<uint8_t> err = download(error, size_t(nb), ex);
  for (uint8_t e : err) {
    switch (e) {
      case kOk: break;
      case kBadCode: throw StreamError("corrupted ebzip stream (invalid Huffman code)");
      case kLengthMismatch: throw StreamError("corrupted ebzip stream (Huffman length mismatch)");
      case kOutlierCount: throw StreamError("corrupted ebzip stream (outlier count mismatch)");
      default: throw StreamError("corrupted ebzip stream (exact value index)");
    }
  }
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
  cuuint64_t used = 0;
  check(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &used), "cudaMemPoolGetAttribute");
  if (reset) {
    cuuint64_t zero = 0;
    check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero), "cudaMemPoolSetAttribute");
  }
  return int64_t(used);
#else
  (void)reset;
  return -1;
#endif
}

bool supports(const cpu::CompressParams& p, uint64_t n) {
  return p.predictor == cpu::Predictor::lorenzo && p.eb_abs > 0 && n > 0;
}

std::vector<uint8_t> compress(const void* data, const std::vector<uint64_t>& shape, const cpu::CompressParams& p,
                              uintptr_t stream) {
  if (shape.size() > size_t(kMaxNdim)) throw std::invalid_argument("ebzip supports at most 32 dimensions");
  if (!(p.eb_abs >= 0) || std::isinf(p.eb_abs)) throw std::invalid_argument("error bound must be finite and >= 0");
  if (p.radius < 1 || p.radius > 32768) throw std::invalid_argument("radius must be in [1, 32768]");
  if (p.block_elems == 0 || p.block_elems > (uint64_t(1) << 32)) throw std::invalid_argument("bad block size");
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  if (!supports(p, n))
    throw std::invalid_argument("the device driver runs predictor='lorenzo' with a bound > 0 on non-empty arrays; "
                                "use the CPU driver for the others (same stream format)");
  const Exec ex(stream);
  Header h = cpu::parts::plan_header(shape, p);
  std::vector<uint8_t> result;
  dispatch_dtype(h.dtype, [&](auto t) {
    using T = decltype(t);
    const auto* x = static_cast<const typename T::storage*>(data);
    const FiniteRange r = thrust::transform_reduce(ex.policy(), Counter(0), Counter(int64_t(n)), FiniteOf<T>{x},
                                                   FiniteRange{INFINITY, -INFINITY, 0}, MergeRange{});
    h.grid_bits = cpu::parts::lorenzo_grid_bits(cpu::Range{r.lo, r.hi, r.n}, h.eb_abs);
    dispatch_grid(h.grid_bits, [&](auto g) { result = compress_lorenzo<T, decltype(g)>(x, h, p.threads, ex); });
  });
  return result;
}

bool can_decode(const uint8_t* stream_bytes, uint64_t len) {
  const Header h = cpu::inspect(stream_bytes, len);
  return h.pipeline == Pipeline::lorenzo && h.num_elements() > 0;
}

void decompress(const uint8_t* stream_bytes, uint64_t len, void* out, uintptr_t stream) {
  const cpu::parts::Layout L = cpu::parts::parse_layout(stream_bytes, len);
  if (L.h.pipeline != Pipeline::lorenzo || L.h.num_elements() == 0)
    throw std::invalid_argument("the device driver decodes lorenzo streams; use the CPU driver for this one");
  const Exec ex(stream);
  dispatch_dtype(L.h.dtype, [&](auto t) {
    dispatch_grid(L.h.grid_bits, [&](auto g) { decompress_lorenzo<decltype(t), decltype(g)>(L, out, ex); });
  });
}

}  // namespace ebzip::device
