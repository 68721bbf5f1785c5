"""`colonyrl plot`: learning curves from a real MLflow sqlite store, checked on the data.

The runs are synthetic, logged with MlflowClient directly (known values, steps and timestamps), so
every mean and spread below is worked out by hand.
"""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from colonyrl.launch import cli
from colonyrl.launch.plot import PlotError, align, draw, learning_curves, write_run_curve

START_MS = 1_700_000_000_000
_order = itertools.count()


def _log_run(client, exp_id: str, params: dict[str, str], points: list[tuple[int, float]],
             parent: str | None = None, metric: str = "eval_return") -> str:
    """A finished run: ``points`` (step, value) of ``metric``, the i-th logged 2 + i s after its start
    (runs start a minute apart, in the order made)."""
    from mlflow.entities import Metric, Param

    tags = {"mlflow.parentRunId": parent} if parent else {}
    start = START_MS + 60_000 * next(_order)
    run_id = client.create_run(exp_id, start_time=start, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                     metrics=[Metric(metric, v, start + 2000 + 1000 * i, step) for i, (step, v) in enumerate(points)])
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """Config A (lr 0.001) with seeds 0 and 1, config B (lr 0.01) with seeds 0 and 1 evaluated at other
    steps, a run of A that never logged eval_return; and in experiment "nested" a parent of two runs."""
    import mlflow

    root = tmp_path_factory.mktemp("plot")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("sweep", artifact_location=str(root / "artifacts"))
    a = {"algo.name": "ppo", "env.id": "CartPole-v1", "algo.lr": "0.001"}
    b = {**a, "algo.lr": "0.01"}
    ids = {
        # a0 logged step 200 twice: the later value (3) counts
        "a0": _log_run(client, exp, {**a, "run.seed": "0", "run.run_name": "a0"},
                       [(0, 1.0), (100, 2.0), (200, 99.0), (200, 3.0)]),
        "a1": _log_run(client, exp, {**a, "run.seed": "1", "run.run_name": "a1"}, [(0, 3.0), (100, 4.0), (200, 7.0)]),
        "b0": _log_run(client, exp, {**b, "run.seed": "0"}, [(0, 0.0), (150, 3.0), (300, 6.0)]),
        "b1": _log_run(client, exp, {**b, "run.seed": "1"}, [(0, 2.0), (100, 2.0), (200, 2.0), (300, 2.0)]),
        "a2": _log_run(client, exp, {**a, "run.seed": "2"}, [(0, 5.0)], metric="loss"),
    }
    nested = client.create_experiment("nested", artifact_location=str(root / "artifacts-nested"))
    c = {**a, "algo.lr": "0.1"}
    ids["parent"] = _log_run(client, nested, c, [(100, 50.0)], metric="eval_return")
    ids["c0"] = _log_run(client, nested, {**c, "run.seed": "0"}, [(0, 10.0), (100, 20.0)], parent=ids["parent"])
    ids["c1"] = _log_run(client, nested, {**c, "run.seed": "1"}, [(0, 30.0), (100, 40.0)], parent=ids["parent"])
    return {"uri": uri, "ids": ids, "root": root}


def test_curves_of_an_experiment_are_its_logged_metrics_grouped_by_config(store) -> None:
    ids = store["ids"]
    a, b = learning_curves(store["uri"], ["sweep"])  # a2 never logged eval_return: left out
    assert a.run_ids == (ids["a0"], ids["a1"]) and b.run_ids == (ids["b0"], ids["b1"])
    assert a.label == "algo.lr=0.001 (n=2)" and b.label == "algo.lr=0.01 (n=2)"
    np.testing.assert_array_equal(a.x, [0, 100, 200])
    np.testing.assert_array_equal(a.values, [[1, 2, 3], [3, 4, 7]])  # the values as logged
    np.testing.assert_allclose(a.mean, [2, 3, 5])
    np.testing.assert_allclose(a.std, [1, 1, 2])
    np.testing.assert_allclose(a.band("minmax"), [[1, 2, 3], [3, 4, 7]])
    np.testing.assert_allclose(a.band("std"), [[1, 2, 3], [3, 4, 7]])
    # B: evaluated at other steps, interpolated onto the union of both runs' steps
    np.testing.assert_array_equal(b.x, [0, 100, 150, 200, 300])
    np.testing.assert_allclose(b.values, [[0, 2, 3, 4, 6], [2, 2, 2, 2, 2]])
    np.testing.assert_allclose(b.mean, [1, 2, 2.5, 3, 4])


def test_wall_time_axis_is_seconds_since_each_run_started(store) -> None:
    (a, _) = learning_curves(store["uri"], [store["ids"]["a0"], store["ids"]["a1"], store["ids"]["b0"]],
                             x="wall_time")
    # a0 logged at 2, 3, 4, 5 s (the last two both step 200), a1 at 2, 3, 4 s: common range 2..4 s
    np.testing.assert_array_equal(a.x, [2, 3, 4])
    np.testing.assert_allclose(a.values, [[1, 2, 99], [3, 4, 7]])


def test_a_parent_run_stands_for_its_children(store) -> None:
    ids = store["ids"]
    for refs in ([ids["parent"]], ["nested"]):  # the experiment's parent is left out too
        (g,) = learning_curves(store["uri"], refs)
        assert g.run_ids == (ids["c0"], ids["c1"]) and g.label == "ppo CartPole-v1 (n=2)"
        np.testing.assert_allclose(g.mean, [20, 30])
    # a run named twice (itself, and in its experiment) counts once
    groups = learning_curves(store["uri"], [ids["c0"], "nested"])
    assert [g.run_ids for g in groups] == [(ids["c0"], ids["c1"])]


def test_unknown_names_and_metrics_are_clear_errors(store) -> None:
    with pytest.raises(PlotError, match="'nope' is neither an experiment"):
        learning_curves(store["uri"], ["nope"])
    with pytest.raises(PlotError, match="logged the metric 'missing'"):
        learning_curves(store["uri"], ["sweep"], metric="missing")
    with pytest.raises(PlotError, match="share no x range"):
        align([([0, 1], [0, 0]), ([5, 6], [1, 1])])


def test_draw_and_a_runs_own_curve_write_pngs(store, tmp_path: Path) -> None:
    out = draw(learning_curves(store["uri"], ["sweep"]), tmp_path / "sub" / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    files = write_run_curve(tmp_path / "run", [(512, 1.5, 20.0), (1024, 2.5, 30.0), (1024, 3.0, 31.0)])
    assert [f.name for f in files] == ["curve.csv", "curve.png"]
    rows = list(csv.reader(open(tmp_path / "run" / "curve.csv")))
    assert rows == [["env_steps", "wall_time_s", "eval_return"], ["512", "1.5", "20.0"], ["1024", "2.5", "30.0"],
                    ["1024", "3.0", "31.0"]]
    assert [f.name for f in write_run_curve(tmp_path / "one", [(512, 1.5, 20.0)])] == ["curve.csv"]


def test_help_lists_every_command_and_plot_errors_exit_2(store, capsys) -> None:
    assert cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(name in usage for name in cli.COMMANDS), usage
    assert cli.main(["plot", "nope", "--tracking-uri", store["uri"]]) == 2
    assert "'nope' is neither an experiment" in capsys.readouterr().err


def test_plot_command_writes_the_png(store, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "colonyrl.launch.cli", "plot", "sweep", store["ids"]["parent"],
                          "--tracking-uri", store["uri"], "--out", str(tmp_path / "curves.png"), "--spread", "minmax"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "of 6 runs in 3 configs" in out.stdout and "final mean 5 +/- 2 at 200" in out.stdout
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
