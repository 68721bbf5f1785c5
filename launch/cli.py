"""The ``colonyrl`` command line, generated from the config dataclasses by tyro.

    colonyrl train [--preset NAME] [--seeds 0 1 2 [--parallel-seeds]] [--algo.lr 0.001 --scheme.num-grad-workers 2 ...]
    colonyrl evaluate RUN_FOLDER|RUN_ID|runs:/ID/model|runs:/ID/best_model|models:/NAME/VERSION [--episodes 10] [--tracking-uri URI]
    colonyrl presets
    colonyrl dataset CHECKPOINT OUT.npz
    colonyrl tracking-import RUN_FOLDER [--tracking-uri URI]
    colonyrl plot RUN_OR_EXPERIMENT... [--metric eval_return] [--x env_steps|wall_time] [--out FILE.png]

Every flag of ``train`` comes from ``TrainConfig`` (``colonyrl train --help`` lists them with the
chosen preset's values as defaults); nothing is written flag by flag here.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import tyro

from colonyrl.config import ConfigError
from colonyrl.launch.checkpoint import CheckpointError
from colonyrl.launch.evaluate import ModelFileError
from colonyrl.launch.plot import PlotError
from colonyrl.launch.tracking import FallbackImportError, TrackingUnavailableError
from colonyrl.launch.train import TrainingInterrupted

__all__ = ["main", "EvaluateArgs", "DatasetArgs", "TrackingImportArgs"]

USAGE = "usage: colonyrl {train,evaluate,presets,dataset,tracking-import,plot} [--help]"


@dataclasses.dataclass(frozen=True)
class EvaluateArgs:
    """Evaluate a saved model: mean and std of the return over N deterministic episodes."""

    #: A run folder written by `colonyrl train` (or its model.pt), or from MLflow: a run id,
    #: runs:/<run id>/model or models:/<name>/<version>.
    path: Annotated[str, tyro.conf.Positional]
    episodes: int = 10
    seed: int = 0
    #: Sample actions instead of taking the most likely one.
    stochastic: bool = False
    #: The MLflow store of a run id or runs:/, models:/ URI (default: MLFLOW_TRACKING_URI, else MLflow's).
    tracking_uri: str | None = None
    #: Also record one deterministic episode as this mp4 (launch/video.py), logged to the model's
    #: MLflow run when it came from one.
    video: str | None = None
    #: The video stops after this many env steps if the episode has not ended.
    video_max_steps: int = 10_000


@dataclasses.dataclass(frozen=True)
class DatasetArgs:
    """Write a checkpoint's replay memories as an offline dataset (.npz) that
    ``--storage.dataset-path`` starts another run's memories from."""

    #: A checkpoint file, or a folder of them (the newest is used).
    checkpoint: Annotated[str, tyro.conf.Positional]
    #: The .npz file to write.
    out: Annotated[str, tyro.conf.Positional]


@dataclasses.dataclass(frozen=True)
class TrackingImportArgs:
    """Send a run's MLflow fallback (written when the tracking server was unreachable at the end of
    training) to its run: metrics, artifacts, final status."""

    #: The run's mlflow-fallback folder, or the run folder (<output-dir>/<run id>) that holds it.
    path: Annotated[str, tyro.conf.Positional]
    #: Where the run lives (default: the URI it was tracked to).
    tracking_uri: str | None = None
    #: Import again a folder that was imported already.
    force: bool = False


def _pop_preset(argv: list[str]) -> tuple[str, list[str]]:
    from colonyrl.launch.presets import DEFAULT_PRESET

    rest, name = [], DEFAULT_PRESET
    it = iter(argv)
    for arg in it:
        if arg == "--preset":
            name = next(it, DEFAULT_PRESET)
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return name, rest


def train_main(argv: list[str]) -> int:
    from colonyrl.launch.config import parse_args
    from colonyrl.launch.presets import preset
    from colonyrl.launch.seeds import SEEDS_HELP, pop_seed_flags, train_seeds
    from colonyrl.launch.train import train

    seeds, parallel, rest = pop_seed_flags(argv)
    name, rest = _pop_preset(rest)
    cfg = parse_args(preset(name), rest, prog="colonyrl train",
                     description=f"Train with preset {name!r} (choose with --preset; see `colonyrl presets`); "
                                 "choose another algorithm with algo:NAME, another storage with storage:KIND; "
                                 + SEEDS_HELP + ".")
    if seeds is not None:
        many = train_seeds(cfg, seeds, parallel=parallel)
        print(f"{len(many.seeds)} seeds: final evaluation mean return {many.final_mean:.2f} +/- {many.final_std:.2f}"
              + (f" (MLflow parent run {many.parent_run_id})" if many.parent_run_id else ""))
        return 0
    result = train(cfg)
    return 0 if result.evaluation is not None else 1


def evaluate_main(argv: list[str]) -> int:
    from colonyrl.launch.evaluate import evaluate, load_model

    args = tyro.cli(EvaluateArgs, args=argv, prog="colonyrl evaluate")
    policy, cfg, counters = load_model(args.path, args.tracking_uri)
    result = evaluate(policy, cfg.components().evaluation_env(), args.episodes, args.seed, not args.stochastic)
    print(f"{cfg.env.id}: mean return {result.mean:.2f} +/- {result.std:.2f} over {args.episodes} episodes "
          f"(model trained for {counters.get('env_steps', 0):,} env steps)")
    if args.video is not None:
        from colonyrl.launch.video import record_and_log

        print(record_and_log(policy, cfg, args.path, args.video, args.tracking_uri, args.seed, not args.stochastic,
                             args.video_max_steps))
    return 0


def presets_main(argv: list[str]) -> int:
    from colonyrl.launch.presets import DEFAULT_PRESET, PRESETS, describe

    for name in PRESETS:
        print(f"{name:20s}{' (default)' if name == DEFAULT_PRESET else '':11s} {describe(name)}")
    return 0


def dataset_main(argv: list[str]) -> int:
    from colonyrl.launch.checkpoint import export_dataset

    args = tyro.cli(DatasetArgs, args=argv, prog="colonyrl dataset")
    rows = export_dataset(args.checkpoint, args.out)
    print(f"wrote {rows:,} transitions to {args.out}")
    return 0


def tracking_import_main(argv: list[str]) -> int:
    from colonyrl.launch.tracking import import_fallback

    args = tyro.cli(TrackingImportArgs, args=argv, prog="colonyrl tracking-import")
    done = import_fallback(args.path, args.tracking_uri, force=args.force)
    print(f"imported {done['metrics']:,} metric points, {done['artifacts']} artifact files"
          + (f" and status {done['status']}" if done["status"] else "")
          + f" into MLflow run {done['run_id']} at {done['tracking_uri']}")
    return 0


def plot_main(argv: list[str]) -> int:
    from colonyrl.launch.plot import PlotArgs, run_plot

    return run_plot(tyro.cli(PlotArgs, args=argv, prog="colonyrl plot"))


COMMANDS = {"train": train_main, "evaluate": evaluate_main, "presets": presets_main, "dataset": dataset_main,
            "tracking-import": tracking_import_main, "plot": plot_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except ConfigError as e:  # a bad value: say which field and what is allowed, start nothing
        print(f"colonyrl {argv[0]}: invalid configuration: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:  # SIGINT/SIGTERM: checkpoint written, workers stopped
        print(f"colonyrl {argv[0]}: {e}", file=sys.stderr)
        return 128 + e.signum
    except (ModelFileError, CheckpointError, TrackingUnavailableError, FallbackImportError, PlotError) as e:
        print(f"colonyrl {argv[0]}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
