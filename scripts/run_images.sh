#!/usr/bin/env bash
# The few-shot image benchmark: installs what is missing (Debian's
# dataset-fashion-mnist included), builds, then meta-trains Conv4 on the
# Fashion-MNIST split (the rotations of classes 0-5; docs/methods.md §1) with
# each algorithm, 5-way 1-shot and 5-shot, evaluates every run on 600
# episodes of the held-out classes (the rotations of 6-9) after 10 inner
# steps, and writes the table (accuracy ± 95% CI, hyperparameters, wall time)
# to $RUN_DIR/table.md. Exact MAML is also set against first-order MAML given
# the same time: as many iterations as fit in the CPU time (user + system)
# exact MAML took, which a busy machine changes less than the wall time.
#
# The defaults are sized for a small CPU machine (about an hour on one core):
# a stride-2 Conv4 of 32 channels, meta-batch 4, 1,000 iterations. The
# reference protocol of Finn et al. (64 channels, max-pooling, meta-batch 32,
# 60,000 iterations) is CHANNELS=64 POOLING=max META_BATCH=32
# ITERATIONS=60000.
#
# Environment: ITERATIONS (1000), KERNEL_ITERATIONS (200: the closed form's
# differentiable kernel costs far more per iteration), CHANNELS (32), POOLING
# (stride or max), META_BATCH (4), QUERIES (15 per class), INNER_LR (0.4),
# EVAL_TASKS (600), SHOTS ("1 5"), ALGORITHMS ("maml fomaml anil metasgd
# reptile kernel"), THREADS (1), DATA (the Fashion-MNIST directory), RUN_DIR
# (runs/images-<date-time>), METATAPE (a metatape binary to use instead of
# building this checkout's).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
# The data set, unless DATA points to a copy of it elsewhere.
if [ -z "${DATA:-}" ]; then install_dataset_packages; fi
if [ -z "${METATAPE:-}" ]; then
  install_missing_packages
  configure_and_build build -Dbuildtype=release >/dev/null
fi

iterations=${ITERATIONS:-1000}
kernel_iterations=${KERNEL_ITERATIONS:-200}
channels=${CHANNELS:-32}
pooling=${POOLING:-stride}
meta_batch=${META_BATCH:-4}
queries=${QUERIES:-15}
inner_lr=${INNER_LR:-0.4}
eval_tasks=${EVAL_TASKS:-600}
shots_list=${SHOTS:-"1 5"}
algorithms=${ALGORITHMS:-"maml fomaml anil metasgd reptile kernel"}
threads=${THREADS:-1}
data=${DATA:-/usr/share/datasets/fashion-mnist}
run_dir=${RUN_DIR:-runs/images-$(date +%Y%m%d-%H%M%S)}
metatape=${METATAPE:-build/tools/metatape}
case "$pooling" in
  stride) model=(--model conv4 --strided) ;;
  max) model=(--model conv4) ;;
  *) echo "run_images.sh: POOLING must be stride or max, got '$pooling'" >&2; exit 2 ;;
esac
model+=(--channels "$channels")
mkdir -p "$run_dir"

# What each algorithm changes from the common settings, and why:
# - reptile adapts by 5 SGD steps (its outer step is θ − θ_t, which one step
#   would make first-order MAML's direction);
# - kernel adapts in closed form, one SGD step of α in function space (the
#   steps form), and uses Conv4 without batch norm: batch norm couples a
#   set's examples, so its NTK needs the Jacobian of the whole set, which
#   does not fit in memory for the differentiable kernel at this size.
algorithm_options() {
  case "$1" in
    reptile) echo "--inner-steps 5" ;;
    kernel) echo "--kernel-form steps --no-batch-norm" ;;
    *) echo "--inner-steps 1" ;;
  esac
}

seconds_since() { awk -v now="$(date +%s.%N)" -v then="$1" 'BEGIN { print now - then }'; }

# timed OUT CPU COMMAND...: runs COMMAND with its output in OUT and writes
# its user + system CPU seconds to CPU (from the shell's `times`, whose
# second line holds the children's "XmY.YYYs XmY.YYYs").
timed() {
  local out=$1 cpu=$2
  shift 2
  (
    "$@" >"$out" || exit
    times >"$cpu.times"  # a redirection, not a pipe: a pipe's subshell has no children
  ) || return
  awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print 60 * u[1] + u[2] + 60 * s[1] + s[2] }' \
    "$cpu.times" >"$cpu"
  rm -f "$cpu.times"
}

