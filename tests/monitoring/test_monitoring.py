"""The ready-made monitoring: alert rules checked by promtool, dashboard queries checked
against the metrics the service really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from service import metrics
from tests.helpers import ROOT

MONITORING = ROOT / "monitoring"
PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "by",
    "without",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "ignoring",
    "group_left",
    "group_right",
    "on",
    "offset",
    "abs",
    "and",
    "or",
    "unless",
    "bool",
    "le",
    "label_values",
    "topk",
}


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: scripts/test.sh installs Debian's prometheus package"
    return path


def test_alert_rules_pass_promtool_check():
    out = subprocess.run(
        [_promtool(), "check", "rules", str(MONITORING / "alerts.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 10 rules found" in out.stdout


def test_alert_rules_fire_as_their_unit_tests_expect():
    out = subprocess.run(
        [_promtool(), "test", "rules", str(MONITORING / "alerts_test.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _alert_names() -> list[str]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not():
    cases = [
        case
        for test in yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for name in _alert_names():
        expected = [case.get("exp_alerts") or [] for case in cases if case["alertname"] == name]
        assert any(expected), f"{name}: no case where it fires"
        assert not all(expected), f"{name}: no case where it must stay silent"


def test_the_shipped_prometheus_config_passes_promtool_and_loads_the_rules():
    config_file = MONITORING / "prometheus.yml"
    out = subprocess.run(
        [_promtool(), "check", "config", str(config_file)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 1 rule files found" in out.stdout
    assert "SUCCESS: 10 rules found" in out.stdout
    config = yaml.safe_load(config_file.read_text())
    # Prometheus resolves rule_files relative to the config file: alerts.yml next to it.
    assert [(config_file.parent / f).resolve() for f in config["rule_files"]] == [
        (MONITORING / "alerts.yml").resolve()
    ]
    # tests/e2e loads this file and swaps the target: keep that path there.
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "keras-classifier-serving"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8000"]


def exported() -> dict[str, set[str]]:
    """Every sample name the service can export, with its label names."""
    names: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, Counter | Gauge | Histogram):
            continue
        labels = set(metric._labelnames)
        if isinstance(metric, Counter):
            suffixes = ["_total"]
        elif isinstance(metric, Histogram):
            suffixes, labels = ["_bucket", "_sum", "_count"], labels | {"le"}
        else:
            suffixes = [""]
        for suffix in suffixes:
            names[metric._name + suffix] = labels | {"job", "instance"}
    return names


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # drop string literals (label values)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # drop range selectors
    expr = re.sub(r"\boffset\s+\w+", "", expr)  # and offsets
    expr = re.sub(r"\b(by|without|ignoring|on)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not w.startswith("$")}


def _labels_used(expr: str) -> set[str]:
    used = set()
    for group in re.findall(r"\b(?:by|without|ignoring|on)\s*\(([^)]*)\)", expr):
        used |= {g.strip() for g in group.split(",") if g.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    return used


def _dashboard_queries() -> list[str]:
    board = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"].replace("label_values(", "").rsplit(",", 1)[0])
    return queries


def test_dashboard_covers_the_issue_panels():
    board = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    titles = " | ".join(p["title"] for p in board["panels"]).lower()
    for topic in (
        "request rate",
        "latency percentiles",
        "inference vs preprocessing",
        "class distribution",
        "confidence",
        "per-model p99",
        "shadow agreement",
        "label flips",
        "dropped",
    ):
        assert topic in titles


def _uses_only_exported(expr: str) -> None:
    """Every metric a query names is one the service exports, with labels it has."""
    known = exported()
    names = _metric_names(expr)
    assert names, expr
    assert names <= set(known), names - set(known)
    allowed = set().union(*(known[n] for n in names))
    assert _labels_used(expr) <= allowed, _labels_used(expr) - allowed


@pytest.mark.parametrize("expr", _dashboard_queries())
def test_dashboard_queries_use_only_exported_metrics_and_labels(expr):
    _uses_only_exported(expr)


def test_the_checker_rejects_an_unknown_metric():
    assert _metric_names('sum(rate(http_requests_totl{job="x"}[5m]))') == {"http_requests_totl"}
    assert not _metric_names("sum(rate(http_requests_totl[5m]))") <= set(exported())


ALERT_EXPRS = re.findall(
    r"expr: \|?\n?((?:.+\n)+?)\s+for:", (MONITORING / "alerts.yml").read_text()
)


def test_every_alert_expr_is_checked():
    assert len(ALERT_EXPRS) == len(_alert_names())  # each rule has a `for:` after its expr


@pytest.mark.parametrize("expr", ALERT_EXPRS)
def test_alert_rules_use_only_exported_metrics_and_labels(expr):
    _uses_only_exported(expr)
