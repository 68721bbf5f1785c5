"""PPO learning parity with SB3 beyond CartPole: RL Zoo's settings, both systems, the same budget.

Tasks and hyperparameters are RL Zoo's (rl-baselines3-zoo ``hyperparams/ppo.yml``, commit
``ZOO_COMMIT`` below), copied verbatim into ``ZOO``; what the zoo leaves out is SB3 PPO's default
(``SB3_DEFAULTS``). colonyrl has neither gSDE nor VecNormalize, so both systems run without the zoo's
``use_sde`` / ``sde_sample_freq`` / ``normalize`` (printed per task). Translation to colonyrl
(``colonyrl_config``): the same numbers, except ``vf_coef``, doubled: colonyrl's value loss is
0.5 * MSE (CleanRL), SB3's is the plain MSE (``F.mse_loss`` in stable_baselines3/ppo/ppo.py).

Protocol:

* seeds 0-4; every (seed, task, system) runs in a fresh Python process (this file with
  ``--worker``), both systems in one invocation, their order alternating from seed to seed;
* budget: ``--budget-fraction`` (default 0.5) of the zoo's ``n_timesteps``, the same env-step
  budget for both (SB3: ``learn(total_timesteps=budget)``; colonyrl: ``RunConfig.total_env_steps``;
  each stops at the end of the collection round that reaches it);
* colonyrl trains through the shipped ``colonyrl.launch.train.train(TrainConfig)``
  (``track=False, progress=False``, one GWorker x one CWorker in-process, one torch thread);
  SB3 with ``torch.set_num_threads(--sb3-threads)`` (default 1, the same as colonyrl);
* final evaluation, the same for both (``common.evaluate_policy_fn``): ``--eval-episodes`` (20)
  deterministic episodes side by side on fresh envs reset with seeds ``1_000_000 + 1000 * seed + i``,
  apart from every training env's (SB3 resets its training envs with ``seed + i``; colonyrl with
  32-bit words hashed from (seed, worker) by ``np.random.SeedSequence``); colonyrl's policy is the
  saved model (``launch.evaluate.load_model``);
* per task and system: the interquartile mean (IQM) of the final returns over the runs, with a
  95 % percentile-bootstrap interval over runs (rliable's ``aggregate_iqm`` =
  ``scipy.stats.trim_mean(x, 0.25)``; Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge
  of the Statistical Precipice", https://arxiv.org/abs/2108.13264), 2000 resamples, fixed seed; and
  the IQM difference colonyrl - SB3 with its interval (each system's runs resampled independently);
* wall-clock starts after imports, before any env or model is built; train env steps/s = env steps
  / (wall-clock - colonyrl's own final evaluation and model save inside ``train()``).

Usage::

    .venv/bin/python benchmarks/ppo_parity.py                          # 3 tasks x 5 seeds x 2 systems
    .venv/bin/python benchmarks/ppo_parity.py --quick                  # smoke run: tiny budgets, seed 0
    .venv/bin/python benchmarks/ppo_parity.py --tasks Pendulum-v1 --seeds 0 1 --budget-fraction 0.2
"""

from __future__ import annotations

import time

_T_MODULE = time.perf_counter()  # imports are timed from here (interpreter start is not)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULT_MARK = "@@RESULT@@ "

ZOO_COMMIT = "22e3ff2450fd92033f7f032915e1f64894a09584"
ZOO_SOURCE = f"https://github.com/DLR-RM/rl-baselines3-zoo/blob/{ZOO_COMMIT}/hyperparams/ppo.yml"

#: SB3 PPO's constructor defaults (stable_baselines3/ppo/ppo.py, PPO.__init__; MlpPolicy: 64-64 Tanh,
#: separate actor and critic, orthogonal init, log_std_init 0) and the zoo's n_envs default (1).
SB3_DEFAULTS: dict[str, Any] = {"n_envs": 1, "n_steps": 2048, "batch_size": 64, "n_epochs": 10, "gamma": 0.99,
                                "gae_lambda": 0.95, "learning_rate": 3e-4, "clip_range": 0.2, "ent_coef": 0.0,
                                "vf_coef": 0.5, "max_grad_norm": 0.5, "policy_kwargs": {}}

