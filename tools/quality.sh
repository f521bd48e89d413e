#!/usr/bin/env bash
# make quality: converts models in every scheme and prints one perplexity table (markdown) on stdout.
# The f32 rows run on the CPU reference (the f32 scheme has no GPU path); the others on the GPU when there is
# one (on the CPU reference otherwise: slower, the same numbers). Models: stories260K and tinystories-656k on
# tinystories-dev.txt (context 512), calibrated on tinystories-holdout.txt (4096 tokens; a disjoint part of
# TinyStories); SmolLM2-135M-Instruct (`make models`, GPU only) on wikitext-2-test.raw and
# tinystories-holdout.txt (context 1024), calibrated on tinyshakespeare.txt; its f32 row is left out (the CPU
# reference would take hours on 300K tokens), so its Δ is against bf16.
set -uo pipefail
cd "$(dirname "$0")/.."
S=${W8A8_SHARED:-../shared}
M=${W8A8_MODELS:-$HOME/.cache/w8a8/models}
O=${QUALITY_DIR:-test/out/quality}
mkdir -p "$O"
make -s run convert >&2

ppl() { ./run "$1" --ppl "$2" -c "$3" 2>>"$O/log" | sed -n 's/^ppl: //p'; }
weight_bytes() { od -An -t u8 -j 152 -N 8 "$1" | tr -d ' '; }   # the header's data_bytes
# table NAME INPUT "CONVERT FLAGS" TEXT CONTEXT CALIB_TEXT ROW... ; a row is "label:convert flags"
table() {
  local name=$1 in=$2 flags=$3 text=$4 ctx=$5 calib=$6; shift 6
  local base="" cal="$O/$name.calib"
  [ -f "$cal" ] || ./convert "$in" $flags -o "$O/$name.caltmp" --scheme f32 --calib "$calib" --calib-save "$cal" --quiet >&2 \
    || ./convert "$in" $flags -o "$O/$name.caltmp" --scheme bf16 --calib "$calib" --calib-save "$cal" --quiet >&2
  rm -f "$O/$name.caltmp"
  for row in "$@"; do
    local label=${row%%:*} cflags=${row#*:}
    local f="$O/$name.${label// /_}.w8a8" extra=""
    case "$cflags" in *auto*) extra="--calib $calib";; *static*|*smooth*|*-sq*|*"--kv fp8"*) extra="--calib-load $cal";; esac
    [ -f "$f" ] || ./convert "$in" $flags -o "$f" $cflags $extra --quiet >&2 || { echo "| $name | $label | convert failed | | | |"; continue; }
    local p t0=$(date +%s)
    p=$(ppl "$f" "$text" "$ctx")
    local secs=$(( $(date +%s) - t0 ))
    [ -z "$base" ] && base=$p
    local d=$(awk -v a="$p" -v b="$base" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%+.2f %%", 100 * (a / b - 1) }')
    local mib=$(awk -v b="$(weight_bytes "$f")" 'BEGIN { printf "%.2f", b / 1048576 }')
    printf '| %s | %s | %s | %s MiB | %s | %s | %d s |\n' "$name" "$(basename "$text")" "$label" "$mib" "${p:-failed (see $O/log)}" "$d" "$secs"
  done
}
ROWS=("f32:--scheme f32" "bf16:--scheme bf16" "fp8:--scheme fp8" "fp8 --smooth:--scheme fp8 --smooth"
      "fp8-static --no-smooth:--scheme fp8-static --no-smooth" "fp8-static:--scheme fp8-static"
      "fp8-static --alpha auto:--scheme fp8-static --alpha auto"
      "int8:--scheme int8" "int8-sq --act dynamic:--scheme int8-sq --act dynamic"
      "int8-sq --no-smooth:--scheme int8-sq --no-smooth" "int8-sq:--scheme int8-sq" "int8-sq --alpha auto:--scheme int8-sq --alpha auto"
      "fp8 --rotate:--scheme fp8 --rotate" "int8 --rotate:--scheme int8 --rotate"
      "bf16 --kv fp8:--scheme bf16 --kv fp8" "fp8 --kv fp8:--scheme fp8 --kv fp8" "int8-sq --kv fp8:--scheme int8-sq --kv fp8")
echo "| model | text | scheme | weights | perplexity | Δ | time |"
echo "|---|---|---|---|---|---|---|"
H=$S/corpus/tinystories-holdout.txt
table stories260K "$S/models/stories260K/stories260K.bin" "--tokenizer $S/models/stories260K/tok512.bin" "$S/corpus/tinystories-dev.txt" 512 "$H" "${ROWS[@]}"
table tinystories-656k "$S/models/tinystories-656k" "" "$S/corpus/tinystories-dev.txt" 512 "$H" "${ROWS[@]}"
G="$M/SmolLM2-135M-Instruct.Q4_1.gguf"
where=$(./run "$O/stories260K.bf16.w8a8" -n 1 2>&1 >/dev/null || true)   # which device runs the models
if [ -f "$G" ] && ! grep -q "CPU reference" <<< "$where"; then
  for T in wikitext-2-test.raw tinystories-holdout.txt; do
    table smollm2-135m "$G" "" "$S/corpus/$T" 1024 "$S/corpus/tinyshakespeare.txt" "${ROWS[@]:1}"
  done
else
  echo "(SmolLM2 rows skipped: they need the GPU and $G; run make models)" >&2
fi
