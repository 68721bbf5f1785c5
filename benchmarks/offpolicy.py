"""Off-policy algorithms against SB3: SAC on Pendulum-v1 and DQN on CartPole-v1, the same hyperparameters.

Protocol:

* **SAC Pendulum-v1**: colonyrl's ``sac-pendulum`` preset against ``stable_baselines3.SAC`` with the
  RL Zoo's settings (``hyperparams/sac.yml``: lr 1e-3, everything else SB3's SAC defaults: batch 256,
  buffer 1e6, tau 0.005, gamma 0.99, train_freq 1, gradient_steps 1, learning_starts 100, [256, 256]
  ReLU MLPs, entropy coefficient learned from 1.0), 20k env steps; threshold: mean return >= -200,
  evaluated every 1,000 env steps;
* **DQN CartPole-v1**: colonyrl's ``dqn-cartpole`` preset against ``stable_baselines3.DQN`` with the
  RL Zoo's settings (``hyperparams/dqn.yml``, ``colonyrl.agents.dqn.RL_ZOO``: lr 2.3e-3, batch 64,
  buffer 100k, learning_starts 1000, gamma 0.99, target_update_interval 10, train_freq 256,
  gradient_steps 128, exploration 1 -> 0.04 over the first 16 % = 8,000 env steps, [256, 256]), 50k
  env steps; threshold: mean return >= 475, evaluated every 5,000 env steps. With ``--budget`` other
  than 50k, SB3's exploration still ends at env step 8,000, as the preset's epsilon schedule does
  (``exploration_fraction`` = 8000 / budget; below 8,000 steps SB3's schedule is replaced by the
  same env-step schedule);
* **SAC HalfCheetah-v5** (``--algo sac-halfcheetah``): the ``sac-halfcheetah`` preset against SB3's
  SAC with the RL Zoo's HalfCheetah settings (learning_starts 10000, SB3's defaults otherwise, lr
  3e-4), 100k env steps, evaluated every 10,000: the comparison is the return at the budget (no
  threshold);
* before running, each worker checks that the colonyrl preset has the numbers given to SB3
  (``check_preset``): a preset that drifted from SB3's settings fails the run instead of being timed;
* every evaluation of both sides is ``colonyrl.launch.evaluate.evaluate`` with 10 deterministic
  episodes, ``seed`` = the run's seed and ``worker_index=EVAL_WORKER_INDEX``: the episodes of
  ``train()``'s periodic evaluations, so both are judged on identical starts; SB3's model acts
  through ``ppo_cartpole.SB3Acting``;
* when: colonyrl's ``train()`` evaluates at the end of the collection round that crosses a multiple
  of the evaluation interval, after that round's updates; SB3 at the same point, the start of the
  next ``collect_rollouts`` (its ``on_rollout_start`` callback: the updates of the round that crossed
  it are done), or after ``learn`` returns for the last round. Both have the same rounds (SAC: one
  env step and one update; DQN: 256 env steps, then 128 updates), so both evaluate at the same env
  steps (SAC 1000, 2000, ...; DQN 5120, 10240, ...) after the same number of updates;
* both train the whole budget (``--stop-at-threshold`` stops both at the first evaluation that
  reaches the threshold instead);
* one torch thread on both sides by default (``torch.set_num_threads(1)``; colonyrl's workers also
  set it themselves); ``--threads N`` gives both N (SB3 ``torch.set_num_threads(N)``, colonyrl
  ``SchemeConfig.learner_threads=N``: its in-process scheme computes and applies in the driver); every (algorithm, seed, system) in a fresh Python process (this file with
  ``--worker``), both systems in one invocation, their order alternating from seed to seed
  (seed 0: colonyrl, SB3; seed 1: SB3, colonyrl; ...);
* clocks start after imports (torch's lazily imported compiler stack too): colonyrl's is the
  ``train()`` call, SB3's starts before its env and model are built and its training ends when
  ``learn`` returns. **Time to threshold** = wall-clock at the end of the first evaluation reaching
  the threshold, minus the durations of every evaluation up to and including it (setup included,
  evaluation excluded). **Training env steps/s** = env steps / (end of training - setup - evaluation
  time); colonyrl's wrap-up after training (last checkpoint, final evaluation, model export) is
  outside it.

Usage::

    .venv/bin/python benchmarks/offpolicy.py                              # SAC and DQN, seeds 0 1 2
    .venv/bin/python benchmarks/offpolicy.py --algo sac --seeds 0 --wait-quiet 30
    .venv/bin/python benchmarks/offpolicy.py --algo both --seeds 0 --budget 1000 --eval-every 500 \\
        --wait-quiet 0 --retries 0 --json offpolicy-smoke.json  # smoke run (tests/benchmarks)
"""