#: rl-baselines3-zoo hyperparams/ppo.yml (ZOO_SOURCE), verbatim; every entry has policy: 'MlpPolicy'.
ZOO: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {  # "# Tuned"
        "n_envs": 4, "n_timesteps": 1e5, "n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9, "n_epochs": 10,
        "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2, "use_sde": True, "sde_sample_freq": 4,
    },
    "Acrobot-v1": {
        "normalize": True, "n_envs": 16, "n_timesteps": 1e6, "n_steps": 256, "gae_lambda": 0.94, "gamma": 0.99,
        "n_epochs": 4, "ent_coef": 0.0,
    },
    "MountainCarContinuous-v0": {  # "# Tuned"
        "normalize": True, "n_envs": 1, "n_timesteps": 20000, "batch_size": 256, "n_steps": 8, "gamma": 0.9999,
        "learning_rate": 7.77e-05, "ent_coef": 0.00429, "clip_range": 0.1, "n_epochs": 10, "gae_lambda": 0.9,
        "max_grad_norm": 5, "vf_coef": 0.19, "use_sde": True,
        "policy_kwargs": {"log_std_init": -3.29, "ortho_init": False},
    },
    # Not in the default set: needs Box2D (gymnasium[box2d]), which the project does not install.
    "LunarLander-v3": {
        "n_envs": 16, "n_timesteps": 1e6, "n_steps": 1024, "batch_size": 64, "gae_lambda": 0.98, "gamma": 0.999,
        "n_epochs": 4, "ent_coef": 0.01,
    },
}
DEFAULT_TASKS = ["Pendulum-v1", "Acrobot-v1", "MountainCarContinuous-v0"]
#: Zoo keys that neither system gets here: colonyrl has no gSDE and no VecNormalize.
DROPPED = ("normalize", "use_sde", "sde_sample_freq")
SYSTEMS = {"colonyrl": "colonyrl (train(TrainConfig), in-process)", "sb3": "SB3 PPO"}
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 12345


def settings(task: str) -> tuple[dict[str, Any], list[str]]:
    """The zoo's entry with SB3's defaults filled in, and the zoo keys dropped (see DROPPED)."""
    zoo = ZOO[task]
    hp = {**SB3_DEFAULTS, **{k: v for k, v in zoo.items() if k not in DROPPED}}
    return hp, [f"{k}={zoo[k]}" for k in DROPPED if k in zoo]


def schedule(value: float | str) -> tuple[float, bool]:
    """(initial value, linear?) of a zoo value: a number, or ``"lin_<x>"`` (x * progress_remaining)."""
    if isinstance(value, str) and value.startswith("lin_"):
        return float(value[4:]), True
    return float(value), False


def quick_budget(hp: dict[str, Any]) -> int:
    """--quick: two collection rounds (at least 256 env steps)."""
    return max(2 * hp["n_envs"] * hp["n_steps"], 256)


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------
def iqm(values: Any) -> float:
    """Interquartile mean: the mean of the runs left after cutting ``int(0.25 * n)`` from each end
    (``scipy.stats.trim_mean(x, 0.25)``, which rliable's ``aggregate_iqm`` calls)."""
    import numpy as np

    x = np.sort(np.asarray(values, dtype=np.float64), axis=-1)
    cut = int(0.25 * x.shape[-1])
    return np.mean(x[..., cut:x.shape[-1] - cut], axis=-1)


