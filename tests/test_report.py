"""The report: figures faceted by what differs, honest axes, and every page rendered in headless
Chromium with no JavaScript error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import run_cli
from phasetime.analysis.report import build_report
from phasetime.analysis.report import _effects
from phasetime.analysis.report.answers import length_figure, zero_decode
from phasetime.analysis.report.figures import vs_parameter
from phasetime.analysis.report.figures_more import accuracy, pareto
from phasetime.analysis.summary import summarize

pytestmark = pytest.mark.anyversion
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def sweep_table() -> pa.Table:
    """Two models x two methods x batch 1, 2, 4 x N = 2, 8: tpot 1 ms (direct), decode / N (subtract)."""
    rows = []
    cell = 0
    for model in ("m-a", "m-b"):
        for method in ("direct", "subtract"):
            for batch in (1, 2, 4):
                for n in (2, 8):
                    for repeat in range(3):
                        tpot = 1.0 + 0.01 * repeat if method == "direct" else (n - 1) / n
                        rows.append({"cell": cell, "model": model, "method": method, "batch_size": batch,
                                     "max_new_tokens": n, "output_tokens": n, "tpot_ms": tpot, "decode_ms": tpot * (n - 1),
                                     "vision_ms": 2.0, "prefill_ms": 3.0, "ttft_ms": 6.0, "other_ms": 1.0,
                                     "total_ms": 6.0 + tpot * (n - 1)})
                    cell += 1
    return pa.Table.from_pylist(rows)


def length_figure_of(table: pa.Table):
    summary = summarize(table)
    return length_figure(summary, _effects(table), zero_decode(table, by_model=True))


def test_the_length_figure_puts_direct_and_legacy_side_by_side_per_model() -> None:
    fig = length_figure_of(sweep_table())
    titles = [a["text"] for a in fig["layout"]["annotations"] if a["text"].startswith("<b>")]
    assert titles == [f"<b>{m}: {w}</b>" for m in ("m-a", "m-b")
                      for w in ("direct: decode / (N - 1)", "legacy subtraction: decode / N")]
    lines = [t for t in fig["data"] if t.get("mode") == "lines+markers"]
    # a line per batch size in each of the 4 panels, named by method and configuration
    assert {t["name"].split(" (")[0] for t in lines} == {f"{m}, batch_size={b}" for m in ("direct", "legacy subtraction")
                                                         for b in (1, 2, 4)}
    assert not any("N - 1" in t["name"] for t in lines if t["name"].startswith("legacy"))
    assert fig["layout"]["yaxis2"]["matches"] == "y"  # one scale for a model's two methods
    assert fig["layout"]["xaxis"]["tickvals"] == [2, 8]


def test_the_length_figure_shows_a_few_series_and_hides_the_rest() -> None:
    rows = [{"cell": b * 10 + n, "model": "m", "method": "direct", "batch_size": b, "max_new_tokens": n,
             "output_tokens": n, "tpot_ms": 1.0, "decode_ms": n - 1.0, "total_ms": 5.0 + n}
            for b in range(1, 8) for n in (2, 4, 8)]
    lines = [t for t in length_figure_of(pa.Table.from_pylist(rows))["data"] if t.get("mode") == "lines+markers"]
    assert [t["visible"] for t in lines] == [True] * 4 + ["legendonly"] * 3


def test_integer_parameters_get_integer_ticks() -> None:
    fig = vs_parameter(summarize(sweep_table()), "batch_size")
    axis = fig["layout"]["xaxis"]
    assert axis["tickvals"] == [1, 2, 4] and axis["ticktext"] == ["1", "2", "4"]  # never 1.2 or 1.4
    assert all(t["x"] and all(isinstance(x, int) for x in t["x"]) for t in fig["data"] if t.get("mode") == "lines+markers")


def test_the_pareto_front_by_hand() -> None:
    # (latency, accuracy, id): 1 is beaten by 0 (slower and no better), 3 by 2
    points = [(10.0, 0.5, 0), (12.0, 0.5, 1), (15.0, 0.7, 2), (20.0, 0.6, 3), (30.0, 0.9, 4)]
    assert pareto(points) == [0, 2, 4]


def test_accuracy_has_intervals_and_a_per_sample_view() -> None:
    rows = [{"cell": c, "model": "m", "batch_size": b, "total_ms": t + c, "ttft_ms": t / 2, "score": s, "method": "direct"}
            for c, b in ((0, 1), (1, 4)) for t, s in ((10.0, 1.0), (11.0, 0.0), (12.0, 1.0), (13.0, 1.0))]
    table = pa.Table.from_pylist(rows)
    cells = summarize(table)
    assert cells[0].accuracy == 0.75 and cells[0].accuracy_ci[0] < 0.75 < cells[0].accuracy_ci[1]
    fig = accuracy(cells, table, ["c0", "c1"])
    points = [t for t in fig["data"] if t.get("mode") == "markers"]
    assert all(t["error_y"]["array"][0] > 0 for t in points)  # every accuracy has its interval
    boxes = [t for t in fig["data"] if t["type"] == "box"]
    assert [b["name"] for b in boxes] == ["correct (score >= 0.5)", "incorrect"] and len(boxes[0]["y"]) == 6


def test_accuracy_is_a_claim_over_samples_not_repeats() -> None:
    """20 samples, 10 always right and 10 always wrong, each scored 5 times: 20 trials. Wilson
    over 20 at 0.5 by hand: centre 0.5, half-width 1.96 sqrt(0.25 / 20 + 1.96^2 / 1600) /
    (1 + 1.96^2 / 20) = 0.2007 (width 0.40); counted as 100 trials it would read 0.19 wide."""
    rows = [{"cell": 0, "model": "m", "total_ms": 10.0, "method": "direct", "sample_id": f"s{i}",
             "score": float(i < 10), "repeat": r} for i in range(20) for r in range(5)]
    cell = summarize(pa.Table.from_pylist(rows))[0]
    assert cell.scored == 20 and cell.accuracy == 0.5
    lo, hi = cell.accuracy_ci
    assert (hi - lo) / 2 == pytest.approx(0.2007, abs=5e-4)


def render(page: Path, tmp_path: Path) -> dict[str, str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=180).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")
@pytest.mark.parametrize("name, expected", [
    ("latency", {"fig-breakdown", "fig-length", "fig-vs-batch_size", "fig-vs-max_new_tokens", "fig-itl", "fig-timeline"}),
    ("motivation", {"fig-breakdown", "fig-length", "fig-vs-image_size", "fig-vs-visual_tokens", "fig-2d", "fig-itl"}),
    ("accuracy", {"fig-breakdown", "fig-vs-batch_size", "fig-accuracy", "fig-timeline"}),
])
def test_the_examples_reports_render_without_errors(example_runs, tmp_path: Path, name: str, expected: set) -> None:
    _, out, _ = example_runs[name]
    result = run_cli("report", out, "-o", tmp_path / "r.html")
    assert result.exit_code == 0, result
    page = (tmp_path / "r.html").read_text()
    ids = set(re.findall(r"<figure id='([^']+)'>", page))
    assert expected <= ids, ids
    # the answers first: the verdict, then the figures, and only then any table
    assert page.index("id='verdict'") < page.index("<figure") < page.index("<table")
    data = json.loads(re.search(r"var FIGURES = (\{.*?\});", page, re.S).group(1))
    if name == "latency":  # a --method both run: both methods in one figure, the legacy never called N - 1
        lines = [t["name"] for t in data["plot-fig-length"]["data"] if t.get("mode") == "lines+markers"]
        assert any(n.startswith("direct") for n in lines) and any(n.startswith("legacy") for n in lines)
    legacy_names = [t.get("name", "") for fig in data.values() for t in fig["data"]
                    if "legacy" in t.get("name", "") or "subtract" in t.get("name", "")]
    assert not any("N - 1" in n for n in legacy_names), legacy_names
    state = render(tmp_path / "r.html", tmp_path)
    assert state["errors"] == "0", state.get("error-text")
    assert state["plots"] == state["plots-rendered"] == str(len(ids))  # every figure drew an SVG in a real browser
    assert (tmp_path / "r.html").stat().st_size < 10 * 2**20


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")
def test_run_against_run_renders(example_runs, tmp_path: Path) -> None:
    _, latency, _ = example_runs["latency"]
    result = run_cli("report", latency, latency, "-o", tmp_path / "c.html")
    assert result.exit_code == 0, result
    page = (tmp_path / "c.html").read_text()
    data = json.loads(re.search(r"var FIGURES = (\{.*?\});", page, re.S).group(1))
    ratios = data["plot-fig-ratios"]["data"]
    # a run against itself: every ratio is exactly 1 and nothing is significant
    assert {r for t in ratios for r in t["y"]} == {1.0} and {t["name"] for t in ratios} == {"not significant"}
    # cells are keyed c0, c1, ... on the axis (the full names overlapped), with the name in the hover
    assert all(re.fullmatch(r"c\d+", x) for t in ratios for x in t["x"]) and all("=" in c for t in ratios for c in t["customdata"])
    assert "<th class='l'>key</th>" in page
    state = render(tmp_path / "c.html", tmp_path)
    assert state["errors"] == "0" and state["plots"] == state["plots-rendered"] == "1"


def test_build_report_of_a_table_without_run_json() -> None:
    page, ids = build_report(sweep_table(), None)
    assert "fig-breakdown" in ids and "fig-length" in ids and "id='stability-banner'" not in page


def test_the_phase_table_and_checks_as_markdown_and_latex(tmp_path: Path) -> None:
    from phasetime.analysis.report import text_report

    t = sweep_table()
    md = text_report(t, None, "md", title="study")
    rows = [line for line in md.splitlines() if line.startswith("| m-")]
    assert len(rows) == 24  # one per cell
    first = rows[0].split(" | ")
    assert first[0] == "| m-a" and first[1] == "direct" and "6.00 [6.00, 6.00]" in rows[0]  # ttft median [q1, q3]
    assert "| check | scope | value | verdict | detail |" in md
    tex = text_report(t, None, "tex", title="my_study")
    assert tex.count(r"\begin{tabular}") == 2 == tex.count(r"\end{tabular}") and r"my\_study" in tex
    assert "max\\_new\\_tokens" in tex and "_" not in tex.replace("\\_", "").split("\\begin{table}", 1)[1]
    result = run_cli("report", tmp_path, "--format", "pdf")
    assert result.exit_code == 2 and "--format must be html, md or tex" in result.output


def test_cells_whose_names_cut_alike_get_a_bar_each() -> None:
    """Two drafts whose names share their first 22 characters: cut, their labels were one text and
    Plotly stacked the two cells in one bar. Every cell keeps a bar of its own, its whole name in
    the hover."""
    from phasetime.analysis.report.figures import breakdown
    from phasetime.analysis.report.labels import cell_label, labels as make_labels
    from phasetime.analysis.summary import varying

    drafts = ["assisted draft=hf-internal-testing/tiny-random-a", "assisted draft=hf-internal-testing/tiny-random-b",
              "greedy"]
    rows = [{"cell": i, "model": "m", "method": "direct", "generation": d, "total_ms": 10.0 + i, "decode_ms": 5.0,
             "prefill_ms": 3.0, "vision_ms": 1.0, "other_ms": 1.0} for i, d in enumerate(drafts)]
    cells = summarize(pa.Table.from_pylist(rows))
    shown, _ = make_labels(cells)
    assert len(set(shown)) == 3
    whole = [cell_label(c, varying(cells), whole=True) for c in cells]
    fig = breakdown(cells, shown, set(), whole)
    bar = fig["data"][0]
    assert len(set(bar["y"])) == 3 and any("tiny-random-b" in str(c[-1]) for c in bar["customdata"])


def test_a_partial_run_says_so_on_its_first_screen() -> None:
    from phasetime.analysis.report.answers import verdict

    rows = [{"cell": c, "model": "m", "method": "direct", "max_new_tokens": 4, "output_tokens": 4, "total_ms": 5.0,
             "decode_ms": 3.0, "tpot_ms": 1.0, "call_id": c * 1_000_000} for c in range(8)]
    table = pa.Table.from_pylist(rows)
    block = verdict([], {"cells": 40, "interrupted": "2026-12-07T10:00:00+00:00"}, table, {}, 0.05)
    assert "8 of 40 planned cells measured (32 interrupted)" in block
    assert "Partial run" not in verdict([], {"cells": 8}, table, {}, 0.05)
