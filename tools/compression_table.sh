#!/usr/bin/env bash
# The measurements behind docs/compression.md: every compression step of one
# model, scored by `lamina perplexity` (PPL and KLD vs the f16 model) on the
# held-out part of tests/data/alice29.txt, sized, and timed by `lamina bench`.
# Calibration (imatrix, pruning, distillation) uses the first part of the text only.
#   tools/compression_table.sh [HF_DIR] [WORK_DIR]      (defaults: SmolLM2-135M, /tmp/lamina-compress)
# Steps whose outputs exist are not redone; results go to WORK_DIR/results.tsv.
# Knobs (env): CHUNKS (perplexity chunks of 512, default 4), DISTILL_STEPS (default 10), DISTILL_LR (default 2e-4),
# ROWS / BENCH_ROWS (the rows scored / benchmarked, default all), COMPRESS_ONLY=1 (cut, do not score),
# REPS (bench repetitions, default 1), THREADS (default 2), CALIB (compress calibration flags,
# default 8 windows of 128 tokens), DROP_LAYERS (layers the drop rows remove, default 8; the rows
# are named drop<N>..., e.g. drop6-ffn075 with DROP_LAYERS=6), BENCH_ONLY=1 (only time the BENCH_ROWS,
# PPL and KLD left as '-': speeds re-measured on a quieter host without the perplexity runs).
set -euo pipefail
cd "$(dirname "$0")/.."
hf=${1:-$HOME/.cache/lamina/hf/smollm2-135m-instruct}
work=${2:-/tmp/lamina-compress}
chunks=${CHUNKS:-4} steps=${DISTILL_STEPS:-10} lr=${DISTILL_LR:-2e-4} reps=${REPS:-1} threads=${THREADS:-2}
calib=${CALIB:---nsamples 8 --seqlen 128} drop=${DROP_LAYERS:-8}
mkdir -p "$work"
lamina() { python -m lamina "$@"; }

# alice29.txt: the first 60% of its lines calibrate, the last 40% are held out
n=$(wc -l < tests/data/alice29.txt); cut_at=$((n * 6 / 10))
head -n "$cut_at" tests/data/alice29.txt > "$work/calib.txt"
tail -n +"$((cut_at + 1))" tests/data/alice29.txt > "$work/heldout.txt"

f16=$work/f16.gguf
[ -f "$f16" ] || lamina convert "$hf" --f16 -o "$f16" --quiet --threads "$threads"
if [ -n "${BENCH_ONLY:-}" ]; then ROWS=${ROWS:-${BENCH_ROWS:?BENCH_ONLY=1 needs BENCH_ROWS}}; fi
[ -f "$work/f16.kld" ] || [ -n "${BENCH_ONLY:-}" ] || lamina perplexity -m "$f16" -f "$work/heldout.txt" --chunks "$chunks" \
  --kl-divergence-base "$work/f16.kld" -t "$threads" > "$work/f16.ppl.txt"
want() { [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" $1 "* ]]; }
# the quantized originals and the importance matrix, made only when their rows are wanted (so copies of
# this script run alongside with disjoint ROWS, or COMPRESS_ONLY=1, do not compute them twice)
quant() { [ -z "${COMPRESS_ONLY:-}" ] && want "$1"; }
if { quant q4_k_m-imatrix || quant iq3_s-imatrix; } && [ ! -f "$work/imatrix.gguf" ]; then
  lamina imatrix -m "$f16" -f "$work/calib.txt" --chunks 20 -o "$work/imatrix.gguf" -t "$threads" > /dev/null
fi
if quant q4_k_m && [ ! -f "$work/q4_k_m.gguf" ]; then lamina quantize "$f16" "$work/q4_k_m.gguf" q4_k_m --quiet; fi
if quant q4_k_m-imatrix && [ ! -f "$work/q4_k_m-imatrix.gguf" ]; then
  lamina quantize --imatrix "$work/imatrix.gguf" "$f16" "$work/q4_k_m-imatrix.gguf" q4_k_m --quiet
fi
if quant iq3_s && [ ! -f "$work/iq3_s.gguf" ]; then lamina quantize "$f16" "$work/iq3_s.gguf" iq3_s --quiet; fi
if quant iq3_s-imatrix && [ ! -f "$work/iq3_s-imatrix.gguf" ]; then
  lamina quantize --imatrix "$work/imatrix.gguf" "$f16" "$work/iq3_s-imatrix.gguf" iq3_s --quiet
fi

