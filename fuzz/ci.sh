#!/usr/bin/env bash
# The CI step for the C++ core under sanitizers (called by .ci/run; runs alone too):
#   1. g++ (or $CXX) build of fuzz/codec_fuzz.cpp + csrc/cpu/codec_cpu.cpp with
#      -fsanitize=address,undefined -fno-sanitize-recover=all, OpenMP on;
#   2. the stress driver: generated arrays round-tripped (bound checked, the
#      stream the same for 1 and 3 threads) and their streams mutated and decoded;
#   3. the committed corpus replayed;
#   4. where clang++ with libFuzzer is available: a bounded coverage-guided run
#      (EBZIP_LIBFUZZER_SECONDS, default 60; 0 skips it).
# Any sanitizer report, bound violation or undetected corruption aborts: exit != 0.
set -euo pipefail
cd "$(dirname "$0")/.."

seed="${EBZIP_FUZZ_SEED:-$(date +%s)}"
arrays="${EBZIP_STRESS_ARRAYS:-1500}"
seconds="${EBZIP_LIBFUZZER_SECONDS:-60}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
start=$SECONDS

echo "== sanitizers: build (ASan + UBSan)"
fuzz/build.sh sanitize
echo "== sanitizers: stress (seed $seed, $arrays arrays x 40 mutations)"
./build/fuzz/codec_fuzz_asan stress "$seed" "$arrays" 40
echo "== sanitizers: corpus replay"
./build/fuzz/codec_fuzz_asan fuzz/corpus/*

have_libfuzzer() {
  command -v clang++ >/dev/null 2>&1 || return 1
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
    > build/fuzz/probe.cpp
  clang++ -fsanitize=fuzzer build/fuzz/probe.cpp -o build/fuzz/probe >/dev/null 2>&1
}

# On CI (CI=true), as root, try once to install Debian's clang + libFuzzer
# runtime (non-interactive, bounded); any failure just skips libFuzzer.
if [[ "$seconds" != 0 && "${CI:-}" == true && $(id -u) == 0 ]] && ! have_libfuzzer && command -v apt-get >/dev/null; then
  echo "== libFuzzer: installing clang libclang-rt-14-dev"
  (export DEBIAN_FRONTEND=noninteractive
   timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq clang libclang-rt-14-dev) >/dev/null 2>&1 \
    || echo "   (could not install clang; libFuzzer skipped)"
fi

if [[ "$seconds" != 0 ]]; then
  if have_libfuzzer; then
    echo "== libFuzzer: build"
    fuzz/build.sh libfuzzer
    work=$(mktemp -d)
    echo "== libFuzzer: ${seconds} s from fuzz/corpus (new inputs go to $work, not the committed corpus)"
    set +e
    ./build/fuzz/codec_fuzz_libfuzzer "$work" fuzz/corpus -max_total_time="$seconds" -timeout=20 \
      -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/" > "$work/log" 2>&1
    status=$?
    set -e
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::|INFO: Seed)|ERROR|SUMMARY|FAILURE' "$work/log" || true
    if [[ $status != 0 ]]; then
      echo "libFuzzer found a failing input: $(ls "$work"/crash-* "$work"/timeout-* "$work"/oom-* 2>/dev/null)" >&2
      exit "$status"
    fi
    rm -rf "$work"
  else
    echo "== libFuzzer: skipped (needs clang++ with libFuzzer: apt-get install clang libclang-rt-14-dev)"
  fi
fi
echo "== sanitizer/fuzz step green in $((SECONDS - start)) s"
