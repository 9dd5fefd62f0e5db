#!/usr/bin/env bash
# Optional accelerator check; CI has no GPU, so it never runs this. On a machine where torch sees CUDA: the
# CPU-vs-CUDA equivalence tests (tests/test_device.py), then the model benchmark on the device.
#   benchmarks/gpu_check.sh [OUTDIR]     (BENCH_DATASETS="ml100k baby" by default, ml100k needs MOTOR_DATA;
#                                          BENCH_BACKBONES="lightgcn freedom" to time fewer than all)
set -uo pipefail
out=${1:-reports/_gpu}
mkdir -p "$out"
export MOTOR_CACHE=${MOTOR_CACHE:-$(mktemp -d)} MOTOR_RUNS=$(mktemp -d) PYTHONUNBUFFERED=1
python3 - <<'PY' 2>&1 | tee "$out/device.txt"
import torch
print("torch", torch.__version__, "| cuda:", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY
python3 -m pytest -q -p no:cacheprovider tests/test_device.py 2>&1 | tee "$out/device_tests.log"
# shellcheck disable=SC2086
python3 benchmarks/bench_models.py --device cuda --datasets ${BENCH_DATASETS:-ml100k baby} --repeats 1 --epochs 3 \
    ${BENCH_BACKBONES:+--backbones $BENCH_BACKBONES} \
    2>&1 | tee "$out/bench_cuda.log"
