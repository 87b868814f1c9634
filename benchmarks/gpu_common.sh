# Shared by benchmarks/gpu_long.sh and benchmarks/gpu_plan.sh (sourced, after they set PY, LOG,
# START and DEADLINE_S): the deadline, the log, and the machine's set-up.

left() {  # seconds to the deadline, at least 1 (timeout 0 would mean no limit at all)
    local t=$((DEADLINE_S - ($(date +%s) - START)))
    echo $((t > 0 ? t : 1))
}

say() { echo "== $* ($(($(date +%s) - START)) s)" | tee -a "$LOG"; }

gpu_setup() {  # the carried pymunk/tfrecord wheels where missing, then the machine into the log
    if ! $PY -c "import pymunk, tfrecord" 2>/dev/null; then
        $PY -m pip install --no-index --no-deps .gpu/wheels/*.whl >>"$LOG" 2>&1 || say "wheels: install failed"
    fi
    { nvidia-smi || true; nproc; $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")'; } >>"$LOG" 2>&1
}
