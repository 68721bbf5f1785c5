"""The ``colonyrl`` command line, generated from the config dataclasses by tyro.

    colonyrl train [--preset NAME] [--algo.lr 0.001 --scheme.num-grad-workers 2 ...]
    colonyrl evaluate RUN_FOLDER [--episodes 10]
    colonyrl presets
    colonyrl dataset CHECKPOINT OUT.npz
    colonyrl tracking-import RUN_FOLDER [--tracking-uri URI]

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
from colonyrl.launch.tracking import FallbackImportError, TrackingUnavailableError
from colonyrl.launch.train import TrainingInterrupted

__all__ = ["main", "EvaluateArgs", "DatasetArgs", "TrackingImportArgs"]

USAGE = "usage: colonyrl {train,evaluate,presets,dataset,tracking-import} [--help]"


@dataclasses.dataclass(frozen=True)
class EvaluateArgs:
    """Evaluate a saved model: mean and std of the return over N deterministic episodes."""

    #: A run folder written by `colonyrl train` (or its model.pt).
    path: Annotated[str, tyro.conf.Positional]
    episodes: int = 10
    seed: int = 0
    #: Sample actions instead of taking the most likely one.
    stochastic: bool = False


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
    from colonyrl.launch.train import train

    name, rest = _pop_preset(argv)
    cfg = parse_args(preset(name), rest, prog="colonyrl train",
                     description=f"Train with preset {name!r} (choose with --preset; see `colonyrl presets`); "
                                 "choose another algorithm with algo:NAME, another storage with storage:KIND.")
    result = train(cfg)
    return 0 if result.evaluation is not None else 1


def evaluate_main(argv: list[str]) -> int:
    from colonyrl.launch.evaluate import evaluate, load_model

    args = tyro.cli(EvaluateArgs, args=argv, prog="colonyrl evaluate")
    policy, cfg, counters = load_model(args.path)
    result = evaluate(policy, cfg.components().evaluation_env(), args.episodes, args.seed, not args.stochastic)
    print(f"{cfg.env.id}: mean return {result.mean:.2f} +/- {result.std:.2f} over {args.episodes} episodes "
          f"(model trained for {counters.get('env_steps', 0):,} env steps)")
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


COMMANDS = {"train": train_main, "evaluate": evaluate_main, "presets": presets_main, "dataset": dataset_main,
            "tracking-import": tracking_import_main}


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
    except (ModelFileError, CheckpointError, TrackingUnavailableError, FallbackImportError) as e:
        print(f"colonyrl {argv[0]}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
