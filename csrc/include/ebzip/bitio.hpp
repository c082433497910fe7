// MSB-first bit packing for Huffman codes. Each chunk is its own bitstream,
// so chunks are written and read independently (one per thread / block).
#pragma once
#include "hostdevice.hpp"

namespace ebzip {

EBZ_HD_INLINE uint64_t load_be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

struct BitWriter {
  uint8_t* out;      // must have room for ceil(total_bits / 32) * 4 bytes
  uint64_t pos = 0;  // bytes written
  uint64_t acc = 0;  // low `n` bits are pending
  int n = 0;

  EBZ_HD explicit BitWriter(uint8_t* o) : out(o) {}

  EBZ_HD_INLINE void put(uint32_t code, int len) {  // len <= 32
    acc = (acc << len) | code;
    n += len;
    if (n >= 32) {
      const uint32_t w = uint32_t(acc >> (n - 32));
      out[pos] = uint8_t(w >> 24); out[pos + 1] = uint8_t(w >> 16);
      out[pos + 2] = uint8_t(w >> 8); out[pos + 3] = uint8_t(w);
      pos += 4;
      n -= 32;
    }
  }
  // Pads the last byte with zeros; returns the number of bytes used.
  EBZ_HD_INLINE uint64_t finish() {
    while (n > 0) {
      const int take = n >= 8 ? 8 : n;
      out[pos++] = uint8_t((acc >> (n - take)) << (8 - take));
      n -= take;
    }
    return pos;
  }
};

// Reads past the end as zeros; the caller compares bits_consumed() with the
// stored bit count afterwards, so a truncated or corrupted chunk is detected
// without ever reading outside the buffer.
struct BitReader {
  const uint8_t* p;
  const uint8_t* end;
  uint64_t buf = 0;  // left-aligned
  int n = 0;         // valid bits in buf
  uint64_t consumed = 0;

  EBZ_HD BitReader(const uint8_t* b, uint64_t len) : p(b), end(b + len) { refill(); }

  EBZ_HD_INLINE void refill() {
    if (end - p >= 8) {
      buf |= load_be64(p) >> n;
      p += (63 - n) >> 3;
      n |= 56;
    } else {
      while (n <= 56) {
        const uint64_t byte = p < end ? *p++ : 0;
        buf |= byte << (56 - n);
        n += 8;
      }
    }
  }
  EBZ_HD_INLINE uint32_t peek(int bits) const { return uint32_t(buf >> (64 - bits)); }
  EBZ_HD_INLINE void skip(int bits) { buf <<= bits; n -= bits; consumed += uint64_t(bits); }
  EBZ_HD_INLINE uint64_t bits_consumed() const { return consumed; }
};

}  // namespace ebzip
