#!/usr/bin/env bash
# The metatape command end to end: help, bad input (a message naming the
# option and what it accepts, a non-zero exit, nothing written), sizes beyond
# memory, a short run, bit-for-bit resume, refusal of a corrupt checkpoint,
# evaluation against a baseline, and what failed runs leave behind; the
# kernel algorithm, Meta-RKHS-I, task weighting and `metatape ntk`.
#   tests/cli_test.sh path/to/metatape
set -uo pipefail
metatape=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# Where the script is, on stdout: a run killed at its time limit shows how far it got.
at() { echo "[${SECONDS} s] $*"; }
# expect_error "what" "part of the message" command...: must exit non-zero
# and say the part on stderr.
expect_error() {
  local what=$1 part=$2
  shift 2
  local err
  # A regression that trains instead of refusing must not hang the suite.
  if err=$(timeout -s KILL 60 "$@" 2>&1 >/dev/null); then fail "$what: exited 0"; return; fi
  grep -qF -- "$part" <<<"$err" || fail "$what: message lacks '$part': $err"
}

"$metatape" --help >/dev/null || fail "--help"
# grep without -q reads to the end: -q would stop early and the help writer would die of SIGPIPE (pipefail).
"$metatape" train --help | grep -- "--inner-steps" >/dev/null || fail "train --help lists --inner-steps"

expect_error "negative inner steps" "--inner-steps" "$metatape" train --inner-steps -1 --out "$work/bad"
expect_error "unknown algorithm" "mamal" "$metatape" train --algorithm mamal --out "$work/bad"
expect_error "unknown option" "--frobnicate" "$metatape" train --frobnicate
expect_error "no subcommand" "subcommand" "$metatape"
expect_error "lslr with anil" "LSLR" "$metatape" train --algorithm anil --lslr --out "$work/bad"
expect_error "missing checkpoint" "cannot open" "$metatape" eval --checkpoint "$work/none.bin"
expect_error "resume without a run" "no checkpoint to resume" "$metatape" train --resume --out "$work/empty"
expect_error "a replayed step with the multi-step loss" "cannot use the multi-step loss" \
  "$metatape" train --replay --multi-step-loss --inner-steps 2 --out "$work/graph"
[ -e "$work/graph" ] && fail "a run refused for --replay created its directory"
[ -e "$work/bad/checkpoint.bin" ] && fail "a refused run wrote a checkpoint"

tiny=(--hidden 8 --meta-batch 2 --quiet)
# Values are taken exactly or refused, with the option's name and the accepted
# range written readably (CLI11 wrapped -1 into an unsigned seed, saturated
# overflowing integers, took NaN, and printed DBL_MAX in 309 digits).
expect_error "negative seed" "--seed: '-1' is out of range: expected an integer in 0..18446744073709551615" \
  "$metatape" train "${tiny[@]}" --iterations 1 --seed -1 --out "$work/bad"
expect_error "overflowing seed" "--seed: '99999999999999999999999' is out of range" \
  "$metatape" train "${tiny[@]}" --iterations 1 --seed 99999999999999999999999 --out "$work/bad"
expect_error "a seed in range but inexact" "--seed: '1e19' is inexact" \
  "$metatape" train "${tiny[@]}" --iterations 1 --seed 1e19 --out "$work/bad"
expect_error "a rate that underflows" "--inner-lr: '1e-400' is too small for a double" \
  "$metatape" train "${tiny[@]}" --iterations 1 --inner-lr 1e-400 --out "$work/bad"
expect_error "overflowing iterations" "--iterations: '99999999999999999999' is out of range: expected an integer in 1.." \
  "$metatape" train --iterations 99999999999999999999 --out "$work/bad"
expect_error "NaN baseline rate" "--baseline-inner-lr: 'nan' is not a finite number" \
  "$metatape" eval --checkpoint "$work/none.bin" --baseline "$work/none.bin" --baseline-inner-lr nan
expect_error "infinite inner rate" "--inner-lr: 'inf' is not a finite number: expected a finite number >= 0" \
  "$metatape" train "${tiny[@]}" --iterations 1 --inner-lr inf --out "$work/bad"
expect_error "zero meta-batch" "--meta-batch: 0 is out of range: expected an integer in 1..1000000" \
  "$metatape" train --meta-batch 0 --out "$work/bad"