# train_and_evaluate NAME ALGORITHM SHOTS ITERATIONS: trains into
# $run_dir/NAME, evaluates it, and appends a row to the table. A run that an
# interrupted invocation finished in the same RUN_DIR is not trained again,
# nor evaluated again if its evaluation finished too.
train_and_evaluate() {
  local name=$1 algorithm=$2 shots=$3 its=$4 start
  # shellcheck disable=SC2046
  local options=(--task fashion-mnist --data "$data" --ways 5 --shots "$shots" --queries "$queries"
    --meta-batch "$meta_batch" --inner-lr "$inner_lr" --algorithm "$algorithm" "${model[@]}"
    $(algorithm_options "$algorithm") --iterations "$its" --threads "$threads" --quiet --out "$run_dir/$name")
  if [ ! -f "$run_dir/$name.seconds" ]; then
    echo "== $name: metatape train ${options[*]}"
    rm -rf "${run_dir:?}/$name"
    start=$(date +%s.%N)
    timed "$run_dir/$name.train.txt" "$run_dir/$name.cpu" "$metatape" train "${options[@]}"
    seconds_since "$start" >"$run_dir/$name.seconds"
  fi
  # The last row of eval's table: after 10 steps, or the closed form.
  local eval_row accuracy
  eval_row=$(grep -E '^ +(10|closed form) ' "$run_dir/$name.eval.txt" 2>/dev/null | tail -1) || true
  if [ -z "$eval_row" ]; then
    "$metatape" eval --checkpoint "$run_dir/$name/checkpoint.bin" --tasks "$eval_tasks" --steps 10 \
      --threads "$threads" --out "$run_dir/$name" >"$run_dir/$name.eval.txt"
    eval_row=$(grep -E '^ +(10|closed form) ' "$run_dir/$name.eval.txt" | tail -1) || true
  fi
  accuracy=$(echo "$eval_row" | grep -oE '[0-9.]+% ± +[0-9.]+' | sed 's/ \+/ /g') || {
    echo "run_images.sh: no accuracy after 10 steps in $run_dir/$name.eval.txt" >&2
    exit 1
  }
  local train_s cpu_s=-
  train_s=$(printf %.0f "$(cat "$run_dir/$name.seconds")")
  [ -f "$run_dir/$name.cpu" ] && cpu_s=$(printf %.0f "$(cat "$run_dir/$name.cpu")")
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$shots" "$its" "$(algorithm_options "$algorithm")" \
    "$accuracy" "$train_s" "$cpu_s" >>"$run_dir/table.md"
  echo "   $name: accuracy $accuracy, trained in $train_s s ($cpu_s s of CPU)"
}

{
  echo "Conv4 ($channels channels, $pooling, batch norm with the current set's statistics unless noted), 5-way,"
  echo "Fashion-MNIST rotations (train: classes 0-5, test: 6-9), meta-batch $meta_batch, $queries queries per class,"
  echo "α = $inner_lr, Adam 1e-3; accuracy after 10 inner steps (or the closed form) on $eval_tasks test episodes,"
  echo "mean ± 95% CI; wall and CPU time of training on $threads thread(s)."
  echo
  echo "| run | shots | iterations | options | accuracy | train s | CPU s |"
  echo "|---|---|---|---|---|---|---|"
} >"$run_dir/table.md"

for shots in $shots_list; do
  for algorithm in $algorithms; do
    its=$iterations
    [ "$algorithm" = kernel ] && its=$kernel_iterations
    train_and_evaluate "$algorithm-${shots}shot" "$algorithm" "$shots" "$its"
  done
  # First order in the time exact MAML took: as many iterations as fit,
  # from the two runs' CPU times.
  if [[ " $algorithms " == *" maml "* && " $algorithms " == *" fomaml "* ]]; then
    equal=$(awk -v n="$iterations" -v exact="$(cat "$run_dir/maml-${shots}shot.cpu")" \
      -v first="$(cat "$run_dir/fomaml-${shots}shot.cpu")" 'BEGIN { printf "%d", n * exact / first }')
    train_and_evaluate "fomaml-${shots}shot-equal-time" fomaml "$shots" "$equal"
  fi
done
echo
cat "$run_dir/table.md"
echo
echo "the table: $run_dir/table.md; each run's eval.json and accuracy_vs_steps.svg under $run_dir/<run>/"
