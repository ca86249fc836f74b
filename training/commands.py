"""What each ``python -m training`` command does, once its arguments are parsed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _config(args: argparse.Namespace, dataset: str):
    from training.config import default_config

    fields = [
        "arch",
        "hidden",
        "filters",
        "convs_per_block",
        "dense",
        "dropout",
        "batch_size",
        "learning_rate",
        "seed",
        "augment_shift",
        "augment_flip",
        "augment_erase",
        "mirror_average",
        "precision",
    ]
    if args.command != "lr-find":
        fields += ["epochs", "validation_split", "patience", "lr_decay", "name"]
    return default_config(dataset, **{f: getattr(args, f) for f in fields})


def own_data(args: argparse.Namespace, command: str) -> int:
    """train-csv / train-images: the user's data through the built-in pipeline."""
    from dataclasses import replace

    from service.contract.preprocessing import ImageSpec
    from training import repository, userdata

    path = args.file if args.command == "train-csv" else args.folder
    if args.command == "train-csv":
        dataset = userdata.csv_dataset(
            path,
            args.target,
            args.features,
            args.test_fraction,
            categorical=args.categorical,
            numeric=args.numeric,
            drop=args.drop,
            missing=args.missing,
            encode=args.encode,
            min_count=args.min_count,
        )
        config = _config(args, "csv")
    else:
        if args.antialias and args.interpolation is None:
            raise userdata.DataError("--antialias goes with --interpolation (e.g. bilinear)")
        channels = args.channels or userdata.colour_channels(path)
        spec = ImageSpec(
            args.size[0],
            args.size[1],
            channels,
            255.0,
            "nhwc",
            args.background,
            args.background != "none",
            resize=args.resize,
            interpolation=args.interpolation,
            antialias=args.antialias,
        )
        dataset = userdata.image_dataset(path, spec, args.test_fraction)
        config = _config(args, "images")
        if config.arch == "mlp":  # a flat vector: no shifts or flips
            spec = replace(spec, layout="flat")
            dataset = replace(dataset, spec=spec)
            config = replace(
                config, augment_shift=0, augment_flip=False, augment_erase=0.0, mirror_average=False
            )
    config = replace(config, name=repository.model_name(args.name, dataset.name))
    from training.pipeline import train_and_export  # TensorFlow: only once the data is read

    published = train_and_export(
        config,
        args.repository,
        verbose=0 if args.quiet else "auto",
        command=command,
        dataset=dataset,
    )
    _out(str(published))
    return 0


def _built_in(meta: dict) -> bool:
    """A version trained here on a built-in dataset (not a user's file, not an import)."""
    from training.datasets import LOADERS

    config = (meta.get("training") or {}).get("config") or {}
    return meta.get("source", {}).get("kind", "trained") == "trained" and (
        config.get("dataset") in LOADERS
    )


def datasets_command(args: argparse.Namespace, command: str) -> int:
    """List the built-in datasets and their default configs."""
    from training.config import DEFAULTS

    for name, cfg in DEFAULTS.items():
        _out(f"{name}: {json.dumps(cfg.to_dict())}")
    return 0


def evaluate(args: argparse.Namespace, command: str) -> int:
    """Re-score the latest version of every built-in model with onnxruntime."""
    from service.contract import metadata as contract
    from training.evaluate import evaluate_version

    for version_dir in contract.latest_version_dirs(args.repository):
        if not _built_in(contract.read(version_dir, verify_checksum=False)):
            _out(f"{version_dir.parent.name}: skipped (not a built-in dataset)")
            continue
        ev = evaluate_version(version_dir, args.data_dir)
        _out(
            f"{ev.name} v{ev.version}: accuracy {ev.accuracy:.4f} on {ev.n_samples} "
            f"(recorded {ev.recorded_accuracy:.4f}), {ev.onnx_bytes:,} bytes"
        )
    return 0


def import_command(args: argparse.Namespace, command: str) -> int:
    """A user's model file into the repository."""
    from training.importer import ImportOptions, import_model

    fields = [
        "name",
        "classes",
        "output",
        "scale",
        "offset",
        "mean",
        "std",
        "background",
        "resize",
        "interpolation",
        "antialias",
        "features",
        "sample",
        "target",
    ]
    options = ImportOptions(args.path, args.repository, **{f: getattr(args, f) for f in fields})
    _out(str(import_model(options, command)))
    return 0


