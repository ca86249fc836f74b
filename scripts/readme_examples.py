"""Run the README's console examples against a live service; check or rewrite their output.

    python scripts/readme_examples.py                   # check against localhost:8000
    python scripts/readme_examples.py --write           # record the real output in README.md
    python scripts/readme_examples.py --url http://127.0.0.1:8123

A console example is a ```console block: ``$ command`` lines (continued by a trailing ``\\``)
each followed by the output it printed. Commands run in bash from the repository root, with
``localhost:8000`` pointed at ``--url``. Request ids and dates differ from run to run, and the
last digits of a float may differ between CPU kernels, so the check compares JSON as data
(numbers to 1e-6) and other lines token by token (numbers to 1e-6).
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
DEFAULT_URL = "http://localhost:8000"
_REQUEST_ID = re.compile(r'"request_id":"[0-9a-f]{32}"')
_NUMBER = re.compile(r"^-?\d+(\.\d+)?(e[-+]?\d+)?$", re.IGNORECASE)


@dataclass
class Example:
    """One command of a console block and the output recorded under it."""

    command: str
    output: list[str]
    line: int  # where the command starts in README.md (0-based)


def examples(text: str) -> list[Example]:
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
            found.append(Example(command, output, start))
        i += 1
    return found


def run(example: Example, url: str) -> list[str]:
    """The command's output lines, run against ``url``."""
    host = url.removeprefix("http://").removeprefix("https://").rstrip("/")
    command = example.command.replace("localhost:8000", host)
    out = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{example.command!r} exited with {out.returncode}: {out.stderr}")
    return [line for line in out.stdout.splitlines() if line.strip()]


def _same_value(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    if isinstance(a, str) and isinstance(b, str):
        return _same_line(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_value, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return a == b


def _same_line(recorded: str, got: str) -> bool:
    recorded, got = (
        _REQUEST_ID.sub('"request_id":"-"', recorded),
        _REQUEST_ID.sub('"request_id":"-"', got),
    )
    try:
        return _same_value(json.loads(recorded), json.loads(got))
    except ValueError:
        pass
    split = re.compile(r"([\s\[\]\(\),:'\"])")
    a, b = split.split(recorded), split.split(got)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if _NUMBER.match(x) and _NUMBER.match(y):
            if not math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-6):
                return False
        elif x != y:
            return False
    return True


def check(url: str) -> list[str]:
    """Every difference between the README and what the commands print now."""
    problems = []
    for example in examples(README.read_text()):
        got = run(example, url)
        same = len(got) == len(example.output) and all(map(_same_line, example.output, got))
        if not same:
            problems.append(f"README.md:{example.line + 1}: {example.command!r}\n"
                            f"  recorded: {example.output}\n  now:      {got}")  # fmt: skip
    return problems


def write(url: str) -> None:
    """Replace each command's recorded output with what it prints now."""
    lines = README.read_text().splitlines()
    for example in reversed(examples("\n".join(lines))):
        end = example.line + example.command.count("\n") + 1
        stop = end
        while (
            stop < len(lines) and lines[stop].strip() != "```" and not lines[stop].startswith("$")
        ):
            stop += 1
        got = run(example, url)
        blank = [""] if stop < len(lines) and lines[stop].startswith("$") else []
        lines[end:stop] = got + blank
    README.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--write", action="store_true", help="record the real output")
    args = parser.parse_args(argv)
    if args.write:
        write(args.url)
        return 0
    problems = check(args.url)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
