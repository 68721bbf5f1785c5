"""Evaluation video: one deterministic episode written as an mp4, logged to the model's MLflow run.

``colonyrl evaluate RUN_FOLDER --video episode.mp4`` ends here. The frames are the env's own
``render_mode="rgb_array"`` images (gymnasium's render API), written with imageio's ffmpeg writer
(imageio-ffmpeg ships an ffmpeg binary; ``pip install 'colonyrl[video]'``, which also brings
pygame, what gymnasium's classic-control envs draw with). ale-py's vector env renders nothing, so
an Atari video shows what the agent sees: the newest frame of its observation stack, scaled up.

A run folder written by ``colonyrl train`` is named after its MLflow run id
(``<output_dir>/<run id>/``); when that run exists in the tracking store the model was trained
with, the video is logged there as an artifact (``videos/<name>.mp4``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from colonyrl.agents.base import Algorithm, Policy, initial_state
from colonyrl.config import ConfigError
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.evaluate import EVAL_WORKER_INDEX

__all__ = ["VideoResult", "record_video", "record_and_log", "write_mp4", "model_run", "log_video", "VIDEO_ARTIFACT_DIR",
           "INSTALL_HINT"]

INSTALL_HINT = "pip install 'colonyrl[video]' (imageio with imageio-ffmpeg, pygame)"
VIDEO_ARTIFACT_DIR = "videos"
#: Observation frames of ale-py's vector env (84x84) are scaled up this many times per side.
OBS_FRAME_SCALE = 4


class VideoResult(NamedTuple):
    path: Path
    frames: int
    episode_return: float
    length: int


def _obs_frame(obs: np.ndarray) -> np.ndarray:
    """An RGB uint8 image of sub-env 0's newest stacked frame (``[N, stack, H, W(, 3)]``)."""
    frame = np.asarray(obs[0, -1])
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    return np.kron(frame, np.ones((OBS_FRAME_SCALE, OBS_FRAME_SCALE, 1), np.uint8))


def _frame(venv: Any, obs: Any, from_obs: bool) -> np.ndarray:
    return _obs_frame(obs) if from_obs else np.asarray(venv.render()[0])


def record_video(agent: Policy | Algorithm, env: EnvConfig, path: str | os.PathLike[str], seed: int = 0,
                 deterministic: bool = True, max_steps: int = 10_000,
                 worker_index: int = EVAL_WORKER_INDEX) -> VideoResult:
    """Play one episode of ``env`` (one sub-env seeded as evaluations are) with ``agent``'s policy,
    until it ends or after ``max_steps`` steps, writing its frames to the mp4 ``path`` as they come
    (a long episode is not held in memory)."""
    if max_steps < 1:
        raise ConfigError("record_video.max_steps", max_steps, "an integer >= 1")
    path = _mp4_path(path)
    policy: Policy = agent.policy if isinstance(agent, Algorithm) else agent
    from_obs = env.vectorization == "ale"
    if not from_obs:
        env = env.replace(kwargs={**env.kwargs, "render_mode": "rgb_array"})
    venv, obs = env.make(num_envs=1, seed=seed, worker_index=worker_index)
    frames, total, steps = 0, 0.0, 0
    try:
        with _writer(path, _fps(venv, env)) as writer:
            writer.append_data(_even(_frame(venv, obs, from_obs)))
            frames += 1
            state, episode_start = initial_state(policy, 1), np.ones(1, dtype=bool)
            while steps < max_steps:
                if state is None:
                    action = policy.act(obs, deterministic=deterministic).env_action
                else:
                    out = policy.act(obs, deterministic, state=state, episode_start=episode_start)
                    action, state, episode_start = out.env_action, out.state, np.zeros(1, dtype=bool)
                obs, reward, terminated, truncated, _ = venv.step(action)
                total, steps = total + float(reward[0]), steps + 1
                # next-step autoreset: the env is reset only on the following step, so this shows the end
                writer.append_data(_even(_frame(venv, obs, from_obs)))
                frames += 1
                if terminated[0] or truncated[0]:
                    break
    finally:
        venv.close()
    return VideoResult(path, frames, total, steps)


