#!/usr/bin/env bash
# Builds the C++ fuzz/sanitizer driver fuzz/codec_fuzz.cpp against the CPU
# core (csrc/cpu/codec_cpu.cpp) and the vendored zstd.
#
#   fuzz/build.sh sanitize   -> build/fuzz/codec_fuzz_asan   (g++ or $CXX; ASan + UBSan, OpenMP, standalone main)
#   fuzz/build.sh libfuzzer  -> build/fuzz/codec_fuzz_libfuzzer (clang++ -fsanitize=fuzzer,address,undefined;
#                               needs Debian's clang + libclang-rt-14-dev; OpenMP off, so the blocks run serially)
#
# The core keeps its release flags that change results (-fwrapv,
# -ffp-contract=off, -fno-math-errno; see CMakeLists.txt). zstd is compiled
# once without sanitizers (it is third-party and large) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-sanitize}"
out=build/fuzz
mkdir -p "$out"

core_flags=(-std=c++17 -g -O1 -fno-omit-frame-pointer -fwrapv -ffp-contract=off -fno-math-errno
            -Icsrc/include -Icsrc -Ithird_party/zstd)
san_flags=(-fsanitize=address,undefined -fno-sanitize-recover=all)

build_zstd() {  # $1 = C compiler, $2 = object path
  if [[ ! -f "$2" || third_party/zstd/zstd.c -nt "$2" ]]; then
    "$1" -O2 -g -c third_party/zstd/zstd.c -Ithird_party/zstd -o "$2"
  fi
}

case "$what" in
  sanitize)
    cxx="${CXX:-g++}"
    cc="${CC:-gcc}"
    build_zstd "$cc" "$out/zstd_$cc.o"
    "$cxx" "${core_flags[@]}" "${san_flags[@]}" -fopenmp -DEBZIP_STANDALONE \
      fuzz/codec_fuzz.cpp csrc/cpu/codec_cpu.cpp "$out/zstd_$cc.o" -lpthread -o "$out/codec_fuzz_asan"
    echo "built $out/codec_fuzz_asan ($cxx, -fsanitize=address,undefined)"
    ;;
  libfuzzer)
    cxx="${CXX:-clang++}"
    cc="${CC:-clang}"
    build_zstd "$cc" "$out/zstd_$cc.o"
    "$cxx" "${core_flags[@]}" "${san_flags[@]}" -fsanitize=fuzzer -Wno-unknown-pragmas \
      fuzz/codec_fuzz.cpp csrc/cpu/codec_cpu.cpp "$out/zstd_$cc.o" -lpthread -o "$out/codec_fuzz_libfuzzer"
    echo "built $out/codec_fuzz_libfuzzer ($cxx, libFuzzer + ASan + UBSan)"
    ;;
  *)
    echo "usage: $0 sanitize|libfuzzer" >&2
    exit 2
    ;;
esac
