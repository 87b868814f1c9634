#!/usr/bin/env bash
# The speed issue's GPU checks in one run, sized for one call of the `device` tool
# (a session has 15 minutes of device time, one command at most 10; estimated at 8-10 minutes
# on an H100, not measured: skip steps with SKIP if the first run shows it needs more).
#
#   make gpu-wheels                                    # here, with PyPI: .gpu/wheels (pymunk, cffi,
#                                                      # pycparser, tfrecord for the GPU image's CPython 3.12)
#   bash benchmarks/gpu_check.sh "$OUT"                # there: device run, carry [".gpu"], timeout_s 600
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh /tmp/gpu_dry   # the same steps, tiny, on a CPU first
#   SKIP="bench_compile demo" bash benchmarks/gpu_check.sh "$OUT"   # leave steps out (a second call
#                                                      # within the 10-minute limit of one device run)
#
# The GPU image has PyTorch but not pymunk (the synthetic world) or tfrecord: they are
# installed from the carried wheels, and vidpred runs from src/ (PYTHONPATH), not installed.
# Steps: machine, CUDA tests (tests/test_cuda.py, tests/test_runtime.py), the training-step
# benchmark (fp32, bf16; then bf16 with torch.compile), one epoch (600 steps) of the
# bair-lab preset's model on synthetic data in the BAIR layout, and the demo (both KL
# schedules, full size) on the GPU. Each step's output goes to OUT/log.txt; the files the
# device tool brings back (at most 8) are:
#   log.txt  tests.txt  bench.txt  bench_compile.txt  bair_metrics.jsonl
#   demo_monotonic.json  demo_cyclical.json  demo_grid.png
# A failing step is logged with its exit status and the next one runs.
set -uo pipefail

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/log.txt"

SKIP=" ${SKIP:-} "

step() {  # step NAME CMD...: run CMD, its output in $WORK/NAME.txt and appended to the log
    local name=$1 t0 rc
    shift
    if [[ "$SKIP" == *" $name "* ]]; then
        echo "== $name: skipped (SKIP)" | tee -a "$LOG"
        return 0
    fi
    t0=$(date +%s)
    echo "== $name: $*" >>"$LOG"
    "$@" >"$WORK/$name.txt" 2>&1
    rc=$?
    tail -c 6000 "$WORK/$name.txt" >>"$LOG"
    echo "== $name: exit $rc after $(($(date +%s) - t0)) s" | tee -a "$LOG"
    return 0
}

if ! $PY -c "import pymunk, tfrecord" 2>/dev/null; then
    if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
        step wheels $PY -m pip install --no-index --no-deps .gpu/wheels/*.whl
    else
        echo "pymunk/tfrecord missing and no .gpu/wheels: run 'make gpu-wheels' and carry .gpu" | tee -a "$LOG"
    fi
fi

step machine bash -c "nvidia-smi || true; nproc; $PY -c 'import torch, platform; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"python\", platform.python_version()); print(torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA device\")'"

step tests $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py tests/test_runtime.py
cp "$WORK/tests.txt" "$OUT/tests.txt" 2>/dev/null

if [ "$QUICK" = 1 ]; then
    BENCH=(--codecs dcgan64 --steps 2 --warmup 1)
    SYNTH=(--train 24 --validate 4 --test 4 --workers 2)
    EPOCH_STEPS=2
    DEMO=(--quick)
else
    BENCH=(--steps 10 --warmup 3)
    SYNTH=(--train 96 --validate 16 --test 16 --workers 8)
    EPOCH_STEPS=600
    DEMO=()
fi

step bench $PY benchmarks/bench_train_step.py --device "$DEVICE" --amp none bf16 "${BENCH[@]}"
cp "$WORK/bench.txt" "$OUT/bench.txt" 2>/dev/null
step bench_compile $PY benchmarks/bench_train_step.py --device "$DEVICE" --amp bf16 --compile on "${BENCH[@]}"
cp "$WORK/bench_compile.txt" "$OUT/bench_compile.txt" 2>/dev/null

# One epoch of bair-lab's model (VGG codec, batch 12, 2 -> 10 frames; 600 steps) on synthetic
# sequences written in the BAIR processed layout; the time per step is in metrics.jsonl (seq_per_s).
step synth $PY -m vidpred data synth "$WORK/synth" "${SYNTH[@]}"
step bair_epoch $PY -m vidpred train --config bair-lab --out "$WORK/bair_run" --no-progress \
    "data.root=$WORK/synth" train.epochs=1 "train.steps_per_epoch=$EPOCH_STEPS" "train.device=$DEVICE" train.log_every=50
cp "$WORK/bair_run/metrics.jsonl" "$OUT/bair_metrics.jsonl" 2>/dev/null

step demo $PY -m vidpred demo --out "$WORK/demo" --device "$DEVICE" --no-progress "${DEMO[@]}"
for run in monotonic cyclical; do
    cp "$WORK/demo/runs/$run/eval_test.json" "$OUT/demo_$run.json" 2>/dev/null
done
cp "$WORK/demo/report/monotonic/test_0_grid.png" "$OUT/demo_grid.png" 2>/dev/null
echo "== done; outputs in $OUT" | tee -a "$LOG"