def _fps(venv: Any, env: EnvConfig) -> float:
    """The env's ``render_fps``; for ale-py, the agent's step rate at 60 emulator frames a second."""
    if env.vectorization == "ale":
        return 60.0 / env.atari.frameskip
    return float((getattr(venv, "metadata", None) or {}).get("render_fps") or 30)


def _mp4_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ConfigError("EvaluateArgs.video", str(path), "a path ending in .mp4")
    return path


def _writer(path: Path, fps: float) -> Any:
    """imageio's ffmpeg writer: H.264 in yuv420p (plays in browsers and MLflow's UI)."""
    try:
        import imageio.v2 as imageio
    except ImportError as e:
        raise ImportError(f"writing a video needs imageio: {INSTALL_HINT}") from e
    path.parent.mkdir(parents=True, exist_ok=True)
    # macro_block_size=2: yuv420p needs even sides (_even pads); imageio's default 16 would rescale
    return imageio.get_writer(path, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=2)


def write_mp4(path: str | os.PathLike[str], frames: list[np.ndarray], fps: float) -> Path:
    """Write RGB uint8 frames ``[H, W, 3]`` as an mp4."""
    path = _mp4_path(path)
    with _writer(path, fps) as writer:
        for frame in frames:
            writer.append_data(_even(frame))
    return path


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad a frame by one black row/column where a side is odd (yuv420p needs even sides)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0))) if (h % 2 or w % 2) else frame


def _store_exists(uri: str) -> bool:
    """Whether the tracking store at ``uri`` exists (asking MLflow about a missing sqlite or file
    store would create it as a side effect of an evaluation)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).exists()
    if uri.startswith("file:") or "://" not in uri:
        return Path(uri.removeprefix("file://").removeprefix("file:")).exists()
    return True  # a server: ask it


def model_run(model: str | os.PathLike[str], tracking_uri: str | None) -> tuple[str, str] | None:
    """``(run_id, tracking_uri)`` of the MLflow run a model came from, or None. ``model`` is what
    ``colonyrl evaluate`` loaded: a run folder (named after its run by ``colonyrl train``), its
    ``model.pt``, a run id, ``runs:/<run id>/...`` or ``models:/<name>/<version>``. The run must
    exist at ``tracking_uri`` (None: ``MLFLOW_TRACKING_URI``, else MLflow's default)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    ref = os.fspath(model)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    if not _store_exists(uri):
        return None
    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        if not Path(ref).exists() and ref.startswith("models:/"):
            name, _, version = ref.removeprefix("models:/").rstrip("/").partition("/")
            run_id = client.get_model_version(name, version).run_id
        elif not Path(ref).exists() and ref.startswith("runs:/"):
            run_id = ref.removeprefix("runs:/").split("/")[0]
        else:
            path = Path(ref)
            run_id = (path if path.is_dir() or not path.exists() else path.parent).name
        return client.get_run(run_id).info.run_id, uri
    except MlflowException:  # no such run (e.g. a folder not named after one)
        return None


def log_video(video: str | os.PathLike[str], run_id: str, tracking_uri: str) -> str:
    """Log ``video`` to the run's artifacts under ``videos/``; returns the artifact path."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri).log_artifact(run_id, str(video), VIDEO_ARTIFACT_DIR)
    return f"{VIDEO_ARTIFACT_DIR}/{Path(video).name}"


def record_and_log(policy: Policy, config: Any, model: str, video: str, tracking_uri: str | None = None,
                   seed: int = 0, deterministic: bool = True, max_steps: int = 10_000) -> str:
    """What ``colonyrl evaluate --video`` does: record one episode of the model's evaluation env,
    log it to the model's MLflow run if there is one; returns the line to print."""
    result = record_video(policy, config.components().evaluation_env(), video, seed, deterministic, max_steps)
    line = f"wrote {result.path} ({result.frames} frames, return {result.episode_return:.2f} in {result.length} steps)"
    run = model_run(model, tracking_uri or config.run.tracking_uri)
    if run is not None:
        artifact = log_video(result.path, *run)
        line += f"; logged to MLflow run {run[0]} as {artifact}"
    return line
