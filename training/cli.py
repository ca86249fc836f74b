"""``python -m training``: the command line (parsers); ``training.commands`` runs them."""

from __future__ import annotations

import argparse
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
    _add_hyper_flags(p)
    p.add_argument(
        "--data-dir",
        help="Fashion-MNIST IDX folder (default: $FASHION_MNIST_DIR, "
        "else /usr/share/datasets/fashion-mnist)",
    )


def _add_fit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="maximum epochs")
    p.add_argument("--validation-split", type=float, help="held-out fraction of train")
    p.add_argument("--patience", type=int, help="early-stopping patience (epochs)")
    p.add_argument("--lr-decay", choices=["none", "cosine"], help="learning-rate schedule")
    p.add_argument("--name", help="model name in the repository (default: dataset)")
    p.add_argument(
        "--repository",
        type=Path,
        default=DEFAULT_REPOSITORY,
        help="model repository folder (default: ./models)",
    )
    p.add_argument("--quiet", action="store_true", help="no Keras progress bar")


def _add_hyper_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=["mlp", "cnn"], help="network family")
    p.add_argument("--hidden", type=_int_list, help="MLP hidden sizes, e.g. 25-15")
    p.add_argument("--filters", type=_int_list, help="CNN block widths, e.g. 32-64")
    p.add_argument("--convs-per-block", type=int, help="CNN conv layers per block")
    p.add_argument("--dense", type=int, help="CNN dense layer width")
    p.add_argument("--dropout", type=float, help="dropout rate")
    p.add_argument("--batch-size", type=int, help="mini-batch size")
    p.add_argument("--learning-rate", "--lr", type=float, help="Adam learning rate")
    p.add_argument("--seed", type=int, help="random seed (weights, shuffling, split)")
    p.add_argument("--augment-shift", type=int, help="images: random shifts up to N pixels")
    p.add_argument(
        "--precision",
        choices=["float32", "mixed_bfloat16"],
        help="training arithmetic (the exported model is float32 either way)",
    )
    p.add_argument(
        "--augment-flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="images: random left-right mirroring",
    )
    p.add_argument(
        "--augment-erase",
        type=float,
        metavar="P",
        help="images: with chance P, a random rectangle (2-25%% of the image) becomes noise",
    )
    p.add_argument(
        "--mirror-average",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="images: the exported network averages the logits of the image "
        "and its mirror image (test-time augmentation; twice the inference "
        "work)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fit, export to ONNX, check parity, publish a version")
    _add_model_flags(train)
    _add_fit_flags(train)

    csv = sub.add_parser("train-csv", help="fit feature vectors from your own CSV file")
    csv.add_argument("file", type=Path, help="CSV with a header row")
    csv.add_argument("--target", required=True, help="the column holding the class labels")
    csv.add_argument("--features", type=_names, help="feature columns (default: all others)")
    csv.add_argument(
        "--categorical", type=_names, help="columns to treat as categories (e.g. codes 1,2,3)"
    )
    csv.add_argument("--numeric", type=_names, help="columns that must be numbers")
    csv.add_argument("--drop", type=_names, help="columns to leave out")
    csv.add_argument(
        "--missing",
        choices=["impute", "refuse"],
        default="impute",
        help="empty/NA cells: imputed from the training split (median, most frequent; with "
        "a missing-indicator feature), or refused in training and serving",
    )
    csv.add_argument(
        "--encode",
        choices=["one_hot", "ordinal"],
        default="one_hot",
        help="categories as one-hot slots (plus one for unknown values) or their index",
    )
    csv.add_argument(
        "--min-count",
        type=int,
        default=2,
        help="a category needs this many training rows for a slot of its own; rarer ones "
        "share the unknown slot (default 2)",
    )
    csv.add_argument("--test-fraction", type=float, default=0.2, help="held out for the test")
    _add_hyper_flags(csv)
    _add_fit_flags(csv)

    images = sub.add_parser("train-images", help="fit images from your own folder of classes")
    images.add_argument("folder", type=Path, help="one subfolder of images per class")
    images.add_argument("--size", type=_size, default=(32, 32), help="HxW or N (default 32)")
    images.add_argument(
        "--channels",
        type=int,
        choices=[1, 3],
        help="1 (grayscale) or 3 (RGB); default: 3 if any image has colour",
    )
    _add_picture_flags(images, "the images' background, for inverting uploads of the other kind")
    _add_resize_flags(images, None)
    images.add_argument("--test-fraction", type=float, default=0.2, help="held out for the test")
    _add_hyper_flags(images)
    _add_fit_flags(images)

    lr = sub.add_parser("lr-find", help="learning-rate sweep: plot and suggested rate")
    _add_model_flags(lr)
    lr.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="sweep length (5 epochs a decade is too coarse; 20 per decade is the lesson's)",
    )
    lr.add_argument("--start", type=float, default=1e-4, help="first learning rate")
    lr.add_argument("--steps-per-epoch", type=int, help="cap each sweep epoch (big datasets)")
    lr.add_argument("--output", type=Path, help="plot path (default: reports/lr-<dataset>.png)")

    ev = sub.add_parser("evaluate", help="re-score published models with onnxruntime")
    ev.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    ev.add_argument("--data-dir", help="Fashion-MNIST IDX folder")

    cal = sub.add_parser(
        "calibrate",
        help="fit temperature scaling for versions trained "
        "before calibration existed (built-in datasets)",
    )
    cal.add_argument("models", nargs="*", help="model names (default: every built-in one)")
    cal.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    cal.add_argument("--data-dir", help="Fashion-MNIST IDX folder")

    rs = sub.add_parser(
        "resize",
        help="re-publish an image model's version with a declared resize, as the next version",
    )
    rs.add_argument("model", help="the model's name in the repository")
    rs.add_argument("--version", type=int, help="the version to re-publish (default: latest)")
    rs.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    rs.add_argument(
        "--resize", choices=["stretch", "pad", "crop"], help="aspect (default: as it was)"
    )
    _add_resize_flags(rs, "bilinear")

    sub.add_parser("datasets", help="list datasets and their default training config")
    _import_parser(sub)
    return parser


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.5,0.4,0.3: {text!r}") from None


