#!/usr/bin/env bash
# One call on a GPU machine: build, the whole test suite (GPU tests included), ./run on the GPU against the
# CPU reference for each scheme, and a short timing. Logs go to $OUT (or test/out/device).
# Usage: W8A8_SHARED=path/to/shared bash tools/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-test/out/device}
mkdir -p "$OUT"
S=${W8A8_SHARED:-../shared}
export W8A8_SHARED=$S
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nvcc --version | tail -2; } 2>&1 | tee "$OUT/gpu.txt"
make -s 2>&1 | tee "$OUT/build.log"
make -s test 2>&1 | tee "$OUT/test.log" | grep -E "^(FAIL|SKIP)|passed"
echo "--- ./run on the GPU vs --cpu, greedy 200 tokens from BOS" | tee "$OUT/run.log"
for model in stories260K tinystories-656k; do
  for s in bf16 fp8 int8; do
    f=test/out/$model.$s.w8a8
    ./run "$f" -t 0 -n 200 > "$OUT/gpu.txt.$model.$s" 2> "$OUT/gpu.err.$model.$s"
    ./run "$f" -t 0 -n 200 --cpu > "$OUT/cpu.txt.$model.$s" 2>/dev/null
    if cmp -s "$OUT/gpu.txt.$model.$s" "$OUT/cpu.txt.$model.$s"; then r=same; else r=DIFFERENT; fi
    printf '%-17s %-5s GPU text %s as CPU; %s\n' "$model" "$s" "$r" "$(grep -o '[0-9.]* tok/s' "$OUT/gpu.err.$model.$s")" | tee -a "$OUT/run.log"
  done
done
head -c 300 "$OUT/gpu.txt.tinystories-656k.fp8"; echo
./run test/out/tinystories-656k.fp8.w8a8 -v -n 1 "Hi" 2>&1 >/dev/null | grep -E "w8a8:|run:" | tee -a "$OUT/run.log"
tar czf "$OUT.tgz" -C "$(dirname "$OUT")" "$(basename "$OUT")" && rm -rf "$OUT" && mkdir -p "$OUT" && mv "$OUT.tgz" "$OUT/logs.tgz"
