"""PPO on CartPole-v1: colonyrl against SB3, timing what colonyrl ships.

Protocol:

* the colonyrl rows run the shipped training path, ``colonyrl.launch.train.train(TrainConfig)``, with
  ``RunConfig(eval_every=10_000, eval_episodes=10, stop_at_return=475, total_env_steps=cap, seed)``
  (tracking and console off, checkpoints only at the end, output in a temporary folder); the
  SB3-hparams row anneals lr and clip_range to 0 over the cap with ``TrainConfig.schedules`` (the
  RL Zoo's ``lin_1e-3`` / ``lin_0.2``);
* every system is judged by one evaluator, ``colonyrl.launch.evaluate.evaluate``: 10 deterministic
  episodes on fresh CartPole-v1 envs seeded with the run's seed and ``EVAL_WORKER_INDEX``, the
  episodes of train()'s periodic evaluations; the SB3 model is evaluated through a small adapter
  (``SB3Acting``) with the same call. train() evaluates at the round boundary after the env-step
  counter crosses a multiple of 10k (the round finished first); SB3 at the env step that crosses it
  (a ``BaseCallback``, like SB3's own ``EvalCallback``);
* solved at a mean return >= 475: train() stops there (its ``stop_at_return``), as does SB3's
  callback; otherwise at the cap (100k env steps);
* seeds 0, 1, 2, each seed of each system in a fresh Python process (this file with ``--worker``),
  systems alternating within one invocation (seed 0: A, B, C, D; seed 1: A, B, C, D; ...);
* timing excludes imports (torch's lazily imported compiler stack too, which ``torch.optim.Adam``
  pulls in on construction, and ``torch.export``, which the model export uses): colonyrl's wall
  clock is the ``train()`` call; SB3's starts before its env and model are built and ends when
  ``learn`` returns. Wall-clock to solve is the time at the end of the solving evaluation. Setup
  (until the first ``learner.step`` / first env step) and evaluation time are reported separately
  (``TrainResult.setup_time_s``, ``eval_time_s``, ``evaluation_times_s``), as is what train() does
  after training (last checkpoint, final evaluation on its own seeds, model export: "wrap-up");
  training env steps/s = env steps / (time to the end of training - setup - evaluation).

``--no-early-stop`` trains every run to the cap: the steady-state throughput.

Usage::

    .venv/bin/python benchmarks/ppo_cartpole.py                     # time to solve, 3 seeds
    .venv/bin/python benchmarks/ppo_cartpole.py --no-early-stop     # full budget (throughput)
    .venv/bin/python benchmarks/ppo_cartpole.py --seeds 0 --systems sb3 colonyrl-default
"""

from __future__ import annotations

import time

_T_MODULE = time.perf_counter()  # imports are timed from here (interpreter start is not)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULT_MARK = "@@RESULT@@ "
DEFAULT_CAP = 100_000
#: Schedules of the SB3 zoo anneal to 0 over its n_timesteps (1e5); the colonyrl SB3-hparam row
#: follows the same horizon (the cap), to 0 as well (PPOConfig allows lr = 0 and clip_range = 0).
SB3_LR, SB3_CLIP = 1e-3, 0.2

SYSTEMS: dict[str, str] = {
    "colonyrl-default": "colonyrl in-process (default preset)",
    "colonyrl-sb3hp": "colonyrl in-process (SB3 hparams)",
    "colonyrl-ray": "colonyrl Ray (1 GWorker x 2 CWorkers)",
    "sb3": "SB3 PPO (RL Zoo)",
    # not in the default set: SB3 with torch.set_num_threads(1), to separate thread contention from the rest
    "sb3-1thread": "SB3 PPO (RL Zoo, 1 torch thread)",
}
DEFAULT_SYSTEMS = ["colonyrl-default", "colonyrl-sb3hp", "colonyrl-ray", "sb3"]
SB3_KEY = "sb3"
#: Which colonyrl row each issue target is judged on.
TARGET_THROUGHPUT = ("colonyrl-sb3hp", 2.5)  # colonyrl / SB3 train env steps/s >= 2.5 (full budget)
TARGET_WALLCLOCK = ("colonyrl-default", 1 / 3)  # colonyrl / SB3 median wall-clock to solve <= 1/3


