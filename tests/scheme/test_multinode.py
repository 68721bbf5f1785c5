"""Two Ray nodes on one machine (ray.cluster_utils.Cluster): compress="auto" packs rollouts with lz4
only when the CWorker is on another node than its GWorker.

Runs in a subprocess: a driver can be connected to one Ray cluster at a time, and the rest of the
session shares the local instance from conftest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = textwrap.dedent("""
    import json, ray
    from ray.cluster_utils import Cluster
    from colonyrl.agents.networks import ActorCriticConfig
    from colonyrl.agents.ppo import PPOConfig
    from colonyrl.envs.factory import EnvConfig
    from colonyrl.scheme.components import Components
    from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
    from colonyrl.storage.rollout import RolloutConfig

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"near": 4},
                                                             "object_store_memory": 100 * 2**20,
                                                             "include_dashboard": False})
    cluster.add_node(num_cpus=2, resources={"far": 4}, object_store_memory=100 * 2**20)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    components = Components(env=EnvConfig(num_envs=4), actor=ActorCriticConfig(),
                            algo=PPOConfig(num_epochs=1, minibatch_size=512), storage=RolloutConfig(num_steps=64))
    out = {}
    for where, custom in (("far", {"far": 1.0}), ("near", {"near": 1.0})):
        cfg = SchemeConfig(num_col_workers=2, address=cluster.address,
                           col_worker_resources=Resources(num_cpus=0.5, custom=custom))
        with Scheme(cfg, components) as scheme:
            for _ in range(3):
                scheme.learner.step()
            m = scheme.learner.pop_metrics()
            out[where] = {"ratio": m["compression_ratio"], "wire": m["bytes_sent"], "raw": m["bytes_raw"],
                          "steps": scheme.learner.env_steps}
    print(json.dumps(out))
    ray.shutdown(); cluster.shutdown()
""")


def test_auto_compression_only_across_nodes() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    near, far = result["near"], result["far"]
    assert near["steps"] == far["steps"] == 3 * 2 * 4 * 64
    assert near["ratio"] == 1.0 and near["wire"] == near["raw"]  # same node: plain numpy, no lz4
    # other node: the booleans, int64 actions and rewards compress, float observations don't
    assert far["ratio"] > 1.3 and far["wire"] < far["raw"]
