#!/usr/bin/env bash
# The GPU checks of issue 5 in one prepared run (about 6 minutes on one H100, each step under its own
# timeout so that one hang cannot eat the rest): the CUDA-only tests, the benchmark with the fast step
# eager, in a CUDA graph and through torch.compile, and the batched-sweep benchmark. Needs torch (with
# Triton), pytest and nothing else: no Hydra, no W&B, no network.
#
#   bash scripts/gpu_check.sh [OUT_DIR]      # default: $OUT if set, else results/bench/gpu-check
#
# Everything it prints goes to OUT_DIR/gpu_check.log; each benchmark also writes its JSON record there
# (cuda-eager.json, cuda-graph.json, cuda-compile.json, batched.json/.md). Commit what it wrote under
# results/bench/ named by device and commit, e.g. results/bench/h100-<commit>-graph.json.
set -uo pipefail
out=${1:-${OUT:-results/bench/gpu-check}}
mkdir -p "$out"
py=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec > >(tee "$out/gpu_check.log") 2>&1

step() {  # step SECONDS NAME COMMAND...: run with a time limit, report its exit status, go on
    local limit=$1 name=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    timeout "$limit" "$@"
    echo "=== $name: exit $?"
}

echo "commit $(git rev-parse HEAD 2>/dev/null || echo "${COMMIT:-unknown}")"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
"$py" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

step 180 cuda-tests "$py" -m pytest -q -p no:cacheprovider -k cuda tests/test_fast_step.py tests/test_kernels.py
step 120 bench-eager "$py" scripts/bench.py --device cuda --capture none --json "$out/cuda-eager.json"
step 120 bench-graph "$py" scripts/bench.py --device cuda --capture graph --json "$out/cuda-graph.json"
step 120 bench-batched "$py" scripts/bench_batched.py --device cuda --json "$out/batched.json" --md "$out/batched.md"
step 240 bench-compile "$py" scripts/bench.py --device cuda --capture compile --json "$out/cuda-compile.json"
echo "=== done $(date -u +%H:%M:%S)"
