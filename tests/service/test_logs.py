"""service.logs.JsonFormatter: one JSON object per line, whatever the record carries."""

import json
import logging

from service.logs import JsonFormatter


def _record(msg="%s done", args=("predict",), exc_info=None, **extra):
    record = logging.LogRecord("service.x", logging.WARNING, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_fields_and_extras():
    line = JsonFormatter().format(_record(request_id="r-1", status=422, model=None, ms=1.5))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "service.x"
    assert entry["message"] == "predict done"
    assert entry["time"].endswith("+00:00")
    assert (entry["request_id"], entry["status"], entry["model"], entry["ms"]) == (
        "r-1",
        422,
        None,
        1.5,
    )
    assert not {"args", "msg"} & set(entry)  # logging's own attributes stay out


def test_exception_and_odd_values():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record(exc_info=sys.exc_info(), path=object(), huge=2**70, text="é")
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]
    assert entry["huge"] == 2**70  # beyond orjson's 64 bits: the json fallback writes it
    assert entry["path"].startswith("<object object")
    assert entry["text"] == "é"


def test_time_is_utc_iso_with_milliseconds_across_seconds():
    from datetime import UTC, datetime

    formatter = JsonFormatter()  # one formatter: its cached second must not go stale
    for created in (1700000000.0, 1700000000.9996, 1700000001.5, 1699999999.001, 1767225599.999):
        record = _record()
        record.created = created
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(record))["time"] == expected
