#!/usr/bin/env bash
# metatape under mpirun on this host: training with 2 and 3 processes gives
# the checkpoint of one process bit for bit (deterministic reduction, uneven
# task counts included) and agrees to rounding with the fast one; resuming
# under mpirun equals an uninterrupted run; ranks started with different
# options stop before writing; a killed rank stops the job within seconds
# with a message naming the iteration, and its checkpoint resumes; eval
# spread over ranks prints and writes what one process does.
#   tests/mpi_cli_test.sh path/to/metatape path/to/checkpoint-compare
set -uo pipefail
metatape=$1
compare=$2
mpirun=$(command -v mpirun || command -v mpiexec) || {
  echo "skipped: no mpirun on the PATH"
  exit 77
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# OpenMPI refuses root unless told; oversubscribe: more ranks than cores.
launcher=("$mpirun" --oversubscribe)
[ "$(id -u)" -eq 0 ] && launcher+=(--allow-run-as-root)
# on N COMMAND...: COMMAND as N ranks, killed if it hangs.
on() {
  local n=$1
  shift
  timeout -s KILL 120 "${launcher[@]}" -np "$n" "$@"
}

common=(train --hidden 16 --log-every 1 --quiet --threads 1)
run=("${common[@]}" --meta-batch 5 --iterations 6 --checkpoint-every 3)
# The metrics without their wall-clock times.
metrics_values() { sed 's/"time_s":[^,}]*//' "$1/metrics.jsonl"; }

"$metatape" "${run[@]}" --out "$work/one" >/dev/null || fail "one process"
for n in 2 3; do
  on "$n" "$metatape" "${run[@]}" --out "$work/np$n" >"$work/np$n.out" || fail "-np $n"
  cmp -s "$work/one/checkpoint.bin" "$work/np$n/checkpoint.bin" || fail "-np $n differs from one process"
  [ "$(metrics_values "$work/one")" = "$(metrics_values "$work/np$n")" ] || fail "-np $n logged other metrics"
  # Rank 0 alone reports and writes: one summary line, the run's files only.
  [ "$(grep -c '^trained' "$work/np$n.out")" -eq 1 ] || fail "-np $n: not one summary line"
  [ "$(ls "$work/np$n" | tr '\n' ' ')" = "checkpoint.bin config.json learning_curve.svg metrics.jsonl " ] ||
    fail "-np $n wrote other files: $(ls -A "$work/np$n")"
done

# Fewer tasks than ranks: a rank without tasks still takes part.
two_tasks=("${common[@]}" --meta-batch 2 --iterations 6 --checkpoint-every 3)
"$metatape" "${two_tasks[@]}" --out "$work/one-b2" >/dev/null || fail "one process, 2 tasks"
on 3 "$metatape" "${two_tasks[@]}" --out "$work/np3-b2" >/dev/null || fail "-np 3 with 2 tasks"
cmp -s "$work/one-b2/checkpoint.bin" "$work/np3-b2/checkpoint.bin" || fail "-np 3 with 2 tasks differs"

# Algorithms with their own code paths (Reptile, the pretrained baseline),
# and a weighting that needs every task's gradient (agreement).
for extra in "--algorithm reptile" "--algorithm pretrain" "--task-weighting agreement"; do
  name=${extra//[ -]/}
  # shellcheck disable=SC2086
  "$metatape" "${run[@]}" $extra --out "$work/one-$name" >/dev/null || fail "one process, $extra"
  # shellcheck disable=SC2086
  on 2 "$metatape" "${run[@]}" $extra --out "$work/np2-$name" >/dev/null || fail "-np 2, $extra"
  cmp -s "$work/one-$name/checkpoint.bin" "$work/np2-$name/checkpoint.bin" || fail "-np 2 with $extra differs"
done

# The fast reduction: MPI_Allreduce's order, equal up to rounding.
on 3 "$metatape" "${run[@]}" --reduction fast --out "$work/fast" >/dev/null || fail "-np 3 --reduction fast"
"$compare" "$work/one/checkpoint.bin" "$work/fast/checkpoint.bin" 1e-6 >/dev/null ||
  fail "the fast reduction is not within 1e-6 of one process: $("$compare" "$work/one/checkpoint.bin" "$work/fast/checkpoint.bin" 1e-6 2>&1)"
# The comparison can fail: another seed is another run.
"$metatape" "${run[@]}" --seed 2 --out "$work/seed2" >/dev/null || fail "seed 2"
"$compare" "$work/one/checkpoint.bin" "$work/seed2/checkpoint.bin" 1e-6 >/dev/null 2>&1 &&
  fail "checkpoint-compare passed two different runs"

# Resume under mpirun equals the uninterrupted run.
short=("${common[@]}" --meta-batch 5 --iterations 3 --checkpoint-every 3)
on 2 "$metatape" "${short[@]}" --out "$work/resumed" >/dev/null || fail "-np 2, 3 iterations"
on 2 "$metatape" "${run[@]}" --resume --out "$work/resumed" >/dev/null || fail "-np 2 --resume"
cmp -s "$work/one/checkpoint.bin" "$work/resumed/checkpoint.bin" || fail "a resumed -np 2 run differs"

# Ranks started with different options stop before anything is written.
if err=$(on 2 sh -c 'exec "$0" "$@" --seed $((1 + ${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}))' \
  "$metatape" "${run[@]}" --out "$work/mismatch" 2>&1 >/dev/null); then
  fail "ranks with different seeds trained"
else
  grep -qF "the training configuration differs between ranks: seed is '1' on rank 0, '2' on rank 1" <<<"$err" ||
    fail "mismatch message: $err"
fi
[ -e "$work/mismatch" ] && fail "a refused mismatched run created its directory"

# --replay is one captured graph: refused under mpirun, with the reason.
if err=$(on 2 "$metatape" "${run[@]}" --replay --out "$work/replay" 2>&1 >/dev/null); then
  fail "--replay ran under mpirun"
else
  grep -qF -- "cannot replay a captured step (--replay): each rank computes its own tasks" <<<"$err" ||
    fail "--replay message: $err"
fi

# A rank killed mid-run: every rank stops within seconds (no hang), a
# message names the iteration, and the checkpoint resumes exactly.
"${launcher[@]}" -np 2 "$metatape" "${common[@]}" --meta-batch 5 --iterations 1000000 --checkpoint-every 20 --out "$work/killed" >/dev/null 2>"$work/killed.err" &
job=$!
for _ in $(seq 600); do
  [ -e "$work/killed/checkpoint.bin" ] && break
  sleep 0.1
done
victim=""
for p in $(pgrep -x metatape); do
  tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "--out $work/killed" && victim=$p
done
if [ -z "$victim" ]; then
  fail "no rank of the run to kill"
  kill -KILL "$job" 2>/dev/null
else
  kill -KILL "$victim"
  for _ in $(seq 300); do
    kill -0 "$job" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$job" 2>/dev/null; then
    fail "the job still runs 30 s after a rank was killed"
    kill -KILL "$job" 2>/dev/null
  fi
fi
wait "$job" && fail "the job with a killed rank exited 0"
grep -qE "rank [0-9]+ of 2\): terminated after iteration [0-9]+" "$work/killed.err" ||
  fail "no message naming the stopped rank and its iteration: $(cat "$work/killed.err")"
# "the run's checkpoint (iteration C or later)": rank 0 may have written one
# more (every 20 iterations) before the others heard of it.
at=$(grep -oE "checkpoint \(iteration [0-9]+ or later\)" "$work/killed.err" | head -1 | grep -oE "[0-9]+" | head -1)
if [ -z "$at" ]; then
  fail "the message does not say where --resume continues: $(cat "$work/killed.err")"
else
  until_=("${common[@]}" --meta-batch 5 --iterations $((at + 50)) --checkpoint-every 20)
  on 2 "$metatape" "${until_[@]}" --resume --out "$work/killed" >/dev/null || fail "resuming the killed run"
  on 2 "$metatape" "${until_[@]}" --out "$work/unkilled" >/dev/null || fail "the run without a kill"
  cmp -s "$work/killed/checkpoint.bin" "$work/unkilled/checkpoint.bin" || fail "the resumed killed run differs"
fi

# A rank that fails alone where the others cannot hear of it (out of memory
# under a smaller address-space limit, in the middle of a step's
# collectives) must end the whole job, not leave it waiting: exit non-zero,
# and before the timeout (which exits 124 or 137).
on 2 sh -c 'if [ "${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}" = 1 ]; then ulimit -v 700000; fi; exec "$0" "$@"' \
  "$metatape" "${common[@]}" --hidden 2000,2000 --meta-batch 5 --iterations 5 --out "$work/alone" \
  >/dev/null 2>"$work/alone.err"
status=$?
case $status in
  0) fail "a rank out of memory: the job exited 0" ;;
  124 | 137) fail "a rank out of memory: the job hung: $(cat "$work/alone.err")" ;;
esac

# eval spread over ranks: the same table and eval.json as one process.
evaluate=(eval --checkpoint "$work/one/checkpoint.bin" --tasks 7 --steps 2 --threads 1)
"$metatape" "${evaluate[@]}" --out "$work/eval1" >"$work/eval1.out" || fail "eval, one process"
for n in 2 3; do
  on "$n" "$metatape" "${evaluate[@]}" --out "$work/eval$n" >"$work/eval$n.out" || fail "eval -np $n"
  sed -i "s|eval$n/|eval1/|g" "$work/eval$n.out"
  cmp -s "$work/eval1.out" "$work/eval$n.out" || fail "eval -np $n printed otherwise: $(diff "$work/eval1.out" "$work/eval$n.out")"
  cmp -s "$work/eval1/eval.json" "$work/eval$n/eval.json" || fail "eval -np $n wrote another eval.json"
done

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "mpi cli: all passed"
