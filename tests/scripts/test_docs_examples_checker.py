"""scripts/docs_examples.py: how recorded output is compared with what a command prints now,
how examples are found, and that --write records output in the file it came from."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import docs_examples

RESPONSE = {
    "request_id": "1c03dbb632f90fda0000000000000029",
    "model": {"name": "circles", "version": 1},
    "predictions": [
        {
            "label": "inner",
            "confidence": 0.9999998581916633,
            "probabilities": {"inner": 0.9999998581916633, "outer": 1.4180833673993476e-7},
        }
    ],
    "load_seconds": 0.0065,
    "timings": {"duration_ms": 1.41, "queue_s": 0.002, "latency": 3.0},
    "created_at": "2026-11-21T02:31:38.098+00:00",
    "timestamp": 1795288228.7,
}


def changed(**what) -> str:
    """RESPONSE with some values replaced, as the service prints it (compact JSON)."""
    document = json.loads(json.dumps(RESPONSE))
    for path, value in what.items():
        *parents, last = path.split("__")
        target = document
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[last] = value
    return json.dumps(document, separators=(",", ":"))


RECORDED = json.dumps(RESPONSE, separators=(",", ":"))


def test_the_same_output_is_the_same():
    assert docs_examples.same_line(RECORDED, RECORDED)
    assert docs_examples.same_line(RECORDED, json.dumps(RESPONSE, indent=1).replace("\n", ""))


def test_a_probability_beyond_the_tolerance_is_a_difference():
    assert not docs_examples.same_line(RECORDED, changed(predictions__0__confidence=0.9998))
    moved = {"inner": 0.99, "outer": 0.01}
    assert not docs_examples.same_line(RECORDED, changed(predictions__0__probabilities=moved))
    # Small probabilities are compared to their fifth digit too, not to an absolute 1e-6.
    assert not docs_examples.same_line('{"p": 2.5471e-5}', '{"p": 2.5571e-5}')
    assert not docs_examples.same_line("Sneaker 0.000025471", "Sneaker 0.000026471")


def test_the_last_digits_of_a_float_are_not_a_difference():
    assert docs_examples.same_line(RECORDED, changed(predictions__0__confidence=0.99999986))
    assert docs_examples.same_line('{"a": 1.4180834e-7}', '{"a": 1.4180833673993476e-7}')
    assert docs_examples.same_line('{"a": 1}', '{"a": 1.0}')  # numbers compare as numbers


def test_labels_keys_and_shapes_must_match():
    assert not docs_examples.same_line(RECORDED, changed(predictions__0__label="outer"))
    assert not docs_examples.same_line('{"a": 1}', '{"a": 1, "b": 2}')
    assert not docs_examples.same_line('{"a": [1, 2]}', '{"a": [1, 2, 3]}')
    assert not docs_examples.same_line('{"a": true}', '{"a": 1}')


def test_request_ids_and_times_are_masked():
    assert docs_examples.same_line(RECORDED, changed(request_id="f" * 32))
    assert docs_examples.same_line(RECORDED, changed(request_id="demo-1"))
    assert docs_examples.same_line(
        RECORDED,
        changed(
            load_seconds=2.5,
            timings__duration_ms=99.0,
            timings__queue_s=7,
            timings__latency=0.1,
            created_at="2027-01-02T03:04:05Z",
            timestamp=1.0,
        ),
    )
    for key in ("time", "date", "created", "last_seconds", "wait_s", "took_ms"):
        assert docs_examples.same_line(f'{{"{key}": 1}}', f'{{"{key}": 2}}'), key
    assert not docs_examples.same_line('{"seconds_left": 1}', '{"seconds_left": 2}')


def test_dates_in_text_are_masked():
    assert docs_examples.same_line("built 2026-11-21 12:00:01 ok", "built 2027-01-30 08:15:00 ok")
    assert docs_examples.same_line('{"note": "on 2026-11-21"}', '{"note": "on 2026-12-01"}')
    assert not docs_examples.same_line("built 2026-11-21 ok", "failed 2026-11-21 ok")


def test_lines_that_are_not_json_compare_token_by_token():
    assert docs_examples.same_line("[b'Ankle boot'] 0.9999982", "[b'Ankle boot'] 0.99999821")
    assert not docs_examples.same_line("[b'Ankle boot'] 0.99", "[b'Ankle boot'] 0.98")
    assert not docs_examples.same_line("[b'Ankle boot'] 0.99", "[b'Sneaker'] 0.99")
    assert docs_examples.same_line("blobs v1: 3,726 bytes", "blobs v1: 3,726 bytes")
    assert not docs_examples.same_line("blobs v1: 3,726 bytes", "blobs v1: 3,727 bytes")


PAGE = """# A page

```console
$ echo '{"a": 1}'
{"a": 2}

$ # a comment, not a command
$ printf 'one\\n' \\
    && printf 'two\\n'
stale
```

```bash
$ echo not run
```
"""


def test_examples_are_the_commands_of_console_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    found = docs_examples.examples(PAGE, page)
    assert [e.command for e in found] == [
        "echo '{\"a\": 1}'",
        "printf 'one\\n' \\\n    && printf 'two\\n'",
    ]
    assert [e.output for e in found] == [['{"a": 2}'], ["stale"]]
    assert [e.line for e in found] == [3, 7]
    assert {e.path for e in found} == {page}


def test_write_records_the_output_in_the_file_it_came_from(tmp_path):
    page, other = tmp_path / "page.md", tmp_path / "other.md"
    page.write_text(PAGE)
    block = "# Other\n\n```console\n$ echo other\n{}\n\n$ echo 0.50000001\n0.5\n```\n"
    other.write_text(block.format("old"))
    docs_examples.write("http://localhost:8000", [page, other])
    assert page.read_text() == PAGE.replace('{"a": 2}', '{"a": 1}').replace("stale", "one\ntwo")
    # what still matches is kept as recorded
    assert other.read_text() == block.format("other")
    assert docs_examples.check("http://localhost:8000", [page, other]) == []


def test_check_names_the_file_and_line_of_a_difference(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_examples, "ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    (problem,) = [p for p in docs_examples.check("http://x", [page]) if "stale" in p]
    assert problem.startswith("page.md:8: ")


@pytest.mark.parametrize("path", docs_examples.documents(), ids=lambda p: p.name)
def test_every_console_block_has_commands_and_recorded_output(path):
    text = path.read_text()
    found = docs_examples.examples(text, path)
    assert len(found) >= text.count("```console")
    for example in found:
        where = f"{path.name}:{example.line + 1}"
        assert example.output, f"{where}: {example.command!r} records nothing"
