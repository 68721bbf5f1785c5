"""Throughput of a preset's scheme with the Learner (and its in-process GWorker) on each device.

Builds the preset's components and scheme (default ``ppo-atari-pong``: the Nature CNN on uint8
84x84x4 frames, CleanRL's ppo_atari.py hyperparameters), sets ``SchemeConfig.learner_device``,
runs one warm-up round (CUDA context, cuDNN autotuning, the first collection), then whole rounds
for about ``--seconds`` and reports env steps per second and where the time went (collection vs
gradients vs the optimizer step: the Learner's ``time_share_*`` metrics). No MLflow, no
evaluation: only ``Learner.step``.

    python benchmarks/gpu_check.py                                 # ppo-atari-pong, cuda then cpu
    python benchmarks/gpu_check.py --preset ppo-cartpole --devices cuda --seconds 20

Prints one markdown table; ``--out`` (default ``$OUT/gpu_check.json`` when ``$OUT`` is set)
gets the raw figures. Exit status 0 also when a device is missing (its row says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import torch

from colonyrl.config import ConfigError
from colonyrl.launch.presets import preset
from colonyrl.scheme.scheme import Scheme


def measure(preset_name: str, device: str, seconds: float) -> dict[str, Any]:
    """Whole rounds on ``device`` for about ``seconds`` after one warm-up round."""
    cfg = preset(preset_name)
    scheme_cfg = cfg.scheme.replace(learner_device=device, grad_worker_device=device)
    row: dict[str, Any] = {"preset": preset_name, "device": device}
    try:
        scheme = Scheme(scheme_cfg, cfg.components())
    except ConfigError as e:  # e.g. cuda on a machine without one
        return {**row, "error": str(e)}
    with scheme:
        learner = scheme.learner
        learner.step()
        learner.finish_round()  # warm-up: a whole round, so timing starts at a round boundary
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        learner.pop_metrics()
        steps0, updates0, start = learner.env_steps, learner.num_updates, time.perf_counter()
        while time.perf_counter() - start < seconds:
            learner.step()
            learner.finish_round()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        metrics = learner.pop_metrics()
        row.update(env_steps=learner.env_steps - steps0, updates=learner.num_updates - updates0, wall_s=wall,
                   env_steps_per_s=(learner.env_steps - steps0) / wall,
                   updates_per_s=(learner.num_updates - updates0) / wall,
                   param_device=str(learner.algo.parameters()[0].device),
                   **{k: v for k, v in metrics.items() if k.startswith("time_share_")})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ppo-atari-pong")
    parser.add_argument("--devices", default="cuda,cpu", help="comma-separated SchemeConfig device strings")
    parser.add_argument("--seconds", type=float, default=45.0, help="timed seconds per device (after warm-up)")
    parser.add_argument("--out", default=os.path.join(os.environ["OUT"], "gpu_check.json") if "OUT" in os.environ
                        else None)
    args = parser.parse_args(argv)
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "cpus": os.cpu_count()}
    print(json.dumps(env), file=sys.stderr)
    rows = []
    for device in args.devices.split(","):
        print(f"measuring {args.preset} on {device} ...", file=sys.stderr, flush=True)
        rows.append(measure(args.preset, device.strip(), args.seconds))
    print("| preset | device | env steps/s | updates/s | share collect | share gradients | share update |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['preset']} | {r['device']} | {r['error']} | | | | |")
            continue
        print(f"| {r['preset']} | {r['device']} | {r['env_steps_per_s']:.0f} | {r['updates_per_s']:.1f} | "
              f"{r.get('time_share_collection', 0):.2f} | {r.get('time_share_gradients', 0):.2f} | "
              f"{r.get('time_share_update', 0):.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