from __future__ import annotations

import time

_T_MODULE = time.perf_counter()  # imports are timed from here (interpreter start is not)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULT_MARK = "@@RESULT@@ "
EVAL_EPISODES = 10
SYSTEMS = {"colonyrl": "colonyrl", "sb3": "SB3"}

#: Per algorithm: the colonyrl preset, the env, the protocol's numbers and the issue's targets
#: (``None``: no target given).
ALGOS: dict[str, dict[str, Any]] = {
    "sac": {"title": "SAC Pendulum-v1", "preset": "sac-pendulum", "env_id": "Pendulum-v1", "budget": 20_000,
            "eval_every": 1_000, "threshold": -200.0,
            "target_time_ratio": 0.5,  # colonyrl / SB3 time to threshold <= 1/2
            "target_fps_ratio": 2.0},  # colonyrl / SB3 training env steps/s >= 2
    "dqn": {"title": "DQN CartPole-v1", "preset": "dqn-cartpole", "env_id": "CartPole-v1", "budget": 50_000,
            "eval_every": 5_000, "threshold": 475.0, "target_time_ratio": None, "target_fps_ratio": None},
    # Issue 11: the return at 100k env steps against SB3 at the same budget (no threshold: inf is never
    # reached, the final evaluation is the comparison)
    "sac-halfcheetah": {"title": "SAC HalfCheetah-v5", "preset": "sac-halfcheetah", "env_id": "HalfCheetah-v5",
                        "budget": 100_000, "eval_every": 10_000, "threshold": math.inf, "target_time_ratio": None,
                        "target_fps_ratio": None},
}

#: SB3's SAC as the RL Zoo runs it on Pendulum-v1: lr 1e-3, SB3's defaults written out.
SB3_SAC = {"learning_rate": 1e-3, "buffer_size": 1_000_000, "learning_starts": 100, "batch_size": 256,
           "tau": 0.005, "gamma": 0.99, "train_freq": 1, "gradient_steps": 1, "ent_coef": "auto",
           "target_update_interval": 1, "net_arch": [256, 256], "activation": "relu"}
#: SB3's SAC as the RL Zoo runs it on HalfCheetah-v5 (hyperparams/sac.yml): learning_starts 10000, the rest
#: SB3's defaults (lr 3e-4).
SB3_SAC_HALFCHEETAH = {**SB3_SAC, "learning_rate": 3e-4, "learning_starts": 10_000}
#: DQN: epsilon anneals 1 -> 0.04 over this many env steps (RL Zoo: 16 % of its 50k).
DQN_EXPLORATION_STEPS = 8_000


# ------------------------------------------------------------------------------------------------
# worker side: one (algorithm, system, seed) in this process
# ------------------------------------------------------------------------------------------------
def sb3_sac_settings(algo: str) -> dict[str, Any]:
    return dict(SB3_SAC_HALFCHEETAH if algo == "sac-halfcheetah" else SB3_SAC)


def sb3_dqn_settings(budget: int) -> dict[str, Any]:
    """SB3 DQN keyword arguments: the RL Zoo's CartPole-v1 values (colonyrl.agents.dqn.RL_ZOO)."""
    from colonyrl.agents.dqn import RL_ZOO

    zoo = RL_ZOO["CartPole-v1"]
    assert zoo["exploration_fraction"] * zoo["n_timesteps"] == DQN_EXPLORATION_STEPS, zoo
    return {"learning_rate": zoo["lr"], "batch_size": zoo["batch_size"], "buffer_size": zoo["buffer_size"],
            "learning_starts": zoo["learning_starts"], "gamma": zoo["gamma"],
            "target_update_interval": zoo["target_update_interval_sb3_steps"], "train_freq": zoo["train_freq"],
            "gradient_steps": zoo["gradient_steps"],
            "exploration_fraction": min(1.0, DQN_EXPLORATION_STEPS / budget),
            "exploration_initial_eps": 1.0, "exploration_final_eps": zoo["exploration_final_eps"],
            "max_grad_norm": 10.0, "net_arch": list(zoo["hidden_sizes"])}


