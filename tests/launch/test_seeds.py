"""`colonyrl train --seeds`: one parent MLflow run, a nested child run per seed, the aggregate on the parent."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from colonyrl.config import ConfigError
from colonyrl.launch.config import parse_args
from colonyrl.launch.presets import preset
from colonyrl.launch.seeds import pop_seed_flags, train_seeds

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tracking_helpers (--import-mode=importlib)
from tracking_helpers import read_run  # noqa: E402

# Rounds of 8 envs x 32 steps: evaluations at 256 and 512 env steps, then the final one at 512.
TINY = ["--total-env-steps", "512", "--storage.num-steps", "32", "--eval-every", "256", "--stop-at-return", "None",
        "--eval-episodes", "2", "--no-system-metrics", "--checkpoint-every-min", "60"]

# Under pytest-xdist's loadgroup, the module fixture `seeded` runs once per worker using it: with the
# Ray test in the "ray" group (tests/conftest.py) and these elsewhere it would run twice. One group.
# (pytest 9.2.0 makes pytest-xdist ignore the groups, pytest-dev/pytest-xdist#1386: the test extra pins < 9.2)
pytestmark = pytest.mark.xdist_group("ray")


def _history(client, run_id: str, key: str) -> dict[int, float]:
    """step -> value, the value logged last at a step winning (as in launch/plot.py)."""
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> dict:
    """`colonyrl train --seeds 0 1` on the ppo-cartpole preset with a tiny budget, in a subprocess."""
    import mlflow

    work = tmp_path_factory.mktemp("seeds")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "colonyrl.launch.cli", "train", "--seeds", "0", "1", *TINY,
                          "--tracking-uri", uri, "--output-dir", str(work / "runs"), "--checkpoint-dir",
                          str(work / "ckpt"), "--no-progress"], capture_output=True, text=True, timeout=300, cwd=work,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("colonyrl").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if r is not parent), key=lambda r: int(r.data.params["run.seed"]))
    return {"uri": uri, "client": client, "out": out.stdout, "parent": parent, "children": children, "work": work}


def test_parent_has_one_nested_child_per_seed(seeded) -> None:
    parent, children = seeded["parent"], seeded["children"]
    assert "2 seeds: final evaluation mean return" in seeded["out"]
    assert f"(MLflow parent run {parent.info.run_id})" in seeded["out"]
    assert [c.data.params["run.seed"] for c in children] == ["0", "1"]
    assert [c.info.run_name for c in children] == ["seeds-seed0", "seeds-seed1"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.tags["colonyrl.seeds"] == "0 1"
    assert {r.info.status for r in [parent, *children]} == {"FINISHED"}


def test_parent_params_are_the_flattened_config_without_the_seed(seeded) -> None:
    params, child = seeded["parent"].data.params, seeded["children"][0].data.params
    assert "run.seed" not in params and set(params) == set(child) - {"run.seed"}
    assert params["algo.lr"] == str(preset("ppo-cartpole").algo.lr) and params["run.total_env_steps"] == "512"
    assert {k for k in params if params[k] != child[k]} == {"run.run_name"}


def test_parent_metrics_are_mean_and_std_of_the_children(seeded) -> None:
    client, parent, children = seeded["client"], seeded["parent"], seeded["children"]
    finals = np.array([c.data.metrics["final_eval_return"] for c in children])
    assert parent.data.metrics["final_eval_return_mean"] == pytest.approx(finals.mean())
    assert parent.data.metrics["final_eval_return_std"] == pytest.approx(finals.std())
    assert parent.data.metrics["num_seeds"] == 2
    curves = [_history(client, c.info.run_id, "eval_return") for c in children]
    assert list(curves[0]) == list(curves[1]) == [256, 512]  # the final evaluation replaced the one at 512
    expect_mean = {s: np.mean([c[s] for c in curves]) for s in curves[0]}
    expect_std = {s: np.std([c[s] for c in curves]) for s in curves[0]}
    assert _history(client, parent.info.run_id, "seeds/eval_return_mean") == pytest.approx(expect_mean)
    assert _history(client, parent.info.run_id, "seeds/eval_return_std") == pytest.approx(expect_std)
    assert expect_mean[512] == pytest.approx(finals.mean())


def test_every_run_logs_its_curve_and_the_parent_the_aggregate(seeded, tmp_path: Path) -> None:
    client, parent, children = seeded["client"], seeded["parent"], seeded["children"]
    for run in [parent, *children]:
        assert {"curve.csv", "curve.png"} <= set(read_run(seeded["uri"], run.info.run_id)["artifacts"])
    rows = list(csv.reader(open(client.download_artifacts(parent.info.run_id, "curve.csv", str(tmp_path)))))
    assert rows[0] == ["env_steps", "eval_return_mean", "eval_return_std", "seed0", "seed1"]
    assert [int(r[0]) for r in rows[1:]] == [256, 512]
    child_rows = list(csv.reader(open(client.download_artifacts(children[0].info.run_id, "curve.csv", str(tmp_path)))))
    # both evaluations at 512 env steps are kept in the child's raw points: the periodic, then the final one
    assert [r[0] for r in child_rows] == ["env_steps", "256", "512", "512"]
    assert float(child_rows[-1][2]) == children[0].data.metrics["final_eval_return"]
    assert float(rows[-1][3]) == children[0].data.metrics["final_eval_return"]


def test_seed_flags_are_popped_and_checked() -> None:
    assert pop_seed_flags(["--seeds", "0", "1", "2", "--algo.lr", "1e-3"]) == ([0, 1, 2], False, ["--algo.lr", "1e-3"])
    assert pop_seed_flags(["--parallel-seeds", "--seeds", "3"]) == ([3], True, [])
    assert pop_seed_flags(["--total-env-steps", "5"]) == (None, False, ["--total-env-steps", "5"])
    for bad in (["--seeds"], ["--seeds", "1", "1"], ["--seeds", "-1"], ["--parallel-seeds"]):
        with pytest.raises(ConfigError, match="seeds"):
            pop_seed_flags(bad)
    with pytest.raises(ConfigError, match="RunConfig.resume"):
        train_seeds(preset("ppo-cartpole").replace(run=preset("ppo-cartpole").run.replace(resume="x")), [0])


@pytest.mark.ray
def test_seeds_side_by_side_on_ray_match_the_sequential_ones(seeded, ray_local) -> None:
    # The sequential runs' store, already created (a new sqlite store's migrations cost seconds),
    # under another experiment; and folders of its own.
    uri, work = seeded["uri"], seeded["work"]
    assert ray_local.cluster_resources()["CPU"] >= 2  # both seed tasks (1 CPU each, no actors) fit at once
    cfg = parse_args(preset("ppo-cartpole"), [*TINY, "--experiment", "ray-seeds", "--tracking-uri", uri,
                                              "--output-dir", str(work / "ray-runs"), "--checkpoint-dir",
                                              str(work / "ray-ckpt")])
    result = train_seeds(cfg, [0, 1], parallel=True)
    client = seeded["client"]
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and "run.seed" not in parent.data.params
    assert parent.data.tags["colonyrl.seeds"] == "0 1"
    children = [client.get_run(r.run_id) for r in result.results]
    assert [c.data.tags["mlflow.parentRunId"] for c in children] == [result.parent_run_id] * 2
    assert [c.data.params["run.seed"] for c in children] == ["0", "1"]
    assert {c.info.status for c in children} == {"FINISHED"}
    # side by side: each child run started before the other one ended
    (a, b) = (c.info for c in children)
    assert a.start_time < b.end_time and b.start_time < a.end_time
    # the in-process scheme is deterministic per seed: a Ray worker trains what the CLI trained
    sequential = [c.data.metrics["final_eval_return"] for c in seeded["children"]]
    assert [r.evaluation.mean for r in result.results] == sequential
    assert [c.data.metrics["final_eval_return"] for c in children] == sequential
    assert result.final_mean == pytest.approx(np.mean(sequential)) and result.final_std == pytest.approx(np.std(sequential))
    assert parent.data.metrics["final_eval_return_mean"] == pytest.approx(np.mean(sequential))
    assert parent.data.metrics["final_eval_return_std"] == pytest.approx(np.std(sequential))
    assert _history(client, parent.info.run_id, "seeds/eval_return_mean") == pytest.approx(
        _history(client, seeded["parent"].info.run_id, "seeds/eval_return_mean"))
