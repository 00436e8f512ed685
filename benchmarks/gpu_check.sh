#!/usr/bin/env bash
# One-shot check on a CUDA machine: the CUDA tests (among them the Triton kernels of the LIF
# scan against the torch loop), then the Classification benchmark on cuda.
#
#   bash benchmarks/gpu_check.sh OUT_DIR        (from the repository root)
#
# Writes into OUT_DIR: env.txt (GPU, driver, CUDA, torch, Triton and which LIF scan runs),
# cuda_tests.log, bench_cuda.txt, bench_cuda.json, summary.txt; with GPU_CHECK_LOOP_BENCH=1
# also bench_cuda_loop.{txt,json}: the benchmark with the Triton kernels off (SGTHEORY_TRITON=0).
# A failing test run does not stop the benchmark; the exit status is 0 only if both passed.
# Each part has a time limit (seconds; env GPU_CHECK_TEST_TIMEOUT, GPU_CHECK_BENCH_TIMEOUT),
# so the whole check ends within about 9 minutes (the first CUDA tests compile the Triton
# kernels: about a minute); the benchmark writes its JSON after every row, so a benchmark
# stopped by its limit still leaves the rows it measured.
# Needs python3 with torch (CUDA build; its own triton), numpy, scipy, matplotlib, h5py, tqdm,
# pytest; hydra-core, omegaconf and antlr4 come from .whl/ when it exists. wandb and pooch are
# not needed.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR" >&2
    exit 2
fi
out="$1"
mkdir -p "$out"
test_timeout="${GPU_CHECK_TEST_TIMEOUT:-270}"
bench_timeout="${GPU_CHECK_BENCH_TIMEOUT:-240}"
start=$(date +%s)

# (a) wheels for what the machine lacks (hydra-core, omegaconf, antlr4), if shipped
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export MPLBACKEND=Agg WANDB_MODE=disabled WANDB_SILENT=true

# (b) the machine
{
    echo "== nvidia-smi"
    nvidia-smi -L || echo "nvidia-smi failed"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv ||
        echo "nvidia-smi query failed"
    echo "== python / torch / triton"
    python3 - <<'EOF'
import sys

import torch

from sgtheory.backends.triton import scan as triton_scan

print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "cudnn", torch.backends.cudnn.version())
triton = triton_scan.triton_module()
print("triton", triton.__version__ if triton else "missing")
print("LIF scan on cuda (float32):", triton_scan.describe("cuda"))
for name in ("hydra", "omegaconf", "wandb", "pooch"):
    try:
        __import__(name)
        print(name, "importable")
    except ImportError:
        print(name, "missing")
EOF
} 2>&1 | tee "$out/env.txt"

# (c) the CUDA tests; a failure is recorded, and the benchmark still runs
echo "== CUDA tests (limit ${test_timeout}s)"
if timeout "$test_timeout" python3 -m pytest -q -x -rfE -p no:cacheprovider \
    tests/sgtheory/test_cuda.py tests/classification/test_cuda_cli.py 2>&1 |
    tee "$out/cuda_tests.log"; then
    tests_rc=0
else
    tests_rc=$?
fi
if [ "$tests_rc" -eq 0 ] && ! grep -q " passed" "$out/cuda_tests.log"; then
    tests_rc=200 # everything skipped: no CUDA device seen
fi

# (d) the benchmark on cuda, fast and reference paths (first-step losses must match)
echo "== benchmark on cuda (limit ${bench_timeout}s)"
if timeout "$bench_timeout" python3 benchmarks/bench_classification.py --device cuda \
    --json "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.txt"; then
    bench_rc=0
else
    bench_rc=$?
fi

# (e) optionally, the benchmark again with the Triton kernels off: the torch loop's times
if [ "${GPU_CHECK_LOOP_BENCH:-0}" = "1" ]; then
    echo "== benchmark on cuda, Triton kernels off (limit ${bench_timeout}s)"
    SGTHEORY_TRITON=0 timeout "$bench_timeout" python3 benchmarks/bench_classification.py \
        --device cuda --json "$out/bench_cuda_loop.json" 2>&1 |
        tee "$out/bench_cuda_loop.txt" || true
fi

describe() { # exit status -> words
    case "$1" in
    0) echo "ok" ;;
    124) echo "stopped at its time limit (rc 124)" ;;
    200) echo "nothing ran: every test skipped (no CUDA device?)" ;;
    *) echo "failed (rc $1)" ;;
    esac
}
{
    echo "== summary"
    echo "cuda tests: $(describe "$tests_rc") ($(tail -n 1 "$out/cuda_tests.log"))"
    echo "benchmark:  $(describe "$bench_rc")"
    echo "total time: $(($(date +%s) - start))s"
} | tee "$out/summary.txt"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
