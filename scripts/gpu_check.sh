#!/usr/bin/env bash
# The GPU checks in one prepared run, each step under its own time limit (450 s in all, inside a 600 s
# command limit) so that one hang cannot eat the rest: the CUDA-only tests, and the benchmark with the
# runner's step eager, in a CUDA graph and with a compiled forward. Needs torch (with Triton) and pytest;
# no Hydra, W&B or network (the runner's own CUDA test runs only where Hydra imports).
#
#   bash scripts/gpu_check.sh [OUT_DIR]      # default: $OUT if set, else results/bench/gpu-check
#   PY=.venv/bin/python bash scripts/gpu_check.sh     # another interpreter (default python3)
#
# Everything it prints goes to OUT_DIR/gpu_check.log; each benchmark writes its JSON record there
# (cuda-eager.json, cuda-graph.json, cuda-compile.json). A fallback of the fused kernel
# to torch fails the tests (the warning is an error there). Exits non-zero if any step failed. Commit what
# it wrote under results/bench/, named by device and commit.
set -uo pipefail
out=${1:-${OUT:-results/bench/gpu-check}}
mkdir -p "$out"
py=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
failed=()

step() {  # step SECONDS NAME COMMAND...: run with a time limit, report its exit status, go on
    local limit=$1 name=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    timeout "$limit" "$@"
    local rc=$?
    echo "=== $name: exit $rc"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

main() {
    echo "commit $(git rev-parse HEAD 2>/dev/null || echo "${COMMIT:-unknown}")"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
    "$py" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
    local tests=(tests/test_capture.py tests/test_kernels.py)
    if "$py" -c "import hydra, omegaconf" 2>/dev/null; then tests+=(tests/test_train.py); fi
    step 120 cuda-tests "$py" -m pytest -q -p no:cacheprovider -W "error:the fused Triton kernel:UserWarning" \
        -k "cuda or h100" "${tests[@]}"
    step 90 bench-eager "$py" scripts/bench.py --device cuda --capture none --json "$out/cuda-eager.json"
    step 90 bench-graph "$py" scripts/bench.py --device cuda --capture graph --json "$out/cuda-graph.json"
    step 150 bench-compile "$py" scripts/bench.py --device cuda --capture compile --json "$out/cuda-compile.json"
    echo "=== done $(date -u +%H:%M:%S); failed: ${failed[*]:-none}"
    [ ${#failed[@]} -eq 0 ]
}

main 2>&1 | tee "$out/gpu_check.log"
