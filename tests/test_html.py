"""HTML pages: one self-contained document, the terminal table's numbers, the chart inline, and
what a real browser shows of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import torchvision

from opscope import catalogue
from opscope import Profiler, zoo
from opscope.compare import ModelSummary, compare
from opscope.html import comparison_html, report_html
from opscope.format import format_count
from opscope.tables import comparison_grid, layer_grid, type_grid
from opscope.report import Report
from helpers import needs_matplotlib

SMALL = ["resnet18", "mobilenet_v3_small", "squeezenet1_1"]
URL = re.compile(r"^\s*[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class Page(HTMLParser):
    """The parts of a page the tests look at: tags, links, text and table rows."""

    VOID = {"meta", "br", "img", "link", "input", "hr", "wbr", "source", "col", "area", "base"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self.open: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data") and value:
                self.links.append(value)
            if name == "style" and value and "url(" in value:
                self.links.append(value)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.open.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] in ("style", "script"):
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def profile(name: str) -> Report:
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None).eval()
    with Profiler(model) as p:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    return p.report


@pytest.fixture(scope="module")
def resnet18() -> Report:
    return profile("resnet18")


@pytest.fixture(scope="module")
def summaries() -> list[ModelSummary]:
    return compare(catalogue.resolve(SMALL))


def check_self_contained(page: Page, text: str) -> None:
    assert not page.open, f"unclosed tags: {page.open}"
    assert text.startswith("<!DOCTYPE html>")
    assert {"html", "head", "body", "title", "style", "table"} <= set(page.tags)
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(page.tags)
    remote = [link for link in page.links if URL.match(link) or link.startswith("//")]
    assert not remote, f"links that need a network: {remote}"
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), "a stylesheet loads something"
    assert "@import" not in text


# --- the report page ---------------------------------------------------------------------


@needs_matplotlib
def test_a_report_page_is_one_self_contained_document(resnet18: Report) -> None:
    text = report_html(resnet18, title="resnet18 at 1×3×224×224", model="resnet18")
    page = Page(text)
    check_self_contained(page, text)
    assert page.tags.count("svg") == 1  # the chart, inline
    assert "<?xml" not in text and "<!DOCTYPE svg" not in text
    shown = page.all_text
    assert "resnet18" in shown and "1×3×224×224" in shown
    assert format_count(resnet18.total_ops) in shown
    assert f"{resnet18.total_ops:,}" in shown  # the exact total under the readable one


def test_the_report_tables_have_the_terminal_cells(resnet18: Report) -> None:
    page = Page(report_html(resnet18, title="resnet18"))
    layers = layer_grid(resnet18, wide=True)
    types = type_grid(resnet18)
    expected = [
        list(layers.headers), *map(list, layers.rows), *map(list, layers.footer),
        list(types.headers), *map(list, types.rows),
    ]  # fmt: skip
    assert page.rows == expected
    assert [row[0] for row in page.rows[1:4]] == ["conv1", "bn1", "relu"]


def test_sort_and_top_reach_the_table(resnet18: Report) -> None:
    page = Page(report_html(resnet18, title="resnet18", sort="ops", top=3))
    grid = layer_grid(resnet18, sort="ops", top=3, wide=True)
    assert page.rows[: 1 + 3 + len(grid.footer)] == [
        list(grid.headers), *map(list, grid.rows), *map(list, grid.footer)
    ]
    assert grid.footer[0][0] == f"… {len(resnet18.records) - 3} more rows"


def test_text_is_escaped(resnet18: Report) -> None:
    text = report_html(resnet18, title='<script>alert("x")</script> & co', model="<b>net</b>")
    page = Page(text)
    assert "script" not in page.tags and "b" not in page.tags
    assert '<script>alert("x")</script> & co' in page.all_text
    assert "&lt;script&gt;" in text and "&amp; co" in text


def test_an_empty_report_says_why(tmp_path: Path) -> None:
    text = report_html(Report(records=(), hooked_modules=0), title="empty")
    page = Page(text)
    assert "No counted modules" in page.all_text
    assert "svg" not in page.tags


def test_without_matplotlib_the_page_has_no_chart_and_says_why(
    resnet18: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text = report_html(resnet18, title="resnet18")
    page = Page(text)
    check_self_contained(page, text)
    assert "svg" not in page.tags
    assert "matplotlib is not installed" in page.all_text
    assert "pip install 'opscope[plot]'" in page.all_text
    assert format_count(resnet18.total_ops) in page.all_text


# --- the comparison page -----------------------------------------------------------------


@needs_matplotlib
def test_a_comparison_page_is_one_self_contained_document(summaries: list[ModelSummary]) -> None:
    text = comparison_html(summaries, title="Three small models")
    page = Page(text)
    check_self_contained(page, text)
    assert page.tags.count("svg") == 1
    shown = page.all_text
    for s in summaries:
        assert s.name in shown
        assert format_count(s.total_ops) in shown  # type: ignore[arg-type]
    grid = comparison_grid(summaries)
    assert page.rows == [list(grid.headers), *map(list, grid.rows)]


def test_a_failed_model_keeps_its_row_and_note() -> None:
    rows = compare(catalogue.resolve(["alexnet", "resnet18"]), (1, 3, 16, 16))
    page = Page(comparison_html(rows, title="tiny inputs"))
    assert "1 failed" in page.all_text
    alexnet = next(row for row in page.rows if row[0] == "alexnet")
    assert "Output size is too small" in alexnet[-1]


# --- in a real browser -------------------------------------------------------------------

BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
_install_tried: list[tuple[str, bool]] = []


def _find_chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _install_chromium() -> tuple[str, bool]:
    """Try once per session to install Chromium with apt: ``(why it failed or '', whether
    apt-get ran)``."""
    if _install_tried:
        return _install_tried[0]
    if os.environ.get("OPSCOPE_NO_BROWSER_INSTALL"):
        result = ("OPSCOPE_NO_BROWSER_INSTALL is set", False)
    elif shutil.which("apt-get") is None:
        result = ("there is no apt-get to install it with", False)
    elif hasattr(os, "geteuid") and os.geteuid() != 0:
        result = ("installing it needs root", False)
    else:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        reason = ""
        for command, limit in ((["apt-get", "update"], 300), (["apt-get", "install", "-y", "chromium"], 600)):
            try:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit)
            except subprocess.TimeoutExpired:
                reason = f"'{' '.join(command)}' took more than {limit} s"
                break
            if done.returncode != 0:
                last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                reason = f"'{' '.join(command)}' failed: {last[0]}"
                break
        result = (reason, True)
    _install_tried.append(result)
    return result


@pytest.fixture(scope="session")
def chromium(request: pytest.FixtureRequest) -> str:
    """The Chromium binary; installed with apt if missing (once: a failed install is
    remembered in pytest's cache, so later runs skip at once)."""
    found = _find_chromium()
    if found:
        return found
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    failed = cache.get("opscope/chromium-install-failed", None) if cache else None
    if failed:
        pytest.skip(f"Chromium is not installed (an earlier install failed: {failed}; "
                    "pytest --cache-clear tries again)")  # fmt: skip
    reason, attempted = _install_chromium()
    found = _find_chromium()
    if not found:
        reason = reason or "apt-get finished but no chromium binary is on the PATH"
        if cache and attempted:
            cache.set("opscope/chromium-install-failed", reason)
        pytest.skip(f"Chromium is not installed and could not be installed: {reason}")
    return found


def dump_dom(browser: str, page: Path, profile: Path) -> str:
    command = [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("Chromium took more than 120 s to load a local page")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@needs_matplotlib
def test_a_browser_opens_the_pages_offline(
    chromium: str, resnet18: Report, summaries: list[ModelSummary], tmp_path: Path
) -> None:
    report_page = tmp_path / "report.html"
    report_page.write_text(report_html(resnet18, title="resnet18 profile", model="resnet18"), "utf-8")
    compare_page = tmp_path / "compare.html"
    compare_page.write_text(comparison_html(summaries, title="small models"), "utf-8")

    dom = Page(dump_dom(chromium, report_page, tmp_path / "profile-1"))
    assert "resnet18 profile" in dom.all_text
    assert format_count(resnet18.total_ops) in dom.all_text
    assert "svg" in dom.tags and "table" in dom.tags
    assert [row[0] for row in dom.rows[1:3]] == ["conv1", "bn1"]

    dom = Page(dump_dom(chromium, compare_page, tmp_path / "profile-2"))
    for s in summaries:
        assert s.name in dom.all_text
        assert format_count(s.total_ops) in dom.all_text  # type: ignore[arg-type]
    assert "svg" in dom.tags
