"""``colonyrl evaluate --video``: one deterministic episode as an mp4 (read back with imageio), logged
to the MLflow run the model came from (a real sqlite store in a temp folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

imageio = pytest.importorskip("imageio.v2", reason="needs the video extra: pip install 'colonyrl[video]'")
pytest.importorskip("imageio_ffmpeg", reason="needs the video extra: pip install 'colonyrl[video]'")
pytest.importorskip("pygame", reason="needs the video extra (CartPole renders with pygame)")

from colonyrl.agents import ActorCriticConfig  # noqa: E402
from colonyrl.envs.factory import EnvConfig  # noqa: E402
from colonyrl.launch.cli import main  # noqa: E402
from colonyrl.launch.config import RunConfig, TrainConfig  # noqa: E402
from colonyrl.launch.evaluate import save_model  # noqa: E402
from colonyrl.launch.video import model_run, record_and_log, record_video  # noqa: E402

CARTPOLE = TrainConfig(env=EnvConfig(id="CartPole-v1", num_envs=1, max_episode_steps=25),
                       actor=ActorCriticConfig(hidden_sizes=(8,)))


def _frames(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path) as reader:
        return [np.asarray(frame) for frame in reader]


def test_evaluate_video_writes_an_mp4_and_logs_it_to_the_models_mlflow_run(tmp_path, mlflow_uri, capsys) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    run_id = client.create_run(client.create_experiment("video")).info.run_id
    config = CARTPOLE.replace(run=RunConfig(tracking_uri=mlflow_uri))
    components = config.components()
    algo = components.build_algorithm(components.spaces())
    folder = save_model(tmp_path / "runs" / run_id, algo, config, {"env_steps": 0})  # as `colonyrl train` names it
    video = tmp_path / "out" / "episode.mp4"
    assert main(["evaluate", str(folder), "--episodes", "1", "--video", str(video)]) == 0
    printed = capsys.readouterr().out
    frames = _frames(video)
    steps = int(printed.split(" in ")[1].split(" steps")[0])
    assert 1 <= steps <= 25 and len(frames) == steps + 1  # the reset frame and one per step
    assert frames[0].shape == (400, 600, 3) and frames[0].dtype == np.uint8
    assert frames[0].std() > 0  # a drawn cart, not a blank frame
    assert f"logged to MLflow run {run_id} as videos/episode.mp4" in printed
    logged = [a.path for a in client.list_artifacts(run_id, "videos")]
    assert logged == ["videos/episode.mp4"]
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="videos/episode.mp4",
                                                dst_path=str(tmp_path / "dl"), tracking_uri=mlflow_uri)
    assert len(_frames(Path(local))) == len(frames)


def test_a_model_without_a_run_gets_its_video_but_no_store_is_created(tmp_path) -> None:
    components = CARTPOLE.components()
    policy = components.build_policy(components.spaces())
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    line = record_and_log(policy, CARTPOLE, str(tmp_path / "not-a-run"), str(tmp_path / "v.mp4"), missing)
    assert "logged" not in line and len(_frames(tmp_path / "v.mp4")) >= 2
    assert model_run(tmp_path / "not-a-run", missing) is None
    assert not (tmp_path / "none.db").exists()  # asking would have created the store


def test_atari_video_shows_the_agents_observation_frames(tmp_path) -> None:
    pytest.importorskip("ale_py", reason="needs the atari extra: pip install 'colonyrl[atari]'")
    config = TrainConfig(env=EnvConfig(id="ALE/Pong-v5", num_envs=1, vectorization="ale"),
                         actor=ActorCriticConfig(hidden_sizes=(), cnn_features_dim=8))
    components = config.components()
    policy = components.build_policy(components.spaces())
    result = record_video(policy, components.evaluation_env(), tmp_path / "pong.mp4", max_steps=4)
    frames = _frames(result.path)
    assert result.length == 4 and len(frames) == result.frames == 5
    assert frames[0].shape == (336, 336, 3) and frames[-1].std() > 0  # 84x84 scaled 4x, a real frame


def test_video_path_must_be_an_mp4(tmp_path) -> None:
    from colonyrl.config import ConfigError

    components = CARTPOLE.components()
    policy = components.build_policy(components.spaces())
    with pytest.raises(ConfigError, match=r"EvaluateArgs\.video"):
        record_video(policy, components.evaluation_env(), tmp_path / "v.gif", max_steps=2)
