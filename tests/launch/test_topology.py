"""The topology of a run (launch/topology.py): every worker with its parent, node and real figures,
as ``topology.csv`` and ``topology.png`` artifacts of the MLflow run, in-process and on Ray."""

from __future__ import annotations

import csv
import os
import signal
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import RunConfig, TrainConfig
from colonyrl.launch.topology import FIELDS, to_markdown, topology, write_topology
from colonyrl.launch.train import train
from colonyrl.scheme.components import Components
from colonyrl.scheme.g_worker import GWorker
from colonyrl.scheme.learner import Learner
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.scheme.strategies import CentralUpdate, SyncGradients
from colonyrl.scheme.worker_set import CWorkerSpec, GWorkerSet
from colonyrl.storage.rollout import RolloutConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tracking_helpers (--import-mode=importlib)
from tracking_helpers import read_run  # noqa: E402

SMALL = Resources(num_cpus=0.25)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _components() -> Components:
    return Components(env=EnvConfig(id="CartPole-v1", num_envs=2), actor=ActorCriticConfig(),
                      algo=PPOConfig(num_epochs=1, minibatch_size=64), storage=RolloutConfig(num_steps=32), seed=0)


def test_train_logs_the_topology_and_system_metrics_to_its_run(tmp_path, mlflow_uri, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # MLflow's default: 10 s
    c = _components()
    cfg = TrainConfig(env=c.env, algo=c.algo, storage=c.storage, run=RunConfig(
        total_env_steps=256, eval_episodes=1, tracking_uri=mlflow_uri, progress=False,
        output_dir=str(tmp_path / "runs"), checkpoint_dir=str(tmp_path / "ck")))
    result = train(cfg)
    run = read_run(mlflow_uri, result.run_id)
    assert {"topology.csv", "topology.png"} <= set(run["artifacts"])
    logged = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="topology.csv",
                                                 dst_path=str(tmp_path / "dl"), tracking_uri=mlflow_uri)
    with open(logged) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == FIELDS
    assert [(r["kind"], r["name"], r["parent"], r["node"]) for r in rows] == [
        ("Learner", "learner", "", "local"), ("GWorker", "g0", "learner", "local"), ("CWorker", "g0.c0", "g0", "local")]
    learner, gworker, cworker = rows
    assert float(learner["fps"]) > 0 and float(learner["fps"]) == pytest.approx(float(gworker["fps"]))
    assert float(cworker["fps"]) > float(learner["fps"])  # collecting only vs the whole wall time
    assert float(cworker["policy_lag"]) == 0.0  # sync collection: always the current policy
    # in-process the rollout is handed over as it is: bytes counted, nothing compressed or copied
    assert float(cworker["bytes_sent"]) >= result.counters["env_steps"] * 4 * 4  # float32 CartPole observations
    assert float(cworker["compression_ratio"]) == 1.0 and float(gworker["bytes_sent"]) == 0.0
    assert cworker["restarts"] == gworker["restarts"] == "0"
    assert (result.model_dir / "topology.png").read_bytes().startswith(PNG_MAGIC)
    # MLflow's system metrics of the driver, on by default (RunConfig.system_metrics)
    assert run["metrics"].get("system/cpu_utilization_percentage", 0) >= 1, sorted(run["metrics"])


def _in_process_learner(num_grad_workers: int, num_col_workers: int) -> Learner:
    """What ``scheme.connect`` builds, with every worker in this process: ``SchemeConfig`` puts more
    than one GWorker on Ray, which costs seconds per actor; the Learner and topology are the same."""
    components = _components()
    torch.manual_seed(components.seed)
    algo = components.build_algorithm(components.spaces())
    specs = [CWorkerSpec(g, num_col_workers, remote=False) for g in range(num_grad_workers)]
    gworkers = GWorkerSet(lambda g, c: GWorker(c, g, specs[g], algo), num_grad_workers, False, components,
                          num_col_workers, timeout_s=60.0)
    names = [n for spec in specs for n in (f"g{spec.gworker_index}", *spec.names())]
    return Learner(algo, gworkers, SyncGradients(), CentralUpdate(), False, components, names)


def test_topology_of_two_gworkers_with_two_cworkers_each_lists_every_worker(tmp_path) -> None:
    learner = _in_process_learner(2, 2)
    try:
        for _ in range(3):
            learner.step()
        rows = topology(learner)  # on demand, on the live Learner
    finally:
        learner.close()
    assert [(r.kind, r.name, r.parent, r.node) for r in rows] == [
        ("Learner", "learner", None, "local"), ("GWorker", "g0", "learner", "local"),
        ("CWorker", "g0.c0", "g0", "local"), ("CWorker", "g0.c1", "g0", "local"), ("GWorker", "g1", "learner", "local"),
        ("CWorker", "g1.c0", "g1", "local"), ("CWorker", "g1.c1", "g1", "local")]
    learner_row, gworkers, cworkers = rows[0], rows[1::3], [r for r in rows if r.kind == "CWorker"]
    assert learner_row.fps == pytest.approx(sum(g.fps for g in gworkers))
    for g in gworkers:  # each GWorker delivered its two CWorkers' rollouts: 2 x 2 envs x 32 steps a round
        assert g.fps > 0 and g.restarts == 0 and g.policy_lag == 0 and g.bytes_sent == 0  # torch grads: no wire
    for c in cworkers:
        assert c.fps > 0 and c.policy_lag == 0 and c.restarts == 0 and c.compression_ratio == 1.0
        assert c.bytes_sent >= 3 * 2 * 32 * 4 * 4  # 3 rounds of 2 envs x 32 steps of float32 CartPole observations
    table = to_markdown(rows)
    assert table.count("\n") == 2 + len(rows) and "| CWorker | g1.c1 | g1 | local |" in table
    paths = write_topology(rows, tmp_path)
    assert [p.name for p in paths] == ["topology.csv", "topology.png"]
    assert paths[1].read_bytes().startswith(PNG_MAGIC)
    with open(paths[0]) as f:
        assert [r["name"] for r in csv.DictReader(f)] == [r.name for r in rows]


@pytest.mark.ray
def test_topology_on_ray_names_nodes_measures_compression_and_counts_a_killed_cworker(ray_local) -> None:
    cfg = SchemeConfig(num_col_workers=2, col_worker_resources=SMALL, compress=True, worker_timeout_s=60.0)
    with Scheme(cfg, _components()) as scheme:
        learner = scheme.learner
        learner.step()
        cworkers = learner.gworkers.workers[0].cworkers
        os.kill(cworkers.pids()[1], signal.SIGKILL)  # g0.c1
        deadline = time.perf_counter() + 60  # Ray reports the death after a moment
        while learner.totals["restarts"] == 0 and time.perf_counter() < deadline:
            learner.step()
        rows = {r.name: r for r in topology(scheme)}  # a Scheme works as well as its Learner
    assert {name: r.restarts for name, r in rows.items()} == {"learner": None, "g0": 0, "g0.c0": 0, "g0.c1": 1}
    node = rows["learner"].node
    assert node != "local" and all(r.node == node for r in rows.values())  # one Ray node: "<ip>/<node id>"
    for name in ("g0.c0", "g0.c1"):  # lz4 forced on: bytes on the wire and their ratio (float obs: ~1)
        assert rows[name].fps > 0 and rows[name].bytes_sent > 0 and 0.5 < rows[name].compression_ratio < 10
