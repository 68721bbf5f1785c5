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

pytestmark = [pytest.mark.ray, pytest.mark.own_ray, pytest.mark.slow]

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


DECENTRALIZED_SCRIPT = textwrap.dedent("""
    import json, ray
    import numpy as np
    import torch.distributed as dist
    from ray.cluster_utils import Cluster
    from colonyrl.agents.networks import ActorCriticConfig
    from colonyrl.agents.ppo import PPOConfig
    from colonyrl.envs.factory import EnvConfig
    from colonyrl.scheme.components import Components
    from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
    from colonyrl.storage.rollout import RolloutConfig

    store = 80 * 2**20
    # One "gw" per node and one per GWorker: the two GWorkers cannot share a node.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"gw": 1},
                                                             "object_store_memory": store,
                                                             "include_dashboard": False})
    cluster.add_node(num_cpus=2, resources={"gw": 1}, object_store_memory=store)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    node_ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}

    def rendezvous(gworker):
        # The TCPStore the process group actually dialled (under its PrefixStore wrappers), and
        # what Ray says this node's IP is.
        s = dist.distributed_c10d._get_default_store()
        while hasattr(s, "underlying_store"):
            s = s.underlying_store
        return s.host, s.port, ray.util.get_node_ip_address()

    components = Components(env=EnvConfig(id="CartPole-v1", num_envs=4), actor=ActorCriticConfig(),
                            algo=PPOConfig(num_epochs=2, minibatch_size=64),
                            storage=RolloutConfig(num_steps=32), seed=3)
    cfg = SchemeConfig(num_grad_workers=2, update="decentralized", address=cluster.address,
                       worker_timeout_s=120.0, grad_worker_resources=Resources(num_cpus=0.5, custom={"gw": 1.0}))
    with Scheme(cfg, components) as scheme:
        learner = scheme.learner
        initial = learner.algo.get_weights()
        for _ in range(4):
            learner.step()
        gnodes = learner.gworkers.nodes()
        actors = learner.gworkers.workers
        stores = ray.get([a.__ray_call__.remote(rendezvous) for a in actors], timeout=60)
        weights = [w.arrays for w in learner.gworkers.get_weights()]
        out = {"gnodes": gnodes, "node_ips": node_ips, "stores": stores,
               "num_updates": learner.num_updates, "version": learner.version,
               "same_keys": sorted(weights[0]) == sorted(weights[1]) == sorted(initial),
               "identical": all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0]),
               "trained": any(not np.array_equal(initial[k], weights[0][k]) for k in initial)}
    print(json.dumps(out))
    ray.shutdown(); cluster.shutdown()
""")


def test_decentralized_update_across_two_nodes_rendezvous_on_rays_node_ip() -> None:
    proc = subprocess.run([sys.executable, "-c", DECENTRALIZED_SCRIPT], capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    gnodes, node_ips, stores = out["gnodes"], out["node_ips"], out["stores"]
    assert len(set(gnodes)) == 2 and set(gnodes) <= set(node_ips)  # one GWorker on each node
    (host0, port0, ray_ip0), (host1, port1, _) = stores
    # rank 0 hosts the rendezvous on its node's Ray IP, and rank 1 dialled that same address. A
    # simulated cluster gives every node the machine's IP, so this checks the source of the host.
    assert host0 == node_ips[gnodes[0]] == ray_ip0
    assert (host1, port1) == (host0, port0)
    assert out["num_updates"] == out["version"] > 0
    assert out["same_keys"] and out["identical"]  # bit-identical replicas, not just close
    assert out["trained"]