def colonyrl_config(algo: str, seed: int, budget: int, eval_every: int, stop: bool, folder: str,
                    threads: int = 1) -> Any:
    """The preset with the benchmark's run settings (tracking and console off, one checkpoint at the
    end, output under ``folder``) and ``threads`` torch threads for the in-process scheme."""
    from colonyrl.launch.presets import preset

    cfg = preset(ALGOS[algo]["preset"])
    run = cfg.run.replace(
        total_env_steps=budget, seed=seed, eval_every=eval_every, eval_episodes=EVAL_EPISODES,
        stop_at_return=ALGOS[algo]["threshold"] if stop else None, track=False, progress=False,
        output_dir=os.path.join(folder, "runs"), checkpoint_dir=os.path.join(folder, "checkpoints"),
        checkpoint_every=None, checkpoint_every_min=None)
    return cfg.replace(run=run, scheme=cfg.scheme.replace(learner_threads=threads))


def check_preset(algo: str, cfg: Any, budget: int) -> None:
    """The colonyrl preset has the hyperparameters SB3 gets (raises AssertionError otherwise)."""
    a, s, actor = cfg.algo, cfg.storage, cfg.actor
    problems = []

    def same(what: str, ours: Any, theirs: Any) -> None:
        if (isinstance(ours, float) or isinstance(theirs, float)) and ours is not None and theirs is not None:
            if not math.isclose(float(ours), float(theirs), rel_tol=1e-9):
                problems.append(f"{what}: colonyrl {ours!r}, SB3 {theirs!r}")
        elif ours != theirs:
            problems.append(f"{what}: colonyrl {ours!r}, SB3 {theirs!r}")

    same("env.num_envs", cfg.env.num_envs, 1)
    same("scheme", (cfg.scheme.num_grad_workers, cfg.scheme.num_col_workers), (1, 1))
    same("hidden_sizes", tuple(actor.hidden_sizes), (256, 256))
    same("activation", actor.activation, "relu")
    if algo.startswith("sac"):
        hp = sb3_sac_settings(algo)
        same("algo.name", a.name, "sac")
        same("lr", a.lr, hp["learning_rate"])
        same("batch_size", a.batch_size, hp["batch_size"])
        same("learning_starts", a.learning_starts, hp["learning_starts"])
        same("updates_per_step", a.updates_per_step, hp["gradient_steps"] / hp["train_freq"])
        same("tau", a.tau, hp["tau"])
        same("ent_coef (None: learned)", a.ent_coef, None)
        same("ent_coef_init", a.ent_coef_init, 1.0)
        same("storage.num_steps", s.num_steps, hp["train_freq"])
        same("memory_size", s.memory_size, hp["buffer_size"])
        same("gamma", s.gamma, hp["gamma"])
    else:
        hp = sb3_dqn_settings(budget)
        same("algo.name", a.name, "dqn")
        same("lr", a.lr, hp["learning_rate"])
        same("batch_size", a.batch_size, hp["batch_size"])
        same("learning_starts", a.learning_starts, hp["learning_starts"])
        same("storage.num_steps (train_freq)", s.num_steps, hp["train_freq"])
        same("updates_per_step", a.updates_per_step, hp["gradient_steps"] / hp["train_freq"])
        # SB3 refreshes its target every 10 env steps during collection: once per burst of updates
        same("target_update_interval (updates)", a.target_update_interval, hp["gradient_steps"])
        same("tau", a.tau, 1.0)
        same("max_grad_norm", a.max_grad_norm, hp["max_grad_norm"])
        same("double_q", a.double_q, False)
        same("dueling", a.dueling, False)
        same("memory_size", s.memory_size, hp["buffer_size"])
        same("gamma", s.gamma, hp["gamma"])
        eps = [sch for sch in cfg.schedules if sch.kind == "algo" and sch.name == "epsilon"]
        same("epsilon schedule", [tuple(p) for p in eps[0].points] if eps else None,
             [(0, hp["exploration_initial_eps"]), (DQN_EXPLORATION_STEPS, hp["exploration_final_eps"])])
    if problems:
        raise AssertionError(f"preset {ALGOS[algo]['preset']} differs from SB3's settings: " + "; ".join(problems))