def bootstrap_iqm(values: list[float], other: list[float] | None = None, reps: int = BOOTSTRAP_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float] | None:
    """(IQM, 2.5 %, 97.5 % percentile-bootstrap bounds) over runs; with ``other``, of
    IQM(values) - IQM(other), each sample resampled on its own. None without runs."""
    import numpy as np

    if not values or (other is not None and not other):
        return None
    rng = np.random.default_rng(seed)
    x = np.asarray(values, dtype=np.float64)
    boot = iqm(x[rng.integers(0, len(x), size=(reps, len(x)))])
    point = float(iqm(x))
    if other is not None:
        y = np.asarray(other, dtype=np.float64)
        boot = boot - iqm(y[rng.integers(0, len(y), size=(reps, len(y)))])
        point -= float(iqm(y))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return point, float(lo), float(hi)


# ------------------------------------------------------------------------------------------------
# worker side: one (task, system, seed) in this process
# ------------------------------------------------------------------------------------------------
def run_sb3(task: str, seed: int, budget: int, eval_episodes: int, threads: int) -> dict[str, Any]:
    import warnings

    import torch
    from ppo_cartpole import linear  # the zoo's lin_<x> schedule
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)
    hp, _ = settings(task)
    import_s = time.perf_counter() - _T_MODULE
    t0 = time.perf_counter()
    lr, lr_lin = schedule(hp["learning_rate"])
    clip, clip_lin = schedule(hp["clip_range"])
    env = make_vec_env(task, n_envs=hp["n_envs"], seed=seed)
    with warnings.catch_warnings():  # e.g. "batch_size larger than n_steps * n_envs" (MountainCarContinuous)
        warnings.simplefilter("ignore")
        model = PPO("MlpPolicy", env, n_steps=hp["n_steps"], batch_size=hp["batch_size"], n_epochs=hp["n_epochs"],
                    gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], learning_rate=linear(lr) if lr_lin else lr,
                    clip_range=linear(clip) if clip_lin else clip, ent_coef=hp["ent_coef"], vf_coef=hp["vf_coef"],
                    max_grad_norm=hp["max_grad_norm"], policy_kwargs=dict(hp["policy_kwargs"]), seed=seed,
                    device="cpu", verbose=0)
    updates = [0]
    step = model.policy.optimizer.step

    def counted_step(*args: Any, **kwargs: Any) -> Any:
        updates[0] += 1
        return step(*args, **kwargs)

    model.policy.optimizer.step = counted_step  # type: ignore[method-assign]
    model.learn(total_timesteps=budget)
    t1 = time.perf_counter()
    env.close()
    final, returns = common.evaluate_policy_fn(lambda obs: model.predict(obs, deterministic=True)[0],
                                               common.eval_seed(seed), eval_episodes, task)
    steps = int(model.num_timesteps)
    return {"env_steps": steps, "transitions": steps, "updates": updates[0], "wall_s": t1 - t0, "train_s": t1 - t0,
            "fps": steps / (t1 - t0), "final_return": final, "eval_returns": returns, "import_s": import_s,
            "torch_threads": torch.get_num_threads(), "eval_s": time.perf_counter() - t1}


