"""Bytes on the wire for Atari rollouts: lz4 (scheme/wire.py) against the raw arrays.

Issue 11's target: across a (simulated) two-node cluster, Pong rollouts travel in >= 50x fewer
bytes than raw. Pong frames are uint8 (4 x 84 x 84, a mostly still background, each frame in four
stacks), so lz4 with large blocks shrinks them many times; the float arrays (log-probs, values) and
actions barely shrink, but they are small.

* full run: a two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``; the head holds
  the GWorker, the second node, labelled ``far``, the CWorkers), the ppo-atari-pong
  preset's components (one epoch a round: learning is not what is measured) with
  ``SchemeConfig(compress="auto")``: CWorkers on another node compress the keys worth it. Reported:
  the Learner's ``bytes_sent`` / ``bytes_raw`` over ``--rounds`` rounds.
* both runs: the per-key breakdown from rollouts one CWorker collects in this process, packed as a
  CWorker on another node packs them (``Compressor("auto", same_node=False)``).

Usage::

    .venv/bin/python benchmarks/wire_bytes.py            # full run, two simulated nodes (~1-2 min)
    .venv/bin/python benchmarks/wire_bytes.py --quick    # smoke run: the per-key breakdown only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

#: Issue 11: at least this many times fewer bytes on the wire than raw.
TARGET_RATIO = 50.0


def components(args: argparse.Namespace) -> Any:
    from colonyrl.launch.scripts.ppo_atari_pong import SCHEME

    base = SCHEME.components()
    return dataclasses.replace(base, env=base.env.replace(num_envs=args.num_envs),
                               algo=base.algo.replace(num_epochs=1, minibatch_size=args.num_envs * args.steps),
                               storage=base.storage.replace(num_steps=args.steps), seed=args.seed)


def per_key(args: argparse.Namespace) -> dict[str, Any]:
    """Raw and wire bytes of each array of ``--rounds`` rollouts packed for another node."""
    from colonyrl.scheme.c_worker import CWorker
    from colonyrl.scheme.runtime import init_process
    from colonyrl.scheme.wire import Compressor, unpack

    init_process()
    worker = CWorker(components(args), 0, "g0.c0", torch_threads=None)
    compressor = Compressor("auto", same_node=False)
    keys: dict[str, dict[str, float]] = {}
    try:
        for _ in range(args.rounds):
            data = worker.collect().data
            packed = compressor.pack(data)
            assert all((unpack(packed)["obs"] == data["obs"]).ravel())  # lossless
            for key, p in packed.arrays.items():
                k = keys.setdefault(key, {"raw_bytes": 0, "wire_bytes": 0, "dtype": p.dtype, "codec": p.codec})
                k["raw_bytes"] += p.raw_nbytes
                k["wire_bytes"] += len(p.payload)
    finally:
        worker.close()
    raw = sum(k["raw_bytes"] for k in keys.values())
    wire = sum(k["wire_bytes"] for k in keys.values())
    return {"keys": keys, "raw_bytes": raw, "wire_bytes": wire, "ratio": raw / wire}


CLUSTER_STORE = 200 * 2**20


def two_nodes(args: argparse.Namespace) -> dict[str, Any]:
    """The Learner's byte counters with the CWorkers on a second simulated node."""
    import ray
    from ray.cluster_utils import Cluster

    from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"near": 1},
                                                             "object_store_memory": CLUSTER_STORE,
                                                             "include_dashboard": False})
    cluster.add_node(num_cpus=max(2, args.workers), resources={"far": args.workers}, object_store_memory=CLUSTER_STORE)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        # force_remote: even one CWorker is an actor (on the far node), and the GWorker one on the head
        cfg = SchemeConfig(num_col_workers=args.workers, address=cluster.address, compress="auto", force_remote=True,
                           grad_worker_resources=Resources(num_cpus=1, custom={"near": 1.0}),
                           col_worker_resources=Resources(num_cpus=1, custom={"far": 1.0}))
        sent = raw = 0.0
        with Scheme(cfg, components(args)) as scheme:
            for _ in range(args.rounds):
                scheme.learner.step()
                m = scheme.learner.pop_metrics()
                # a window without a collected round (only updates) has no byte counters
                sent, raw = sent + m.get("bytes_sent", 0.0), raw + m.get("bytes_raw", 0.0)
            steps = scheme.learner.env_steps
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"bytes_sent": sent, "bytes_raw": raw, "ratio": raw / sent, "env_steps": steps}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: a short per-key breakdown, no cluster")
    p.add_argument("--num-envs", type=int, default=4, help="Pong envs per CWorker")
    p.add_argument("--steps", type=int, default=128, help="rollout length (the preset's)")
    p.add_argument("--workers", type=int, default=2, help="CWorkers on the far node")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "wire_bytes.json")
    args = p.parse_args(argv)
    if args.quick:
        args.num_envs, args.steps, args.rounds = 2, 32, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result: dict[str, Any] = {"config": {**vars(args), "target_ratio": TARGET_RATIO}, "per_key": per_key(args)}
    if not args.quick:
        result["two_nodes"] = two_nodes(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print("| key | dtype | codec | raw MB | wire MB | ratio |\n| --- | --- | --- | ---: | ---: | ---: |")
    for key, k in result["per_key"]["keys"].items():
        print(f"| {key} | {k['dtype']} | {k['codec']} | {k['raw_bytes'] / 1e6:.3f} | {k['wire_bytes'] / 1e6:.3f} "
              f"| {k['raw_bytes'] / max(k['wire_bytes'], 1):.1f} |")
    print(f"per-key total: {result['per_key']['ratio']:.1f}x fewer bytes (target {TARGET_RATIO:g}x)")
    if "two_nodes" in result:
        print(f"two nodes: {result['two_nodes']['ratio']:.1f}x fewer bytes over {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