# ------------------------------------------------------------------------------------------------
# worker side: one system, one seed, in this process
# ------------------------------------------------------------------------------------------------
def eval_env() -> Any:
    """The env every system is evaluated on: train()'s evaluation env for the colonyrl rows."""
    from colonyrl.envs.factory import EnvConfig

    return EnvConfig(id="CartPole-v1", num_envs=common.EVAL_EPISODES)


def preimport() -> None:
    """Modules the timed spans would otherwise import lazily (imports are not timed)."""
    import torch._dynamo  # noqa: F401  (torch.optim.Adam's constructor imports it: every system)
    import torch.export  # noqa: F401  (train()'s model export)


class SB3Acting:
    """The policy interface ``colonyrl.launch.evaluate.evaluate`` calls (``act``), over an SB3 model."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def act(self, obs: Any, deterministic: bool = True) -> Any:
        from types import SimpleNamespace

        action, _ = self.model.predict(obs, deterministic=deterministic)
        return SimpleNamespace(env_action=action)


class Clock:
    """Wall-clock, setup and evaluation accounting of the SB3 worker (train() keeps its own)."""

    def __init__(self, seed: int, cap: int, early_stop: bool) -> None:
        self.seed, self.cap, self.early_stop = seed, cap, early_stop
        self.t0 = time.perf_counter()
        self.setup_end: float | None = None
        self.eval_s = 0.0
        self.next_eval = common.EVAL_EVERY
        self.evals: list[dict[str, Any]] = []
        self.solved_at: dict[str, float] | None = None  # first solving evaluation

    def mark_setup_done(self) -> None:
        if self.setup_end is None:
            self.setup_end = time.perf_counter()

    def maybe_evaluate(self, env_steps: int, acting: Any) -> bool:
        """Evaluate if the counter crossed the next multiple of EVAL_EVERY; True: stop training now.

        The evaluator and episodes of train()'s periodic evaluations (launch/train.py)."""
        if env_steps < self.next_eval:
            return False
        from colonyrl.launch.evaluate import EVAL_WORKER_INDEX, evaluate

        self.next_eval = (env_steps // common.EVAL_EVERY + 1) * common.EVAL_EVERY
        start = time.perf_counter()
        result = evaluate(acting, eval_env(), common.EVAL_EPISODES, self.seed, worker_index=EVAL_WORKER_INDEX)
        end = time.perf_counter()
        mean = result.mean
        self.eval_s += end - start
        self.evals.append({"env_steps": env_steps, "mean": mean, "returns": [float(r) for r in result.returns],
                           "eval_s": end - start, "wall_s": end - self.t0})
        if mean >= common.SOLVE_RETURN and self.solved_at is None:
            self.solved_at = {"env_steps": env_steps, "wall_s": end - self.t0, "eval_s": self.eval_s}
        return self.early_stop and self.solved_at is not None

    def result(self, env_steps: int, t_end: float, extra: dict[str, Any]) -> dict[str, Any]:
        wall = t_end - self.t0
        setup = (self.setup_end or t_end) - self.t0
        train_s = wall - setup - self.eval_s
        solved = self.solved_at
        return {
            "env_steps": env_steps,
            "wall_s": wall,
            "setup_s": setup,
            "eval_s": self.eval_s,
            "train_s": train_s,
            "train_fps": env_steps / train_s if train_s > 0 else None,
            "solved": solved is not None,
            "solve_env_steps": solved["env_steps"] if solved else None,
            "solve_wall_s": solved["wall_s"] if solved else None,
            "solve_eval_s": solved["eval_s"] if solved else None,
            "final_eval": self.evals[-1]["mean"] if self.evals else None,
            "wrapup_s": 0.0,  # learn() returns when training stops: nothing after it
            "evals": self.evals,
            **extra,
        }


def linear(initial: float) -> Any:
    """The RL Zoo's ``lin_<x>`` schedule: ``progress_remaining * initial``."""
    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial
    return schedule


def run_sb3(seed: int, cap: int, early_stop: bool, threads: int | None = None) -> dict[str, Any]:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    import colonyrl.launch.evaluate  # noqa: F401  (the shared evaluator)

    if threads is not None:
        torch.set_num_threads(threads)
    preimport()
    import_s = time.perf_counter() - _T_MODULE
    clock = Clock(seed, cap, early_stop)  # the clock starts here: after imports

    class EvalCallback(BaseCallback):
        def _on_rollout_start(self) -> None:
            clock.mark_setup_done()  # the first env step comes next

        def _on_step(self) -> bool:
            return not clock.maybe_evaluate(self.num_timesteps, acting)

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=linear(SB3_LR), clip_range=linear(SB3_CLIP), seed=seed, device="cpu",
                verbose=0)
    acting = SB3Acting(model)
    model.learn(total_timesteps=cap, callback=EvalCallback())
    t_end = time.perf_counter()
    steps = int(model.num_timesteps)
    env.close()
    note = "torch default (SB3 sets none)" if threads is None else "torch.set_num_threads by the benchmark"
    return clock.result(steps, t_end, {"import_s": import_s, "torch_threads": torch.get_num_threads(),
                                       "threads_note": note})


