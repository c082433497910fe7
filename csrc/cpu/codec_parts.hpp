// Host stages of the codec that both drivers run: the CPU driver
// (codec_cpu.cpp, where they are defined) and the CUDA driver
// (csrc/cuda/codec_device.cu), which does the per-element work on the device
// and calls these for the decisions and bytes that must be the same: the
// stream's header choices, the Huffman codebook, the chunk payload layout,
// the zstd stage and the stream assembly. One definition each, so the two
// drivers cannot drift apart and write different bytes.
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "codec_cpu.hpp"
#include "ebzip/format.hpp"
#include "ebzip/huffman.hpp"

namespace ebzip::cpu::parts {

// ---- compress

// Checks the parameters and shape (std::invalid_argument); returns the element count.
uint64_t checked_count(const std::vector<uint64_t>& shape, const CompressParams& p);

// Drops size-1 axes and merges leading axes beyond max_dims into the first.
PredShape prediction_shape(const std::vector<uint64_t>& shape, int max_dims = kMaxPredDims);

// The header a compression with fixed predictor p.predictor writes (pipeline,
// prediction shape, radius, interpolation tiles); grid_bits is 32 for Lorenzo
// until lorenzo_grid_bits says otherwise (it needs the data's range).
Header plan_header(const std::vector<uint64_t>& shape, const CompressParams& p);
uint8_t lorenzo_grid_bits(const Range& r, double eb_abs);

struct Codebook {
  uint32_t first_symbol = 0;
  std::vector<uint8_t> lengths;  // for symbols first_symbol ..
};
Codebook build_codebook(const std::vector<uint64_t>& freq);

// Canonical codes from lengths; also validates a codebook read from a stream.
struct CanonicalCode {
  std::vector<HuffmanEncoderEntry> enc;  // indexed by symbol
  std::vector<uint16_t> sorted_syms;
  std::unique_ptr<HuffmanDecoder> dec;   // dec->sorted_syms points into sorted_syms
};
CanonicalCode make_canonical(const Codebook& cb, uint32_t alphabet);

// The codebook section's stored bytes (zstd of first symbol, count, lengths).
std::vector<uint8_t> codebook_section(const Codebook& cb);

// What a predictive chunk stores beside its Huffman lanes (see format.hpp).
struct SideView {
  uint32_t n_outliers = 0;
  const uint8_t* outliers = nullptr;  // zigzag varints
  uint64_t outlier_bytes = 0;
  uint32_t n_exact = 0;
  const uint32_t* exact_index = nullptr;  // Lorenzo only (nullptr: no index written)
  const uint8_t* exact_bytes = nullptr;
  uint64_t exact_nbytes = 0;
};
// A predictive chunk's payload, before the zstd stage.
std::vector<uint8_t> payload_bytes(const uint64_t nbits[kHuffmanLanes], const uint8_t* const lane[kHuffmanLanes],
                                   const uint64_t lane_bytes[kHuffmanLanes], const SideView& side);

// zstd pays on Huffman output only below ~6 bits per symbol (measured).
inline bool zstd_may_pay(uint64_t huffman_bits, uint64_t count) { return huffman_bits < 6 * count; }

struct Chunk {
  std::vector<uint8_t> bytes;  // as stored
  uint32_t flags = 0;
};
// The zstd stage over finished payloads (on `threads` host threads): each is
// kept zstd-compressed where try_zstd[i] and that is smaller, raw otherwise.
std::vector<Chunk> store_chunks(std::vector<std::vector<uint8_t>>& raw, const std::vector<uint8_t>& try_zstd,
                                int threads);

// Header, codebook section, chunk table and payloads: the whole stream.
// Each chunk is freed once copied (so the chunks and the stream are not all
// held at once).
std::vector<uint8_t> write_stream(const Header& h, const std::vector<uint8_t>& codebook,
                                  std::vector<Chunk>& chunks);

// ---- decompress

struct ChunkRef {
  const uint8_t* p;
  uint64_t len;
  uint32_t flags, crc;
};

// Where everything is in a stream; checks CRCs and that the sections add up
// to the stream's exact length, so a bad stream fails before any decoding.
struct Layout {
  Header h;
  int64_t n_blocks = 0;
  const uint8_t* codebook = nullptr;
  uint32_t codebook_len = 0;
  std::vector<ChunkRef> refs;
};
Layout parse_layout(const uint8_t* stream, uint64_t len);
Codebook read_codebook(const Layout& L);

// Largest payload a chunk of `count` elements can have (bounds zstd output).
inline uint64_t max_payload_size(uint64_t count, int dsize) {
  return 40 + count * (kMaxCodeLen / 8 + 1) + 8 + count * 10 + count * (4 + dsize);
}
// Checks a chunk's CRC and undoes its zstd stage into `raw`; returns the payload.
std::pair<const uint8_t*, uint64_t> open_chunk(const ChunkRef& ref, std::vector<uint8_t>& raw, uint64_t max_size);

// A predictive chunk's payload, parsed and bounds-checked (nothing decoded).
struct PayloadView {
  uint64_t nbits[kHuffmanLanes];
  const uint8_t* lane[kHuffmanLanes];
  uint32_t n_outliers, outlier_bytes, n_exact;
  const uint8_t* outliers;
  const uint8_t* exact_index;  // with_index only
  const uint8_t* exact_vals;
};
PayloadView parse_payload(const uint8_t* p, uint64_t len, uint64_t count, int dsize, bool with_index);

}  // namespace ebzip::cpu::parts