def colonyrl_config(task: str, seed: int, budget: int, out_dir: str) -> Any:
    """The zoo's settings as a colonyrl TrainConfig (vf_coef doubled; lin_ schedules as Schedules)."""
    from colonyrl.agents.networks import ActorCriticConfig
    from colonyrl.agents.ppo import PPOConfig
    from colonyrl.envs.factory import EnvConfig
    from colonyrl.launch.config import RunConfig, Schedule, TrainConfig
    from colonyrl.scheme.scheme import SchemeConfig
    from colonyrl.storage.rollout import RolloutConfig

    hp, _ = settings(task)
    kwargs = dict(hp["policy_kwargs"])
    unknown = set(kwargs) - {"log_std_init", "ortho_init"}
    if unknown:
        raise ValueError(f"{task}: no colonyrl translation for policy_kwargs {sorted(unknown)}")
    lr, lr_lin = schedule(hp["learning_rate"])
    clip, clip_lin = schedule(hp["clip_range"])
    # SB3's lin_<x>: x * (1 - num_timesteps / total_timesteps), set before each train(); a Schedule
    # from x at 0 to 0 at the budget, set before each learner.step (launch/train.py).
    schedules = tuple(Schedule(kind="algo", name=name, points=((0, value), (budget, 0.0)))
                      for name, value, lin in (("lr", lr, lr_lin), ("clip_range", clip, clip_lin)) if lin)
    return TrainConfig(
        env=EnvConfig(id=task, num_envs=hp["n_envs"]),
        actor=ActorCriticConfig(hidden_sizes=(64, 64), activation="tanh", shared_trunk=False,
                                ortho_init=kwargs.get("ortho_init", True), log_std_init=kwargs.get("log_std_init", 0.0)),
        algo=PPOConfig(lr=lr, num_epochs=hp["n_epochs"], minibatch_size=hp["batch_size"], clip_range=clip,
                       ent_coef=hp["ent_coef"], vf_coef=2.0 * hp["vf_coef"], max_grad_norm=hp["max_grad_norm"],
                       normalize_advantage=True),
        storage=RolloutConfig(num_steps=hp["n_steps"], gamma=hp["gamma"], gae_lambda=hp["gae_lambda"]),
        scheme=SchemeConfig(num_grad_workers=1, num_col_workers=1),
        run=RunConfig(total_env_steps=budget, seed=seed, eval_episodes=1, track=False, progress=False,
                      output_dir=os.path.join(out_dir, "runs"), checkpoint_dir=os.path.join(out_dir, "checkpoints"),
                      checkpoint_every_min=None),
        schedules=schedules,
    )


def run_colonyrl(task: str, seed: int, budget: int, eval_episodes: int) -> dict[str, Any]:
    import contextlib
    import io

    import torch

    import colonyrl.launch.train as train_module
    from colonyrl.launch.evaluate import load_model

    import_s = time.perf_counter() - _T_MODULE
    inner = {"eval_s": 0.0, "save_s": 0.0}

    def timed(fn: Any, key: str) -> Any:  # train()'s own final evaluation and model save: not training
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                inner[key] += time.perf_counter() - start
        return wrapper

    train_module.evaluate = timed(train_module.evaluate, "eval_s")
    train_module.save_model = timed(train_module.save_model, "save_s")
    with tempfile.TemporaryDirectory(prefix="ppo_parity-") as tmp:
        t0 = time.perf_counter()
        cfg = colonyrl_config(task, seed, budget, tmp)
        with contextlib.redirect_stdout(io.StringIO()):  # keep the RESULT line alone on stdout
            result = train_module.train(cfg)
        t1 = time.perf_counter()
        algo, _, _ = load_model(result.model_dir)
    final, returns = common.evaluate_policy_fn(lambda obs: algo.act(obs, deterministic=True).env_action,
                                               common.eval_seed(seed), eval_episodes, task)
    c = result.counters
    train_s = (t1 - t0) - inner["eval_s"] - inner["save_s"]
    # Each finished episode is followed by one autoreset step (next-step autoreset), which the
    # env-step counter includes and training drops.
    return {"env_steps": c["env_steps"], "transitions": c["env_steps"] - c["episodes"], "updates": c["updates"],
            "wall_s": t1 - t0, "train_s": train_s, "fps": c["env_steps"] / train_s, "final_return": final,
            "eval_returns": returns, "import_s": import_s, "torch_threads": torch.get_num_threads(),
            "inner_eval_s": inner["eval_s"], "save_s": inner["save_s"], "eval_s": time.perf_counter() - t1}


