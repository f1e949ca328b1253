"""report.html: content checks, and a real headless Chromium that opens it offline."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from turngym.agents.evaluation import EvalConfig, TrajectoryStore, evaluate, scripted_runner
from turngym.agents.evaluation.report import render_report, svg_bars, svg_histogram
from turngym.agents.evaluation.results import load_results

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    config = EvalConfig(envs=["evaltest/Sokoban-v0", "evaltest/Coin-v0"], policy="scripted:random", runs=3, ks=[1, 2])
    evaluate(config, scripted_runner("random"), out)
    return out


def test_report_is_self_contained(evaluated: Path) -> None:
    html = (evaluated / "report.html").read_text()
    # Nothing loads from elsewhere: no external scripts, stylesheets, images or fonts.
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)="(?!data:)', html)
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert html.count("<svg") == 4  # two plots per environment


def test_report_escapes_model_text(evaluated: Path) -> None:
    store = TrajectoryStore(evaluated / "trajectories.jsonl")
    key, traj = next(iter(store.records.items()))
    traj.turns[0].response_text = "<script>alert(1)</script>"
    html = render_report(load_results(evaluated), {key: traj})
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_svg_plots_have_one_bar_per_value() -> None:
    bars = svg_bars(["a", "b", "c"], [0.0, 0.5, 1.0], "t")
    assert bars.count('class="bar"') == 3 and "<title>c: 1.000</title>" in bars
    hist = svg_histogram([2, 2, 3], [5], "turns")
    assert "<title>2 turns, success: 2</title>" in hist and "<title>5 turns, failure: 1</title>" in hist


def _playwright():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright for Python is not installed (pip install playwright)")
    return sync_playwright


def test_report_in_headless_chromium(evaluated: Path, tmp_path: Path) -> None:
    sync_playwright = _playwright()
    results = load_results(evaluated)
    # Open it from a folder of its own: it must not need anything beside it.
    page_path = tmp_path / "report.html"
    shutil.copy(evaluated / "report.html", page_path)
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(page_path.as_uri(), wait_until="load")

            # Summary table: one row per environment plus the pooled row, with the pass@1 numbers.
            rows = page.locator("#summary tbody tr")
            assert rows.count() == 3
            names = [rows.nth(i).locator("td").first.inner_text() for i in range(3)]
            assert names == ["evaltest/Sokoban-v0", "evaltest/Coin-v0", "all environments"]
            for i, env in enumerate(results.envs):
                assert rows.nth(i).locator("td.pass1").inner_text() == f"{env.stats.pass1.mean:.3f}"
            # Per-task tables: one row per task.
            tables = page.locator("table.per-task")
            assert tables.count() == 2
            assert tables.nth(0).locator("tbody tr").count() == len(results.envs[0].tasks)
            assert tables.nth(1).locator("tbody tr").first.locator("td").first.inner_text() == "coin-0"
            assert page.locator("svg.plot").count() == 4

            # The trajectory viewer: expand a trajectory, then one of its turns.
            traj = page.locator("details.traj").first
            turn = traj.locator("details.turn").first
            assert not turn.locator("pre.reply").is_visible()
            traj.locator("summary").first.click()
            assert traj.evaluate("d => d.open") is True
            turn.locator("summary").click()
            assert turn.evaluate("d => d.open") is True
            assert turn.locator("pre.prompt").is_visible() and turn.locator("pre.reply").is_visible()
            assert turn.locator("pre.observation").inner_text() != ""
            assert turn.locator("pre.reward").inner_text() in {"0.000", "0.100", "1.000", "1.100"}
            page.screenshot(path=str(tmp_path / "report.png"), full_page=False)

            # The filter hides the other environment's trajectories.
            total = page.locator("details.traj").count()
            page.fill("#traj-filter", "Coin")
            visible = page.locator("details.traj:visible").count()
            assert 0 < visible < total
            assert visible == sum(1 for key in TrajectoryStore(evaluated / "trajectories.jsonl").records if "Coin" in key[0])
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert problems == []
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