def colonyrl_config(system: str, cap: int, seed: int = 0, early_stop: bool = True, folder: str = ".") -> Any:
    """The TrainConfig of a colonyrl row; run output (the last checkpoint, the model) under ``folder``."""
    from colonyrl.agents.networks import ActorCriticConfig
    from colonyrl.agents.ppo import PPOConfig
    from colonyrl.envs.factory import EnvConfig
    from colonyrl.launch.config import Schedule
    from colonyrl.launch.scripts.cartpole_inprocess import SCHEME
    from colonyrl.scheme.scheme import Resources, SchemeConfig
    from colonyrl.storage.rollout import RolloutConfig

    run = SCHEME.run.replace(
        total_env_steps=cap, seed=seed, eval_every=common.EVAL_EVERY, eval_episodes=common.EVAL_EPISODES,
        stop_at_return=common.SOLVE_RETURN if early_stop else None, track=False, progress=False,
        output_dir=os.path.join(folder, "runs"), checkpoint_dir=os.path.join(folder, "checkpoints"),
        checkpoint_every=None, checkpoint_every_min=None)  # one checkpoint: train()'s last
    if system == "colonyrl-default":
        return SCHEME.replace(run=run)
    if system == "colonyrl-sb3hp":
        # SB3 RL Zoo CartPole-v1, lr and clip_range annealed linearly to 0 at the cap (lin_1e-3, lin_0.2).
        return SCHEME.replace(
            env=EnvConfig(id="CartPole-v1", num_envs=8),
            actor=ActorCriticConfig(hidden_sizes=(64, 64), activation="tanh", shared_trunk=False),
            algo=PPOConfig(lr=SB3_LR, num_epochs=20, minibatch_size=256, clip_range=SB3_CLIP, ent_coef=0.0,
                           # SB3's vf_coef 0.5 is our 1.0 (our value loss has CleanRL's 0.5 factor)
                           vf_coef=1.0, max_grad_norm=0.5, normalize_advantage=True),
            storage=RolloutConfig(num_steps=32, gamma=0.98, gae_lambda=0.8),
            scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
            run=run,
            schedules=(Schedule(name="lr", points=((0, SB3_LR), (cap, 0.0))),
                       Schedule(name="clip_range", points=((0, SB3_CLIP), (cap, 0.0)))),
        )
    if system == "colonyrl-ray":
        return SCHEME.replace(
            env=SCHEME.env.replace(num_envs=4),  # x 2 CWorkers = 8 envs, 256 steps per round
            scheme=SchemeConfig(num_grad_workers=1, num_col_workers=2,
                                col_worker_resources=Resources(num_cpus=1.0)),
            run=run,
        )
    raise ValueError(system)


