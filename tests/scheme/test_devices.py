"""Devices per worker kind (scheme/devices.py): validation, resolution where the worker runs,
CPU-only runs unchanged, and everything that leaves a worker on the CPU.

The ``gpu`` tests run only where torch sees CUDA (benchmarks/gpu_check.sh runs them); the rest
pass on a CPU-only machine, as in CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from colonyrl.agents.base import cpu_policy
from colonyrl.agents.networks import ActorCriticConfig, export_module
from colonyrl.agents.ppo import PPOConfig
from colonyrl.agents.sac import SACConfig
from colonyrl.config import ConfigError
from colonyrl.envs.factory import EnvConfig
from colonyrl.scheme import scheme as scheme_module
from colonyrl.scheme.components import Components
from colonyrl.scheme.devices import resolve_device, to_cpu, to_device
from colonyrl.scheme.g_worker import GWorker
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.scheme.worker_set import CWorkerSpec
from colonyrl.storage.replay import ReplayConfig
from colonyrl.storage.rollout import Minibatch, RolloutConfig

PPO = Components(env=EnvConfig(id="CartPole-v1", num_envs=4), actor=ActorCriticConfig(hidden_sizes=(32, 32)),
                 algo=PPOConfig(num_epochs=2, minibatch_size=32), storage=RolloutConfig(num_steps=16), seed=5)
SAC = Components(env=EnvConfig(id="Pendulum-v1", num_envs=2), actor=ActorCriticConfig(hidden_sizes=(32, 32)),
                 algo=SACConfig(batch_size=32, learning_starts=32, updates_per_step=0.5),
                 storage=ReplayConfig(memory_size=2000), seed=5)
FIELDS = ("learner_device", "grad_worker_device", "col_worker_device")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _named_tensors(x: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested structure of dicts, lists and tuples, with its path."""
    if isinstance(x, torch.Tensor):
        yield path, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _named_tensors(v, f"{path}/{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _named_tensors(v, f"{path}/{i}")


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    return (t for _, t in _named_tensors(x))


def _assert_cpu(x: Any) -> None:
    found = list(_tensors(x))
    assert found and all(t.device.type == "cpu" for t in found), {t.device for t in found}


@pytest.fixture
def no_cuda(monkeypatch):
    """What a CPU-only machine reports, also on a GPU machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", ["gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda0", " cpu", "cuda:0,1"])
def test_a_malformed_device_is_a_config_error_naming_the_field_and_the_values(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"SchemeConfig\.{field}=.*'cpu', 'cuda', 'cuda:N'.*'auto'"):
        SchemeConfig(**{field: value})


@pytest.mark.parametrize("value", ["cuda", "cuda:0", "auto"])
def test_cworkers_act_on_the_cpu_only(value: str) -> None:
    with pytest.raises(ConfigError, match=r"SchemeConfig\.col_worker_device=.*'cpu'"):
        SchemeConfig(col_worker_device=value)


def test_defaults_learner_and_gworkers_auto_cworkers_cpu() -> None:
    cfg = SchemeConfig()
    assert (cfg.learner_device, cfg.grad_worker_device, cfg.col_worker_device) == ("auto", "auto", "cpu")
    assert SchemeConfig(learner_device="cuda:3", grad_worker_device="cpu").learner_device == "cuda:3"


def test_auto_resolves_to_the_cpu_and_cuda_is_refused_without_a_gpu(no_cuda) -> None:
    assert resolve_device("auto", "SchemeConfig.learner_device") == torch.device("cpu")
    assert resolve_device("cpu", "SchemeConfig.learner_device") == torch.device("cpu")
    for value in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=r"SchemeConfig\.grad_worker_device=.*0 CUDA device"):
            resolve_device(value, "SchemeConfig.grad_worker_device")


def test_a_cuda_ray_gworker_asks_ray_for_a_gpu() -> None:
    cfg = SchemeConfig(num_grad_workers=2, grad_worker_device="cuda")
    assert cfg.grad_worker_gpus == 1.0 and cfg.num_gpus_needed == 2.0
    shared = SchemeConfig(num_grad_workers=2, grad_worker_device="cuda", grad_worker_resources=Resources(num_gpus=0.5))
    assert shared.num_gpus_needed == 1.0
    assert SchemeConfig(num_grad_workers=2).num_gpus_needed == 0.0  # auto takes a GPU only when asked for one


@pytest.mark.parametrize("field", ["learner_device", "grad_worker_device"])
def test_cuda_without_a_gpu_is_a_config_error_before_anything_is_built(no_cuda, monkeypatch, field: str) -> None:
    built: list[str] = []
    original = Components.build_algorithm
    monkeypatch.setattr(Components, "build_algorithm", lambda self, spaces: built.append("algo") or original(self, spaces))
    monkeypatch.setattr(GWorker, "__init__", lambda self, *a, **k: built.append("gworker"))
    with pytest.raises(ConfigError, match=rf"SchemeConfig\.{field}='cuda'"):
        Scheme(SchemeConfig(**{field: "cuda"}), PPO)
    assert built == []  # neither the Learner's algorithm nor a GWorker (nor its CWorkers) was built


@pytest.mark.ray
def test_cuda_gworkers_on_a_ray_cluster_without_gpus_are_refused_before_workers_start(ray_local, monkeypatch) -> None:
    import ray

    if ray.cluster_resources().get("GPU", 0.0) >= 2:
        pytest.skip("this Ray cluster has GPUs")
    connected: list[bool] = []
    monkeypatch.setattr(scheme_module, "connect", lambda *a: connected.append(True))
    cfg = SchemeConfig(num_grad_workers=2, grad_worker_device="cuda", grad_worker_resources=Resources(num_cpus=0.25))
    with pytest.raises(ConfigError, match=r"SchemeConfig\.grad_worker_device='cuda'.*ask for 2 "):
        Scheme(cfg, PPO)
    assert connected == []


# -- CPU-only runs: the devices change nothing ------------------------------------------------------
def _train(cfg: SchemeConfig, steps: int) -> dict[str, Any]:
    with Scheme(cfg, PPO) as scheme:
        for _ in range(steps):
            scheme.learner.step()
        assert scheme.learner.at_round_boundary()  # worker state too: envs, RNGs
        return scheme.learner.state_dict()


def test_explicit_cpu_devices_train_bit_exactly_like_the_defaults_on_a_cpu_only_machine(no_cuda) -> None:
    default = _train(SchemeConfig(), 8)  # two rounds of 2 epochs x 2 minibatches
    explicit = _train(SchemeConfig(learner_device="cpu", grad_worker_device="cpu", col_worker_device="cpu"), 8)
    assert default["counters"] == explicit["counters"] and default["counters"]["updates"] == 8
    # weights, Adam's moments, envs, RNGs (not the wall-clock times of RecordEpisodeStatistics)
    a, b = (dict(_named_tensors([run["algo"], run["workers"]])) for run in (default, explicit))
    assert a.keys() == b.keys() and len(a) > 70
    assert [k for k in a if not torch.equal(a[k], b[k]) and "time" not in k] == []


def _gworker(components: Components, device: str) -> GWorker:
    return GWorker(components, 0, CWorkerSpec(0, 1, False), None, True, None, 1, device)


def _assert_sent_on_cpu(gworker: GWorker) -> Any:
    """Step until gradients come; every gradient, weight and state leaves on the CPU. Returns the packet."""
    packet = gworker.step(0)
    while packet.grads is None:
        packet = gworker.step(0)
    assert all(isinstance(g, np.ndarray) for g in packet.grads)  # numpy on the wire
    assert all(isinstance(a, np.ndarray) for a in gworker.get_weights().arrays.values())
    _assert_cpu(gworker.algo_state())
    return packet


def test_gradients_weights_and_state_a_gworker_sends_are_on_the_cpu() -> None:
    gworker = _gworker(PPO, "cpu")
    try:
        packet = _assert_sent_on_cpu(gworker)
        assert packet.num_samples == 32 and gworker.inspect()["device"] == "cpu"
    finally:
        gworker.close()


def test_batches_move_with_their_dtypes_and_cpu_data_is_not_copied() -> None:
    obs = torch.randint(0, 256, (4, 84, 84, 1), dtype=torch.uint8)
    batch = Minibatch(obs={"image": obs, "x": torch.ones(4, 2)}, actions=torch.zeros(4, dtype=torch.int64),
                      logp_old=torch.zeros(4), advantages=torch.zeros(4), returns=torch.zeros(4),
                      values_old=torch.zeros(4), advantage_stats=(0.5, 2.0))
    moved = to_device(batch, torch.device("cpu"))
    assert type(moved) is Minibatch and moved.advantage_stats == (0.5, 2.0)
    assert moved.obs["image"].dtype == torch.uint8 and moved.obs["image"] is obs  # uint8 stays uint8
    state = {"actor": {"w": torch.ones(2)}, "step": 3, "moments": [torch.zeros(1)]}
    assert to_cpu(state) is state  # a CPU-only run sends and saves the very same objects


def test_a_policy_on_the_cpu_is_evaluated_and_exported_as_it_is() -> None:
    algo = PPO.build_algorithm(PPO.spaces())
    assert cpu_policy(algo.policy) is algo.policy


# -- on a GPU ---------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_ppo_gradients_on_cuda_match_the_cpu_ones() -> None:
    from colonyrl.agents.base import move_to

    torch.manual_seed(0)
    cpu = PPO.build_algorithm(PPO.spaces())
    torch.manual_seed(0)
    gpu = move_to(PPO.build_algorithm(PPO.spaces()), "cuda")
    g = torch.Generator().manual_seed(1)
    batch = Minibatch(obs=torch.randn(64, 4, generator=g), actions=torch.randint(0, 2, (64,), generator=g),
                      logp_old=torch.full((64,), -0.69), advantages=torch.randn(64, generator=g),
                      returns=torch.randn(64, generator=g), values_old=torch.randn(64, generator=g))
    want = cpu.compute_gradients(batch).grads
    got = gpu.compute_gradients(to_device(batch, torch.device("cuda"))).grads
    assert all(x.device.type == "cuda" for x in got)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_ppo_learner_on_cuda_trains_and_saves_evaluates_and_exports_on_the_cpu(tmp_path) -> None:
    from colonyrl.launch.evaluate import evaluate

    with Scheme(SchemeConfig(learner_device="cuda"), PPO) as scheme:
        learner = scheme.learner
        for _ in range(6):
            learner.step()
        assert learner.num_updates == 6
        assert all(p.device.type == "cuda" for p in learner.algo.parameters())
        assert all(t.device.type == "cuda" for t in _tensors(learner.algo.optimizer.state_dict()["state"])
                   if t.dim() > 0)
        assert all(isinstance(a, np.ndarray) for a in learner.algo.get_weights().values())
        path = tmp_path / "ckpt.pt"
        torch.save(learner.state_dict(), path)
        _assert_cpu(torch.load(path, weights_only=True))  # loads on a CPU-only machine as it is
        result = evaluate(learner.algo, PPO.evaluation_env(), episodes=2)
        assert len(result.returns) == 2 and np.isfinite(result.mean) and result.mean > 0
        module = cpu_policy(learner.algo.policy).export_module()
        export_module(module, PPO.spaces().observation, str(tmp_path / "policy.pt2"))
        action = torch.export.load(str(tmp_path / "policy.pt2")).module()(torch.zeros(3, 4))
        assert action.device.type == "cpu" and action.shape == (3,)
        assert all(p.device.type == "cuda" for p in learner.algo.parameters())  # the copy moved, not the Learner


@pytest.mark.gpu
@needs_cuda
@pytest.mark.ray
def test_sac_with_learner_and_a_ray_gworker_on_cuda_sends_cpu_packets(ray_local) -> None:
    cfg = SchemeConfig(force_remote=True, learner_device="cuda", grad_worker_device="cuda",
                       grad_worker_resources=Resources(num_cpus=0.5), col_worker_resources=Resources(num_cpus=0.5),
                       worker_timeout_s=120.0)
    with Scheme(cfg, SAC) as scheme:
        learner = scheme.learner
        assert learner.gworkers.inspect()[0]["device"].startswith("cuda")
        grads = []
        while learner.num_updates < 5:
            packets = learner.gather()
            grads += [g for p in packets if p.grads is not None for g in p.grads]
            learner.apply(packets)
            learner.broadcast()
        assert grads and all(isinstance(g, np.ndarray) for g in grads)  # numpy from the GPU worker
        assert all(isinstance(a, np.ndarray) for a in learner._weights.arrays.values())
        assert all(p.device.type == "cuda" for p in learner.algo.parameters())
        assert learner.algo.ent_coef.log_alpha.device.type == "cuda"  # a parameter outside the networks
        _assert_cpu(learner.state_dict(workers=False)["algo"])


@pytest.mark.gpu
@needs_cuda
@pytest.mark.ray
def test_decentralized_gworkers_on_cuda_all_reduce_with_nccl(ray_local) -> None:
    # NCCL refuses two ranks on one GPU: two GWorkers where there are two GPUs, else one (world size 1)
    n = min(2, torch.cuda.device_count())
    cfg = SchemeConfig(num_grad_workers=n, force_remote=True, update="decentralized", grad_worker_device="cuda",
                       grad_worker_resources=Resources(num_cpus=0.5), col_worker_resources=Resources(num_cpus=0.5),
                       worker_timeout_s=120.0)
    with Scheme(cfg, PPO) as scheme:
        learner = scheme.learner
        for _ in range(4):
            learner.step()
        info = learner.gworkers.inspect()
        assert [i["allreduce_backend"] for i in info] == ["nccl"] * n
        assert all(i["device"].startswith("cuda") for i in info)
        assert learner.version == 4
        weights = [w.arrays for w in learner.gworkers.get_weights()]
        for other in weights[1:]:
            assert all(np.array_equal(v, other[k]) for k, v in weights[0].items())
        _assert_cpu(learner.state_dict(workers=False)["algo"])  # pulled from a GWorker, on the CPU
