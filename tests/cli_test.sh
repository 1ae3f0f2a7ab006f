#!/usr/bin/env bash
# The metatape command end to end: help, bad input (a message and a non-zero
# exit, nothing written), a short run, bit-for-bit resume, refusal of a
# corrupt checkpoint, evaluation against a baseline.
#   tests/cli_test.sh path/to/metatape
set -uo pipefail
metatape=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# expect_error "what" "part of the message" command...: must exit non-zero
# and say the part on stderr.
expect_error() {
  local what=$1 part=$2
  shift 2
  local err
  if err=$("$@" 2>&1 >/dev/null); then fail "$what: exited 0"; return; fi
  grep -qF -- "$part" <<<"$err" || fail "$what: message lacks '$part': $err"
}

"$metatape" --help >/dev/null || fail "--help"
"$metatape" train --help | grep -q -- "--inner-steps" || fail "train --help lists --inner-steps"

expect_error "negative inner steps" "--inner-steps" "$metatape" train --inner-steps -1 --out "$work/bad"
expect_error "unknown algorithm" "mamal" "$metatape" train --algorithm mamal --out "$work/bad"
expect_error "unknown option" "--frobnicate" "$metatape" train --frobnicate
expect_error "no subcommand" "subcommand" "$metatape"
expect_error "lslr with anil" "LSLR" "$metatape" train --algorithm anil --lslr --out "$work/bad"
expect_error "missing checkpoint" "cannot open" "$metatape" eval --checkpoint "$work/none.bin"
expect_error "resume without a run" "no checkpoint to resume" "$metatape" train --resume --out "$work/empty"
expect_error "a CUDA graph on the CPU" "a CUDA graph step needs device cuda" \
  "$metatape" train --cuda-graph --out "$work/graph"
[ -e "$work/graph" ] && fail "a run refused for --cuda-graph created its directory"
[ -e "$work/bad/checkpoint.bin" ] && fail "a refused run wrote a checkpoint"

"$metatape" info | grep -q "^cpu: usable" || fail "info names the CPU"
if ! "$metatape" info | grep -q "^cuda: usable"; then
  # No GPU here: asking for one is a clear error, before anything is written.
  expect_error "--device cuda without a GPU" "--device cuda: " "$metatape" train --device cuda --out "$work/gpu"
  [ -e "$work/gpu" ] && fail "a run refused for its device created its directory"
fi

common=(--checkpoint-every 10 --meta-batch 5 --hidden 16,16 --inner-steps 2 --quiet)
"$metatape" train "${common[@]}" --iterations 30 --out "$work/a" >"$work/a.out" 2>"$work/a.err" || fail "training run a"
for f in checkpoint.bin metrics.jsonl config.json learning_curve.svg; do
  [ -s "$work/a/$f" ] || fail "run a did not write $f"
done
head -c 4 "$work/a/learning_curve.svg" | grep -q "<svg" || fail "learning_curve.svg is not SVG"
[ "$(wc -l <"$work/a/metrics.jsonl")" -eq 3 ] || fail "metrics.jsonl should hold 3 lines (every 10 of 30)"
grep -q '"task_losses"' "$work/a/metrics.jsonl" || fail "metrics lack per-task losses"
grep -q $'\r' "$work/a.err" && fail "a progress line went to a non-terminal"

expect_error "overwriting a run" "already holds a run" "$metatape" train "${common[@]}" --iterations 30 --out "$work/a"

# Resume: 20 iterations, then on to 30, equals 30 straight (same bits).
"$metatape" train "${common[@]}" --iterations 20 --out "$work/b" >/dev/null || fail "training run b"
"$metatape" train "${common[@]}" --iterations 30 --resume --out "$work/b" >/dev/null || fail "resuming run b"
cmp -s "$work/a/checkpoint.bin" "$work/b/checkpoint.bin" || fail "resumed checkpoint differs from uninterrupted"
[ "$(wc -l <"$work/b/metrics.jsonl")" -eq 3 ] || fail "resumed metrics.jsonl should hold 3 lines"

# A corrupt checkpoint is refused, and left as it was.
cp "$work/b/checkpoint.bin" "$work/saved.bin"
size=$(stat -c %s "$work/b/checkpoint.bin")
truncate -s $((size - 7)) "$work/b/checkpoint.bin"
cp "$work/b/checkpoint.bin" "$work/truncated.bin"
expect_error "truncated checkpoint" "truncated" "$metatape" train "${common[@]}" --iterations 40 --resume --out "$work/b"
cmp -s "$work/b/checkpoint.bin" "$work/truncated.bin" || fail "a refused checkpoint was modified"
cp "$work/saved.bin" "$work/b/checkpoint.bin"
printf '\xff' | dd of="$work/b/checkpoint.bin" bs=1 seek=100 conv=notrunc status=none
expect_error "corrupt checkpoint" "checksum" "$metatape" eval --checkpoint "$work/b/checkpoint.bin"
expect_error "resume with other settings" "different run" \
  "$metatape" train "${common[@]}" --iterations 30 --inner-lr 0.5 --resume --out "$work/a"

# Evaluation against a baseline: a table, eval.json and an SVG.
"$metatape" train --algorithm pretrain --iterations 20 --hidden 16,16 --quiet --out "$work/p" >/dev/null ||
  fail "pretrain run"
"$metatape" eval --checkpoint "$work/a/checkpoint.bin" --baseline "$work/p/checkpoint.bin" --tasks 50 --steps 3 \
  --shots 5,10 --out "$work/e" >"$work/e.out" || fail "eval"
grep -q "K = 10" "$work/e.out" || fail "eval prints a table per K"
grep -q "pretrain" "$work/e.out" || fail "eval names the baseline"
[ -s "$work/e/eval.json" ] && [ -s "$work/e/mse_vs_steps.svg" ] || fail "eval outputs"

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all CLI checks passed"
