#!/usr/bin/env bash
# Longer runs of the demo's preset on a GPU, side by side, for the quality issues: does the
# moving-region margin reach +8 dB with more steps than the CPU demo's 15 minutes hold, and
# does a variant's latent get used in a longer run? One `device` call (its 10-minute limit):
#
#   bash benchmarks/gpu_long.sh "$OUT"                 # there: device run, carry [".gpu"], timeout_s 600
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_long.sh /tmp/gpu_long_dry   # the same steps, tiny, on a CPU first
#
# Steps: the pymunk/tfrecord wheels (as benchmarks/gpu_check.sh), the machine, the evaluation
# benchmark on the device (skip it with EVAL=0), the demo's data (`vidpred data synth`, 480 / 24 /
# 32 sequences, seed 0, hidden causes: what `vidpred demo` generates), then every run of RUNS at
# once, each `vidpred train --config synth-cpu` for EPOCHS epochs (40 steps each) on that data
# and `vidpred evaluate --samples 10`. RUNS is a space-separated list of NAME:OVERRIDES, the
# overrides comma-separated (NAME: alone is the preset). Every run is cut off at DEADLINE_S
# seconds after the start (default 540); a run cut off keeps its last finished epoch, and its
# evaluation is then left to the CPU. Comes back in OUT: log.txt, NAME_eval.json, NAME.tgz (the
# run folder without TensorBoard events: best.pt, config.yaml, metrics.jsonl) per run.
#
# Each run gets an equal share of the machine's cores as torch threads (THREADS, default
# nproc / runs; an OMP_NUM_THREADS of the environment is not used). On the
# H200 (16 cores) three runs that each took all 16 threads reached only 680 steps in 500 s each
# (about 1.4 steps/s, against about 6.5 for one run alone with 8 threads): the demo's small model is
# bound by the CPU side of the GPU work, so oversubscribed threads starve every run.
set -uo pipefail

OUT=${1:?usage: bash benchmarks/gpu_long.sh OUT_DIR}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}
EPOCHS=${EPOCHS:-50}
EVAL=${EVAL:-1}
DEADLINE_S=${DEADLINE_S:-540}
RUNS=${RUNS:-"preset: seqfb:model.seq_z=8,train.kl.free_bits=0.1"}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/log.txt"
START=$(date +%s)
source "$(dirname "$0")/gpu_common.sh"  # left, say, gpu_setup
gpu_setup

if [ "$QUICK" = 1 ]; then
    COUNTS=(--train 24 --validate 4 --test 4)
    TRAIN=(train.steps_per_epoch=2 train.batch_size=4)
    BENCH=(--sequences 2 --samples 2 --repeats 1)
    SAMPLES=2
else
    COUNTS=(--train 480 --validate 24 --test 32)
    TRAIN=()
    BENCH=()
    SAMPLES=10
fi

if [ "$EVAL" = 1 ]; then
    say "eval benchmark"
    timeout -s INT -k 10 "$(left)" $PY benchmarks/bench_evaluate.py --device "$DEVICE" "${BENCH[@]}" >>"$LOG" 2>&1
    say "eval benchmark: exit $?"
fi

timeout -s INT -k 10 "$(left)" $PY -m vidpred data synth "$WORK/data" "${COUNTS[@]}" --seed 0 --workers 8 \
    --hidden-causes on >>"$LOG" 2>&1
say "data: exit $?"

run() {  # run NAME OVERRIDES: train, evaluate, pack; its output in $WORK/NAME.txt
    local name=$1 ov=$2 rc
    local -a extra=()
    [ -n "$ov" ] && IFS=, read -r -a extra <<<"$ov"
    timeout -s INT -k 10 "$(left)" $PY -m vidpred train --config synth-cpu --out "$WORK/$name" --no-progress \
        "data.root=$WORK/data" "train.epochs=$EPOCHS" "train.device=$DEVICE" "${TRAIN[@]}" "${extra[@]}" \
        >"$WORK/$name.txt" 2>&1
    rc=$?
    echo "$name: train exit $rc after $(($(date +%s) - START)) s" >>"$WORK/$name.txt"
    if [ "$rc" = 0 ]; then
        timeout -s INT -k 10 "$(left)" $PY -m vidpred evaluate "$WORK/$name" --split test --samples "$SAMPLES" \
            --device "$DEVICE" --no-progress >>"$WORK/$name.txt" 2>&1
        echo "$name: evaluate exit $? after $(($(date +%s) - START)) s" >>"$WORK/$name.txt"
        cp "$WORK/$name/eval_test.json" "$OUT/${name}_eval.json" 2>/dev/null
    fi
    [ -f "$WORK/$name/best.pt" ] && tar -C "$WORK" -czf "$OUT/$name.tgz" "$name/best.pt" "$name/config.yaml" \
        "$name/metrics.jsonl" $([ -f "$WORK/$name/eval_test.json" ] && echo "$name/eval_test.json")
}

read -r -a SPECS <<<"$RUNS"
THREADS=${THREADS:-$(( $(nproc) / ${#SPECS[@]} > 0 ? $(nproc) / ${#SPECS[@]} : 1 ))}
export OMP_NUM_THREADS=$THREADS
say "runs: $RUNS, $EPOCHS epochs each, $THREADS threads each"
for spec in "${SPECS[@]}"; do
    run "${spec%%:*}" "${spec#*:}" &
done
wait
for spec in "${SPECS[@]}"; do
    name=${spec%%:*}
    { echo "== $name"; grep -v '"kind": "step"' "$WORK/$name.txt" | tail -n 40; } >>"$LOG"
done
say "done; outputs in $OUT"