def run_colonyrl(system: str, seed: int, cap: int, early_stop: bool) -> dict[str, Any]:
    import tempfile

    import torch

    import colonyrl.launch.scripts.cartpole_inprocess  # noqa: F401  (the preset, and colonyrl itself)
    from colonyrl.launch.train import train

    ray_init_s: list[float] = []
    if system == "colonyrl-ray":
        import ray

        real_init = ray.init

        def timed_init(*args: Any, **kwargs: Any) -> Any:  # the scheme calls ray.init itself; time it
            start = time.perf_counter()
            try:
                return real_init(*args, **kwargs)
            finally:
                ray_init_s.append(time.perf_counter() - start)

        ray.init = timed_init
    preimport()
    with tempfile.TemporaryDirectory(prefix="ppo_cartpole-") as folder:
        cfg = colonyrl_config(system, cap, seed, early_stop, folder)
        # The same episodes as the SB3 rows: train() evaluates on this env (num_envs = episodes).
        used = cfg.components().evaluation_env()
        assert used.replace(num_envs=common.EVAL_EPISODES) == eval_env(), used
        batch = cfg.env_steps_per_round
        updates_per_round = cfg.algo.num_epochs * max(1, round(batch / cfg.algo.minibatch_size))
        import_s = time.perf_counter() - _T_MODULE

        t0 = time.perf_counter()  # the clock: the train() call, after imports, before ray.init
        result = train(cfg)
        wall = time.perf_counter() - t0
    threads = torch.get_num_threads()
    if system == "colonyrl-ray":
        import ray

        ray.shutdown()
    # train() times itself from just after its tracker is built; the rest of the call (nothing much
    # with tracking off) is counted as setup, and as before every evaluation.
    outside = wall - result.wall_time_s
    evals = [{"env_steps": steps, "mean": mean, "eval_s": end - start, "wall_s": outside + end}
             for (steps, mean), (start, end) in zip(result.evaluations, result.evaluation_times_s, strict=True)]
    solved = next((i for i, e in enumerate(evals) if e["mean"] >= common.SOLVE_RETURN), None)
    setup = outside + result.setup_time_s
    train_s = result.train_end_s - result.setup_time_s - result.eval_time_s
    steps = result.counters["env_steps"]
    rounds = steps // batch
    out = {
        "env_steps": steps,
        "wall_s": wall,
        "setup_s": setup,
        "eval_s": result.eval_time_s,
        "train_s": train_s,
        "train_fps": steps / train_s if train_s > 0 else None,
        "wrapup_s": result.wall_time_s - result.train_end_s,
        "solved": solved is not None,
        "solve_env_steps": evals[solved]["env_steps"] if solved is not None else None,
        "solve_wall_s": evals[solved]["wall_s"] if solved is not None else None,
        "solve_eval_s": sum(e["eval_s"] for e in evals[:solved + 1]) if solved is not None else None,
        "final_eval": evals[-1]["mean"] if evals else None,
        "final_eval_own_seeds": result.evaluation.mean,  # train()'s final evaluation (FINAL_EVAL_WORKER_INDEX)
        "evals": evals,
        "import_s": import_s,
        "torch_threads": threads,
        "updates": result.counters["updates"],
        "updates_per_round": updates_per_round,
        "batch": batch,
        # every round collected got all its updates (train() finishes the round it stops in)
        "all_rounds_finished": steps % batch == 0 and result.counters["updates"] == rounds * updates_per_round,
        "threads_note": "colonyrl init_process: 1 torch thread per worker process",
    }
    if ray_init_s:
        out["ray_init_s"] = ray_init_s[0]
    return out


def worker_main(args: argparse.Namespace) -> int:
    noise = common.Noise()
    out: dict[str, Any] = {"system": args.system, "seed": args.seed, "cap": args.cap,
                           "early_stop": not args.no_early_stop, "pid": os.getpid(),
                           "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS")}
    code = 0
    try:
        if args.system == SB3_KEY:
            out.update(run_sb3(args.seed, args.cap, not args.no_early_stop))
        elif args.system == "sb3-1thread":
            out.update(run_sb3(args.seed, args.cap, not args.no_early_stop, threads=1))
        else:
            out.update(run_colonyrl(args.system, args.seed, args.cap, not args.no_early_stop))
    except BaseException as e:  # reported verbatim in the table and the JSON
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
        code = 1
    out["noise"] = noise.reading()
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(out), flush=True)
    return code


