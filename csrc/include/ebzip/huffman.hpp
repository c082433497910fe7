// Canonical, length-limited Huffman coding of quantization symbols.
//
// One codebook per stream (built from the global histogram on the host);
// the code lengths are all the stream stores, the codes follow canonically.
// Decoding uses a small lookup table for codes up to kLutBits and the
// canonical first-code ranges for longer ones.
#pragma once
#include "bitio.hpp"

namespace ebzip {

constexpr int kMaxCodeLen = 20;
// Each chunk's symbols are split into two halves with separate bitstreams
// ("lanes") so that a decoder can interleave them: two independent
// lookup chains keep the CPU busy while each one waits on its table load.
constexpr int kHuffmanLanes = 2;
EBZ_HD_INLINE uint64_t lane_begin(uint64_t count, int lane) { return count * uint64_t(lane) / kHuffmanLanes; }  // 2^20 >= any alphabet we use (<= 65536 symbols)
constexpr int kLutBits = 11;

// Up to three short codes that fit together in the first kLutBits bits.
struct MultiSymbol {
  uint16_t sym[3];
  uint8_t count;  // 0: the first code is longer than kLutBits
  uint8_t bits;   // total length of the `count` codes
};

// Decoding tables, built from code lengths (make_canonical in the driver).
struct HuffmanDecoder {
  // Highly compressible data spends most symbols on 1-3 bit codes: one
  // lookup here decodes up to three of them.
  MultiSymbol multi[1u << kLutBits];
  // lut[w] for the top kLutBits bits w: (symbol << 5) | length, or 0 if the
  // code is longer than kLutBits (or invalid).
  uint32_t lut[1u << kLutBits];
  // For length L: codes are first[L] .. first[L] + count[L] - 1, and their
  // symbols are sorted_syms[index[L] + (code - first[L])].
  uint32_t first[kMaxCodeLen + 1];
  uint32_t count[kMaxCodeLen + 1];
  uint32_t index[kMaxCodeLen + 1];
  int max_len;
  const uint16_t* sorted_syms;

  // Decodes `count` symbols into out; false on a bit pattern that is no code.
  EBZ_HD_INLINE bool decode_run(BitReader& br_ref, uint16_t* out, uint64_t count) const {
    BitReader br = br_ref;  // a local copy stays in registers
    uint64_t i = 0;
    while (i + 3 <= count) {
      if (br.n < kMaxCodeLen) br.refill();
      const MultiSymbol m = multi[br.peek(kLutBits)];
      if (m.count) {
        out[i] = m.sym[0];  // writing all three is safe: i + 3 <= count
        out[i + 1] = m.sym[1];
        out[i + 2] = m.sym[2];
        i += m.count;
        br.skip(m.bits);
      } else {
        uint32_t sym;
        if (!decode(br, sym)) return false;
        out[i++] = uint16_t(sym);
      }
    }
    for (; i < count; ++i) {
      uint32_t sym;
      if (!decode(br, sym)) return false;
      out[i] = uint16_t(sym);
    }
    br_ref = br;
    return true;
  }

  // Decodes two lanes in lockstep while both have room, then each alone.
  EBZ_HD_INLINE bool decode_two_lanes(BitReader& a_ref, uint16_t* out_a, uint64_t na, BitReader& b_ref,
                                      uint16_t* out_b, uint64_t nb) const {
    BitReader a = a_ref, b = b_ref;
    uint64_t i = 0, j = 0;
    while (i + 3 <= na && j + 3 <= nb) {
      if (a.n < kMaxCodeLen) a.refill();
      if (b.n < kMaxCodeLen) b.refill();
      const MultiSymbol ma = multi[a.peek(kLutBits)];
      const MultiSymbol mb = multi[b.peek(kLutBits)];
      if (ma.count && mb.count) {
        out_a[i] = ma.sym[0]; out_a[i + 1] = ma.sym[1]; out_a[i + 2] = ma.sym[2];
        out_b[j] = mb.sym[0]; out_b[j + 1] = mb.sym[1]; out_b[j + 2] = mb.sym[2];
        i += ma.count; j += mb.count;
        a.skip(ma.bits); b.skip(mb.bits);
      } else {
        uint32_t sym;
        if (!decode(a, sym)) return false;
        out_a[i++] = uint16_t(sym);
        if (!decode(b, sym)) return false;
        out_b[j++] = uint16_t(sym);
      }
    }
    if (!decode_run(a, out_a + i, na - i) || !decode_run(b, out_b + j, nb - j)) return false;
    a_ref = a;
    b_ref = b;
    return true;
  }

  // Decodes one symbol; false on a bit pattern that is no code.
  EBZ_HD_INLINE bool decode(BitReader& br, uint32_t& sym) const {
    if (br.n < kMaxCodeLen) br.refill();
    const uint32_t e = lut[br.peek(kLutBits)];
    if (e & 31u) {
      br.skip(int(e & 31u));
      sym = e >> 5;
      return true;
    }
    for (int L = kLutBits + 1; L <= max_len; ++L) {
      const uint32_t code = br.peek(L);
      if (code - first[L] < count[L]) {
        sym = sorted_syms[index[L] + (code - first[L])];
        br.skip(L);
        return true;
      }
    }
    return false;
  }
};

struct HuffmanEncoderEntry {
  uint32_t code;
  uint32_t len;  // 0: symbol absent from the codebook
};

}  // namespace ebzip
