"""The all-reduce plumbing of the decentralized update (scheme/collective.py), without a GPU.

* The backend follows the device of the reduced tensors: nccl only for CUDA tensors, gloo
  otherwise (PyTorch docs, "torch.distributed", Backends: gloo reduces CPU tensors, nccl CUDA ones).
* The rendezvous host is the node's Ray IP (``ray.util.get_node_ip_address()``), not whatever the
  hostname resolves to (127.0.0.1 on these machines), so ranks on other nodes can dial it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

import pytest
import torch
import torch.distributed as dist

from colonyrl.scheme import collective
from colonyrl.scheme.collective import AllReduce, backend_for, free_address


@pytest.fixture
def cuda_visible(monkeypatch):
    """Pretend a GPU (and NCCL) is visible to this process."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_cpu_tensors_use_gloo_even_when_cuda_is_visible(cuda_visible, device) -> None:
    assert backend_for(device) == "gloo"


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_cuda_tensors_use_nccl(cuda_visible, device) -> None:
    assert backend_for(device) == "nccl"


def test_cuda_tensors_fall_back_to_gloo_without_nccl(monkeypatch) -> None:
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    assert backend_for("cuda:0") == "gloo"  # gloo also all-reduces CUDA tensors, only slower


def test_a_one_rank_group_of_cpu_parameters_forms_and_averages_with_cuda_visible(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    like = [torch.zeros(2, 3), torch.zeros(4)]
    reducer = AllReduce(free_address(), 0, 1, 30.0, device=like[0].device)
    try:
        assert dist.get_backend() == "gloo"
        grads = [torch.arange(6.0).view(2, 3), torch.ones(4)]
        averaged = reducer.average(grads, 5, like)
        assert averaged is not None
        assert all(a.device == p.device and a.shape == p.shape for a, p in zip(averaged, like, strict=True))
        assert all(torch.equal(a, g) for a, g in zip(averaged, grads, strict=True))  # one rank: its own mean
        assert reducer.average(None, 0, like) is None  # no rank had gradients
    finally:
        reducer.close()
    assert not dist.is_initialized()


def test_outside_ray_the_address_is_on_loopback_and_its_port_is_free(monkeypatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    url = urlparse(free_address())
    assert url.scheme == "tcp" and url.hostname == "127.0.0.1"  # outside Ray every rank is on this host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((url.hostname, url.port))


def test_ipv6_node_ips_are_bracketed(monkeypatch) -> None:
    monkeypatch.setattr(collective, "node_ip", lambda: "::1")
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        address = free_address()
    except OSError:
        pytest.skip("IPv6 loopback not configured")
    url = urlparse(address)
    assert address.startswith("tcp://[::1]:") and url.hostname == "::1" and url.port > 0


@pytest.mark.ray
def test_inside_a_ray_actor_the_address_is_the_node_ip_ray_reports(ray_local) -> None:
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Probe:
        def addresses(self) -> tuple[str, str, str]:
            return free_address(), ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()

    probe = Probe.remote()
    address, ray_ip, node_id = ray.get(probe.addresses.remote(), timeout=60)
    ray.kill(probe)
    url = urlparse(address)
    node_ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    assert url.scheme == "tcp" and url.port > 0
    assert url.hostname == ray_ip == node_ips[node_id]
    if not ipaddress.ip_address(ray_ip).is_loopback:  # on this machine Ray's node IP is not loopback
        assert not ipaddress.ip_address(url.hostname).is_loopback
