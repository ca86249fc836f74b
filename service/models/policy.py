"""Which versions of a model to serve: the version policy as pure functions.

No files, no sessions, no clock: given what the repository holds, the control record and
serving.json, these say which versions are candidates, which of them the policy wants, and
what is wrong with the rules as they stand. The lifecycle loads what they pick.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from service.models.serving_config import ServingConfig

UNLOADED_BY_API = "unloaded through the model-control API"
NOT_LOADED_EXPLICIT = "not loaded (explicit model control: load it through the API)"


def candidates(
    versions: Mapping[int, Any], control: Mapping[str, Any] | None, explicit: bool
) -> tuple[dict[int, Any], str]:
    """The versions that may be served (number -> fingerprint), and why the others are not:
    none after an API unload; in explicit mode those the control record names; else all."""
    if control and control.get("action") == "unload":
        return {}, UNLOADED_BY_API
    if explicit:
        wanted = set(control.get("versions", [])) if control else set()
        return {v: fp for v, fp in versions.items() if v in wanted}, NOT_LOADED_EXPLICIT
    return dict(versions), ""


def wanted(config: ServingConfig, number: int, newer_served: int) -> bool:
    """Whether the policy serves ``number`` when ``newer_served`` newer versions already
    serve under it (``latest N`` counts only versions that loaded)."""
    if config.policy == "all":
        return True
    if config.policy == "latest":
        return newer_served < config.latest
    return number in config.specific


def problems(
    config: ServingConfig, served: Collection[int], ignored: Collection[str], any_candidate: bool
) -> tuple[list[str], dict[int, float]]:
    """What is wrong with the rules given the versions served, and the weights that apply
    (those naming a served version)."""
    found = [
        f"folder {n!r} is not a version number (1, 2, ... without leading zeros): ignored"
        for n in ignored
    ]
    if any_candidate:  # (an unloaded model's labels name nothing served, as expected)
        found += [
            f"label {label!r} names version {v}, which is not served"
            for label, v in config.labels.items()
            if v not in served
        ]
    weights = {v: w for v, w in config.weights.items() if v in served}
    if config.weights and not weights and any_candidate:
        found.append(
            "no version that the weights name is served: requests without a version get the latest"
        )
    return found, weights


def promoted(
    config: ServingConfig,
    versions: Collection[int],
    record: Mapping[str, Any] | None,
    previous: Collection[int] = (),
) -> frozenset[int] | None:
    """Under ``new_versions: hold``, the versions promoted (the only ones that may answer a
    request that names no version); None where new versions serve.

    serving.json decides where it names them (the label ``stable``, the weights, the
    ``specific`` list); else the instance's record (the last promoted set, or a promotion
    through the control API); else what answered under the rules before (hold just turned
    on); else a model's only version. Otherwise nothing is promoted: a new instance cannot
    know which of several versions was serving, and refuses rather than guess."""
    if not config.hold:
        return None
    named = config.promoted()
    if named:
        return frozenset(named)
    if record and record.get("promoted"):
        return frozenset(int(v) for v in record["promoted"])
    if previous:
        return frozenset(previous)
    return frozenset(versions) if len(versions) == 1 else frozenset()


def unversioned(
    weighted: Collection[int], loaded: Collection[int], promoted: frozenset[int] | None
) -> set[int]:
    """The versions that answer requests naming none: those weighted, else the newest
    loaded one in service (under hold, promoted); none where none is."""
    if weighted:
        return set(weighted)
    in_service = [v for v in loaded if promoted is None or v in promoted]
    return {max(in_service)} if in_service else set()


def held(promoted: frozenset[int] | None, number: int) -> bool:
    """A candidate that is loaded whatever the policy says: newer than every promoted
    version (under hold)."""
    return promoted is not None and number not in promoted and number > max(promoted, default=0)


def role(
    config: ServingConfig, number: int, promoted: frozenset[int] | None, unversioned: bool
) -> str:
    """What a version the rules serve is for: ``shadow`` (the shadow version, answering no
    request that names no version), ``candidate`` (under hold, not promoted: it answers
    only requests that name it) or ``serving``."""
    if config.shadow and config.shadow[0] == number and not unversioned:
        return "shadow"
    if promoted is not None and number not in promoted:
        return "candidate"
    return "serving"


def shadow(
    config: ServingConfig, entries: Mapping[int, Any], roles: Mapping[int, str], problems: list[str]
) -> tuple[Any, frozenset[int]]:
    """The shadow version where it can be compared, and the serving versions it is compared
    with: those that take the same input tensor and have the same classes."""
    if config.shadow is None:
        return None, frozenset()
    number = config.shadow[0]
    entry = entries.get(number)
    if entry is None or not entry.loaded:
        why = "is not in the repository" if entry is None else f"is {entry.status}"
        problems.append(f"shadow version {number} {why}: nothing is compared")
        return None, frozenset()
    if roles.get(number) != "shadow":
        problems.append(
            f"shadow version {number} answers requests that name no version: nothing to "
            "compare it with (hold it, new_versions hold, or weight it out)"
        )
        return None, frozenset()
    same, other = [], []
    for v, e in entries.items():
        if e.loaded and roles.get(v) == "serving":
            alike = all(
                e.metadata[k] == entry.metadata[k] for k in ("input", "preprocessing", "classes")
            )
            (same if alike else other).append(v)
    if other:
        problems.append(
            f"shadow version {number} takes other inputs or classes than version(s) {other}: "
            "their answers are not compared"
        )
    return entry, frozenset(same)