def summarize(algo: str, evals: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """The protocol's numbers from a run's evaluations (``wall_s``: end of the evaluation, from t0)."""
    threshold = ALGOS[algo]["threshold"]
    hit = next((i for i, e in enumerate(evals) if e["mean"] >= threshold), None)
    out = {
        "reached": hit is not None,
        "threshold_env_steps": evals[hit]["env_steps"] if hit is not None else None,
        "threshold_wall_s": evals[hit]["wall_s"] if hit is not None else None,
        "threshold_eval_s": sum(e["eval_s"] for e in evals[:hit + 1]) if hit is not None else None,
        "final_eval": evals[-1]["mean"] if evals else None,
        "evals": evals,
    }
    out["threshold_time_s"] = out["threshold_wall_s"] - out["threshold_eval_s"] if hit is not None else None
    train_s = extra["train_s"]
    out["train_fps"] = extra["env_steps"] / train_s if train_s > 0 else None
    return {**extra, **out}


def run_colonyrl(algo: str, seed: int, budget: int, eval_every: int, stop: bool, threads: int = 1) -> dict[str, Any]:
    import dataclasses
    import tempfile

    import torch
    from ppo_cartpole import preimport

    from colonyrl.launch.evaluate import EVAL_WORKER_INDEX
    from colonyrl.launch.train import train

    torch.set_num_threads(threads)
    preimport()
    with tempfile.TemporaryDirectory(prefix="offpolicy-") as folder:
        cfg = colonyrl_config(algo, seed, budget, eval_every, stop, folder, threads)
        check_preset(algo, cfg, budget)
        import_s = time.perf_counter() - _T_MODULE
        t0 = time.perf_counter()  # the clock: the train() call
        result = train(cfg)
        wall = time.perf_counter() - t0
    # train() times itself from just after its tracker is built; the rest of the call (nothing much
    # with tracking off) is counted as setup, and as before every evaluation.
    outside = wall - result.wall_time_s
    evals = [{"env_steps": steps, "mean": mean, "eval_s": end - start, "wall_s": outside + end}
             for (steps, mean), (start, end) in zip(result.evaluations, result.evaluation_times_s, strict=True)]
    steps = result.counters["env_steps"]
    setup = outside + result.setup_time_s
    extra = {
        "env_steps": steps,
        "updates": result.counters.get("updates"),
        "wall_s": wall,
        "setup_s": setup,
        "eval_s": result.eval_time_s,
        "train_s": result.train_end_s - result.setup_time_s - result.eval_time_s,
        "wrapup_s": result.wall_time_s - result.train_end_s,
        "import_s": import_s,
        "torch_threads": torch.get_num_threads(),
        "counters": dict(result.counters),
        "final_eval_own_seeds": result.evaluation.mean,  # train()'s final evaluation (other seeds)
        "eval_worker_index": EVAL_WORKER_INDEX,
        "config": {k: dataclasses.asdict(getattr(cfg, k)) for k in ("algo", "storage", "actor")},
        "schedules": [dataclasses.asdict(s) for s in cfg.schedules],
    }
    return summarize(algo, evals, extra)


class SB3Clock:
    """Setup and evaluation accounting of the SB3 worker, evaluating where train() does."""

    def __init__(self, algo: str, seed: int, eval_every: int, stop: bool, eval_env: Any) -> None:
        self.algo, self.seed, self.eval_every, self.stop, self.eval_env = algo, seed, eval_every, stop, eval_env
        self.t0 = time.perf_counter()
        self.setup_end: float | None = None
        self.eval_s = 0.0
        self.next_eval = eval_every
        self.evals: list[dict[str, Any]] = []
        self.reached = False

    def maybe_evaluate(self, env_steps: int, acting: Any) -> None:
        if env_steps < self.next_eval:
            return
        from colonyrl.launch.evaluate import EVAL_WORKER_INDEX, evaluate

        while self.next_eval <= env_steps:
            self.next_eval += self.eval_every
        start = time.perf_counter()
        result = evaluate(acting, self.eval_env, EVAL_EPISODES, self.seed, worker_index=EVAL_WORKER_INDEX)
        end = time.perf_counter()
        self.eval_s += end - start
        self.evals.append({"env_steps": env_steps, "mean": result.mean, "returns": [float(r) for r in result.returns],
                           "eval_s": end - start, "wall_s": end - self.t0})
        if result.mean >= ALGOS[self.algo]["threshold"]:
            self.reached = True


def run_sb3(algo: str, seed: int, budget: int, eval_every: int, stop: bool, threads: int = 1) -> dict[str, Any]:
    import tempfile

    import torch
    from ppo_cartpole import SB3Acting, preimport
    from stable_baselines3 import DQN, SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from colonyrl.launch.evaluate import EVAL_WORKER_INDEX

    torch.set_num_threads(threads)
    preimport()
    with tempfile.TemporaryDirectory(prefix="offpolicy-") as folder:  # the same env as colonyrl's evaluation
        cfg = colonyrl_config(algo, seed, budget, eval_every, stop, folder)
        eval_env = cfg.components().evaluation_env()
    env_id = ALGOS[algo]["env_id"]
    assert eval_env.id == env_id, eval_env
    if algo.startswith("sac"):
        hp = sb3_sac_settings(algo)
    else:
        hp = sb3_dqn_settings(budget)
    import_s = time.perf_counter() - _T_MODULE
    clock = SB3Clock(algo, seed, eval_every, stop, eval_env)  # the clock starts here: after imports

    class EvalCallback(BaseCallback):
        """Evaluates at the start of a collection round: the previous round's updates are done."""

        def _on_rollout_start(self) -> None:
            if clock.setup_end is None:
                clock.setup_end = time.perf_counter()  # the first env step comes next
            clock.maybe_evaluate(self.num_timesteps, acting)

        def _on_step(self) -> bool:
            return not (clock.stop and clock.reached)

    env = make_vec_env(env_id, n_envs=1, seed=seed)
    if algo.startswith("sac"):
        model = SAC("MlpPolicy", env, learning_rate=hp["learning_rate"], buffer_size=hp["buffer_size"],
                    learning_starts=hp["learning_starts"], batch_size=hp["batch_size"], tau=hp["tau"],
                    gamma=hp["gamma"], train_freq=hp["train_freq"], gradient_steps=hp["gradient_steps"],
                    ent_coef=hp["ent_coef"], target_update_interval=hp["target_update_interval"],
                    policy_kwargs={"net_arch": hp["net_arch"], "activation_fn": torch.nn.ReLU},
                    seed=seed, device="cpu", verbose=0)
    else:
        model = DQN("MlpPolicy", env, learning_rate=hp["learning_rate"], buffer_size=hp["buffer_size"],
                    learning_starts=hp["learning_starts"], batch_size=hp["batch_size"], gamma=hp["gamma"],
                    target_update_interval=hp["target_update_interval"], train_freq=hp["train_freq"],
                    gradient_steps=hp["gradient_steps"], exploration_fraction=hp["exploration_fraction"],
                    exploration_initial_eps=hp["exploration_initial_eps"],
                    exploration_final_eps=hp["exploration_final_eps"], max_grad_norm=hp["max_grad_norm"],
                    policy_kwargs={"net_arch": hp["net_arch"]}, seed=seed, device="cpu", verbose=0)
        if budget < DQN_EXPLORATION_STEPS:  # SB3 anneals over a fraction of the budget: keep 8,000 env steps
            start, end = hp["exploration_initial_eps"], hp["exploration_final_eps"]

            def exploration(progress_remaining: float) -> float:
                done = (1.0 - progress_remaining) * budget
                return start + (end - start) * min(1.0, done / DQN_EXPLORATION_STEPS)

            model.exploration_schedule = exploration
            hp["exploration_schedule"] = f"linear {start} -> {end} over {DQN_EXPLORATION_STEPS} env steps"
    acting = SB3Acting(model)
    model.learn(total_timesteps=budget, callback=EvalCallback())
    t_end = time.perf_counter()
    train_eval_s = clock.eval_s
    steps = int(model.num_timesteps)
    if not (clock.stop and clock.reached):
        clock.maybe_evaluate(steps, acting)  # the last round's evaluation: its updates came after the callback
    env.close()
    setup = (clock.setup_end or t_end) - clock.t0
    extra = {
        "env_steps": steps,
        "updates": int(model._n_updates),
        "wall_s": t_end - clock.t0,
        "setup_s": setup,
        "eval_s": clock.eval_s,
        "train_s": t_end - clock.t0 - setup - train_eval_s,
        "wrapup_s": 0.0,  # learn() returns when training stops
        "import_s": import_s,
        "torch_threads": torch.get_num_threads(),
        "eval_worker_index": EVAL_WORKER_INDEX,
        "hparams": hp,
    }
    return summarize(algo, clock.evals, extra)


def worker_main(args: argparse.Namespace) -> int:
    noise = common.Noise()
    out: dict[str, Any] = {"algo": args.algo_one, "system": args.system, "seed": args.seed, "budget": args.budget,
                           "eval_every": args.eval_every, "threshold": ALGOS[args.algo_one]["threshold"],
                           "stop_at_threshold": args.stop_at_threshold, "pid": os.getpid(),
                           "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS")}
    code = 0
    try:
        run = run_sb3 if args.system == "sb3" else run_colonyrl
        out.update(run(args.algo_one, args.seed, args.budget, args.eval_every, args.stop_at_threshold, args.threads))
    except BaseException as e:  # reported verbatim in the table and the JSON
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
        code = 1
    out["noise"] = noise.reading()
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(out), flush=True)
    return code