def _names(text: str) -> list[str]:
    """'a,b,c', or '@file' with one name per line."""
    if text.startswith("@"):
        try:
            lines = Path(text[1:]).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc}") from None
        return [line.strip() for line in lines if line.strip()]
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_picture_flags(p: argparse.ArgumentParser, background_help: str) -> None:
    """--background and --resize: how pictures of another kind or shape are fitted."""
    p.add_argument(
        "--background", choices=["dark", "light", "none"], default="none", help=background_help
    )
    p.add_argument(
        "--resize",
        choices=["stretch", "pad", "crop"],
        default="stretch",
        help="how a picture of another aspect ratio is fitted",
    )


def _add_resize_flags(p: argparse.ArgumentParser, default: str | None) -> None:
    """--interpolation and --antialias: the resize as tf.image.resize names it."""
    from service.contract.resize import INTERPOLATIONS

    p.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        default=default,
        help="how pictures are resized, as tf.image.resize names it"
        + (
            f" (default {default}: what Keras' image_dataset_from_directory and load_img do)"
            if default
            else " (default: the area resize models trained here have always used)"
        ),
    )
    p.add_argument(
        "--antialias",
        action="store_true",
        help="tf.image.resize's antialias: the kernel widens when it shrinks (with "
        "area, the fastest for photos: JPEGs are then decoded at a reduced size)",
    )


def _size(text: str) -> tuple[int, int]:
    """'32' or '28x32' -> (height, width)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 4:
        raise argparse.ArgumentTypeError(f"expected a size like 32 or 28x32, got {text!r}")
    return (parts[0], parts[-1])


def _fraction(text: str) -> float:
    """'1/255' or '0.0039'."""
    try:
        top, _, bottom = text.partition("/")
        return float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number like 1/255, got {text!r}") from None


def _import_parser(sub) -> None:
    p = sub.add_parser("import", help="serve your own model: .keras, .h5, SavedModel, .onnx")
    p.add_argument("path", type=Path, help="the model file or SavedModel folder")
    p.add_argument("--name", help="model name in the repository (default: the file's stem)")
    p.add_argument("--classes", type=_names, help="class names in output order: a,b,c or @file")
    p.add_argument(
        "--output",
        choices=["logits", "probabilities"],
        help="what the model outputs (required for .onnx; detected for Keras)",
    )
    p.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--features", type=_names, help="feature names, for vector inputs")
    p.add_argument(
        "--scale",
        type=_fraction,
        help="multiplier on raw 0-255 pixels applied by the service, for scaling done "
        "outside the model (default: read from the model: raw pixels when it has its own "
        "Rescaling/Normalization/preprocess_input, else 1/255)",
    )
    p.add_argument("--offset", type=float, help="added after --scale (default 0)")
    p.add_argument("--mean", type=_floats, help="per-channel mean subtracted after scale/offset")
    p.add_argument("--std", type=_floats, help="per-channel std divided by after the mean")
    _add_picture_flags(
        p,
        "what the model was trained on: light objects on dark (dark), dark "
        "on light (light), or whole scenes (none, never inverted)",
    )
    _add_resize_flags(p, "bilinear")
    p.add_argument(
        "--sample",
        type=Path,
        help="data for the parity check (and, with labels, "
        "evaluation and calibration): .npy, .npz (x, y), .csv, or an image folder",
    )
    p.add_argument("--target", help="the label column of a --sample CSV")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    from service.contract.metadata import MetadataError
    from training import commands
    from training.errors import Refused

    try:
        return commands.run(args, shlex.join(["python", "-m", "training", *argv]))
    except (Refused, MetadataError) as exc:
        log.error("%s", exc)
        return 1
