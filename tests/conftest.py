"""Shared fixtures. One Ray instance per test session (start-up costs 4-8 s here)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest
import torch

torch.set_num_threads(1)  # 2 cores: oversubscription made training 3-7x slower (platform.md §4)


#: The checkout (tests/ is one of its folders).
ROOT = Path(__file__).resolve().parents[1]

#: The xdist groups of ``ray`` tests: those on the session's Ray instance, and those (``own_ray``)
#: whose Ray runs in a subprocess (launch scripts, CLI runs, ray.cluster_utils clusters, the soak).
RAY_GROUPS = ("ray", "ray-own")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (the README's ``-n 2 --dist loadgroup``), every ``ray`` test on the
    session's instance runs in one worker, one after another: one Ray instance for them all, as
    without xdist. The ``own_ray`` tests, each starting a Ray of its own in a subprocess, form a
    second group, one after another: with the first group alone the other worker sat idle for
    the last ~12 minutes of a 26-minute run (ray tests 1,534 s in all, the others 788 s)."""
    for item in items:
        if item.get_closest_marker("own_ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray-own"))
        elif item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail loudly where xdist ignores the groups (it did under pytest 9.2.0,
    pytest-dev/pytest-xdist#1386): the Ray tests would then run in both workers, with two Ray
    instances on 2 cores."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or not session.config.getvalue("loadgroup"):
        return
    ungrouped = [item.nodeid for item in session.items if item.get_closest_marker("ray") is not None
                 and not item.nodeid.endswith(tuple(f"@{group}" for group in RAY_GROUPS))]
    if ungrouped:
        raise pytest.UsageError(f"pytest-xdist did not group {len(ungrouped)} ray tests (e.g. {ungrouped[0]}): "
                                f"pytest {pytest.__version__} with this pytest-xdist ignores xdist_group; "
                                "install the pytest the test extra pins (pyproject.toml)")


@pytest.fixture(scope="session", autouse=True)
def _cwd_is_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The test process works in a temporary folder, and every test in its own (below), so what a
    run writes to relative defaults (``RunConfig.checkpoint_dir`` "checkpoints", the MLflow
    fallback journal's "runs", and the "./mlruns" artifact root MLflow gives a sqlite store's new
    experiments) lands there and not in the checkout: a clean clone's CI run left checkpoints/ and
    mlruns/ in the repository before. This one is for module-scoped fixtures (the training runs of
    tests/launch/test_mlflow_model.py), which are set up before any test's own folder exists."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(autouse=True)
def _cwd_is_the_tests_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own temporary folder (see ``_cwd_is_a_temporary_folder``)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance shared by every test marked ``ray`` in this session."""
    import ray

    if not ray.is_initialized():
        # Ray puts the driver's working directory at ray.init on its workers' sys.path: it must be
        # the checkout's, where actors defined in test modules (tests.scheme.test_remote) import
        # from, although the tests themselves run in temporary folders.
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(ROOT)
            ray.init(address="local", num_cpus=4, object_store_memory=256 * 1024**2,
                     include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, created (its schema migrated) once per test process. A new
    store's migrations cost ~3.6 s here, a copy of this one ~0.05 s; the copy is the same store."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(tmp_path, mlflow_template) -> str:
    """A real MLflow sqlite store in a temporary folder (a copy of the empty, migrated template)."""
    shutil.copyfile(mlflow_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