def worker_main(args: argparse.Namespace) -> int:
    try:
        if args.system == "sb3":
            res = run_sb3(args.task, args.seed, args.budget, args.eval_episodes, args.sb3_threads)
        else:
            res = run_colonyrl(args.task, args.seed, args.budget, args.eval_episodes)
    except Exception as e:  # reported, not raised: the parent records the failure and goes on
        res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    print(RESULT_MARK + json.dumps({"task": args.task, "system": args.system, "seed": args.seed,
                                    "budget": args.budget, **res}), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------
# parent side: every run in its own process, then the tables
# ------------------------------------------------------------------------------------------------
def run_one(task: str, system: str, seed: int, budget: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--task", task, "--system", system,
           "--seed", str(seed), "--budget", str(budget), "--eval-episodes", str(args.eval_episodes),
           "--sb3-threads", str(args.sb3_threads)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    base = {"task": task, "system": system, "seed": seed, "budget": budget}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timeout after {args.timeout:g} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    return {**base, "error": f"worker exited {proc.returncode} without a result", "stderr_tail": proc.stderr[-3000:]}


def _ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "error" not in r]


def _fmt_ci(ci: tuple[float, float, float] | None, digits: int = 1) -> str:
    return "-" if ci is None else f"{ci[0]:.{digits}f} [{ci[1]:.{digits}f}, {ci[2]:.{digits}f}]"


def summarize(results: list[dict[str, Any]], tasks: list[str], systems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task in tasks:
        rows = {}
        for system in systems:
            runs = [r for r in results if r["task"] == task and r["system"] == system]
            ok = _ok(runs)
            finals = [r["final_return"] for r in ok]
            rows[system] = {"runs": len(runs), "failed": len(runs) - len(ok), "final_returns": finals,
                            "iqm_ci": bootstrap_iqm(finals),
                            "wall_s": common.median_range([r["wall_s"] for r in ok]),
                            "fps": common.median_range([r["fps"] for r in ok]),
                            "env_steps": common.median_range([r["env_steps"] for r in ok]),
                            "updates": common.median_range([r["updates"] for r in ok]),
                            "threads": sorted({r["torch_threads"] for r in ok})}
        diff = None
        if "colonyrl" in rows and "sb3" in rows:
            diff = bootstrap_iqm(rows["colonyrl"]["final_returns"], rows["sb3"]["final_returns"])
        out[task] = {"systems": rows, "iqm_diff_colonyrl_minus_sb3": diff}
    return out


def table(summary: dict[str, Any], results: list[dict[str, Any]], systems: list[str]) -> str:
    lines = ["| task | system | runs | final return IQM [95% CI] | per-seed final returns | wall-clock [s]"
             " | train env steps/s | env steps | gradient updates | torch threads |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task, entry in summary.items():
        for system in systems:
            row = entry["systems"][system]
            runs = sorted(_ok([r for r in results if r["task"] == task and r["system"] == system]),
                          key=lambda r: r["seed"])
            per_seed = ", ".join(f"{r['final_return']:.1f}" for r in runs) or "-"
            failed = f" ({row['failed']} failed)" if row["failed"] else ""
            lines.append(
                f"| {task} | {SYSTEMS[system]} | {row['runs'] - row['failed']}{failed} | {_fmt_ci(row['iqm_ci'])}"
                f" | {per_seed} | {common.fmt_median_range([r['wall_s'] for r in runs])}"
                f" | {common.fmt_median_range([r['fps'] for r in runs], 0)}"
                f" | {common.fmt_median_range([r['env_steps'] for r in runs], 0)}"
                f" | {common.fmt_median_range([r['updates'] for r in runs], 0)}"
                f" | {','.join(map(str, row['threads'])) or '-'} |")
    if all(s in systems for s in ("colonyrl", "sb3")):
        lines += ["", "| task | IQM difference colonyrl - SB3 [95% CI] | zoo settings left out (both systems) |",
                  "|---|---|---|"]
        for task, entry in summary.items():
            lines.append(f"| {task} | {_fmt_ci(entry['iqm_diff_colonyrl_minus_sb3'])}"
                         f" | {', '.join(settings(task)[1]) or '-'} |")
    lines += ["", "IQM: mean of the middle 50 % of runs (25 % trimmed mean); interval: 95 % percentile bootstrap"
              f" over runs, {BOOTSTRAP_RESAMPLES} resamples (seed {BOOTSTRAP_SEED}). Other columns: median"
              " (min-max) over seeds."]
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("colonyrl", "stable-baselines3", "torch", "gymnasium", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def parent_main(args: argparse.Namespace) -> int:
    tasks, systems = args.tasks, args.systems
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2, 3, 4])
    budgets = {t: quick_budget(settings(t)[0]) if args.quick else int(round(args.budget_fraction * ZOO[t]["n_timesteps"]))
               for t in tasks}
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    mode = "quick (smoke)" if args.quick else f"budget fraction {args.budget_fraction:g}"
    print(f"# PPO parity, {mode}: tasks {tasks}, seeds {seeds}, systems {systems}, budgets {budgets};"
          f" started {started}", file=sys.stderr, flush=True)
    noise = common.Noise()
    foreign = common.ForeignCPU()
    results = []
    for i, seed in enumerate(seeds):
        for task in tasks:
            for system in (systems if i % 2 == 0 else systems[::-1]):  # alternate the order from seed to seed
                before = foreign.now()
                res = run_one(task, system, seed, budgets[task], args)
                res["others"] = foreign.between(before, foreign.now())
                results.append(res)
                msg = (f"ERROR {res['error']}" if "error" in res else
                       f"final {res['final_return']:.1f} wall {res['wall_s']:.1f}s fps {res['fps']:.0f}"
                       f" steps {res['env_steps']} updates {res['updates']}")
                print(f"  seed {seed} {task} {system}: {msg} (others {res['others']['foreign_cores']:.2f} cores)",
                      file=sys.stderr, flush=True)
    foreign.close()
    summary = summarize(results, tasks, systems)
    out = Path(args.out) if args.out else HERE / "results" / ("ppo_parity-quick.json" if args.quick else "ppo_parity.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"started": started, "mode": mode, "tasks": tasks, "systems": systems, "seeds": seeds, "budgets": budgets,
            "budget_fraction": None if args.quick else args.budget_fraction, "eval_episodes": args.eval_episodes,
            "sb3_threads": args.sb3_threads, "zoo_source": ZOO_SOURCE,
            "settings": {t: {"sb3": settings(t)[0], "dropped": settings(t)[1]} for t in tasks},
            "noise": noise.reading(), "python": sys.version, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "versions": _versions()}
    out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=1))
    print(f"\n## PPO parity with SB3 ({mode}; seeds {seeds}; RL Zoo settings, {ZOO_SOURCE})\n")
    print(table(summary, results, systems))
    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"\nFAILED seed {r['seed']} {r['task']} {r['system']}: {r['error']}\n"
              f"{r.get('traceback') or r.get('stderr_tail', '')}")
    total = sum(r.get("wall_s", 0.0) + r.get("eval_s", 0.0) for r in results)
    print(f"\n{noise.reading()['span_s']:.0f} s in all ({total:.0f} s training + evaluation); raw data:"
          f" {os.path.relpath(out)}")
    return 1 if errors else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", choices=list(ZOO), default=DEFAULT_TASKS)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0-4 (--quick: 0)")
    p.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    p.add_argument("--budget-fraction", type=float, default=0.5, help="env-step budget as a fraction of the zoo's"
                   " n_timesteps (the same for both systems)")
    p.add_argument("--quick", action="store_true", help="smoke run: two collection rounds per task, seed 0, 2 eval"
                   " episodes")
    p.add_argument("--eval-episodes", type=int, default=None, help="deterministic final-evaluation episodes"
                   " (default 20; --quick: 2)")
    p.add_argument("--sb3-threads", type=int, default=1, help="torch.set_num_threads for SB3 (colonyrl uses 1)")
    p.add_argument("--out", help="JSON path (default benchmarks/results/ppo_parity[-quick].json)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--system", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--budget", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.eval_episodes is None:
        args.eval_episodes = 2 if args.quick else 20
    if not math.isfinite(args.budget_fraction) or args.budget_fraction <= 0:
        p.error("--budget-fraction must be > 0")
    if args.worker:
        return worker_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
