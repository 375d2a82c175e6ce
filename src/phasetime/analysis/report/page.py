"""The HTML page around the figures: one file with Plotly's JavaScript inside (it opens
offline), tables that fit, the stability banner, and a record of what rendered.

Every figure is drawn by Plotly in the browser (hover for values, drag to zoom, click a legend
entry to hide a series, the camera button saves an SVG for a paper). A small script counts the
plots that rendered and the JavaScript errors into attributes of ``<body>`` (``data-plots``,
``data-plots-rendered``, ``data-errors``), which the test suite reads from headless Chromium.
"""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222} h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.scroll{overflow-x:auto} table{border-collapse:collapse;font-size:.82em;margin:.5em 0} td,th{border:1px solid #ddd;
padding:.25em .5em;text-align:right;vertical-align:top;white-space:nowrap} th{background:#f4f4f4;white-space:normal}
td.l,th.l{text-align:left} td.w{white-space:normal;max-width:40em;overflow-wrap:anywhere} figure{margin:1.2em 0} figcaption{font-size:.85em;color:#555;max-width:60em}
.pass{color:#1a7f37} .fail{color:#cf222e;font-weight:bold} .inconclusive{color:#8250df;font-weight:bold} .warn{color:#9a6700} .skip,.info{color:#666}
pre{background:#f6f8fa;padding:.6em;font-size:.8em;white-space:pre-wrap;overflow-wrap:anywhere}
.banner{border:2px solid #d4a72c;background:#fff8c5;padding:.6em 1em;margin:1em 0}
.banner.fail{border-color:#cf222e;background:#ffebe9} .q{color:#777;font-size:.9em} .unstable{color:#cf222e}
"""

# Runs before Plotly: counts JavaScript errors (console.error included) for the test suite.
_ERRORS = """
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e)); });
(function () { var original = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' ')); return original.apply(console, arguments); }; })();
"""

_DRAW = """
var CONFIG = {responsive: true, displaylogo: false,
  toImageButtonOptions: {format: 'svg', filename: 'phasetime-figure'}};
var drawn = 0;
Object.keys(FIGURES).forEach(function (id) {
  try { Plotly.newPlot(id, FIGURES[id].data, FIGURES[id].layout, CONFIG); drawn += 1; }
  catch (e) { window.__errors.push(id + ': ' + e); }
});
window.addEventListener('load', function () {
  var rendered = document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 ?
    Array.prototype.filter.call(document.querySelectorAll('.plot'), function (d) {
      return d.querySelector('.main-svg') !== null; }).length : 0;
  document.body.setAttribute('data-plots', Object.keys(FIGURES).length);
  document.body.setAttribute('data-plots-rendered', rendered);
  document.body.setAttribute('data-errors', window.__errors.length);
  document.body.setAttribute('data-error-text', window.__errors.join(' | ').slice(0, 500));
});
"""


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 0, wrap: Sequence[int] = ()) -> str:
    """An HTML table (cells already escaped); the first ``left`` columns align left, the
    columns in ``wrap`` may wrap (long text), the others keep one line (the table scrolls)."""
    head = "".join(f"<th class='{'l' if i < left else ''}'>{html.escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class='{'l' if i < left else ''}{' w' if i in wrap else ''}'>{v}</td>"
                                     for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def figure_html(fig_id: str, title: str, caption: str) -> str:
    return (f"<figure id='{fig_id}'><h3>{html.escape(title)}</h3><div class='plot' id='plot-{fig_id}'></div>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def banner(lines: Sequence[str], failing: bool) -> str:
    if not lines:
        return ""
    head = "These numbers are too noisy to trust" if failing else "These numbers are noisier than they should be"
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (f"<div id='stability-banner' class='banner {'fail' if failing else 'warn'}'><b>{head}.</b> "
            f"Rerun on a quiet machine (docs/analysis.md, Stability).<ul>{items}</ul></div>")


def page(title: str, intro: str, sections: Sequence[str], figures: dict[str, dict[str, Any]]) -> str:
    """The whole document: head with Plotly inside, the sections, then the drawing script."""
    data = json.dumps({f"plot-{k}": v for k, v in figures.items()}, separators=(",", ":"), allow_nan=False,
                      default=_json_default)
    return "\n".join([
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style><script>{_ERRORS}</script><script>{plotly_js()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>", intro, *sections,
        f"<script>var FIGURES = {data};{_DRAW}</script>",
        "</body></html>",
    ])


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def clean(value: Any) -> Any:
    """NaN and infinities (JSON has none) as null, recursively."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value