# ------------------------------------------------------------------------------------------------
# parent side: fresh process per (seed, system), tables, ratios
# ------------------------------------------------------------------------------------------------
def run_one(system: str, seed: int, cap: int, no_early_stop: bool, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--system", system, "--seed", str(seed),
           "--cap", str(cap)] + (["--no-early-stop"] if no_early_stop else [])
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=HERE.parent)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-3000:] if isinstance(e.stderr, bytes) else (e.stderr or "")[-3000:]
        return {"system": system, "seed": seed, "error": f"timed out after {timeout_s:g} s",
                "stderr_tail": str(tail)}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        return {"system": system, "seed": seed, "error": f"worker exited {proc.returncode} without a result",
                "stderr_tail": proc.stderr[-3000:], "stdout_tail": proc.stdout[-2000:]}
    res = json.loads(lines[-1][len(RESULT_MARK):])
    res["process_s"] = time.time() - start
    res["returncode"] = proc.returncode
    if proc.returncode or "error" in res:
        res["stderr_tail"] = proc.stderr[-3000:]
    return res


def _ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "error" not in r]


def _threads(runs: list[dict[str, Any]]) -> str:
    vals = sorted({r.get("torch_threads") for r in _ok(runs)} - {None})
    return "/".join(str(v) for v in vals) or "-"


