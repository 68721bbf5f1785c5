"""The training loop: schedules become runtime changes, and every change is tracked in MLflow."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pytest

from colonyrl.config import ConfigError
from colonyrl.launch.config import RunConfig, Schedule, TrainConfig
from colonyrl.launch.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tracking_helpers (--import-mode=importlib)
from tracking_helpers import read_run  # noqa: E402


def test_schedule_values_linear_and_piecewise() -> None:
    linear = Schedule(name="lr", points=((0, 1e-3), (1000, 0.0)))
    assert [linear.value(s) for s in (0, 250, 1000, 5000)] == pytest.approx([1e-3, 7.5e-4, 0.0, 0.0])
    steps = Schedule(kind="storage", name="gamma", points=((0, 0.9), (100, 0.99)), interpolation="piecewise")
    assert [steps.value(s) for s in (0, 99, 100, 1000)] == [0.9, 0.9, 0.99, 0.99]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (dict(name="lr", points=()), "Schedule.points"),
        (dict(name="lr", points=((10, 1e-3), (5, 0.0))), "Schedule.points"),
        (dict(name="lr", points=((0, -1.0),)), r"schedules\[0\] \(PPOConfig.lr\)"),
        (dict(name="nope", points=((0, 1.0),)), r"schedules\[0\]"),
        (dict(kind="storage", name="gamma", points=((0, 2.0),)), r"RolloutConfig.gamma"),
    ],
)
def test_invalid_schedules_are_rejected_naming_the_field(schedule: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(schedules=(Schedule(**schedule),))


def test_scheduled_changes_are_applied_and_tracked_with_env_step_and_version(tmp_path, mlflow_uri) -> None:
    cfg = TrainConfig(
        schedules=(Schedule(name="lr", points=((0, 1e-3), (3000, 0.0))),
                   Schedule(kind="storage", name="gamma", points=((0, 0.99), (1500, 0.9)), interpolation="piecewise")),
        run=RunConfig(total_env_steps=4000, eval_episodes=2, tracking_uri=mlflow_uri, progress=False,
                      output_dir=str(tmp_path)),
    )
    result = train(cfg)
    run = read_run(mlflow_uri, result.run_id)
    assert run["metrics"]["param/algo.lr"] >= 3 and run["metrics"]["param/storage.gamma"] == 1
    assert "changes.log" in run["artifacts"]
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    lr = client.get_metric_history(result.run_id, "param/algo.lr")
    assert [m.value for m in sorted(lr, key=lambda m: m.step)][-1] == 0.0  # annealed to 0 by 3000 steps
    gamma = client.get_metric_history(result.run_id, "param/storage.gamma")
    assert gamma[0].value == pytest.approx(0.9) and gamma[0].step >= 1500
    version = client.get_metric_history(result.run_id, "param_version/storage.gamma")
    assert version[0].value > 0


def test_a_long_schedule_keeps_learner_memory_bounded_and_changes_log_complete(tmp_path, mlflow_uri,
                                                                                 monkeypatch) -> None:
    """A linear schedule makes a change whenever the env-step counter moves (here once per
    1,024-step round): the Learner keeps only the newest ``MAX_KEPT_CHANGES`` (here 1), while MLflow
    and ``changes.log`` still get every one of them."""
    from colonyrl.scheme import changes as changes_module
    from colonyrl.scheme import learner as learner_module

    monkeypatch.setattr(changes_module, "MAX_KEPT_CHANGES", 1)
    kept: list[int] = []
    step = learner_module.Learner.step

    def step_and_count(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        kept.append(len(self.changes))
        return out

    monkeypatch.setattr(learner_module.Learner, "step", step_and_count)
    cfg = TrainConfig(schedules=(Schedule(name="lr", points=((0, 1e-3), (4096, 0.0))),),
                      run=RunConfig(total_env_steps=4096, eval_episodes=2, tracking_uri=mlflow_uri,
                                    progress=False, output_dir=str(tmp_path)))
    result = train(cfg)
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    lr = client.get_metric_history(result.run_id, "param/algo.lr")
    lines = (result.model_dir / "changes.log").read_text().splitlines()
    assert len(lr) == len(lines) == 4  # at env steps 0, 1024, 2048, 3072 (4096 ends the run)
    assert [line.split()[2] for line in lines] == ["algo.lr=0.001", "algo.lr=0.00075", "algo.lr=0.0005",
                                                   "algo.lr=0.00025"]
    assert max(kept) <= 2  # never more than 2 x MAX_KEPT_CHANGES in memory
    local = client.download_artifacts(result.run_id, "changes.log", str(tmp_path / "dl"))
    assert open(local).read().splitlines() == lines
