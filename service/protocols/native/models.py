"""The native model views: /models, one model, one version, its report files, and the
model-control API (load, unload)."""

from __future__ import annotations

import os
import stat
from typing import Any

from service.errors import NotFound, ValidationFailed
from service.http.messages import Request, Response, json_response
from service.inference.shadow import summaries
from service.models.registry import ModelEntry, ModelView
from service.protocols.serving import Serving


def _metrics_view(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Test metrics without the per-class table, and the calibration figures; None when an
    imported model has neither."""
    test = metrics.get("test")
    view = {k: v for k, v in test.items() if k != "per_class"} if test else {}
    if "calibration" in metrics:
        view["calibration"] = metrics["calibration"]
    return view or None


def version_view(
    entry: ModelEntry, full: bool = False, model: ModelView | None = None
) -> dict[str, Any]:
    """Status (and why not served), provider, labels, weight, and the metadata a client
    needs (all of it when ``full``)."""
    view: dict[str, Any] = {
        "name": entry.name,
        "version": entry.version,
        "status": entry.status,
        "error": entry.error,
        "provider": entry.provider,
        "load_seconds": round(entry.load_seconds, 4),
    }
    if model is not None:
        view["role"] = model.role(entry.version)
        view["labels"] = model.labels_of(entry.version)
        shares = model.chooser.shares if model.chooser else {}
        view["weight"] = round(shares[entry.version], 6) if entry.version in shares else None
    if entry.notice:
        view["notice"] = entry.notice
    meta = entry.metadata
    if meta:
        view.update(
            task=meta["task"],
            classes=meta["classes"],
            input=meta["input"],
            output=meta["output"],
            preprocessing=meta["preprocessing"],
            metrics=_metrics_view(meta["metrics"]),
        )
        if full:
            view["metadata"] = meta
    if full:
        view["report"] = report_files(entry)
    return view


_REPORT_TYPES = {
    ".png": "image/png",
    ".md": "text/markdown; charset=utf-8",
    ".json": "application/json",
}


def _real_report_file(entry: ModelEntry, name: str) -> str | None:
    """The real path of a report file, or None where it (through a symlink) leaves the
    version's ``report/`` folder: a link to ``/etc/passwd``, to another model, or to the
    version's own ``model.onnx`` is not a report file; one to a file beside it is."""
    folder = os.path.join(os.path.realpath(entry.path), "report")
    real = os.path.realpath(os.path.join(folder, name))
    return real if os.path.dirname(real) == folder and os.path.isfile(real) else None


def report_files(entry: ModelEntry) -> list[str]:
    """The files of the version's training report (plots and its README), by name."""
    try:
        with os.scandir(entry.path / "report") as found:
            return sorted(
                f.name
                for f in found
                if not f.name.startswith(".")
                and os.path.splitext(f.name)[1] in _REPORT_TYPES
                and _real_report_file(entry, f.name)
            )
    except OSError:
        return []


def get_report_file(serving: Serving, request: Request) -> Response:
    """GET /models/{model}/versions/{version}/report/{filename}: a file of the training
    report (the reliability diagram, training curves, confusion matrix, README)."""
    model = serving.registry.model(request.params["model"])
    entry = model.version(request.params["version"])
    name = request.params["filename"]
    real = _real_report_file(entry, name) if name in report_files(entry) else None
    if real is None:
        raise NotFound(
            f"model {entry.name!r} version {entry.version} has no report file "
            f"{name!r}; see 'report' in /models/{entry.name}/versions/"
            f"{entry.version}"
        )
    try:  # the checked path, not a link swapped in since; never a FIFO's endless read
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise OSError("not a regular file")
            data = file.read()
    except OSError:
        raise NotFound(f"report file {name!r} could not be read") from None
    return Response(
        data,
        content_type=_REPORT_TYPES[os.path.splitext(name)[1]],
        headers=(("Cache-Control", "no-cache"),),
    )


def model_view(
    serving: Serving, model: ModelView, comparisons: list[dict] | None = None
) -> dict[str, Any]:
    """A model with every version, its serving rules (serving.json) and its shadow's
    comparisons so far (all workers)."""
    in_service = model.in_service
    name, shadow = model.name, model.config.shadow
    if comparisons is None:
        comparisons = summaries({name: model}).get(name)
    view = {
        "name": name,
        "latest_version": in_service[-1].version if in_service else None,
        "default": name == serving.registry.default_model()[0],
        "serving": {**model.config.to_dict(), "problems": list(model.problems)},
        "versions": [version_view(e, False, model) for e in model.entries.values()],
    }
    if shadow or comparisons:
        view["shadow"] = {
            "version": shadow[0] if shadow else None,
            "fraction": shadow[1] if shadow else None,
            "compared_with": sorted(model.shadow_for),
            "comparisons": comparisons or [],
        }
    return view


def list_models(serving: Serving, request: Request) -> Response:
    """GET /models."""
    models = serving.registry.models  # one snapshot
    found = summaries(models)
    return json_response(
        {
            "default_model": serving.registry.default_model()[0],
            "models": [model_view(serving, models[n], found.get(n, [])) for n in sorted(models)],
        }
    )


def get_model(serving: Serving, request: Request) -> Response:
    """GET /models/{model}."""
    model = serving.registry.model(request.params["model"])
    return json_response(model_view(serving, model))


def get_version(serving: Serving, request: Request) -> Response:
    """GET /models/{model}/versions/{version} (a number or a label)."""
    model = serving.registry.model(request.params["model"])
    entry = model.version(request.params["version"])
    return json_response(version_view(entry, True, model))


def control(serving: Serving, request: Request) -> Response:
    """POST /models/{model}/load | /unload: serve a model again (re-reading its folder) or
    stop serving it, in every worker. 200 with the model as this worker now serves it;
    a load where no version could be loaded is a 422 that says why."""
    name, action = request.params["model"], request.path.rsplit("/", 1)[1]
    lifecycle = serving.lifecycle
    model = lifecycle.load(name) if action == "load" else lifecycle.unload(name)
    if action == "load" and not model.served:
        raise ValidationFailed(
            f"model {name!r}: no version could be loaded",
            details={str(e.version): e.error for e in model.entries.values()},
        )
    return json_response(model_view(serving, model))


def promote(serving: Serving, request: Request) -> Response:
    """POST /models/{model}/versions/{version}/promote: under new_versions hold, the version
    answers the requests that name no version, in every worker of this instance."""
    model = serving.lifecycle.promote(request.params["model"], request.params["version"])
    return json_response(model_view(serving, model))
