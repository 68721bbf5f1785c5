"""Node loss on a 3-node simulated cluster (issue 4): remove the node that holds CWorkers, then a
node that holds a GWorker, mid-run; training re-forms its worker sets on the surviving node and
still solves CartPole, and the restarts are logged to MLflow.

Placement is made deterministic with custom resources: GWorkers need ``gw``, CWorkers need ``cw``.
The head's share of both is held by a placeholder actor while the scheme is built, so the first
workers land on the other nodes (the CWorkers all on ``collectors``, one GWorker on
``learners``); the placeholder is then freed, and the head is where the lost workers come back.
The run is a subprocess: a driver joins one Ray cluster at a time, and the test session shares
the local instance of conftest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.own_ray, pytest.mark.slow]

SCRIPT = textwrap.dedent("""
    import json, sys, ray
    from ray.cluster_utils import Cluster
    from colonyrl.agents.networks import ActorCriticConfig
    from colonyrl.agents.ppo import PPOConfig
    from colonyrl.envs.factory import EnvConfig
    from colonyrl.launch.evaluate import evaluate
    from colonyrl.launch.tracking import Tracker
    from colonyrl.scheme.components import Components
    from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
    from colonyrl.storage.rollout import RolloutConfig

    uri = sys.argv[1]
    store = 80 * 2**20
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"gw": 2, "cw": 4}, "object_store_memory": store, "include_dashboard": False})
    collectors = cluster.add_node(num_cpus=2, resources={"cw": 4}, object_store_memory=store)
    learners = cluster.add_node(num_cpus=2, resources={"gw": 1}, object_store_memory=store)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()

    @ray.remote(num_cpus=0, resources={"gw": 1, "cw": 4})
    class Placeholder:
        def ready(self):
            return ray.get_runtime_context().get_node_id()

    placeholder = Placeholder.remote()
    head = ray.get(placeholder.ready.remote())
    components = Components(env=EnvConfig(id="CartPole-v1", num_envs=4), actor=ActorCriticConfig(),
                            algo=PPOConfig(lr=1e-3, num_epochs=10, minibatch_size=128),
                            storage=RolloutConfig(num_steps=32, gamma=0.98, gae_lambda=0.8), seed=0)
    cfg = SchemeConfig(num_grad_workers=2, num_col_workers=2, address=cluster.address, worker_timeout_s=120.0,
                       grad_worker_resources=Resources(num_cpus=0.0, custom={"gw": 1.0}),
                       col_worker_resources=Resources(num_cpus=0.0, custom={"cw": 1.0}))

    def placement(learner):
        gnodes = learner.gworkers.nodes()
        cnodes = [n for per_g in learner.gworkers.cworker_nodes() for n in per_g]
        return gnodes, cnodes

    out = {"head": head, "collectors": collectors.node_id, "learners": learners.node_id, "evals": []}
    with Scheme(cfg, components) as scheme, Tracker(uri, "node-loss") as tracker:
        tracker.start({"test": "node_loss"})
        learner = scheme.learner
        out["before"] = placement(learner)
        ray.kill(placeholder)  # the head now has room for the workers that will be lost
        best, next_eval, lost = 0.0, 10_000, []
        while learner.env_steps < 150_000 and best < 475:
            learner.step()
            if not lost and learner.env_steps >= 6_000:
                cluster.remove_node(collectors)
                lost.append(("collectors", learner.env_steps))
            elif len(lost) == 1 and learner.env_steps >= 15_000:
                cluster.remove_node(learners)
                lost.append(("learners", learner.env_steps))
            if learner.num_updates % 50 == 0:
                tracker.log_metrics(learner.pop_metrics(), step=learner.env_steps)
                tracker.flush()
            if learner.env_steps >= next_eval:
                next_eval += 10_000
                best = evaluate(learner.algo, components.env, 10, 0).mean
                out["evals"].append((learner.env_steps, best))
        tracker.log_metrics(learner.pop_metrics(), step=learner.env_steps)
        out.update(after=placement(learner), lost=lost, best=best, totals=learner.totals,
                   env_steps=learner.env_steps, run_id=tracker.run_id)
    import mlflow
    client = mlflow.MlflowClient(uri)
    out["logged"] = {k: [m.value for m in client.get_metric_history(out["run_id"], k)]
                     for k in ("restarts", "gworker_restarts", "lost_env_steps")}
    print(json.dumps(out))
    ray.shutdown()
    cluster.shutdown()
""")


def test_training_survives_losing_a_cworker_node_then_a_gworker_node(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, uri], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    head, collectors, learners = out["head"], out["collectors"], out["learners"]
    gnodes, cnodes = out["before"]
    # the set-up placed what the test removes: every CWorker on "collectors", one GWorker on "learners"
    assert cnodes == [collectors] * 4
    assert sorted(gnodes) == sorted([head, learners])
    assert [name for name, _ in out["lost"]] == ["collectors", "learners"]
    # everything lost came back on the surviving head node
    gnodes, cnodes = out["after"]
    assert gnodes == [head, head] and cnodes == [head] * 4
    totals = out["totals"]
    assert totals["gworker_restarts"] == 1
    assert totals["restarts"] == 4 + 2  # the collectors' four CWorkers, then the lost GWorker's two
    assert totals["lost_env_steps"] >= 4 * 4 * 32  # a rollout of each CWorker killed while collecting
    assert out["best"] >= 475, out["evals"]
    logged = out["logged"]
    assert logged["gworker_restarts"][-1] == 1 and logged["restarts"][-1] == 6
    assert logged["restarts"][0] == 0 and 0 < logged["restarts"].index(4.0) < logged["restarts"].index(6.0)
