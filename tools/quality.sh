#!/usr/bin/env bash
# make quality: converts models in every scheme and prints one perplexity table (markdown) on stdout.
# The f32 rows run on the CPU reference (the f32 scheme has no GPU path); the others on the GPU when there is
# one. Models: stories260K and tinystories-656k on tinystories-dev.txt (context 512), and SmolLM2-135M-Instruct
# (`make models`) on wikitext-2-test.raw and tinystories-holdout.txt (context 1024; its f32 row is left out:
# the CPU reference would take hours on 300K tokens, so its Δ is against bf16).
set -uo pipefail
cd "$(dirname "$0")/.."
S=${W8A8_SHARED:-../shared}
M=${W8A8_MODELS:-$HOME/.cache/w8a8/models}
O=${QUALITY_DIR:-test/out/quality}
mkdir -p "$O"
make -s run convert >&2

ppl() { ./run "$1" --ppl "$2" -c "$3" 2>>"$O/log" | sed -n 's/^ppl: //p'; }
table() {   # name, input, convert flags, text, context, schemes...
  local name=$1 in=$2 flags=$3 text=$4 ctx=$5; shift 5
  local base=""
  for s in "$@"; do
    local f="$O/$name.$s.w8a8"
    [ -f "$f" ] || ./convert "$in" $flags -o "$f" --scheme "$s" --quiet >&2 || { echo "| $name | $s | convert failed | | |"; continue; }
    local p t0=$(date +%s)
    p=$(ppl "$f" "$text" "$ctx")
    local secs=$(( $(date +%s) - t0 ))
    [ -z "$base" ] && base=$p
    local d=$(awk -v a="$p" -v b="$base" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%+.2f %%", 100 * (a / b - 1) }')
    local mib=$(awk -v b="$(stat -c %s "$f")" 'BEGIN { printf "%.1f", b / 1048576 }')
    printf '| %s | %s | %s | %s MiB | %s | %s | %d s |\n' "$name" "$(basename "$text")" "$s" "$mib" "${p:-failed (see $O/log)}" "$d" "$secs"
  done
}
echo "| model | text | scheme | file | perplexity | Δ | time |"
echo "|---|---|---|---|---|---|---|"
table stories260K "$S/models/stories260K/stories260K.bin" "--tokenizer $S/models/stories260K/tok512.bin" "$S/corpus/tinystories-dev.txt" 512 f32 bf16 fp8 int8
table tinystories-656k "$S/models/tinystories-656k" "" "$S/corpus/tinystories-dev.txt" 512 f32 bf16 fp8 int8
G="$M/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$G" ]; then
  table smollm2-135m "$G" "" "$S/corpus/wikitext-2-test.raw" 1024 bf16 fp8 int8
  table smollm2-135m "$G" "" "$S/corpus/tinystories-holdout.txt" 1024 bf16 fp8 int8
else
  echo "(SmolLM2 rows skipped: $G is absent; run make models)" >&2
fi
