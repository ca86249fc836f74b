"""Run the docs' console examples against a live service; check or rewrite their output.

    python scripts/docs_examples.py                     # check against localhost:8000
    python scripts/docs_examples.py --write             # record the real output in the docs
    python scripts/docs_examples.py --url http://127.0.0.1:8123 docs/api/v2.md

A console example is a ```console block in README.md or in a page under docs/: ``$ command``
lines (continued by a trailing ``\\``) each followed by the output it printed. Commands run in
bash from the repository root, with ``localhost:8000`` pointed at ``--url``. What differs from
run to run is masked before the comparison: request ids, dates, and the values of JSON keys
that hold a time (``*_ms``, ``*_s``, ``*_seconds``, ``latency``, ``timestamp``, ``time``,
``date``, ``created``). The last digits of a float may differ between CPU kernels, so JSON is
compared as data and other lines token by token, numbers to a relative 1e-5.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DEFAULT_URL = "http://localhost:8000"
_REQUEST_ID = re.compile(r'("request_id"\s*:\s*)"[^"]*"')
_DATE = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_TIME_KEYS = {"latency", "timestamp", "time", "date", "created"}
_TIME_SUFFIXES = ("_ms", "_s", "_seconds")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?(e[-+]?\d+)?$", re.IGNORECASE)
_TOKEN = re.compile(r"([\s\[\]\(\),:'\"])")


@dataclass
class Example:
    """One command of a console block and the output recorded under it."""

    command: str
    output: list[str]
    line: int  # where the command starts in its file (0-based)
    path: Path = README


def documents() -> list[Path]:
    """Every markdown file whose examples are checked: the README and the docs site."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def examples(text: str, path: Path = README) -> list[Example]:
    """Every command in every ```console block, in order."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            if not lines[i].startswith("$ ") or lines[i].startswith("$ #"):
                i += 1
                continue
            start, command = i, lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command + "\n" + lines[i]
            i += 1
            output = []
            while i < len(lines) and lines[i].strip() != "```" and not lines[i].startswith("$"):
                if lines[i].strip():
                    output.append(lines[i])
                i += 1
            found.append(Example(command, output, start, path))
        i += 1
    return found


def all_examples(paths: list[Path] | None = None) -> list[Example]:
    """The examples of every document (or of ``paths``), file by file."""
    return [e for path in paths or documents() for e in examples(path.read_text(), path)]


def run(example: Example, url: str) -> list[str]:
    """The command's output lines, run against ``url``."""
    host = url.removeprefix("http://").removeprefix("https://").rstrip("/")
    command = example.command.replace("localhost:8000", host)
    out = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        raise RuntimeError(f"{example.command!r} exited with {out.returncode}: {out.stderr}")
    return [line for line in out.stdout.splitlines() if line.strip()]


def _close(a: float, b: float) -> bool:
    """Equal but for the last digits CPU kernels may change: relative 1e-5, so a probability
    of 2.5e-5 is still checked to its fifth digit (absolute 1e-9 only for near-zero ones)."""
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)


def _is_time_key(key: str) -> bool:
    key = key.lower()
    return key in _TIME_KEYS or key.endswith(_TIME_SUFFIXES)


def _same_value(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return _close(a, b)
    if isinstance(a, str) and isinstance(b, str):
        return _same_text(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_value, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(
            _same_value(a[k], b[k]) for k in a if k != "request_id" and not _is_time_key(k)
        )
    return a == b


def _mask(line: str) -> str:
    return _DATE.sub("<date>", _REQUEST_ID.sub(r'\1"-"', line))


def _same_text(recorded: str, got: str) -> bool:
    """Two lines of text alike but for dates and the last digits of their numbers."""
    a, b = _TOKEN.split(_mask(recorded)), _TOKEN.split(_mask(got))
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if _NUMBER.match(x) and _NUMBER.match(y):
            if not _close(float(x), float(y)):
                return False
        elif x != y:
            return False
    return True


def same_line(recorded: str, got: str) -> bool:
    """Whether a line printed now says what the recorded line says (see the module doc)."""
    try:
        return _same_value(json.loads(recorded), json.loads(got))
    except ValueError:
        return _same_text(recorded, got)


def _where(example: Example) -> str:
    return f"{example.path.relative_to(ROOT)}:{example.line + 1}"


def check(url: str, paths: list[Path] | None = None) -> list[str]:
    """Every difference between the docs and what their commands print now."""
    problems = []
    for example in all_examples(paths):
        try:
            got = run(example, url)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            problems.append(f"{_where(example)}: {error}")
            continue
        same = len(got) == len(example.output) and all(map(same_line, example.output, got))
        if not same:
            problems.append(
                f"{_where(example)}: {example.command!r}\n"
                f"  recorded: {example.output}\n  now:      {got}"
            )
    return problems


def write(url: str, paths: list[Path] | None = None) -> None:
    """Replace each command's recorded output, in its own file, with what it prints now
    (output that still matches is left as it is, so a re-recording changes only what
    changed)."""
    for path in paths or documents():
        lines = path.read_text().splitlines()
        found = examples("\n".join(lines), path)
        for example in reversed(found):
            end = example.line + example.command.count("\n") + 1
            stop = end
            while (
                stop < len(lines)
                and lines[stop].strip() != "```"
                and not lines[stop].startswith("$")
            ):
                stop += 1
            got = run(example, url)
            if len(got) == len(example.output) and all(map(same_line, example.output, got)):
                continue  # what is recorded still holds: keep it as it is
            blank = [""] if stop < len(lines) and lines[stop].startswith("$") else []
            lines[end:stop] = got + blank
        if found:
            path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="*", type=Path, help="only these (default: all docs)")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--write", action="store_true", help="record the real output")
    args = parser.parse_args(argv)
    paths = [path.resolve() for path in args.files] or None
    if args.write:
        write(args.url, paths)
        return 0
    problems = check(args.url, paths)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
