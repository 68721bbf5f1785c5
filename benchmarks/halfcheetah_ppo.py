"""PPO on HalfCheetah-v5: training env steps/s of colonyrl against Stable-Baselines3, same hyperparameters.

Issue 11's target: colonyrl >= 3x SB3's rate (SB3 measured there: 781 env steps/s). Both sides run
one preset's settings (``--preset``):

- ``ppo-halfcheetah`` (the default; CleanRL's ``ppo_continuous_action.py``): one env x 2048-step
  rollouts, 10 epochs of 64-sample minibatches;
- ``ppo-halfcheetah-fast``: 8 envs x 256 steps (the same 2,048 env steps a round), 10 epochs of
  256-sample minibatches. SB3 then runs the same settings (its ``n_envs=8, n_steps=256,
  batch_size=256``) *and*, as a third side, the CleanRL settings above: the first ratio compares
  the two libraries on equal terms, the second what a user gets from each library's HalfCheetah
  recipe (SB3 at the settings colonyrl's one-env preset shares with it). Whether the faster recipe
  learns as well is the other half of the claim: its return at 1M env steps is in
  benchmarks/README.md.

Common to both: 64x64 tanh networks, observation and reward normalization, one torch thread per
process. SB3's ``vf_coef`` is 1.0 where ours is 0.5 (our value loss carries CleanRL's 0.5 factor),
which changes no cost. colonyrl's scheme is a flag (``--grad-workers``, ``--col-workers``,
``--num-envs``): more workers collect and compute gradients in parallel, SB3 runs in one process.
``--collection async --remote-cworkers``: the one CWorker collects the next round in its own
process while the in-process GWorker learns (a policy lag of one round's updates).

What is timed: the training loop only. colonyrl: ``train()``'s time from the first round to the
end of the last (``TrainResult.train_end_s - setup_time_s - eval_time_s``: no worker start-up, no
evaluation, no export). SB3: ``model.learn(total_timesteps)`` (the model and env built before).
Each side runs in its own process, one after the other.

Usage::

    .venv/bin/python benchmarks/halfcheetah_ppo.py                      # 20480 steps each (minutes)
    .venv/bin/python benchmarks/halfcheetah_ppo.py --preset ppo-halfcheetah-fast --steps 61440
    .venv/bin/python benchmarks/halfcheetah_ppo.py --grad-workers 2 --col-workers 2
    .venv/bin/python benchmarks/halfcheetah_ppo.py --collection async --remote-cworkers  # overlapped
    .venv/bin/python benchmarks/halfcheetah_ppo.py --quick              # smoke run (~10 s)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Issue 11: colonyrl's env steps/s at least this many times SB3's.
TARGET_SPEEDUP = 3.0
ENV_ID = "HalfCheetah-v5"
#: preset -> (envs per CWorker, rollout steps per env, minibatch size): the settings both sides run
PRESET_SETTINGS = {"ppo-halfcheetah": (1, 2048, 64), "ppo-halfcheetah-fast": (8, 256, 256)}
#: the third side's settings when the preset is not the CleanRL one: SB3 at CleanRL's recipe
CLEANRL_PRESET = "ppo-halfcheetah"


def colonyrl_rate(args: argparse.Namespace) -> dict[str, Any]:
    from colonyrl.launch.config import RunConfig
    from colonyrl.launch.presets import preset
    from colonyrl.launch.train import train
    from colonyrl.scheme.runtime import init_process

    init_process()
    SCHEME = preset(args.preset)
    with tempfile.TemporaryDirectory(prefix="colonyrl-bench-") as tmp:
        cfg = SCHEME.replace(
            env=SCHEME.env.replace(num_envs=args.num_envs),
            algo=SCHEME.algo.replace(num_epochs=args.epochs, minibatch_size=args.minibatch_size),
            storage=SCHEME.storage.replace(num_steps=args.num_steps),
            scheme=SCHEME.scheme.replace(num_grad_workers=args.grad_workers, num_col_workers=args.col_workers,
                                          collection=args.collection, remote_cworkers=args.remote_cworkers),
            schedules=(),  # the lr annealing costs nothing; a shorter budget would change its slope only
            run=RunConfig(total_env_steps=args.steps, eval_episodes=1, track=False, progress=False,
                          output_dir=f"{tmp}/runs", checkpoint_dir=f"{tmp}/ckpt", checkpoint_every_min=None,
                          seed=args.seed))
        result = train(cfg)
    loop_s = result.train_end_s - result.setup_time_s - result.eval_time_s
    steps = result.counters["env_steps"]
    return {"env_steps": steps, "seconds": loop_s, "fps": steps / loop_s, "setup_s": result.setup_time_s}


def sb3_rate(args: argparse.Namespace) -> dict[str, Any]:
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from colonyrl.envs.factory import route_mujoco_warnings

    torch.set_num_threads(1)
    route_mujoco_warnings(ENV_ID)  # as colonyrl's envs: no MUJOCO_LOG.TXT in the working folder
    env = VecNormalize(make_vec_env(lambda: gym.make(ENV_ID), n_envs=args.num_envs * args.col_workers
                                    * args.grad_workers, seed=args.seed),
                       norm_obs=True, norm_reward=True, clip_obs=10.0, clip_reward=10.0, gamma=0.99)
    model = PPO("MlpPolicy", env, learning_rate=3e-4, n_steps=args.num_steps, batch_size=args.minibatch_size, n_epochs=args.epochs,
                gamma=0.99, gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2, ent_coef=0.0, vf_coef=1.0,
                max_grad_norm=0.5, seed=args.seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    seconds = time.perf_counter() - t0
    env.close()
    return {"env_steps": int(model.num_timesteps), "seconds": seconds, "fps": model.num_timesteps / seconds}


def _side(side: str, args: argparse.Namespace) -> dict[str, Any]:
    if side == "colonyrl":
        return colonyrl_rate(args)
    if side == "sb3-cleanrl":  # SB3 at the CleanRL preset's settings, one process as always
        envs, steps, minibatch = PRESET_SETTINGS[CLEANRL_PRESET]
        args = argparse.Namespace(**(vars(args) | {
            "num_envs": envs, "num_steps": min(steps, args.num_steps * args.num_envs), "minibatch_size": minibatch,
            "grad_workers": 1, "col_workers": 1}))
    return sb3_rate(args)


def _in_subprocess(side: str, args: argparse.Namespace) -> dict[str, Any]:
    """One side in a fresh process (no shared torch/thread state), its result as a JSON line."""
    import subprocess

    argv = [sys.executable, __file__, "--side", side, *args.passthrough]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 512 steps of 256-step rollouts, 2 epochs")
    p.add_argument("--steps", type=int, default=20_480, help="env steps per side")
    p.add_argument("--preset", choices=sorted(PRESET_SETTINGS), default=CLEANRL_PRESET,
                   help="colonyrl's preset; its envs, rollout length and minibatch size are both sides' defaults")
    p.add_argument("--num-steps", type=int, default=None, help="rollout length per env (default: the preset's)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per round (the presets')")
    p.add_argument("--minibatch-size", type=int, default=None, help="samples per minibatch (default: the preset's)")
    p.add_argument("--num-envs", type=int, default=None,
                   help="envs per CWorker (default: the preset's; SB3: all of them in one VecEnv)")
    p.add_argument("--grad-workers", type=int, default=1)
    p.add_argument("--col-workers", type=int, default=1, help="CWorkers per GWorker")
    p.add_argument("--collection", choices=["sync", "async"], default="sync",
                   help="async: CWorkers collect the next round while the GWorker updates (policy lag)")
    p.add_argument("--remote-cworkers", action="store_true",
                   help="CWorkers as Ray actors even one per GWorker (the GWorker stays in this process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per side")
    p.add_argument("--in-process", action="store_true", help="both sides in this process (tests)")
    p.add_argument("--side", choices=["colonyrl", "sb3", "sb3-cleanrl"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "halfcheetah_ppo.json")
    args = p.parse_args(argv)
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--in-process"]
    envs, steps, minibatch = PRESET_SETTINGS[args.preset]
    args.num_envs = envs if args.num_envs is None else args.num_envs
    args.num_steps = steps if args.num_steps is None else args.num_steps
    args.minibatch_size = minibatch if args.minibatch_size is None else args.minibatch_size
    if args.quick:  # 512 env steps in rounds of 256, whatever the preset's envs
        args.steps, args.num_steps, args.epochs = 512, max(256 // args.num_envs, 1), 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.side is not None:  # a child: one side, one JSON line
        print(json.dumps(_side(args.side, args)))
        return 0
    names = ("colonyrl", "sb3") + (("sb3-cleanrl",) if args.preset != CLEANRL_PRESET else ())
    sides = {side: _side(side, args) if args.in_process else _in_subprocess(side, args) for side in names}
    ok = all("fps" in s for s in sides.values())
    result = {"config": {k: v for k, v in vars(args).items() if k != "passthrough"} | {"target": TARGET_SPEEDUP},
              **sides, "speedup": sides["colonyrl"]["fps"] / sides["sb3"]["fps"] if ok else None}
    if ok and "sb3-cleanrl" in sides:
        result["speedup_vs_sb3_cleanrl"] = sides["colonyrl"]["fps"] / sides["sb3-cleanrl"]["fps"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    for side, s in sides.items():
        print(f"{side}: " + (f"{s['fps']:.0f} env steps/s ({s['env_steps']} steps in {s['seconds']:.1f} s)"
                             if "fps" in s else f"failed: {s['error']}"))
    if ok:
        print(f"colonyrl / SB3 at the same settings: {result['speedup']:.2f}x (target {TARGET_SPEEDUP:g}x)")
    if "speedup_vs_sb3_cleanrl" in result:
        print(f"colonyrl ({args.preset}) / SB3 at {CLEANRL_PRESET}'s settings: "
              f"{result['speedup_vs_sb3_cleanrl']:.2f}x (target {TARGET_SPEEDUP:g}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
