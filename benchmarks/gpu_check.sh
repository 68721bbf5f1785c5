#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU (CI has none): the `gpu` tests, then the
# throughput of a PPO preset with the Learner on cuda and on cpu (benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh                    # ppo-atari-pong (needs the atari extra: ale-py)
#   PRESET=ppo-cartpole SECONDS_PER_DEVICE=20 benchmarks/gpu_check.sh
#
# PYTHON: the interpreter with colonyrl and a CUDA build of torch installed (default: .venv's, else
# python3). Results: stdout, and $OUT/gpu_check.json + $OUT/pytest_gpu.txt when $OUT is set.
# Takes about 2 min for the tests (a local Ray start included) and 2 x SECONDS_PER_DEVICE plus a
# warm-up round per device for the throughput. Exits non-zero if a test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
PRESET="${PRESET:-ppo-atari-pong}"
SECONDS_PER_DEVICE="${SECONDS_PER_DEVICE:-45}"
OUT_DIR="${OUT:-}"

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), \
'x', torch.cuda.device_count())" || exit 2
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true

# -rs: every skip with its reason (a `gpu` test that skips on a GPU machine is a finding)
"$PYTHON" -m pytest -q -p no:cacheprovider -m gpu -rs tests/ 2>&1 | tee ${OUT_DIR:+"$OUT_DIR/pytest_gpu.txt"}
tests_rc=${PIPESTATUS[0]}

"$PYTHON" benchmarks/gpu_check.py --preset "$PRESET" --devices cuda,cpu --seconds "$SECONDS_PER_DEVICE"
bench_rc=$?
exit $(( tests_rc != 0 ? tests_rc : bench_rc ))
