"""The scheme: the one function that shows the topology (``connect``); its config, :class:`SchemeConfig`,
is in scheme/scheme_config.py.

Model: Sample Factory's ``connect_components``: every edge of the hierarchy is one commented line
below. A mode is a strategy object chosen here, once.
"""

from __future__ import annotations

from typing import Any

import torch

from colonyrl.agents.base import move_to
from colonyrl.config import ConfigError
from colonyrl.scheme.components import Components
from colonyrl.scheme.devices import resolve_device
from colonyrl.scheme.g_worker import GWorker
from colonyrl.scheme.learner import Learner
from colonyrl.scheme.runtime import init_process
from colonyrl.scheme.scheme_config import Resources, SchemeConfig
from colonyrl.scheme.strategies import (
    AsyncCollection,
    AsyncGradients,
    CentralUpdate,
    DecentralizedUpdate,
    SyncCollection,
    SyncGradients,
)
from colonyrl.scheme.worker_set import CWorkerSpec, GWorkerSet, threads_for

__all__ = ["Resources", "SchemeConfig", "Scheme", "connect"]


def connect(config: SchemeConfig, components: Components) -> Learner:
    """Build every worker and wire the hierarchy. The whole topology is on this screen."""
    init_process(config.learner_threads)  # Ray, when the scheme uses it, is connected by Scheme before this runs
    # The Learner's device, checked before anything is built (a ConfigError if it has no GPU).
    device = resolve_device(config.learner_device, "SchemeConfig.learner_device")
    if not config.remote_grad_workers and config.grad_worker_device != "auto":
        own = resolve_device(config.grad_worker_device, "SchemeConfig.grad_worker_device")
        if own != device:
            raise ConfigError("SchemeConfig.grad_worker_device", config.grad_worker_device,
                              f"'auto' or the Learner's device ({device}) when the one GWorker runs in the "
                              "Learner's process (it shares the Learner's algorithm), or force_remote=True")
    # Learner's master algorithm: the optimizer that applies every update lives here. Built on the
    # CPU, then moved: the same seed gives the same initial weights on every device.
    torch.manual_seed(components.seed)
    algo = move_to(components.build_algorithm(components.spaces()), device)
    # GWorker g -> its CWorkerSet: local (one, in the GWorker's process) or Ray actors.
    col = config.col_worker_resources

    def cworkers_of(g: int) -> CWorkerSpec:
        return CWorkerSpec(g, config.num_col_workers, config.remote_col_workers, col.num_cpus, col.num_gpus,
                           tuple(col.custom.items()), config.compress, config.worker_timeout_s)

    # Collection mode: a strategy object each GWorker uses to get rollouts from its CWorkerSet.
    collection = (AsyncCollection(config.max_policy_lag, config.worker_timeout_s)
                  if config.collection == "async" else SyncCollection(config.fraction_workers, config.fraction_samples))
    # Learner -> GWorkerSet: one GWorker sharing the Learner's algorithm, or Ray actors with replicas.
    if config.remote_grad_workers:
        from colonyrl.scheme import remote

        res = config.grad_worker_resources
        cls = remote.as_remote(GWorker, res.num_cpus, config.grad_worker_gpus, res.custom)

        def gworker(g: int, current: Components) -> Any:  # also re-creates one lost with its node
            return cls.remote(current, g, cworkers_of(g), None, True, collection, threads_for(res.num_cpus),
                              config.grad_worker_device)
    else:
        def gworker(g: int, current: Components) -> Any:
            return GWorker(current, g, cworkers_of(g), algo, False, collection, config.learner_threads)

    # Decentralized: GWorkers <-> GWorkers in one gloo group, re-formed when one is re-created.
    gworkers = GWorkerSet(gworker, config.num_grad_workers, config.remote_grad_workers, components,
                          config.num_col_workers, config.worker_timeout_s, allreduce=config.decentralized)
    names = [n for g in range(config.num_grad_workers) for n in (f"g{g}", *cworkers_of(g).names())]
    # Gradient mode and update mode: how the Learner gathers and applies.
    gradients = AsyncGradients(config.worker_timeout_s) if config.gradients == "async" else SyncGradients()
    update = DecentralizedUpdate() if config.decentralized else CentralUpdate()
    # Central: the Learner's weights go down each version. Decentralized: the GWorkers keep their
    # own identical weights (same seed, same averaged gradients) and nothing goes down.
    push_weights = config.remote_grad_workers and not config.decentralized
    return Learner(algo, gworkers, gradients, update, push_weights, components, names, config.max_nonfinite_in_a_row)


class Scheme:
    """A built hierarchy: ``Scheme(config, components).learner.step()`` trains one update."""

    def __init__(self, config: SchemeConfig, components: Components) -> None:
        self.config, self.components = config, components
        self._owns_ray = False
        if config.uses_ray:
            from colonyrl.scheme import remote

            self._owns_ray = remote.ensure_ray(config.address, config.num_cpus_needed, config.object_store_mb)
        try:
            if config.uses_ray:
                remote.check_gpus(config.num_gpus_needed, "SchemeConfig.grad_worker_device", config.grad_worker_device)
            self.learner = connect(config, components)
        except BaseException:
            self._shutdown_ray()
            raise

    def close(self) -> None:
        """Stop every worker; disconnect from Ray if this scheme connected (no processes left)."""
        try:
            self.learner.close()
        finally:
            self._shutdown_ray()

    def _shutdown_ray(self) -> None:
        if self._owns_ray:
            from colonyrl.scheme import remote

            remote.shutdown()
            self._owns_ray = False

    def __enter__(self) -> Scheme:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
