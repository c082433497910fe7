// The shared path: the CUDA driver's source (codec_device.cu), compiled by
// the host compiler for Thrust's OpenMP device system. ebzip._shared_path is
// built from it so that the tests run every device functor on the CPU.
#ifndef THRUST_DEVICE_SYSTEM
#define THRUST_DEVICE_SYSTEM THRUST_DEVICE_SYSTEM_OMP
#endif
#include "codec_device.cu"
