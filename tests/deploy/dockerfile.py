"""A small reader for our Dockerfile and .dockerignore (no Docker engine here)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    """One FROM ... AS name block."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every instruction with this keyword, in order."""
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip()))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    """ENV key=value pairs of a stage (PATH left out: it refers to the image's own paths)."""
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            env[key] = value
    env.pop("PATH", None)
    return env


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from=...)."""
    found = []
    for args in stage.all("COPY"):
        parts = shlex.split(args)
        if any(p.startswith("--from=") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        found.append((parts[:-1], parts[-1]))
    return found


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) instruction argument."""
    return json.loads(args)


def dockerignore_patterns(path: Path) -> list[tuple[bool, str]]:
    """(is_exception, pattern) lines of a .dockerignore."""
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def _glob_regex(pattern: str) -> str:
    """Docker's glob: ``*`` and ``?`` stay within a path segment, ``**`` crosses them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def _matches(pattern: str, relpath: str) -> bool:
    """A pattern matches a path or any of its parent directories."""
    regex = _glob_regex(pattern)
    parts = relpath.split("/")
    return any(re.fullmatch(regex, "/".join(parts[: i + 1])) for i in range(len(parts)))


def in_build_context(relpath: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether a file is sent to the builder: the last matching pattern decides."""
    included = True
    for negate, pattern in patterns:
        if _matches(pattern, relpath):
            included = negate
    return included
