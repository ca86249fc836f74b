"""``python -m training``: train, lr-find, evaluate, datasets."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPOSITORY = REPO_ROOT / "models"

log = logging.getLogger("training")


def _int_list(text: str) -> tuple[int, ...]:
    """'25-15' or '25,15' -> (25, 15)."""
    try:
        return tuple(int(p) for p in text.replace(",", "-").split("-") if p)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 25-15, got {text!r}") from None


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    from training.datasets import LOADERS

    p.add_argument("dataset", choices=list(LOADERS), help="which dataset to fit")
    p.add_argument("--arch", choices=["mlp", "cnn"], help="network family")
    p.add_argument("--hidden", type=_int_list, help="MLP hidden sizes, e.g. 25-15")
    p.add_argument("--filters", type=_int_list, help="CNN block widths, e.g. 32-64")
    p.add_argument("--convs-per-block", type=int, help="CNN conv layers per block")
    p.add_argument("--dense", type=int, help="CNN dense layer width")
    p.add_argument("--dropout", type=float, help="dropout rate")
    p.add_argument("--batch-size", type=int, help="mini-batch size")
    p.add_argument("--learning-rate", "--lr", type=float, help="Adam learning rate")
    p.add_argument("--seed", type=int, help="random seed (weights, shuffling, split)")
    p.add_argument("--data-dir", help="Fashion-MNIST IDX folder (default: $FASHION_MNIST_DIR, "
                   "else /usr/share/datasets/fashion-mnist)")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fit, export to ONNX, check parity, publish a version")
    _add_model_flags(train)
    train.add_argument("--epochs", type=int, help="maximum epochs")
    train.add_argument("--validation-split", type=float, help="held-out fraction of train")
    train.add_argument("--patience", type=int, help="early-stopping patience (epochs)")
    train.add_argument("--lr-decay", choices=["none", "cosine"], help="learning-rate schedule")
    train.add_argument("--name", help="model name in the repository (default: dataset)")
    train.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                       help="model repository folder (default: ./models)")  # fmt: skip
    train.add_argument("--quiet", action="store_true", help="no Keras progress bar")

    lr = sub.add_parser("lr-find", help="learning-rate sweep: plot and suggested rate")
    _add_model_flags(lr)
    lr.add_argument("--epochs", type=int, default=100, help="sweep length (5 epochs a decade "
                    "is too coarse; 20 per decade is the lesson's)")  # fmt: skip
    lr.add_argument("--start", type=float, default=1e-4, help="first learning rate")
    lr.add_argument("--steps-per-epoch", type=int, help="cap each sweep epoch (big datasets)")
    lr.add_argument("--output", type=Path, help="plot path (default: reports/lr-<dataset>.png)")

    ev = sub.add_parser("evaluate", help="re-score published models with onnxruntime")
    ev.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    ev.add_argument("--data-dir", help="Fashion-MNIST IDX folder")

    sub.add_parser("datasets", help="list datasets and their default training config")
    return parser


def _config(args: argparse.Namespace):
    from training.config import default_config

    fields = ["arch", "hidden", "filters", "convs_per_block", "dense", "dropout", "batch_size",
              "learning_rate", "seed"]  # fmt: skip
    if args.command == "train":
        fields += ["epochs", "validation_split", "patience", "lr_decay", "name"]
    return default_config(args.dataset, **{f: getattr(args, f) for f in fields})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    from training.datasets import DatasetError
    from training.export import ExportError

    try:
        return _run(args, shlex.join(["python", "-m", "training", *argv]))
    except (DatasetError, ExportError) as exc:
        log.error("%s", exc)
        return 1


def _run(args: argparse.Namespace, command: str) -> int:
    if args.command == "datasets":
        from training.config import DEFAULTS

        for name, cfg in DEFAULTS.items():
            sys.stdout.write(f"{name}: {json.dumps(cfg.to_dict())}\n")
        return 0
    if args.command == "evaluate":
        from service import metadata as contract
        from training.evaluate import evaluate_version

        for version_dir in contract.latest_version_dirs(args.repository):
            ev = evaluate_version(version_dir, args.data_dir)
            sys.stdout.write(
                f"{ev.name} v{ev.version}: accuracy {ev.accuracy:.4f} on {ev.n_samples} "
                f"(recorded {ev.recorded_accuracy:.4f}), {ev.onnx_bytes:,} bytes\n"
            )
        return 0
    config = _config(args)
    if args.command == "lr-find":
        from training import datasets, lr_finder

        dataset = datasets.load(config.dataset, args.data_dir)
        sweep = lr_finder.run_sweep(config, dataset, args.epochs, args.start, args.steps_per_epoch)
        out = args.output or REPO_ROOT / "reports" / f"lr-{config.dataset}.png"
        lr_finder.plot_sweep(sweep, f"{config.dataset}: learning-rate sweep", out)
        sys.stdout.write(
            f"loss minimum at lr={sweep.best_rate:.3g}; suggested learning rate "
            f"{sweep.suggested_rate:.3g} (plot: {out})\n"
        )
        return 0
    from training.pipeline import train_and_export

    published = train_and_export(
        config, args.repository, args.data_dir, verbose=0 if args.quiet else "auto", command=command
    )
    sys.stdout.write(f"{published}\n")
    return 0