# ------------------------------------------------------------------------------------------------
# parent side: fresh process per (algorithm, seed, system), tables, ratios
# ------------------------------------------------------------------------------------------------
def run_one(algo: str, system: str, seed: int, budget: int, eval_every: int, stop: bool,
            timeout_s: float, threads: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--algo-one", algo, "--system", system,
           "--seed", str(seed), "--budget", str(budget), "--eval-every", str(eval_every)]
    cmd += ["--stop-at-threshold"] if stop else []
    cmd += ["--threads", str(threads)]
    start = time.time()
    base = {"algo": algo, "system": system, "seed": seed}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=HERE.parent)
    except subprocess.TimeoutExpired as e:
        tail = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return {**base, "error": f"timed out after {timeout_s:g} s", "stderr_tail": tail[-3000:]}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        return {**base, "error": f"worker exited {proc.returncode} without a result",
                "stderr_tail": proc.stderr[-3000:], "stdout_tail": proc.stdout[-2000:]}
    res = json.loads(lines[-1][len(RESULT_MARK):])
    res["process_s"] = time.time() - start
    res["returncode"] = proc.returncode
    if proc.returncode or "error" in res:
        res["stderr_tail"] = proc.stderr[-3000:]
    return res


def _median(values: list[float]) -> float | None:
    """Median with ``inf`` for a run that never reached the threshold; None for no values."""
    return statistics.median(values) if values else None


