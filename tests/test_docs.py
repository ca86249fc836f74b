"""The README stays short and points at the docs site; every docs page is reachable from the
site's navigation; the metrics page names every metric the service exports. (The site itself
is built with ``mkdocs build --strict`` by scripts/test.sh; its examples are run by
tests/e2e/test_docs_examples.py.)"""

from __future__ import annotations

import os
import re

import yaml

from tests.helpers import ROOT

DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # links, not images


def _nav_pages(items) -> list[str]:
    pages = []
    for item in items:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_readme_is_at_most_200_lines():
    assert len(README.splitlines()) <= 200


def test_the_readme_gives_the_two_commands_ci_runs_and_a_working_example():
    assert "bash scripts/serve.sh" in README
    assert "bash scripts/test.sh" in README
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "```console\n$ curl" in README  # run and compared by tests/e2e/test_docs_examples.py
    assert "docs/images/console.png" in README


def test_the_readme_links_resolve():
    targets = [t for t in _LINK.findall(README) if not re.match(r"[a-z]+:", t)]
    assert len(targets) > 10
    for target in targets:
        path = target.split("#")[0]
        assert (ROOT / path).exists(), target


def test_every_docs_page_is_in_the_site_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["theme"]["name"] == "material"
    assert config["theme"]["font"] is False  # no Google Fonts fetched
    nav = _nav_pages(config["nav"])
    assert len(nav) == len(set(nav))
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages


def test_the_metrics_page_names_every_metric_the_service_exports():
    source = (ROOT / "service" / "metrics.py").read_text()
    names = re.findall(r'(?:Counter|Gauge|Histogram)\(\s*"([a-z_]+)"', source)
    assert len(names) > 15
    page = (DOCS / "operations" / "metrics.md").read_text()
    for name in names:
        assert f"| `{name}` |" in page, name


def test_nothing_names_the_old_examples_script():
    old = "readme" + "_examples"  # scripts/docs_examples.py, tests/e2e/test_docs_examples.py
    for folder in ("docs", "scripts", "tests", ".ci"):
        for parent, dirs, files in os.walk(ROOT / folder):
            dirs[:] = [d for d in dirs if d not in {"node_modules", "__pycache__"}]
            for name in files:
                if name.endswith((".md", ".py", ".sh", ".yml", ".yaml")) or folder == ".ci":
                    path = os.path.join(parent, name)
                    with open(path, encoding="utf-8") as file:
                        assert old not in file.read(), path
    assert old not in README


def test_every_recorded_command_is_run_by_a_test():
    """`$ command` lines with output live in console blocks (tests/e2e/test_docs_examples.py)
    or in the walkthroughs (own-models: tests/e2e/test_walkthrough.py, test_tabular.py;
    rollouts: test_rollouts.py), nowhere else."""
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        text = page.read_text()
        walkthroughs = {
            "own-models.md": ("walkthrough", "tabular-walkthrough"),
            "rollouts.md": ("rollout-walkthrough",),
        }
        if page.name in walkthroughs:
            for name in walkthroughs[page.name]:
                start, end = (
                    text.index(f"<!-- {name}:start -->"),
                    text.index(f"<!-- {name}:end -->"),
                )
                text = text[:start] + text[end:]
        fence = None
        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith("```"):
                fence = None if fence else line
            elif fence and fence != "```console":
                assert not line.startswith("$ "), f"{page.name}:{number}: {line}"
