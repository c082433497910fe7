// The device driver of the ebzip codec (csrc/cuda/codec_device.cu).
//
// One source, two builds: nvcc compiles it for the CUDA device system into
// ebzip._cuda (pointers are device pointers, work runs on `stream`), and g++
// compiles the same file for Thrust's OpenMP device system into
// ebzip._shared_path (pointers are host pointers, `stream` is ignored), which
// is how the tests run every kernel body without a GPU.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../cpu/codec_cpu.hpp"

namespace ebzip::device {

// "cuda" or "omp": the Thrust device system this build targets.
const char* device_system();
// Whether a device can run this build here (CUDA: a GPU is visible; OMP: always).
bool can_run();
// Versions and devices, for python -m ebzip.info.
std::string runtime_info();

// High-water mark of the device driver's stream-ordered allocations (the
// current device's default memory pool), optionally reset; -1 on the OpenMP build.
int64_t pool_high_water(bool reset);

// Which pipelines run on the device; others raise std::invalid_argument
// (callers fall back to the CPU driver, which writes the same stream).
bool supports(const cpu::CompressParams& p, uint64_t n);

// data: device-resident C-contiguous elements of p.dtype. Returns the stream
// (host bytes): the same bytes cpu::compress writes for the same input.
std::vector<uint8_t> compress(const void* data, const std::vector<uint64_t>& shape, const cpu::CompressParams& p,
                              uintptr_t stream);

// Pipelines the device decodes (lorenzo); false for others.
bool can_decode(const uint8_t* stream_bytes, uint64_t len);
// out: device memory for the stream's elements; stream_bytes: host memory.
void decompress(const uint8_t* stream_bytes, uint64_t len, void* out, uintptr_t stream);

}  // namespace ebzip::device
