#!/usr/bin/env bash
# A command-line fuzzer: every numeric option of `train`, `eval` and `ntk` is given
# hostile values (negative, zero, huge, overflowing, NaN, infinities,
# non-numbers, empty), every choice option unknown names, and the commands
# unknown words. Each case must either succeed (a tiny run: one iteration) or
# fail with a message naming the option or word; never crash (exit >= 128,
# "terminate called", a sanitizer report); leave nothing in its --out
# directory; and end (a case still running after 20 s is killed and fails).
# How fast a refusal is is not tested here (timings belong in bench/): that
# oversized runs are refused before they allocate is tested by the memory
# estimate's messages in cli_test.sh.
#   tests/cli_fuzz.sh path/to/metatape
set -uo pipefail
metatape=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
jobs_at_once=${FUZZ_JOBS:-4}
export OPENBLAS_NUM_THREADS=1  # no thread pool to start in every case

# run_case ID NAME COMMAND...: NAME is what the message must contain when
# the command fails; the command's --out is $work/out-ID.
run_case() {
  local id=$1 name=$2
  shift 2
  local out="$work/out-$id" start rc err elapsed_ms
  start=$(date +%s%N)
  err=$(timeout -s KILL 20 "$@" 2>&1 >/dev/null)
  rc=$?
  elapsed_ms=$((($(date +%s%N) - start) / 1000000))
  local what="$* (exit $rc, $elapsed_ms ms)"
  {
    ((rc < 128)) || echo "FAIL: $what: killed by a signal (after 20 s: by the time limit)"
    if grep -qE "terminate called|runtime error:|AddressSanitizer|LeakSanitizer|Segmentation fault|Aborted" <<<"$err"; then
      echo "FAIL: $what: crashed: $err"
    fi
    if ((rc == 0)); then
      echo "accepted" >"$work/accepted-$id"
    else
      grep -qF -- "$name" <<<"$err" || echo "FAIL: $what: the message does not name '$name': $err"
      [ -e "$out" ] && echo "FAIL: $what: left $(find "$out" | head -5 | tr '\n' ' ')"
    fi
  } >"$work/result-$id"
}

case_id=0
# submit NAME COMMAND...: runs a case in the background, a few at once.
submit() {
  case_id=$((case_id + 1))
  while (($(jobs -rp | wc -l) >= jobs_at_once)); do wait -n; done
  run_case "$case_id" "$@" &
}

hostile=(-1 0 1e308 1e999 1e-400 nan inf -inf abc "" " 1" 0x10 1.5 2e9 "1,2" 9223372036854775808 99999999999999999999999 --)

# What an option needs, from its help: "(only with --algorithm kernel)" gives
# "--algorithm kernel" (the first value when several are listed).
train_help=$("$metatape" train --help)
needs_of() {
  awk -v o="$1" '$1 == o {f = 1; print; next} f && /^ +-/ {exit} f {print}' <<<"$train_help" |
    sed -nE 's/.*\(only with (--[a-z-]+) ([a-z0-9-]+).*/\1 \2/p'
}

# The base arguments of a tiny run, less the fuzzed option, plus what the
# fuzzed option needs to apply (so its values reach the run).
train_base() {
  local skip=$1 id=$2
  local -A base=([--iterations]=1 [--hidden]=4 [--meta-batch]=2 [--shots]=2 [--queries]=2)
  local args=(train --quiet --out "$work/out-$id")
  for option in "${!base[@]}"; do [ "$option" = "$skip" ] || args+=("$option" "${base[$option]}"); done
  echo "${args[@]}" "$(needs_of "$skip")"
}