def calibrate(args: argparse.Namespace, command: str) -> int:
    """Temperature scaling for versions of built-in models trained before it existed."""
    from service.contract import metadata as contract
    from training.evaluate import calibrate_version

    for version_dir in contract.version_dirs(args.repository):
        meta = contract.read(version_dir, verify_checksum=False)
        wanted = (
            meta["name"] in args.models if args.models else ("calibration" not in meta["metrics"])
        )
        if not wanted or not _built_in(meta):
            continue
        block = calibrate_version(version_dir, args.data_dir)
        before, after = block["test"]["before"], block["test"]["after"]
        _out(
            f"{meta['name']} v{meta['version']}: temperature {block['temperature']:.4g} "
            f"({'applied' if block['applied'] else 'not applied'}); test ECE "
            f"{before['ece']:.4f} -> {after['ece']:.4f}, NLL {before['nll']:.4f} -> "
            f"{after['nll']:.4f}"
        )
    return 0


def resize_command(args: argparse.Namespace, command: str) -> int:
    """Re-publish a version of an image model with a declared resize, as the next version
    (the same ONNX file): for models trained or imported before resizes were declared."""
    import shutil
    from datetime import UTC, datetime

    from service.contract import metadata as contract
    from training import repository
    from training.userdata import DataError

    numbers = contract.versions(args.repository, args.model)
    if not numbers:
        raise DataError(f"{args.repository} has no model {args.model!r}")
    number = args.version or numbers[-1]
    if number not in numbers:
        raise DataError(f"{args.model} has no version {number} (it has {numbers})")
    source = Path(args.repository) / args.model / str(number)
    meta = contract.read(source)
    pre = meta["preprocessing"]
    if pre["kind"] != "image" or pre.get("framing") == "object":
        raise DataError(
            f"{args.model} v{number} takes "
            + ("feature vectors" if pre["kind"] != "image" else "photos framed to their object")
            + ": it has no resize to declare"
        )
    with repository.staged_version(args.repository, args.model) as (staging, version):
        shutil.copy2(source / contract.MODEL_FILE, staging / contract.MODEL_FILE)
        if (source / "report").is_dir():
            shutil.copytree(source / "report", staging / "report")
        pre.update(interpolation=args.interpolation, antialias=args.antialias)
        if args.resize:
            pre["resize"] = args.resize
        meta["version"] = version
        meta["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        meta["description"] = (
            f"{meta['description']}; v{number} re-published with the resize "
            f"{args.interpolation}{' antialiased' if args.antialias else ''} ({command})"
        )
        contract.write(staging, meta)
    _out(str(Path(args.repository) / args.model / str(version)))
    return 0


def lr_find(args: argparse.Namespace, command: str) -> int:
    """The learning-rate sweep and its plot."""
    from training import datasets, lr_finder

    config = _config(args, args.dataset)
    dataset = datasets.load(config.dataset, args.data_dir)
    sweep = lr_finder.run_sweep(config, dataset, args.epochs, args.start, args.steps_per_epoch)
    out = args.output or REPO_ROOT / "reports" / f"lr-{config.dataset}.png"
    lr_finder.plot_sweep(sweep, f"{config.dataset}: learning-rate sweep", out)
    _out(
        f"loss minimum at lr={sweep.best_rate:.3g}; suggested learning rate "
        f"{sweep.suggested_rate:.3g} (plot: {out})"
    )
    return 0


def train(args: argparse.Namespace, command: str) -> int:
    """A built-in dataset through the whole pipeline."""
    from training.pipeline import train_and_export

    config = _config(args, args.dataset)
    published = train_and_export(
        config, args.repository, args.data_dir, verbose=0 if args.quiet else "auto", command=command
    )
    _out(str(published))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, str], int]] = {
    "datasets": datasets_command,
    "evaluate": evaluate,
    "import": import_command,
    "calibrate": calibrate,
    "resize": resize_command,
    "train-csv": own_data,
    "train-images": own_data,
    "lr-find": lr_find,
    "train": train,
}


def run(args: argparse.Namespace, command: str) -> int:
    """Run the parsed command; ``command`` is the command line, recorded in metadata."""
    return COMMANDS[args.command](args, command)
