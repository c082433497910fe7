// Canonical, length-limited Huffman coding of quantization symbols.
//
// One codebook per stream (built from the global histogram on the host);
// the code lengths are all the stream stores, the codes follow canonically.
// Decoding uses a small lookup table for codes up to kLutBits and the
// canonical first-code ranges for longer ones.
#pragma once
#include "bitio.hpp"

namespace ebzip {

constexpr int kMaxCodeLen = 20;  // 2^20 >= any alphabet we use (<= 65536 symbols)
constexpr int kLutBits = 11;

// Decoding tables, built from code lengths (see build_decoder in the driver).
struct HuffmanDecoder {
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

  // Returns false on a bit pattern that is no code (corrupted stream).
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
