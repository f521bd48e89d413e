#!/usr/bin/env bash
# make fuzz: builds the libFuzzer targets (clang, AddressSanitizer + UndefinedBehaviorSanitizer), makes their
# seed corpora from the shared data, and runs each for FUZZ_SECONDS (default 60). A crash, leak or timeout
# fails, and libFuzzer writes the input under test/out/fuzz/. Needs `make test` to have run once (models).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
S=${W8A8_SHARED:-../shared}
SECS=${FUZZ_SECONDS:-60}
F=test/out/fuzz
mkdir -p $F/bin
CC=${FUZZ_CC:-clang}
FLAGS="-std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
$CC $FLAGS fuzz/fuzz_model.c -o $F/bin/fuzz_model -lm -ldl -lpthread || exit 1
$CC $FLAGS fuzz/fuzz_tokenizer.c -o $F/bin/fuzz_tokenizer -lm -ldl -lpthread || exit 1
$CC $FLAGS fuzz/fuzz_json.c -o $F/bin/fuzz_json || exit 1
$CC $FLAGS -DW8A8_FUZZ fuzz/fuzz_convert.c w8a8.c -o $F/bin/fuzz_convert -lm -ldl -lpthread || exit 1

# seed corpora (made from the tests' data; kept between runs, growing)
mkdir -p $F/model $F/tokenizer $F/json $F/convert
for s in f32 bf16 fp8 int8; do
  [ -f $F/model/tiny.$s ] || ./convert --vocab-only $S/models/stories260K/tok512.bin -o $F/model/tiny.$s --scheme $s --quiet
done
python3 - "$S" "$F" <<'PY'
import json, os, sys
S, F = sys.argv[1], sys.argv[2]
for i, l in enumerate(open(f"{S}/tokenizers/vectors/llama3.jsonl")):
    t = json.loads(l)["text"].encode()
    for k in range(4): open(f"{F}/tokenizer/v{i}_{k}", "wb").write(bytes([k]) + t)
for name, src in [("config", f"{S}/models/tinystories-656k/config.json"), ("tok", f"{S}/models/tinystories-656k/tokenizer.json")]:
    open(f"{F}/json/{name}", "wb").write(open(src, "rb").read()[:4096])
seeds = [(1, f"{S}/models/stories260K-hf/model.safetensors", 4096), (2, f"{S}/models/stories260K/stories260K.bin", 1 << 20),
         (3, f"{S}/models/stories260K/tok512.bin", 1 << 20), (4, f"{S}/models/tinystories-656k/config.json", 1 << 20),
         (5, f"{S}/models/tinystories-656k/tokenizer.json", 1 << 20)]
if os.path.exists("test/out/synth.gguf"): seeds.append((0, "test/out/synth.gguf", 1 << 20))
for sel, src, n in seeds:
    open(f"{F}/convert/seed{sel}", "wb").write(bytes([sel]) + open(src, "rb").read()[:n])
PY
fail=0
for t in model tokenizer json convert; do
  log=$F/$t.log
  leaks=1
  for try in 1 2 3; do
    (cd $F && W8A8_FUZZ_DIR=$ROOT/test/out ASAN_OPTIONS=detect_leaks=$leaks ./bin/fuzz_$t -max_total_time=$SECS -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
        -artifact_prefix=$t- $t > $t.log 2>&1)
    rc=$?
    # LeakSanitizer's tracer crashing by itself (no finding, no report: google/sanitizers#1353) is run again, once;
    # if it crashes again, a third run goes without the leak check and says so
    if [ $rc != 0 ] && [ $try -lt 3 ] && grep -q "LeakSanitizer has encountered a fatal error" $log && ! grep -q "ERROR:" $log; then
      [ $try = 2 ] && leaks=0
      echo "fuzz_$t: LeakSanitizer's tracer crashed (a sanitizer flake, no finding): run again$([ $leaks = 0 ] && echo ', LEAKS NOT CHECKED this time')"; continue
    fi
    break
  done
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' $log | grep -o '[0-9]*$')
  printf 'fuzz_%-9s %10s executions in %ss: %s\n' $t "${runs:-?}" $SECS "$([ $rc = 0 ] && echo clean || echo "FAILED (see $log)")"
  [ $rc = 0 ] || { fail=1; grep -E "ERROR|SUMMARY" $log | head -3; }
done
exit $fail