def _num(x: float | None, digits: int) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "not reached"
    return f"{x:.{digits}f}"


def _ratio_value(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isinf(a) or math.isinf(b) or b <= 0:
        return None
    return a / b


def _ratio(a: float | None, b: float | None) -> str:
    r = _ratio_value(a, b)
    return "-" if r is None else f"{r:.2f}"


def _cells(run: dict[str, Any] | None) -> dict[str, float | None] | None:
    """A run's numbers for the table (``inf``: threshold never reached); None: failed or missing."""
    if run is None or "error" in run:
        return None
    inf = math.inf
    return {"time": run["threshold_time_s"] if run["reached"] else inf,
            "steps": float(run["threshold_env_steps"]) if run["reached"] else inf,
            "fps": run["train_fps"], "final": run["final_eval"],
            # a lower bound of the time to threshold: the whole run (evaluation excluded) if never reached
            "time_lb": run["threshold_time_s"] if run["reached"] else run["setup_s"] + run["train_s"]}


def table(algo: str, results: list[dict[str, Any]], seeds: list[int]) -> tuple[str, dict[str, Any]]:
    """The Markdown table of one algorithm, and its medians."""
    lines = ["| seed | colonyrl time to threshold [s] | SB3 time to threshold [s] | time ratio"
             " | colonyrl env steps at threshold | SB3 env steps at threshold | colonyrl env steps/s"
             " | SB3 env steps/s | env steps/s ratio | colonyrl final eval | SB3 final eval |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    cols: dict[str, dict[str, list[float]]] = {s: {k: [] for k in ("time", "steps", "fps", "final", "time_lb")} for s in SYSTEMS}
    per_seed_ratios: dict[str, list[float]] = {"time": [], "fps": []}
    for seed in seeds:
        cells = {s: _cells(next((r for r in results if r["algo"] == algo and r["system"] == s
                                 and r["seed"] == seed), None)) for s in SYSTEMS}
        for s, c in cells.items():
            for k in cols[s]:
                if c is not None and c[k] is not None:
                    cols[s][k].append(c[k])
        c, b = cells["colonyrl"], cells["sb3"]

        def cell(x: dict[str, float | None] | None, key: str, digits: int) -> str:
            return "failed" if x is None else _num(x[key], digits)

        for key in per_seed_ratios:
            r = _ratio_value(c[key], b[key]) if c and b else None
            if r is not None:
                per_seed_ratios[key].append(r)
        time_ratio = _ratio(c["time"], b["time"]) if c and b else "-"
        fps_ratio = _ratio(c["fps"], b["fps"]) if c and b else "-"
        lines.append(f"| {seed} | {cell(c, 'time', 1)} | {cell(b, 'time', 1)} | {time_ratio}"
                     f" | {cell(c, 'steps', 0)} | {cell(b, 'steps', 0)} | {cell(c, 'fps', 0)} | {cell(b, 'fps', 0)}"
                     f" | {fps_ratio} | {cell(c, 'final', 1)} | {cell(b, 'final', 1)} |")
    med = {s: {k: _median(v) for k, v in cols[s].items()} for s in SYSTEMS}
    mc, mb = med["colonyrl"], med["sb3"]
    lines.append(f"| median | {_num(mc['time'], 1)} | {_num(mb['time'], 1)} | {_ratio(mc['time'], mb['time'])}"
                 f" | {_num(mc['steps'], 0)} | {_num(mb['steps'], 0)} | {_num(mc['fps'], 0)} | {_num(mb['fps'], 0)}"
                 f" | {_ratio(mc['fps'], mb['fps'])} | {_num(mc['final'], 1)} | {_num(mb['final'], 1)} |")
    return "\n".join(lines), {"median": med, "per_seed_ratios": per_seed_ratios}


def verdicts(algo: str, summary: dict[str, Any]) -> list[str]:
    spec = ALGOS[algo]
    mc, mb = summary["median"]["colonyrl"], summary["median"]["sb3"]
    per_seed = summary["per_seed_ratios"]
    lines = []
    for key, target, label, ok in (
            ("time", spec["target_time_ratio"], "time to threshold (evaluation excluded), colonyrl / SB3",
             lambda r, t: r <= t),
            ("fps", spec["target_fps_ratio"], "training env steps/s, colonyrl / SB3", lambda r, t: r >= t)):
        ratio = _ratio_value(mc[key], mb[key])
        seeds = common.fmt_median_range(per_seed[key], 2)
        bound = None
        if ratio is not None:
            text = f"- {label}: {ratio:.2f} (ratio of medians; per seed {seeds})"
        elif (key == "time" and mc["time"] is not None and mb["time"] is not None and not math.isinf(mc["time"])
              and math.isinf(mb["time"]) and mb["time_lb"]):
            # SB3's median is "not reached": a run that never reached it took longer than its whole run,
            # so the median of those lower bounds bounds SB3's median from below
            bound = mc["time"] / mb["time_lb"]
            text = (f"- {label}: below {bound:.2f} (SB3's median is not reached; counting a run that never"
                    f" reached the threshold as its whole run, {mb['time_lb']:.1f} s)")
        else:
            text = f"- {label}: no ratio (a side failed, or colonyrl's median never reached the threshold)"
        if target is not None:
            sign = "<=" if key == "time" else ">="
            if ratio is not None:
                verdict = "met" if ok(ratio, target) else "NOT met"
            elif bound is not None:
                verdict = "met" if bound <= target else "undetermined"
            else:
                verdict = "NOT met"
            text += f"; target {sign} {target:g}: {verdict}"
        lines.append(text)
    return lines


def parent_main(args: argparse.Namespace) -> int:
    algos = ["sac", "dqn"] if args.algo == "both" else [args.algo]
    noise = common.Noise()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"# off-policy benchmark: {algos}, seeds {args.seeds}; started {started}; loadavg {noise.load_start}",
          file=sys.stderr, flush=True)
    foreign = common.ForeignCPU()
    results: list[dict[str, Any]] = []
    plan = {}
    for algo in algos:
        budget = args.budget or ALGOS[algo]["budget"]
        eval_every = args.eval_every or ALGOS[algo]["eval_every"]
        plan[algo] = {"budget": budget, "eval_every": eval_every, "threshold": ALGOS[algo]["threshold"],
                      "preset": ALGOS[algo]["preset"]}
        for i, seed in enumerate(args.seeds):
            order = ["colonyrl", "sb3"] if i % 2 == 0 else ["sb3", "colonyrl"]
            for system in order:
                discarded: list[dict[str, Any]] = []
                while True:
                    waited = foreign.wait_quiet(args.quiet_cores, 5.0, args.wait_quiet) if args.wait_quiet > 0 else 0.0
                    before = foreign.now()
                    res = run_one(algo, system, seed, budget, eval_every, args.stop_at_threshold, args.timeout,
                                  args.threads)
                    res["others"] = {**foreign.between(before, foreign.now()), "waited_for_quiet_s": waited}
                    if res["others"]["foreign_cores"] <= args.retry_above or len(discarded) >= args.retries:
                        break
                    print(f"  {algo} seed {seed} {system}: others used {res['others']['foreign_cores']:.2f} cores"
                          f" during the run (> {args.retry_above:g}): discarded, running it again",
                          file=sys.stderr, flush=True)
                    discarded.append(res)
                res["discarded_attempts"] = discarded
                results.append(res)
                if "error" in res:
                    msg = f"ERROR {res['error']}"
                else:
                    reached = (f"{res['threshold_time_s']:.1f}s at {res['threshold_env_steps']}" if res["reached"]
                               else "not reached")
                    msg = (f"steps {res['env_steps']} updates {res['updates']} wall {res['wall_s']:.1f}s setup "
                           f"{res['setup_s']:.2f}s eval {res['eval_s']:.2f}s fps {res['train_fps']:.0f} threshold "
                           f"{reached} threads {res['torch_threads']} evals "
                           f"{[(e['env_steps'], round(e['mean'])) for e in res['evals']]}")
                print(f"  {algo} seed {seed} {system}: {msg}  (load {os.getloadavg()[0]:.2f}, others"
                      f" {res['others']['foreign_cores']:.2f} cores, waited {waited:.0f} s)",
                      file=sys.stderr, flush=True)
    foreign.close()
    reading = noise.reading()
    summaries = {}
    for algo in algos:
        spec, p = ALGOS[algo], plan[algo]
        text, summary = table(algo, results, args.seeds)
        summaries[algo] = summary
        print(f"\n## {spec['title']}: first evaluation with mean return >= {spec['threshold']:g}"
              f" ({EVAL_EPISODES} deterministic episodes every {p['eval_every']} env steps), budget {p['budget']}"
              f" env steps, seeds {args.seeds}{', stopped at the threshold' if args.stop_at_threshold else ''}\n")
        print(text)
        print()
        print("\n".join(verdicts(algo, summary)))
    out = Path(args.json) if args.json else HERE / "results" / "offpolicy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"started": started, "algos": algos, "plan": plan, "seeds": args.seeds, "eval_episodes": EVAL_EPISODES,
            "stop_at_threshold": args.stop_at_threshold,
            "evaluator": "colonyrl.launch.evaluate.evaluate(seed=run seed, worker_index=EVAL_WORKER_INDEX)",
            "noise": reading, "wait_quiet_s": args.wait_quiet, "quiet_cores": args.quiet_cores,
            "retry_above_cores": args.retry_above, "python": sys.version, "platform": platform.platform(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "versions": _versions()}
    out.write_text(json.dumps({"meta": meta, "summaries": summaries, "runs": results}, indent=1, default=str))
    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"\nFAILED {r['algo']} seed {r['seed']} {r['system']}: {r['error']}\n"
              f"{r.get('traceback') or r.get('stderr_tail', '')}")
    others = [r["others"]["foreign_cores"] for r in results]
    if others:
        worst = results[others.index(max(others))]
        print(f"\nOther users' CPU during each run (cores busy outside this benchmark's processes): median"
              f" {statistics.median(others):.2f}, max {max(others):.2f} ({worst['algo']} seed {worst['seed']}"
              f" {worst['system']}); contended attempts discarded and re-run:"
              f" {sum(len(r['discarded_attempts']) for r in results)}.")
    busy = reading["cpu_busy_fraction"]
    print(f"load average: start {[round(x, 2) for x in reading['loadavg_start']]}, end "
          f"{[round(x, 2) for x in reading['loadavg_end']]}; machine CPU busy over the run "
          f"{'-' if busy is None else f'{busy:.2f}'}; {reading['span_s']:.0f} s in all. Raw data: {os.path.relpath(out)}")
    return 1 if errors else 0


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("colonyrl", "stable-baselines3", "torch", "gymnasium", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=["sac", "dqn", "both", "sac-halfcheetah"], default="both",
                   help="both: sac and dqn; sac-halfcheetah (issue 11, needs the mujoco extra): ~1 h per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=None,
                   help="env steps per run, for every algorithm run (default: SAC 20000, DQN 50000)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="env steps between evaluations, for every algorithm run (default: SAC 1000, DQN 5000)")
    p.add_argument("--stop-at-threshold", action="store_true",
                   help="stop both sides at the first evaluation reaching the threshold (default: whole budget;"
                        " env steps/s then covers a shorter run, learning_starts included)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on both sides (SB3: torch.set_num_threads; colonyrl: the in-process"
                        " scheme's learner_threads); default 1")
    p.add_argument("--json", help="write the raw results here (default benchmarks/results/offpolicy.json)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker process")
    p.add_argument("--wait-quiet", type=float, default=120.0,
                   help="before each run, wait up to this many seconds until other users' processes used less"
                        " than --quiet-cores over 5 s (0: never wait)")
    p.add_argument("--quiet-cores", type=float, default=0.2)
    p.add_argument("--retry-above", type=float, default=0.25,
                   help="re-run an (algorithm, seed, system) whose run saw other users' processes use more than"
                        " this many cores on average (the contended attempt is kept in the JSON)")
    p.add_argument("--retries", type=int, default=2, help="at most this many re-runs per (algorithm, seed, system)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--algo-one", choices=list(ALGOS), help=argparse.SUPPRESS)
    p.add_argument("--system", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        if args.budget is None or args.eval_every is None:
            p.error("--worker needs --budget and --eval-every")
        return worker_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
