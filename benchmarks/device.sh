#!/usr/bin/env bash
# The GPU check as one prepared command, for a lent device machine (bare: PyTorch but no open_clip,
# no network). It runs the CUDA tests, then benchmarks/speed.py on CUDA, and saves both logs.
#
#   bash benchmarks/device.sh --wheels   # here, once: open_clip + ftfy + wcwidth wheels into .whl/ (ignored)
#   bash benchmarks/device.sh            # there: device run with carry [".whl"], timeout_s about 480
#
# Logs go to $OUT (the device tool's return folder) or ./device-logs. Budget: a lent GPU has about
# 15 minutes in all, a fresh machine takes 1-2 of them to start; this script takes about 5.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4)
if [[ "${1:-}" == "--wheels" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    exit
fi

out="${OUT:-device-logs}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH="/tmp/site:$PWD/src" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" | tee -a "$out/gpu.txt"

timeout 150 python3 -m pytest -q -p no:cacheprovider tests/backbones/test_cuda.py tests/backbones/test_tower.py 2>&1 | tee "$out/tests.txt"
timeout 300 python3 benchmarks/speed.py --device cuda --precision fp32 auto bf16 --batch 1 64 --repeats 3 \
    --fidelity-images 16 --nn-shots 1 8 64 --memory-images 64 256 --memory-size 240 --profile-batch 64 2>&1 | tee "$out/speed.txt"