def table(results: list[dict[str, Any]], systems: list[str], full_budget: bool) -> str:
    fm = common.fmt_median_range
    lines = []
    if not full_budget:
        lines += ["| system | torch threads | solved | wall-clock to solve [s] | excl. eval [s] | env steps to solve"
                  " | train env steps/s | setup [s] | eval [s] | wrap-up [s] |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
    else:
        lines += ["| system | torch threads | train env steps/s | env steps | wall-clock [s] | setup [s] | eval [s]"
                  " | wrap-up [s] | first solve at (env steps) | wall-clock to first solve [s] | final eval | solved |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in systems:
        runs = [r for r in results if r["system"] == s]
        ok = _ok(runs)
        solved = [r for r in ok if r.get("solved")]
        name = SYSTEMS[s]
        errors = len(runs) - len(ok)
        solved_txt = f"{len(solved)}/{len(runs)}" + (f" ({errors} failed)" if errors else "")
        setup = fm([r["setup_s"] for r in ok], 2)
        if s == "colonyrl-ray" and any("ray_init_s" in r for r in ok):
            setup += f", of which ray.init {fm([r.get('ray_init_s') for r in ok], 2)}"
        if not full_budget:
            lines.append(
                f"| {name} | {_threads(runs)} | {solved_txt} | {fm([r['solve_wall_s'] for r in solved])}"
                f" | {fm([r['solve_wall_s'] - r['solve_eval_s'] for r in solved])}"
                f" | {fm([r['solve_env_steps'] for r in solved], 0)} | {fm([r['train_fps'] for r in ok], 0)}"
                f" | {setup} | {fm([r['eval_s'] for r in ok], 2)} | {fm([r.get('wrapup_s') for r in ok], 2)} |")
        else:
            lines.append(
                f"| {name} | {_threads(runs)} | {fm([r['train_fps'] for r in ok], 0)}"
                f" | {fm([r['env_steps'] for r in ok], 0)} | {fm([r['wall_s'] for r in ok])} | {setup}"
                f" | {fm([r['eval_s'] for r in ok], 2)} | {fm([r.get('wrapup_s') for r in ok], 2)}"
                f" | {fm([r['solve_env_steps'] for r in solved], 0)}"
                f" | {fm([r['solve_wall_s'] for r in solved])} | {fm([r['final_eval'] for r in ok], 0)}"
                f" | {solved_txt} |")
    return "\n".join(lines)


def _paired(results: list[dict[str, Any]], system: str, base: str, key: str, only_solved: bool) -> list[float]:
    """Per-seed ratios system / base (same seed, same invocation)."""
    out = []
    for r in _ok([x for x in results if x["system"] == system]):
        b = [x for x in _ok(results) if x["system"] == base and x["seed"] == r["seed"]]
        if not b or r.get(key) is None or b[0].get(key) is None:
            continue
        if only_solved and not (r.get("solved") and b[0].get("solved")):
            continue
        out.append(r[key] / b[0][key])
    return out


def _median(values: list[float | None]) -> float | None:
    mr = common.median_range(values)
    return mr[0] if mr else None


def _fps(results: list[dict[str, Any]], system: str) -> float | None:
    return _median([r["train_fps"] for r in _ok(results) if r["system"] == system])


def _solve_wall(results: list[dict[str, Any]], system: str) -> float | None:
    return _median([r["solve_wall_s"] for r in _ok(results) if r["system"] == system and r.get("solved")])


def ratios(results: list[dict[str, Any]], systems: list[str], full_budget: bool) -> str:
    bases = sorted((b for b in systems if b.startswith("sb3")), key=lambda b: b != SB3_KEY)
    if not bases:
        return "(no SB3 rows in this run: no ratios)"
    lines = []
    for base in bases:
        base_fps, base_wall = _fps(results, base), _solve_wall(results, base)
        lines += [f"Against {SYSTEMS[base]}:", "",
                  "| system | throughput ratio (colonyrl / SB3) | per-seed | wall-clock-to-solve ratio (colonyrl / SB3)"
                  " | per-seed |", "|---|---|---|---|---|"]
        for s in systems:
            if s.startswith("sb3"):
                continue
            fps, wall = _fps(results, s), _solve_wall(results, s)
            tr = f"{fps / base_fps:.2f}" if fps and base_fps else "-"
            wr = f"{wall / base_wall:.2f}" if wall and base_wall else "-"
            lines.append(
                f"| {SYSTEMS[s]} | {tr} | {common.fmt_median_range(_paired(results, s, base, 'train_fps', False), 2)}"
                f" | {wr} | {common.fmt_median_range(_paired(results, s, base, 'solve_wall_s', True), 2)} |")
        lines.append("")
    lines.append("Ratios of medians; 'per-seed' is median (min-max) of the same-seed ratios"
                 " (wall-clock: seeds where both solved).")
    if SB3_KEY not in systems:
        return "\n".join(lines)
    sb3_fps, sb3_wall = _fps(results, SB3_KEY), _solve_wall(results, SB3_KEY)
    (tsys, tmin), (wsys, wmax) = TARGET_THROUGHPUT, TARGET_WALLCLOCK
    fps = _fps(results, tsys) if tsys in systems else None
    if fps and sb3_fps:
        verdict = "met" if fps / sb3_fps >= tmin else "NOT met"
        judged = "" if full_budget else " (judged on the --no-early-stop run; this is the solve run)"
        lines.append(f"Target: {SYSTEMS[tsys]} throughput >= {tmin:g}x {SYSTEMS[SB3_KEY]}: {fps / sb3_fps:.2f}x,"
                     f" {verdict}{judged}.")
    wall = _solve_wall(results, wsys) if wsys in systems else None
    if wall and sb3_wall:
        verdict = "met" if wall / sb3_wall <= wmax else "NOT met"
        judged = " (judged on the solve run; this is the full-budget run)" if full_budget else ""
        lines.append(f"Target: {SYSTEMS[wsys]} median wall-clock to solve <= 1/3 of {SYSTEMS[SB3_KEY]}'s: "
                     f"{wall:.1f} s vs {sb3_wall:.1f} s = {wall / sb3_wall:.2f}, {verdict}{judged}.")
    return "\n".join(lines)


def parent_main(args: argparse.Namespace) -> int:
    systems = args.systems
    noise = common.Noise()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    mode = "full budget (--no-early-stop)" if args.no_early_stop else "solve (early stop)"
    print(f"# PPO CartPole-v1, mode: {mode}, cap {args.cap}, seeds {args.seeds}; started {started}; "
          f"loadavg {noise.load_start}", file=sys.stderr, flush=True)
    foreign = common.ForeignCPU()
    results = []
    for seed in args.seeds:
        for system in systems:
            discarded: list[dict[str, Any]] = []
            while True:
                waited = foreign.wait_quiet(args.quiet_cores, 5.0, args.wait_quiet) if args.wait_quiet > 0 else 0.0
                before = foreign.now()
                res = run_one(system, seed, args.cap, args.no_early_stop, args.timeout)
                res["others"] = {**foreign.between(before, foreign.now()), "waited_for_quiet_s": waited}
                if res["others"]["foreign_cores"] <= args.retry_above or len(discarded) >= args.retries:
                    break
                print(f"  seed {seed} {system}: others used {res['others']['foreign_cores']:.2f} cores during the"
                      f" run (> {args.retry_above:g}): discarded, running it again", file=sys.stderr, flush=True)
                discarded.append(res)
            res["discarded_attempts"] = discarded  # contended attempts, kept for the record
            results.append(res)
            if "error" in res:
                msg = f"ERROR {res['error']}"
            else:
                msg = (f"steps {res['env_steps']} wall {res['wall_s']:.1f}s setup {res['setup_s']:.2f}s "
                       f"eval {res['eval_s']:.2f}s wrap-up {res.get('wrapup_s', 0.0):.2f}s fps {res['train_fps']:.0f} solved "
                       f"{res['solve_env_steps'] if res['solved'] else 'no'} threads {res['torch_threads']} "
                       f"evals {[round(e['mean']) for e in res['evals']]}")
            print(f"  seed {seed} {system}: {msg}  (load {os.getloadavg()[0]:.2f}, others"
                  f" {res['others']['foreign_cores']:.2f} cores, waited {waited:.0f} s)", file=sys.stderr, flush=True)
    foreign.close()
    reading = noise.reading()
    out = Path(args.out) if args.out else HERE / "results" / (
        "ppo_cartpole-fullbudget.json" if args.no_early_stop else "ppo_cartpole.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"started": started, "mode": mode, "cap": args.cap, "seeds": args.seeds, "systems": systems,
            "eval_every": common.EVAL_EVERY, "eval_episodes": common.EVAL_EPISODES,
            "evaluator": "colonyrl.launch.evaluate.evaluate(seed=run seed, worker_index=EVAL_WORKER_INDEX)",
            "solve_return": common.SOLVE_RETURN, "noise": reading, "wait_quiet_s": args.wait_quiet,
            "quiet_cores": args.quiet_cores, "retry_above_cores": args.retry_above, "python": sys.version,
            "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "versions": _versions()}
    out.write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
    print(f"\n## PPO CartPole-v1, {mode}: median (min-max) over seeds {args.seeds}\n")
    print(table(results, systems, args.no_early_stop))
    print()
    print(ratios(results, systems, args.no_early_stop))
    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"\nFAILED seed {r['seed']} {r['system']}: {r['error']}\n{r.get('traceback') or r.get('stderr_tail', '')}")
    others = [r["others"]["foreign_cores"] for r in results]
    print(f"\nOther users' CPU during each run (cores busy outside this benchmark's processes): median"
          f" {common.median_range(others)[0]:.2f}, max {max(others):.2f}"
          f" (seed/system of the max: {results[others.index(max(others))]['seed']}/"
          f"{results[others.index(max(others))]['system']}); contended attempts discarded and re-run:"
          f" {sum(len(r['discarded_attempts']) for r in results)}.")
    print(f"load average: start {[round(x, 2) for x in reading['loadavg_start']]}, end "
          f"{[round(x, 2) for x in reading['loadavg_end']]}; machine CPU busy over the run "
          f"{reading['cpu_busy_fraction']:.2f}; {reading['span_s']:.0f} s in all. Raw data: {os.path.relpath(out)}")
    return 1 if errors else 0


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("colonyrl", "stable-baselines3", "torch", "gymnasium", "numpy", "ray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=DEFAULT_SYSTEMS,
                   help="subset of the rows, run in this order for every seed")
    p.add_argument("--no-early-stop", action="store_true", help="train to the cap: steady-state throughput")
    p.add_argument("--cap", type=int, default=DEFAULT_CAP,
                   help="env-step cap; also the horizon of the linear lr/clip schedules (SB3 rows)")
    p.add_argument("--out", help="JSON path (default benchmarks/results/ppo_cartpole[-fullbudget].json)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker process")
    p.add_argument("--wait-quiet", type=float, default=120.0,
                   help="before each run, wait up to this many seconds until other users' processes used less"
                        " than --quiet-cores over 5 s (0: never wait)")
    p.add_argument("--quiet-cores", type=float, default=0.2)
    p.add_argument("--retry-above", type=float, default=0.25,
                   help="re-run a (seed, system) whose run saw other users' processes use more than this many"
                        " cores on average (the contended attempt is kept in the JSON)")
    p.add_argument("--retries", type=int, default=2, help="at most this many re-runs per (seed, system)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--system", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