expect_error "a word for a number" "--meta-batch: 'many' is not an integer" "$metatape" train --meta-batch many --out "$work/bad"
err=$("$metatape" train --meta-batch 0 2>&1)
((${#err} < 200)) || fail "the message for --meta-batch 0 is not short: $err"
seed=$("$metatape" train --seed 18446744073709551615 --iterations 1 --hidden 4 --meta-batch 1 --quiet --out "$work/seed" \
  >/dev/null && grep -o '"seed": [0-9]*' "$work/seed/config.json")
[ "$seed" = '"seed": 18446744073709551615' ] || fail "the largest seed is kept exactly, got '$seed'"
# Unknown words are named.
expect_error "unknown command" "unknown command 'frobnicate'" "$metatape" frobnicate
expect_error "unknown top-level option" "'--frobnicate'" "$metatape" --frobnicate
expect_error "stray word" "frobnicate" "$metatape" train frobnicate
# Threads: at most 4 x the hardware threads.
expect_error "too many threads" "--threads: $((4 * $(getconf _NPROCESSORS_ONLN) + 1)) is out of range" \
  "$metatape" train "${tiny[@]}" --iterations 1 --threads $((4 * $(getconf _NPROCESSORS_ONLN) + 1)) --out "$work/bad"
# Sizes that cannot fit in memory are refused up front, with the estimate
# (the message says so), not by a std::bad_alloc after seconds of work.
expect_error "huge hidden layers" "needs at least about" "$metatape" train --hidden 1000000,1000000 --iterations 1 --out "$work/bad"
expect_error "huge support sets" "needs at least about" "$metatape" train --shots 1000000000 --iterations 1 --out "$work/bad"
expect_error "huge inner loop" "needs at least about" \
  "$metatape" train --inner-steps 1000000 --hidden 4000 --iterations 1 --out "$work/bad"
[ -e "$work/bad" ] && fail "a refused run created its directory"

"$metatape" info | grep -q "^cpu: usable" || fail "info names the CPU"
"$metatape" info | grep -Eq "^cpu matrix products: OpenBLAS [A-Za-z0-9_]+ kernels; small products: (avx512|avx2|none)$" ||
  fail "info names the CPU's GEMM kernels"
# OpenBLAS's generic kernels on a CPU with AVX2 or AVX-512 (what it chooses
# for a model it does not know) come with a note that says how to choose
# others; its AVX2 kernels come without one. Where OpenBLAS was built for
# one CPU, OPENBLAS_CORETYPE changes nothing and this is not checked.
prescott_info=$(OPENBLAS_CORETYPE=Prescott "$metatape" info)
if "$metatape" info | grep -Eq "small products: avx(2|512)$" &&
  grep -q "OpenBLAS Prescott kernels" <<<"$prescott_info"; then
  grep -q "^cpu note: .*OPENBLAS_CORETYPE=.*Haswell" <<<"$prescott_info" ||
    fail "info has no note on OpenBLAS's generic kernels"
  OPENBLAS_CORETYPE=Haswell "$metatape" info | grep -q "^cpu note" && fail "info notes OpenBLAS's AVX2 kernels"
fi
# METATAPE_NUM_THREADS sets the pool when the library loads; a bad value is
# reported and ignored, never fatal.
METATAPE_NUM_THREADS=2 "$metatape" info | grep -q "2 thread" || fail "METATAPE_NUM_THREADS=2 is not the thread count"
err=$(METATAPE_NUM_THREADS=two "$metatape" info 2>&1 >/dev/null) || fail "a bad METATAPE_NUM_THREADS is fatal"
grep -qF "ignoring METATAPE_NUM_THREADS=two" <<<"$err" || fail "a bad METATAPE_NUM_THREADS is not reported: $err"
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
# Files of a run that are not ours survive a fresh run's refusal and its failure.
mkdir -p "$work/theirs" && echo '{"mine": 1}' >"$work/theirs/config.json"
expect_error "a directory with another run's config" "already holds a run (config.json)" \
  "$metatape" train "${tiny[@]}" --inner-lr 1e308 --iterations 3 --out "$work/theirs"
[ "$(cat "$work/theirs/config.json")" = '{"mine": 1}' ] || fail "a refused run touched another run's config.json"

at "Resume"
# Resume: 20 iterations, then on to 30, equals 30 straight (same bits).
"$metatape" train "${common[@]}" --iterations 20 --out "$work/b" >/dev/null || fail "training run b"
"$metatape" train "${common[@]}" --iterations 30 --resume --out "$work/b" >/dev/null || fail "resuming run b"
cmp -s "$work/a/checkpoint.bin" "$work/b/checkpoint.bin" || fail "resumed checkpoint differs from uninterrupted"
[ "$(wc -l <"$work/b/metrics.jsonl")" -eq 3 ] || fail "resumed metrics.jsonl should hold 3 lines"
# The replayed step (--replay), interrupted and resumed, equals eager training.
"$metatape" train "${common[@]}" --iterations 20 --replay --out "$work/r" >/dev/null || fail "training with --replay"
"$metatape" train "${common[@]}" --iterations 30 --replay --resume --out "$work/r" >/dev/null ||
  fail "resuming with --replay"
cmp -s "$work/a/checkpoint.bin" "$work/r/checkpoint.bin" || fail "a replayed run differs from eager training"

at "Two threads"
# Two threads: a run interrupted and resumed at --threads 2 equals the
# uninterrupted one (checkpoint and metrics, but for the timings), and both
# equal --threads 1, since every kernel this model runs keeps its bits at any
# thread count. Wide enough that the kernels really are split.
threaded=(--hidden 256,256 --meta-batch 8 --shots 64 --queries 64 --inner-steps 2 --checkpoint-every 3 --log-every 1
  --quiet)
"$metatape" train "${threaded[@]}" --iterations 6 --threads 1 --out "$work/t1" >/dev/null || fail "run t1"
"$metatape" train "${threaded[@]}" --iterations 6 --threads 2 --out "$work/t2" >/dev/null || fail "run t2"
"$metatape" train "${threaded[@]}" --iterations 3 --threads 2 --out "$work/t2r" >/dev/null || fail "run t2r"
"$metatape" train "${threaded[@]}" --iterations 6 --threads 2 --resume --out "$work/t2r" >/dev/null ||
  fail "resuming run t2r"
cmp -s "$work/t2/checkpoint.bin" "$work/t2r/checkpoint.bin" || fail "a resumed --threads 2 run differs from uninterrupted"
untimed() { sed 's/,"time_s":[0-9.e+-]*//' "$1"; }
[ "$(untimed "$work/t2/metrics.jsonl")" = "$(untimed "$work/t2r/metrics.jsonl")" ] ||
  fail "a resumed --threads 2 run logged other metrics"
[ "$(wc -l <"$work/t2r/metrics.jsonl")" -eq 6 ] || fail "the resumed --threads 2 run should log 6 lines"
cmp -s "$work/t1/checkpoint.bin" "$work/t2/checkpoint.bin" || fail "--threads 2 changed the bits of --threads 1"

at "A corrupt checkpoint is refused, and left as it was"
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

at "Evaluation against a baseline"
# Evaluation against a baseline: a table, eval.json and an SVG.
"$metatape" train --algorithm pretrain --iterations 20 --hidden 16,16 --quiet --out "$work/p" >/dev/null ||
  fail "pretrain run"
"$metatape" eval --checkpoint "$work/a/checkpoint.bin" --baseline "$work/p/checkpoint.bin" --tasks 50 --steps 3 \
  --shots 5,10 --out "$work/e" >"$work/e.out" || fail "eval"
grep -q "K = 10" "$work/e.out" || fail "eval prints a table per K"
grep -q "pretrain" "$work/e.out" || fail "eval names the baseline"
[ -s "$work/e/eval.json" ] && [ -s "$work/e/mse_vs_steps.svg" ] || fail "eval outputs"

expect_error "evaluating with huge sizes" "needs at least about" \
  "$metatape" eval --checkpoint "$work/a/checkpoint.bin" --steps 1000000 --tasks 1000000000 --out "$work/e2"
[ -e "$work/e2" ] && fail "a refused evaluation created its directory"

at "Kernel meta-learning"
# Kernel meta-learning: the closed-form inner loop in each form, Meta-RKHS-I
# and task-weighted outer losses (a few iterations each).
small=(--hidden 8 --meta-batch 3 --shots 4 --queries 4 --quiet --log-every 1)
for form in ridge flow steps; do
  "$metatape" train "${small[@]}" --iterations 2 --algorithm kernel --kernel-form "$form" --ridge 0.1 \
    --out "$work/kernel-$form" >/dev/null || fail "training the kernel algorithm, $form form"
  [ -s "$work/kernel-$form/checkpoint.bin" ] || fail "the kernel run ($form) wrote no checkpoint"
done
grep -q '"kernel_form": "steps"' "$work/kernel-steps/config.json" || fail "config.json lacks the kernel form"
"$metatape" train "${small[@]}" --iterations 2 --algorithm kernel --kernel-time inf --ridge 0.1 --kernel-grad fixed \
  --out "$work/kernel-inf" >/dev/null || fail "training the kernel algorithm at t = inf"
grep -q '"kernel_time": "inf"' "$work/kernel-inf/config.json" || fail "config.json does not keep t = inf as \"inf\""
"$metatape" train "${small[@]}" --iterations 2 --algorithm metarkhs1 --rkhs-alpha 0.02 --out "$work/rkhs" >/dev/null ||
  fail "training metarkhs1"
grep -q '"task_weights":\[0.333' "$work/kernel-flow/metrics.jsonl" || fail "metrics lack the (uniform) task weights"
expect_error "a kernel option with maml" "--kernel-form applies only with --algorithm kernel, not maml" \
  "$metatape" train "${small[@]}" --kernel-form ridge --out "$work/bad"
expect_error "the Meta-RKHS-I alpha with maml" "--rkhs-alpha applies only with --algorithm metarkhs1" \
  "$metatape" train "${small[@]}" --rkhs-alpha 0.1 --out "$work/bad"
expect_error "a temperature without softmax" "--weighting-temperature applies only with --task-weighting softmax" \
  "$metatape" train "${small[@]}" --task-weighting normalised --weighting-temperature 2 --out "$work/bad"
expect_error "unknown kernel form" "--kernel-form: 'exact' is not a choice: expected one of ridge, flow, steps" \
  "$metatape" train "${small[@]}" --algorithm kernel --kernel-form exact --out "$work/bad"
expect_error "a negative kernel time" "--kernel-time: -1 is out of range: expected a finite number >= 0, or inf" \
  "$metatape" train "${small[@]}" --algorithm kernel --kernel-time -1 --out "$work/bad"
expect_error "minus infinity for the kernel time" "--kernel-time: '-inf' is not a finite number" \
  "$metatape" train "${small[@]}" --algorithm kernel --kernel-time -inf --out "$work/bad"
expect_error "t = inf without a ridge" "ridge > 0" \
  "$metatape" train "${small[@]}" --algorithm kernel --kernel-time inf --out "$work/bad"
expect_error "the diagonal kernel for adaptation" "--kernel-mode: 'diagonal' is not a choice" \
  "$metatape" train "${small[@]}" --algorithm kernel --kernel-mode diagonal --out "$work/bad"
expect_error "a zero temperature" "--weighting-temperature: 0 is out of range" \
  "$metatape" train "${small[@]}" --task-weighting softmax --weighting-temperature 0 --out "$work/bad"
[ -e "$work/bad" ] && fail "a refused kernel or weighting run created its directory"

at "A weighted run resumed equals the uninterrupted one"
# A weighted run resumed equals the uninterrupted one (same bits), and its
# weights are logged and not uniform.
weighted=("${small[@]}" --task-weighting softmax --weighting-temperature 0.5 --checkpoint-every 3)
"$metatape" train "${weighted[@]}" --iterations 6 --out "$work/w6" >/dev/null || fail "weighted run of 6"
"$metatape" train "${weighted[@]}" --iterations 3 --out "$work/w3" >/dev/null || fail "weighted run of 3"
"$metatape" train "${weighted[@]}" --iterations 6 --resume --out "$work/w3" >/dev/null || fail "resuming the weighted run"
cmp -s "$work/w6/checkpoint.bin" "$work/w3/checkpoint.bin" || fail "a resumed weighted run differs from uninterrupted"
cmp -s "$work/w6/metrics.jsonl" "$work/w3/metrics.jsonl" ||
  diff <(sed 's/"time_s":[^}]*//' "$work/w6/metrics.jsonl") <(sed 's/"time_s":[^}]*//' "$work/w3/metrics.jsonl") \
    >/dev/null || fail "a resumed weighted run logged other task weights or losses"
grep -q '"task_weights":\[0.333' "$work/w6/metrics.jsonl" && fail "softmax task weights logged as uniform"
expect_error "resume with other weights" "different run" \
  "$metatape" train "${small[@]}" --task-weighting softmax --checkpoint-every 3 --iterations 6 --resume --out "$work/w3"

at "The heterogeneous sinusoid trains under a weighting rule, an"
# The heterogeneous sinusoid trains under a weighting rule, and its runs
# evaluate on their own distribution only.
"$metatape" train "${small[@]}" --task sinusoid-mixture --task-weighting normalised --iterations 2 \
  --out "$work/mixture" >/dev/null || fail "training on sinusoid-mixture"
expect_error "a baseline of another task" "trained on sinusoid-mixture" \
  "$metatape" eval --checkpoint "$work/w6/checkpoint.bin" --baseline "$work/mixture/checkpoint.bin" --tasks 5 \
  --out "$work/bad"

at "Conv4 needs image tasks; its options need it"
# Conv4 needs image tasks; its options need it.
expect_error "conv4 on the sinusoid" "model conv4 takes square images" \
  "$metatape" train --model conv4 --iterations 1 --out "$work/bad"
expect_error "conv4 options with the MLP" "--channels applies only with --model conv4" \
  "$metatape" train --channels 8 --iterations 1 --out "$work/bad"

at "Few-shot images"
# Few-shot images: a tiny Fashion-MNIST directory written here (IDX, gzip'd):
# 40 images of noise per file pair, 4 per class, labels 0..9 in turn.
fmnist="$work/fashion-mnist"
mkdir -p "$fmnist"
write_fashion_mnist() {  # prefix
  local labels=""
  for i in $(seq 0 39); do labels+=$(printf '\\x%02x' $((i % 10))); done
  { printf '\x00\x00\x08\x03\x00\x00\x00\x28\x00\x00\x00\x1c\x00\x00\x00\x1c'
    head -c $((40 * 784)) /dev/urandom; } | gzip > "$fmnist/$1-images-idx3-ubyte.gz"
  { printf '\x00\x00\x08\x01\x00\x00\x00\x28'; printf "$labels"; } | gzip > "$fmnist/$1-labels-idx1-ubyte.gz"
}
write_fashion_mnist train
write_fashion_mnist t10k
images=(--task fashion-mnist --model conv4 --channels 4 --ways 3 --shots 1 --queries 2 --meta-batch 2
  --inner-lr 0.4 --quiet)
"$metatape" train "${images[@]}" --data "$fmnist" --iterations 2 --out "$work/fm" >/dev/null || fail "training conv4 on fashion-mnist"
"$metatape" eval --checkpoint "$work/fm/checkpoint.bin" --tasks 4 --steps 1 --out "$work/fm-eval" >"$work/fm-eval.txt" ||
  fail "evaluating a fashion-mnist run"
grep -q "cross-entropy and accuracy" "$work/fm-eval.txt" || fail "eval of a classification run names its accuracy"
[ -s "$work/fm-eval/accuracy_vs_steps.svg" ] || fail "eval of a classification run draws accuracy_vs_steps.svg"
# Accuracy per step with its CI, a fraction, and the run's 2 queries per class.
if command -v python3 >/dev/null; then
  python3 - "$work/fm-eval/eval.json" <<'PY' || fail "eval.json of a classification run: see above"
import json, sys
result = json.load(open(sys.argv[1]))["results"][0]
assert result["queries"] == 2, result["queries"]
for row in result["maml"]:
    assert 0 <= row["accuracy"] <= 1 and row["accuracy_ci95"] >= 0, row
PY
fi
# Six tasks in three chunks over three threads, each chunk's kernels unsplit:
# the bits of one thread.
chunked=(--task fashion-mnist --data "$fmnist" --model conv4 --channels 4 --ways 3 --shots 1 --queries 2
  --meta-batch 6 --inner-lr 0.4 --iterations 2 --quiet)
"$metatape" train "${chunked[@]}" --threads 1 --out "$work/fm-t1" >/dev/null || fail "conv4 at --threads 1"
"$metatape" train "${chunked[@]}" --threads 3 --out "$work/fm-t3" >/dev/null || fail "conv4 at --threads 3"
cmp -s "$work/fm-t1/checkpoint.bin" "$work/fm-t3/checkpoint.bin" || fail "--threads 3 changed the bits of a conv4 run"
# The real files, where Debian's dataset-fashion-mnist is installed.
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  "$metatape" train "${images[@]}" --iterations 2 --out "$work/fm-real" >/dev/null ||
    fail "training on the installed Fashion-MNIST"
  "$metatape" eval --checkpoint "$work/fm-real/checkpoint.bin" --tasks 4 --steps 1 --out "$work/fm-real" >/dev/null ||
    fail "evaluating on the installed Fashion-MNIST"
else
  echo "skipped: the check on the installed Fashion-MNIST (dataset-fashion-mnist is not installed)"
fi
expect_error "a missing data directory" "dataset-fashion-mnist" \
  "$metatape" train "${images[@]}" --data "$work/nowhere" --iterations 1 --out "$work/bad"
expect_error "--ways without an image task" "--ways applies only with --task fashion-mnist" \
  "$metatape" train --ways 3 --iterations 1 --out "$work/bad"

at "Omniglot"
# Omniglot: a tree of 1201 characters (the split meta-trains on the first
# 1200, so the one in images_evaluation meta-tests), each with two copies of
# one 105x105 1-bit drawing (a diagonal stroke), written by tee in a few calls.
omni="$work/omniglot"
omni_png='iVBORw0KGgoAAAANSUhEUgAAAGkAAABpAQAAAAAR+TCXAAABCklEQVR42lXNuxWCABBEUTgGhJRgKZbmlkYplEBo4BH3vzMvu9Fb9huSZWM+mCtTmMebeL6I15P42Ynfjfh7EO+VKUwcK3GsxLESx0ocK3GsxLFRmDA2wtgIYyOMjTA2wtgIY6cwZ+ycsXPGzhk7Z+ycsXPGQWH2ONjjYI+DPQ72ONjjYI+TwqxxssbJGidrnKxxssbJGheFmeNijos5Lua4mONijos5bgozxs0YN2PcjHEzxs0YN2M8FKaPhz4e+njo46GPhz4e+hgoTBsDbQy0MdDGQBsDbQy0MVKYOkbqGKljpI6ROkbqGKljojCPN/F8Ea8n8bMTvxvx9yDeK1OYx0I8mRfzs/wBVzMp9quW4IYAAAAASUVORK5CYII='
for a in 1 2 3; do mkdir -p "$omni/images_background/alphabet$a/character"{001..400}; done
mkdir -p "$omni/images_evaluation/last/character01"
for k in 01 02; do
  for a in 1 2 3; do  # 400 files a tee, within any limit on open files
    files=()
    for d in "$omni/images_background/alphabet$a/character"*; do files+=("$d/0_$k.png"); done
    base64 -d <<<"$omni_png" | tee "${files[@]}" >/dev/null
  done
  base64 -d <<<"$omni_png" >"$omni/images_evaluation/last/character01/0_$k.png"
done
omniglot=(--task omniglot --model conv4 --channels 4 --ways 3 --shots 1 --queries 1 --meta-batch 2 --inner-lr 0.4
  --quiet)
"$metatape" train "${omniglot[@]}" --data "$omni" --iterations 2 --out "$work/om" >/dev/null || fail "training conv4 on omniglot"
"$metatape" eval --checkpoint "$work/om/checkpoint.bin" --tasks 4 --steps 1 --out "$work/om-eval" >/dev/null ||
  fail "evaluating an omniglot run"
grep -q '"omniglot"' "$work/om/config.json" || fail "config.json does not name the omniglot task"
expect_error "omniglot without --data" "--task omniglot needs --data DIR" \
  "$metatape" train "${omniglot[@]}" --iterations 1 --out "$work/bad"
expect_error "a missing Omniglot directory" "$work/nowhere: no such directory" \
  "$metatape" train "${omniglot[@]}" --data "$work/nowhere" --iterations 1 --out "$work/bad"
rm "$omni/images_evaluation/last/character01/0_02.png"
head -c 100 "$omni/images_evaluation/last/character01/0_01.png" >"$omni/images_evaluation/last/character01/0_02.png"
expect_error "a truncated PNG" "$omni/images_evaluation/last/character01/0_02.png: libpng" \
  "$metatape" train "${omniglot[@]}" --data "$omni" --iterations 1 --out "$work/bad"
rm -r "$omni/images_evaluation/last"
mkdir "$omni/images_evaluation/last"
expect_error "an alphabet with no character" "$omni/images_evaluation/last: an alphabet folder with no character" \
  "$metatape" train "${omniglot[@]}" --data "$omni" --iterations 1 --out "$work/bad"
rm -r "$omni/images_evaluation/last"
mv "$omni/images_background/alphabet3" "$omni/images_evaluation/alphabet3"
expect_error "a partial tree (1200 characters)" "needs more than 1200 characters" \
  "$metatape" train "${omniglot[@]}" --data "$omni" --iterations 1 --out "$work/bad"

at "eval of a kernel run"
# eval of a kernel run: two rows, before and after the closed form, beside
# a gradient-step baseline.
"$metatape" eval --checkpoint "$work/kernel-flow/checkpoint.bin" --baseline "$work/w6/checkpoint.bin" --tasks 20 \
  --steps 2 --out "$work/ke" >"$work/ke.out" || fail "eval of a kernel run"
grep -q "closed form" "$work/ke.out" && grep -q "before" "$work/ke.out" || fail "eval does not name the closed form"
grep -q '"adaptation": "closed form"' "$work/ke/eval.json" || fail "eval.json does not name the closed form"
head -c 4 "$work/ke/mse_vs_steps.svg" | grep -q "<svg" || fail "eval of a kernel run wrote no SVG"
expect_error "evaluating a kernel run beyond memory" "needs at least about" \
  "$metatape" eval --checkpoint "$work/kernel-flow/checkpoint.bin" --shots 1000000 --tasks 100 --out "$work/bad"

at "metatape ntk"
# metatape ntk: the kernel as JSON (symmetric, eigenvalues and condition
# number) and SVGs; a trained model's too.
"$metatape" ntk --help | grep -- "--subset" >/dev/null || fail "ntk --help lists --subset"
"$metatape" ntk --hidden 16 --points 6 --tasks 2 --dtype f64 --out "$work/ntk" >/dev/null || fail "ntk"
"$metatape" ntk --checkpoint "$work/a/checkpoint.bin" --mode full --subset head --points 5 --out "$work/ntk2" \
  >/dev/null || fail "ntk of a checkpoint"
for d in ntk ntk2; do
  for f in ntk_heatmap.svg ntk_spectrum.svg; do
    head -c 4 "$work/$d/$f" | grep -q "<svg" || fail "$d/$f is not SVG"
  done
done
if command -v python3 >/dev/null; then
  python3 - "$work/ntk/ntk.json" "$work/ntk2/ntk.json" <<'PY' || fail "ntk.json: see above"
import json, sys
for path, shape, subset in ((sys.argv[1], [2, 6, 6], "all"), (sys.argv[2], [1, 5, 5], "head")):
    j = json.load(open(path))
    assert j["shape"] == shape and j["subset"] == subset, (path, j["shape"], j["subset"])
    assert len(j["kernels"]) == shape[0], path
    for k in j["kernels"]:
        K, ev = k["kernel"], k["eigenvalues"]
        n = len(K)
        assert all(abs(K[i][j] - K[j][i]) <= 1e-12 * abs(K[i][i] + K[j][j]) for i in range(n) for j in range(n)), path
        assert abs(sum(ev) - k["trace"]) <= 1e-9 * abs(k["trace"]) and k["trace"] > 0, path
        assert ev == sorted(ev) and ev[-1] > 0, path
        c = k["condition_number"]
        assert c == "inf" or abs(c - ev[-1] / ev[0]) <= 1e-9 * c, path
PY
fi
expect_error "ntk: model options with a checkpoint" "--checkpoint: the model" \
  "$metatape" ntk --checkpoint "$work/a/checkpoint.bin" --hidden 4 --out "$work/bad"
expect_error "ntk: a missing checkpoint" "cannot open $work/none.bin" \
  "$metatape" ntk --checkpoint "$work/none.bin" --out "$work/bad"
expect_error "ntk: an unknown mode" "--mode: 'trace ' is not a choice" "$metatape" ntk --mode "trace " --out "$work/bad"
expect_error "ntk: too many points" "--points: 1000000 is out of range" "$metatape" ntk --points 1000000 --out "$work/bad"
expect_error "ntk: a corrupt checkpoint" "checksum" "$metatape" ntk --checkpoint "$work/b/checkpoint.bin" --out "$work/bad"
expect_error "ntk: a kernel beyond memory" "this kernel needs at least about" \
  "$metatape" ntk --hidden 100000,100000 --points 4096 --tasks 64 --out "$work/bad"
[ -e "$work/bad" ] && fail "a refused ntk created its directory"
# The kernel algorithm's Jacobian rows [C, n, P] per task count: sizes that
# MAML runs in well under a GiB are refused for it.
expect_error "a kernel run beyond memory" "needs at least about" \
  "$metatape" train --algorithm kernel --hidden 1000,1000 --shots 500 --queries 500 --iterations 1 --out "$work/bad"

at "A checkpoint written before the kernel and weighting options"
# A checkpoint written before the kernel and weighting options (its stored
# configuration without their keys) still loads, with today's defaults.
if command -v python3 >/dev/null; then
  "$metatape" train "${small[@]}" --iterations 2 --out "$work/old2" >/dev/null || fail "run old2"
  python3 - "$work/old2/checkpoint.bin" <<'PY' || fail "rewriting a checkpoint as an old one"
import json, struct, sys
path = sys.argv[1]
data = open(path, "rb").read()
n = struct.unpack_from("<Q", data, 24)[0]
config = json.loads(data[32:32 + n])
for key in ("kernel_form", "kernel_time", "ridge", "kernel_grad", "kernel_mode", "rkhs_alpha", "task_weighting",
            "weighting_temperature", "differentiate_weights"):
    del config[key]
text = json.dumps(config).encode()
payload = struct.pack("<Q", len(text)) + text + data[32 + n:len(data) - 8]
body = data[:16] + struct.pack("<Q", len(payload)) + payload
h = 14695981039346656037
for c in body:
    h = ((h ^ c) * 1099511628211) % 2**64
open(path, "wb").write(body + struct.pack("<Q", h))
PY
  grep -q kernel_form "$work/old2/checkpoint.bin" && fail "the rewritten checkpoint still has the new keys"
  "$metatape" eval --checkpoint "$work/old2/checkpoint.bin" --tasks 5 --steps 1 --out "$work/old2e" >/dev/null ||
    fail "eval of a checkpoint from before the kernel options"
  "$metatape" train "${small[@]}" --iterations 3 --resume --out "$work/old2" >/dev/null ||
    fail "resuming a checkpoint from before the kernel options"
fi

at "A failed run leaves nothing it created"
# A failed run leaves nothing it created: a NaN loss at the first iteration
# removes the files and the directories the run made...
expect_error "a NaN meta-loss" "removed what this run wrote" \
  "$metatape" train "${tiny[@]}" --inner-lr 1e308 --iterations 3 --out "$work/nan/deep"
[ -e "$work/nan" ] && fail "a run that failed at once left $(find "$work/nan")"
mkdir "$work/mine"
expect_error "a NaN meta-loss in an existing directory" "removed what this run wrote" \
  "$metatape" train "${tiny[@]}" --inner-lr 1e308 --iterations 3 --out "$work/mine"
[ -d "$work/mine" ] && [ -z "$(ls -A "$work/mine")" ] || fail "a failed run into an existing directory left files"
# ...and one that fails after a checkpoint keeps it and the metrics up to it.
expect_error "a NaN meta-loss after a checkpoint" "kept $work/late/checkpoint.bin at iteration 1" \
  "$metatape" train "${tiny[@]}" --optimizer sgd --outer-lr 1e300 --dtype f64 --checkpoint-every 1 --log-every 1 --iterations 5 \
  --out "$work/late"
[ -s "$work/late/checkpoint.bin" ] || fail "the last good checkpoint was not kept"
[ "$(wc -l <"$work/late/metrics.jsonl")" -eq 1 ] || fail "metrics after the last checkpoint were kept"
# The kept checkpoint is a good one: --resume loads it (and stops again at the same place).
expect_error "resuming after a NaN stop" "at iteration 2" \
  "$metatape" train "${tiny[@]}" --optimizer sgd --outer-lr 1e300 --dtype f64 --checkpoint-every 1 --log-every 1 --iterations 5 \
  --out "$work/late" --resume
# An update that overflows the parameters is caught before they are saved.
expect_error "an overflowing update" "made the parameters non-finite" \
  "$metatape" train "${tiny[@]}" --optimizer sgd --outer-lr 1e308 --checkpoint-every 1 --iterations 5 \
  --out "$work/overflow"
[ -e "$work/overflow" ] && fail "a run whose first update overflowed left $(find "$work/overflow")"
at "Running out of memory"
# Running out of memory mid-run (where a memory limit can be set: not under ASan).
# (The probe runs in its own shell, so that a sanitizer's abort is not reported here.)
if bash -c 'ulimit -v 1500000 && "$0" --help; exit $?' "$metatape" >/dev/null 2>&1; then
  (ulimit -v 1500000 && exec timeout -s KILL 60 "$metatape" train --hidden 3000,3000 --iterations 2 --quiet --out "$work/oom") \
    >/dev/null 2>"$work/oom.err" && fail "a run over its memory limit succeeded"
  grep -q "out of memory" "$work/oom.err" || fail "out of memory not said: $(cat "$work/oom.err")"
  [ -e "$work/oom" ] && fail "a run out of memory left $(find "$work/oom")"
fi
# --resume on a missing directory creates nothing.
expect_error "resume a missing run" "no checkpoint to resume" \
  "$metatape" train "${tiny[@]}" --resume --out "$work/missing/run"
[ -e "$work/missing" ] && fail "--resume of a missing run created its directory"
at "Resume removes the temporaries of killed writers"
# Resume removes the temporaries of writers killed mid-write (kill -9 during
# a checkpoint), not those of a writer still alive.
"$metatape" train "${tiny[@]}" --iterations 2 --out "$work/stale" >/dev/null || fail "run stale"
sh -c 'exit 0' &
dead=$!
wait $dead
touch "$work/stale/.checkpoint.bin.tmp.$dead" "$work/stale/.metrics.jsonl.tmp.$dead" "$work/stale/.checkpoint.bin.tmp.$$"
"$metatape" train "${tiny[@]}" --iterations 3 --resume --out "$work/stale" >/dev/null || fail "resume run stale"
[ -e "$work/stale/.checkpoint.bin.tmp.$dead" ] && fail "a dead writer's checkpoint temporary was left"
[ -e "$work/stale/.metrics.jsonl.tmp.$dead" ] && fail "a dead writer's metrics temporary was left"
[ -e "$work/stale/.checkpoint.bin.tmp.$$" ] || fail "a live writer's temporary was removed"

# ---------------------------------------------------------------------------
at "meta-ntk and rank-archs"
# meta-ntk and rank-archs (docs/methods.md §4): valid JSON, a symmetric Φ with
# its ridge and κ, bad options and bad candidate files refused by name.
# (The JSON is checked with python3 where there is one.)
json_check() {  # json_check "what" file python-expression-on-j
  command -v python3 >/dev/null || return 0
  python3 -c 'import json, math, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)' "$2" "$3" || fail "$1: $3 does not hold for $2"
}
"$metatape" meta-ntk --hidden 8,8 --tasks 2 --shots 3 --queries 4 --ridge 1e-6 --out "$work/mntk" >"$work/mntk.out" ||
  fail "meta-ntk"
grep -q "ridge ρ = 1e-06" "$work/mntk.out" || fail "meta-ntk does not state its ridge: $(cat "$work/mntk.out")"
for f in meta_ntk.json meta_ntk.svg meta_ntk_spectrum.svg; do [ -s "$work/mntk/$f" ] || fail "meta-ntk wrote no $f"; done
json_check "meta-ntk" "$work/mntk/meta_ntk.json" \
  'len(j["phi"]) == 8 and all(j["phi"][a][b] == j["phi"][b][a] for a in range(8) for b in range(8)) and
   j["ridge"] == 1e-6 and j["condition_number"] >= 1 and len(j["eigenvalues"]) == 8 and
   j["settings"]["form"] == "steps" and j["settings"]["time"] is None and j["task_offsets"] == [0, 4, 8]'
"$metatape" meta-ntk --hidden 8 --tasks 2 --shots 3 --queries 3 --time inf --anil --out "$work/mntk-inf" >/dev/null ||
  fail "meta-ntk --time inf --anil"
json_check "meta-ntk --time inf" "$work/mntk-inf/meta_ntk.json" \
  'j["settings"]["time"] == "inf" and j["settings"]["anil"] and j["settings"]["inverse_ridge"] == 1e-3'
"$metatape" train --hidden 8 --meta-batch 2 --iterations 2 --quiet --out "$work/mntk-run" >/dev/null || fail "train for meta-ntk"
"$metatape" meta-ntk --checkpoint "$work/mntk-run/checkpoint.bin" --tasks 2 --shots 2 --queries 2 \
  --out "$work/mntk-ckpt" >/dev/null || fail "meta-ntk --checkpoint"
json_check "meta-ntk --checkpoint" "$work/mntk-ckpt/meta_ntk.json" '"iteration 2" in j["settings"]["parameters_from"]'
expect_error "meta-ntk: negative time" "--time: -1 is out of range" "$metatape" meta-ntk --time -1 --out "$work/bad-mntk"
expect_error "meta-ntk: NaN time" "--time: 'nan' is not a finite number: expected a finite number >= 0, or inf" \
  "$metatape" meta-ntk --time nan --out "$work/bad-mntk"
expect_error "meta-ntk: a diverging inner loop" "lower --inner-lr" \
  "$metatape" meta-ntk --inner-lr 1e6 --inner-steps 50 --out "$work/bad-mntk"
expect_error "meta-ntk: time and steps" "--time (gradient flow) and --inner-steps" \
  "$metatape" meta-ntk --time 1 --inner-steps 2 --out "$work/bad-mntk"
expect_error "meta-ntk: zero tasks" "--tasks: 0 is out of range" "$metatape" meta-ntk --tasks 0 --out "$work/bad-mntk"
expect_error "meta-ntk: a model beside a checkpoint" "--hidden picks the model" \
  "$metatape" meta-ntk --checkpoint "$work/mntk-run/checkpoint.bin" --hidden 4 --out "$work/bad-mntk"
expect_error "meta-ntk: missing checkpoint" "cannot open" "$metatape" meta-ntk --checkpoint "$work/none.bin"
[ -e "$work/bad-mntk" ] && fail "a refused meta-ntk created its directory"

cat >"$work/cands.json" <<'JSON'
{"task": "gaussian", "input_dim": 4, "tasks": 2, "shots": 3, "queries": 3, "region_samples": 200, "ridge": 1e-8,
 "candidates": [{"name": "narrow", "model": "mlp", "hidden": [2]},
                {"name": "wide", "model": "mlp", "hidden": [16, 16], "activation": "relu"},
                {"name": "smooth", "model": "mlp", "hidden": [16], "activation": "tanh"}]}
JSON
"$metatape" rank-archs --candidates "$work/cands.json" --out "$work/rank" >"$work/rank.out" || fail "rank-archs"
grep -q "ridge ρ = 1e-08" "$work/rank.out" || fail "rank-archs does not state its ridge: $(cat "$work/rank.out")"
grep -q "gaussian inputs" "$work/rank.out" || fail "rank-archs does not say which inputs"
grep -q "wide" "$work/rank.out" || fail "rank-archs prints no table"
json_check "rank-archs" "$work/rank/ranking.json" \
  'len(j["ranking"]) == 3 and j["ridge"] == 1e-8 and
   all(c["combined"] == c["rank_condition"] + c["rank_regions"] for c in j["ranking"]) and
   [c["combined"] for c in j["ranking"]] == sorted(c["combined"] for c in j["ranking"])'
bad_file() {  # bad_file "what" "part of the message" json-text
  printf '%s\n' "$3" >"$work/bad-cands.json"
  expect_error "rank-archs: $1" "$2" "$metatape" rank-archs --candidates "$work/bad-cands.json" --out "$work/bad-rank"
}
expect_error "rank-archs: missing file" "cannot open the candidates file" \
  "$metatape" rank-archs --candidates "$work/none.json"
bad_file "malformed JSON" "bad-cands.json is not valid JSON" '{"candidates": [}'
bad_file "no candidates" "no candidates" '{"task": "gaussian"}'
bad_file "misspelt field" "unknown field 'ridg'" '{"ridg": 1, "candidates": [{"name": "a"}]}'
bad_file "unbuildable candidate" "candidate 1 ('b') cannot be built: field 'hidden'" \
  '{"candidates": [{"name": "a"}, {"name": "b", "hidden": [4, 0]}]}'
bad_file "a candidate field of the wrong type" "candidates[0] ('a'): field 'hidden' must be a list of whole numbers" \
  '{"candidates": [{"name": "a", "hidden": "40"}]}'
bad_file "a candidate without a name" "candidates[0]: field 'name' must be a string" '{"candidates": [{"model": "mlp"}]}'
bad_file "unknown activation" "field 'activation': unknown activation 'sigm'" \
  '{"candidates": [{"name": "a", "activation": "sigm"}]}'
bad_file "conv4 on the sinusoid" "candidate 0 ('c') cannot be built: field 'model'" \
  '{"task": "sinusoid", "candidates": [{"name": "c", "model": "conv4"}]}'
bad_file "time and steps" "fields 'time' (gradient flow) and 'inner_steps'" \
  '{"time": 1, "inner_steps": 2, "candidates": [{"name": "a"}]}'
bad_file "negative seed" "field 'seed' must be a whole number" '{"seed": -1, "candidates": [{"name": "a"}]}'
[ -e "$work/bad-rank" ] && fail "a refused rank-archs created its directory"
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
at "train --keep-checkpoints"
# train --keep-checkpoints: a copy of every checkpoint, names that sort by
# iteration, the same bits after a resume, and failed runs that remove only
# the copies they wrote past their last checkpoint.
plain=(--hidden 8 --meta-batch 2 --shots 4 --queries 4 --checkpoint-every 2 --quiet)
keep=("${plain[@]}" --keep-checkpoints)
"$metatape" train "${keep[@]}" --iterations 6 --out "$work/k" >/dev/null || fail "training with --keep-checkpoints"
[ "$(ls "$work/k/checkpoints")" = "$(printf 'iteration-%010d.bin\n' 0 2 4 6)" ] ||
  fail "kept checkpoints: $(ls "$work/k/checkpoints")"
cmp -s "$work/k/checkpoint.bin" "$work/k/checkpoints/iteration-0000000006.bin" ||
  fail "the last kept checkpoint is not checkpoint.bin"
grep -q keep_checkpoints "$work/k/config.json" && fail "--keep-checkpoints is stored in config.json"
"$metatape" train "${plain[@]}" --iterations 6 --out "$work/k-plain" >/dev/null ||
  fail "training without --keep-checkpoints"
cmp -s "$work/k/checkpoint.bin" "$work/k-plain/checkpoint.bin" || fail "keeping checkpoints changed the run"
"$metatape" train "${keep[@]}" --iterations 3 --out "$work/k2" >/dev/null || fail "training k2 to 3"
"$metatape" train "${keep[@]}" --iterations 6 --resume --out "$work/k2" >/dev/null || fail "resuming k2 to 6"
# (Those of the first part hold its --iterations 3 in their configuration.)
for i in 4 6; do
  cmp -s "$work/k/checkpoints/iteration-000000000$i.bin" "$work/k2/checkpoints/iteration-000000000$i.bin" ||
    fail "kept checkpoint $i of a resumed run differs from the uninterrupted run's"
done
[ "$(ls "$work/k2/checkpoints" | wc -l)" -eq 5 ] || fail "a resumed run kept $(ls "$work/k2/checkpoints")"
mkdir -p "$work/k3/checkpoints" && cp "$work/k/checkpoints/iteration-0000000002.bin" "$work/k3/checkpoints/"
expect_error "a fresh run beside another run's kept checkpoints" "already holds a run (checkpoints/iteration-0000000002.bin)" \
  "$metatape" train "${keep[@]}" --iterations 2 --out "$work/k3"
expect_error "a NaN at once with --keep-checkpoints" "removed what this run wrote" \
  "$metatape" train "${keep[@]}" --inner-lr 1e308 --iterations 3 --out "$work/knan"
[ -e "$work/knan" ] && fail "a failed run with --keep-checkpoints left $(find "$work/knan")"
late=(--keep-checkpoints --hidden 8 --meta-batch 2 --quiet --optimizer sgd --outer-lr 1e300 --dtype f64
  --checkpoint-every 1 --log-every 1 --iterations 5)
expect_error "a NaN after a kept checkpoint" "at iteration 1" "$metatape" train "${late[@]}" --out "$work/klate"
[ "$(ls "$work/klate/checkpoints" | tr '\n' ' ')" = "iteration-0000000000.bin iteration-0000000001.bin " ] ||
  fail "a run failing after a checkpoint kept $(ls "$work/klate/checkpoints")"
expect_error "a resumed run failing again" "at iteration 1" "$metatape" train "${late[@]}" --resume --out "$work/klate"
[ -s "$work/klate/checkpoints/iteration-0000000001.bin" ] || fail "a failed resume removed an earlier run's kept checkpoint"
sh -c 'exit 0' &
dead=$!
wait $dead
touch "$work/k2/checkpoints/.iteration-0000000008.bin.tmp.$dead"
"$metatape" train "${keep[@]}" --iterations 8 --resume --out "$work/k2" >/dev/null || fail "resuming k2 to 8"
[ -e "$work/k2/checkpoints/.iteration-0000000008.bin.tmp.$dead" ] && fail "a dead writer's kept-checkpoint temporary was left"

at "metatape analyze over the kept series"
# metatape analyze over the kept series: analysis.json with every field and
# count, one seeded task batch for every checkpoint (a checkpoint analysed
# alone gives the same values as in the series), well-formed SVGs, and bad
# input refused by name with nothing written.
study=(--tasks 3 --eigenvalues 2 --lanczos-iterations 4)
"$metatape" analyze --run "$work/k" "${study[@]}" >"$work/k.analyze" 2>"$work/k.analyze.err" || fail "analyze --run"
grep -q "κ(Φ+ρI)" "$work/k.analyze" || fail "analyze prints no table: $(cat "$work/k.analyze")"
[ "$(grep -cE '^ +[0246] ' "$work/k.analyze")" -eq 4 ] || fail "analyze prints a row per checkpoint: $(cat "$work/k.analyze")"
grep -q $'\r' "$work/k.analyze.err" && fail "analyze drew a progress line to a non-terminal"
json_check "analyze" "$work/k/analysis/analysis.json" \
  '[c["iteration"] for c in j["checkpoints"]] == [0, 2, 4, 6] and
   j["settings"]["tasks"] == 3 and j["settings"]["inner_lr"] == 0.01 and j["settings"]["inner_steps"] == 1 and
   j["settings"]["parameters"] == 25 and j["settings"]["split"] == "train" and
   all(len(c["gradients"][f]) == 3 for c in j["checkpoints"]
       for f in ("cosine", "norm_ratio", "exact_norm", "first_order_norm")) and
   all(abs(g["norm_ratio"][t] - g["first_order_norm"][t] / g["exact_norm"][t]) < 1e-12 * g["norm_ratio"][t] and
       -1 <= g["cosine"][t] <= 1 for g in (c["gradients"] for c in j["checkpoints"]) for t in range(3)) and
   all(abs(c["gradients"]["cosine_task_mean"] - sum(c["gradients"]["cosine"]) / 3) < 1e-12 for c in j["checkpoints"]) and
   all(k in c["gradients"] for c in j["checkpoints"] for k in ("mean_gradient_cosine", "mean_gradient_norm_ratio",
       "exact_variance", "first_order_variance", "exact_snr", "first_order_snr", "cosine_task_sd")) and
   all(len(c[h]["eigenvalues"]) == 2 and len(c[h]["residuals"]) == 2 and c[h]["iterations"] == 4 and
       c[h]["eigenvalues"][0] >= c[h]["eigenvalues"][1] for c in j["checkpoints"] for h in ("inner_hessian", "meta_hessian")) and
   all(c["meta_ntk"]["ridge"] == 1e-3 and c["meta_ntk"]["condition_number"] >= 1 and len(c["meta_ntk"]["eigenvalues"]) == 12
       for c in j["checkpoints"])'
for f in cosine_over_training norm_ratio_over_training hessian_over_training spectrum per_task_scatter; do
  head -c 4 "$work/k/analysis/$f.svg" | grep -q "<svg" || fail "analyze: $f.svg is not SVG"
  if command -v python3 >/dev/null; then
    python3 -c 'import sys, xml.etree.ElementTree as e; e.parse(sys.argv[1])' "$work/k/analysis/$f.svg" ||
      fail "analyze: $f.svg is not well-formed"
  fi
done
grep -q "<polyline" "$work/k/analysis/per_task_scatter.svg" && fail "the per-task scatter joins its points with lines"
[ "$(grep -c "<circle" "$work/k/analysis/per_task_scatter.svg")" -eq 4 ] ||
  fail "the per-task scatter does not show 3 tasks (and a legend marker)"
# One checkpoint alone: the same batch, so the same values as in the series.
"$metatape" analyze --checkpoint "$work/k/checkpoints/iteration-0000000004.bin" "${study[@]}" --out "$work/k4" \
  >/dev/null || fail "analyze one checkpoint"
if command -v python3 >/dev/null; then
  python3 - "$work/k/analysis/analysis.json" "$work/k4/analysis.json" <<'PY' || fail "analyze: the series and one checkpoint differ"
import json, sys
series, alone = (json.load(open(p)) for p in sys.argv[1:])
assert len(alone["checkpoints"]) == 1
assert alone["checkpoints"][0]["gradients"] == series["checkpoints"][2]["gradients"]
assert alone["checkpoints"][0]["meta_hessian"] == series["checkpoints"][2]["meta_hessian"]
PY
fi
"$metatape" analyze --checkpoint "$work/k/checkpoints/iteration-0000000006.bin,$work/k/checkpoints/iteration-0000000002.bin" \
  --checkpoint "$work/k/checkpoint.bin" "${study[@]}" --no-hessians --no-meta-ntk --inner-steps 2 --inner-lr 0.05 \
  --split test --quiet >/dev/null || fail "analyze a list of checkpoints"
# Checkpoints named repeatedly and comma-separated, out of order; the settings overridden.
json_check "analyze --checkpoint a,b --checkpoint c" "$work/k/analysis/analysis.json" \
  '[c["iteration"] for c in j["checkpoints"]] == [2, 6, 6] and j["settings"]["inner_steps"] == 2 and
   j["settings"]["inner_lr"] == 0.05 and j["settings"]["split"] == "test" and not j["settings"]["hessians"] and
   all("inner_hessian" not in c and "meta_ntk" not in c for c in j["checkpoints"])'
[ -e "$work/k/analysis/spectrum.svg" ] && fail "analyze --no-hessians left an earlier analysis's spectrum"
for f in cosine_over_training per_task_scatter; do
  [ -s "$work/k4/$f.svg" ] || fail "analyze of one checkpoint wrote no $f.svg"
done
# No inner step: the exact meta-gradient is the first-order one (plots of
# values equal up to rounding must still render; they once looped forever).
timeout -s KILL 60 "$metatape" analyze --run "$work/k" "${study[@]}" --inner-steps 0 --out "$work/k0" >/dev/null ||
  fail "analyze --inner-steps 0"
json_check "analyze --inner-steps 0" "$work/k0/analysis.json" \
  'all(abs(g["cosine"][t] - 1) < 1e-12 and abs(g["norm_ratio"][t] - 1) < 1e-12
       for g in (c["gradients"] for c in j["checkpoints"]) for t in range(3))'
at "A progress line on a terminal"
# A progress line on a terminal (where `script` gives one), none with --quiet.
if command -v script >/dev/null; then
  timeout -s KILL 60 script -qec "$metatape analyze --run $work/k ${study[*]} --out $work/k-tty" /dev/null \
    </dev/null >"$work/k-tty.out" 2>&1
  grep -q "checkpoint 4/4 (iteration 6): meta Hessian" "$work/k-tty.out" || fail "analyze draws no progress line on a terminal"
  timeout -s KILL 60 script -qec "$metatape analyze --run $work/k ${study[*]} --quiet --out $work/k-tty" /dev/null \
    </dev/null >"$work/k-tty.out" 2>&1
  grep -q "checkpoint 1/4" "$work/k-tty.out" && fail "analyze --quiet draws a progress line"
fi
at "Few-shot images: held-out classes"
# Few-shot images: the meta-training and the held-out classes give other tasks.
"$metatape" analyze --run "$work/fm" --tasks 2 --no-hessians --out "$work/fm-train" >/dev/null || fail "analyze conv4"
"$metatape" analyze --run "$work/fm" --tasks 2 --no-hessians --split test --out "$work/fm-test" >/dev/null ||
  fail "analyze conv4 on the held-out classes"
if command -v python3 >/dev/null; then
  python3 - "$work/fm-train/analysis.json" "$work/fm-test/analysis.json" <<'PY' || fail "analyze: --split test drew the same tasks"
import json, sys
train, test = (json.load(open(p))["checkpoints"][0]["gradients"]["exact_norm"] for p in sys.argv[1:])
assert train != test
PY
fi
expect_error "analyze: nothing to analyse" "--checkpoint FILE" "$metatape" analyze --out "$work/bad-an"
expect_error "analyze: both inputs" "--checkpoint and --run exclude each other" \
  "$metatape" analyze --run "$work/k" --checkpoint "$work/k/checkpoint.bin" --out "$work/bad-an"
expect_error "analyze: a missing checkpoint" "cannot open $work/none.bin" \
  "$metatape" analyze --checkpoint "$work/k/checkpoint.bin,$work/none.bin" --out "$work/bad-an"
expect_error "analyze: a corrupt checkpoint" "$work/b/checkpoint.bin" \
  "$metatape" analyze --checkpoint "$work/b/checkpoint.bin" --out "$work/bad-an"
"$metatape" train "${keep[@]}" --activation tanh --iterations 2 --out "$work/k5" >/dev/null || fail "training k5"
expect_error "analyze: checkpoints of two runs" \
  "--checkpoint: $work/k5/checkpoint.bin belongs to a different run than $work/k/checkpoint.bin (activation is \"tanh\"" \
  "$metatape" analyze --checkpoint "$work/k/checkpoint.bin,$work/k5/checkpoint.bin" --out "$work/bad-an"
cp "$work/k5/checkpoints/iteration-0000000002.bin" "$work/k2/checkpoints/iteration-0000000001.bin"
expect_error "analyze: a run directory holding another run's checkpoint" \
  "--run $work/k2: $work/k2/checkpoints/iteration-0000000001.bin belongs to a different run than $work/k2/checkpoints/iteration-0000000000.bin" \
  "$metatape" analyze --run "$work/k2" --out "$work/bad-an"
expect_error "analyze: more eigenvalues than iterations" "--eigenvalues 5 exceeds --lanczos-iterations 4" \
  "$metatape" analyze --run "$work/k" --eigenvalues 5 --lanczos-iterations 4 --out "$work/bad-an"
mkdir -p "$work/no-run"
expect_error "analyze: a run without checkpoints" "holds no checkpoint" \
  "$metatape" analyze --run "$work/no-run" --out "$work/bad-an"
expect_error "analyze: a diverging inner loop" "analysing $work/k/checkpoint.bin" \
  "$metatape" analyze --checkpoint "$work/k/checkpoint.bin" --inner-lr 1e300 --tasks 2 --out "$work/bad-an"
expect_error "analyze: beyond memory" "this analysis needs at least about" \
  "$metatape" analyze --run "$work/k" --tasks 10000 --inner-steps 1000000 --out "$work/bad-an"
expect_error "analyze: zero tasks" "--tasks: 0 is out of range" "$metatape" analyze --run "$work/k" --tasks 0 --out "$work/bad-an"
[ -e "$work/bad-an" ] && fail "a refused analysis created its directory"

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all CLI checks passed"
