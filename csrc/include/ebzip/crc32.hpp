// CRC-32 (IEEE 802.3, the zlib polynomial), slicing-by-4. Every byte of a
// stream is covered by exactly one CRC, so any corruption of up to 32
// consecutive bits is detected.
#pragma once
#include "hostdevice.hpp"

namespace ebzip {

struct Crc32Table {
  uint32_t t[4][256];
  constexpr Crc32Table() : t{} {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 4; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

inline uint32_t crc32(const uint8_t* data, uint64_t len, uint32_t crc = 0) {
  static constexpr Crc32Table tab;
  crc = ~crc;
  while (len >= 4) {
    crc ^= uint32_t(data[0]) | uint32_t(data[1]) << 8 | uint32_t(data[2]) << 16 | uint32_t(data[3]) << 24;
    crc = tab.t[3][crc & 0xff] ^ tab.t[2][(crc >> 8) & 0xff] ^ tab.t[1][(crc >> 16) & 0xff] ^ tab.t[0][crc >> 24];
    data += 4;
    len -= 4;
  }
  while (len--) crc = tab.t[0][(crc ^ *data++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

}  // namespace ebzip