# The options come from the command's own help, so a new option is fuzzed
# the moment it is declared: numeric ones (INT, UINT, REAL), and ones with a
# list of choices ({a,b}).
options_of() {
  "$metatape" "$1" --help | sed -nE "s/^ +(--[a-z-]+) ($2).*/\1/p"
}
read -ra numeric_train <<<"$(options_of train 'INT|UINT|REAL' | tr '\n' ' ')"
read -ra choice_train <<<"$(options_of train '\{' | tr '\n' ' ')"
read -ra numeric_eval <<<"$(options_of eval 'INT|UINT|REAL' | tr '\n' ' ')"
read -ra choice_eval <<<"$(options_of eval '\{' | tr '\n' ' ')"
# ntk shares its model rows (and their parsing) with train: only its own are fuzzed.
own_ntk_options() { options_of ntk "$1" | grep -vxF -f <(options_of train "$1") | tr '\n' ' '; }
read -ra numeric_ntk <<<"$(own_ntk_options 'INT|UINT|REAL')"
read -ra choice_ntk <<<"$(own_ntk_options '\{')"
((${#numeric_train[@]} >= 14 && ${#choice_train[@]} >= 9 && ${#numeric_eval[@]} >= 5 && ${#numeric_ntk[@]} >= 2 && ${#choice_ntk[@]} >= 2)) || {
  echo "FAIL: could not read the options from --help (train: ${numeric_train[*]} / ${choice_train[*]})"
  exit 1
}

# An option that applies only with another (--kernel-time with --algorithm
# kernel) parses its text as the options before it do: it gets the values
# that parse, which reach the run it needs.
reaching=(-1 0 1e308 1.5 2e9 inf nan)
for option in "${numeric_train[@]}"; do
  values=("${hostile[@]}")
  [ -n "$(needs_of "$option")" ] && values=("${reaching[@]}")
  for value in "${values[@]}"; do
    read -ra args <<<"$(train_base "$option" $((case_id + 1)))"
    submit "$option" "$metatape" "${args[@]}" "$option" "$value"
  done
done
for option in "${choice_train[@]}"; do
  for value in "" frobnicate MAML "maml " -1 nan; do
    read -ra args <<<"$(train_base "$option" $((case_id + 1)))"
    submit "$option" "$metatape" "${args[@]}" "$option" "$value"
  done
done

# eval needs a checkpoint.
"$metatape" train --iterations 1 --hidden 4 --meta-batch 2 --quiet --out "$work/run" >/dev/null || {
  echo "FAIL: the tiny run for eval"
  exit 1
}
checkpoint="$work/run/checkpoint.bin"
for option in "${numeric_eval[@]}" "${choice_eval[@]}"; do
  for value in "${hostile[@]}"; do
    base=(eval --checkpoint "$checkpoint" --baseline "$checkpoint" --out "$work/out-$((case_id + 1))")
    [ "$option" = --tasks ] || base+=(--tasks 2)
    [ "$option" = --steps ] || base+=(--steps 1)
    submit "$option" "$metatape" "${base[@]}" "$option" "$value"
  done
done

# ntk: a fresh model's kernel on a few points, or a checkpoint's.
ntk_case() {
  local option=$1 value=$2
  local base=(ntk --out "$work/out-$((case_id + 1))")
  [ "$option" = --points ] || base+=(--points 3)
  [ "$option" = --hidden ] || base+=(--hidden 4)
  submit "$option" "$metatape" "${base[@]}" "$option" "$value"
}
for option in "${numeric_ntk[@]}"; do
  for value in "${hostile[@]}"; do ntk_case "$option" "$value"; done
done
for option in "${choice_ntk[@]}"; do
  for value in "" frobnicate TRACE "all " -1 nan; do ntk_case "$option" "$value"; done
done
for value in "" "$work" /dev/null "$work/none.bin" "$checkpoint.x"; do ntk_case --checkpoint "$value"; done

# analyze: a small study of the tiny run's checkpoint.
read -ra numeric_analyze <<<"$(options_of analyze 'INT|UINT|REAL' | tr '\n' ' ')"
read -ra choice_analyze <<<"$(options_of analyze '\{' | tr '\n' ' ')"
((${#numeric_analyze[@]} >= 8 && ${#choice_analyze[@]} >= 1)) || {
  echo "FAIL: could not read the options of analyze from --help (${numeric_analyze[*]} / ${choice_analyze[*]})"
  exit 1
}
for option in "${numeric_analyze[@]}" "${choice_analyze[@]}"; do
  for value in "${hostile[@]}"; do
    base=(analyze --checkpoint "$checkpoint" --quiet --out "$work/out-$((case_id + 1))")
    [ "$option" = --tasks ] || base+=(--tasks 2)
    [ "$option" = --eigenvalues ] || [ "$option" = --lanczos-iterations ] || base+=(--eigenvalues 2 --lanczos-iterations 3)
    submit "$option" "$metatape" "${base[@]}" "$option" "$value"
  done
done
for value in "" "$work" /dev/null "$work/none.bin" "$checkpoint,"; do
  submit --checkpoint "$metatape" analyze --checkpoint "$value" --quiet --out "$work/out-$((case_id + 1))"
done

# Unknown words, where a command or an option should be.
for words in "frobnicate" "--frobnicate" "-x" "train frobnicate" "eval frobnicate" "info frobnicate" \
  "train --frobnicate" "eval --frobnicate" "train -x" "ntk frobnicate" "ntk --frobnicate" \
  "analyze frobnicate" "analyze --frobnicate"; do
  read -ra args <<<"$words"
  submit "${args[-1]}" "$metatape" "${args[@]}"
done
wait

failures=$(cat "$work"/result-* | grep -c "^FAIL")
cat "$work"/result-* | head -40
accepted=$(find "$work" -maxdepth 1 -name 'accepted-*' | wc -l)
echo "$case_id cases, $accepted accepted, $failures failed"
((failures == 0))