# compress NAME FLAGS...: OUT=$work/NAME, its f16 GGUF and a plain q4_k_m of it (the original's
# imatrix does not fit a cut model's tensors)
compress() {
  local name=$1; shift
  local out=$work/$name
  # a lock, so a second copy of this script (COMPRESS_ONLY=1, run alongside to use more cores)
  # and this one never cut the same model twice: the one without it waits for the file
  if mkdir "$work/$name.lock" 2> /dev/null; then
    if ! ls "$out"/*.gguf > /dev/null 2>&1; then
      # shellcheck disable=SC2086
      lamina compress "$hf" -o "$out" --calibration "$work/calib.txt" --threads "$threads" $calib "$@" \
        > "$work/$name.log" 2>&1 < /dev/null || { echo "compress $name failed:"; tail -5 "$work/$name.log"; return 1; }
    fi
  else
    until ls "$out"/*.gguf > /dev/null 2>&1; do sleep 10; done
  fi
  local g; g=$(ls "$out"/*-F16.gguf)
  ln -sf "$g" "$work/$name.gguf"
}
score() {  # score NAME: one TSV row
  local name=$1 g=$work/$1.gguf
  local ppl kld mb pp tg
  ppl=- kld=-
  if [ -z "${BENCH_ONLY:-}" ]; then
    read -r ppl kld < <(lamina perplexity -m "$g" --kl-divergence-base "$work/f16.kld" --kl-divergence --chunks "$chunks" \
      -t "$threads" --json 2>/dev/null | tail -1 | python -c "import json,sys; d=json.load(sys.stdin); print(round(d['ppl'], 3), round(d['kld'], 4))")
  fi
  mb=$(python -c "import os; print(round(os.path.getsize(os.path.realpath('$g')) / 1e6, 1))")
  pp=- tg=-
  if [ -z "${BENCH_ROWS:-}" ] || [[ " $BENCH_ROWS " == *" $name "* ]]; then
    read -r pp tg < <(lamina bench -m "$g" -p 512 -n 128 -r "$reps" -t "$threads" --json \
    | python -c "
import json, sys
recs = json.load(sys.stdin)
get = lambda p, n: next(r['avg_ts'] for r in recs if r['n_prompt'] == p and r['n_gen'] == n)
print(round(get(512, 0), 1), round(get(0, 128), 1))")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$ppl" "$kld" "$mb" "$pp" "$tg" | tee -a "$work/results.tsv"
}
# appended to, so a resumed run keeps the rows an earlier one scored
[ -n "${COMPRESS_ONLY:-}" ] || [ -f "$work/results.tsv" ] || printf 'step\tPPL\tKLD\tMB\tpp512\ttg128\n' > "$work/results.tsv"
row() { if want "$1"; then score "$1"; fi; }
if [ -z "${COMPRESS_ONLY:-}" ]; then for name in f16 q4_k_m q4_k_m-imatrix iq3_s iq3_s-imatrix; do row "$name"; done; fi
# the f16 model's log-probs over the calibration text (40 chunks of 128), saved by llama.cpp's
# llama-perplexity: the teacher of the drop<N>-kldbase row (made only when that row is wanted)
llama_bin=${LLAMA_BIN:-$HOME/.cache/lamina/llama.cpp/build/bin}
if want "drop$drop-kldbase" && [ ! -f "$work/calib-llama.kld" ]; then
  "$llama_bin/llama-perplexity" -m "$f16" -f "$work/calib.txt" -c 128 --chunks 40 -t "$threads" \
    --kl-divergence-base "$work/calib-llama.kld" > /dev/null 2>&1
fi
# NAME FLAGS...: compressed, then scored (f16, and q4_k_m where listed)
while read -r name q4 flags <&3; do
  { want "$name" || want "$name-q4_k_m"; } || continue
  # shellcheck disable=SC2086
  compress "$name" $flags
  [ -z "${COMPRESS_ONLY:-}" ] || continue
  row "$name"
  if [ "$q4" = q4 ] && want "$name-q4_k_m"; then
    [ -f "$work/$name-q4_k_m.gguf" ] || lamina quantize "$work/$name.gguf" "$work/$name-q4_k_m.gguf" q4_k_m --quiet
    score "$name-q4_k_m"
  fi
done 3<<ROWS_EOF
magnitude50 - --sparsity 0.5 --method magnitude
wanda50 q4 --sparsity 0.5 --method wanda
sparsegpt50 - --sparsity 0.5 --method sparsegpt
wanda24 q4 --nm 2:4 --method wanda
drop$drop - --prune-layers $drop
ffn075 - --ffn-keep 0.75
drop$drop-ffn075 q4 --prune-layers $drop --ffn-keep 0.75
drop$drop-distill - --prune-layers $drop --distill --distill-steps $steps --distill-batch 2 --distill-seqlen 128 --distill-lr $lr
drop$drop-ffn075-distill q4 --prune-layers $drop --ffn-keep 0.75 --distill --distill-steps $steps --distill-batch 2 --distill-seqlen 128 --distill-lr $lr
heads067 - --heads-keep 0.67
drop$drop-kldbase - --prune-layers $drop --distill --teacher-kld-base $work/calib-llama.kld --distill-steps $steps --distill-batch 2 --distill-lr $lr
drop$drop-seqkd - --prune-layers $drop --distill-seq 32 --distill-seq-tokens 96 --distill-steps $steps --distill-batch 2 --distill-lr $lr
ROWS_EOF
