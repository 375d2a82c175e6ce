"""The report as text for a paper: the phase table (medians with their interquartile range,
per cell) and the checks, as Markdown or LaTeX (``phasetime report DIR --format md|tex``).

The LaTeX is a ``tabular`` of the ``booktabs`` package (``\\usepackage{booktabs}``), every
special character escaped; numbers keep two decimals, ``-`` where a phase was not measured.
"""

from __future__ import annotations

from typing import Sequence

from ..checks import CheckResult
from ..summary import CellSummary, varying

PHASES = ("vision_ms", "prefill_ms", "ttft_ms", "tpot_ms", "decode_ms", "total_ms")
FORMATS = ("html", "md", "tex")


def _cell(stats_median: float | None, q1: float | None, q3: float | None) -> tuple[str, str]:
    if stats_median is None:
        return "-", ""
    spread = f"[{q1:.2f}, {q3:.2f}]" if q1 is not None and q3 is not None else ""
    return f"{stats_median:.2f}", spread


def _rows(summary: list[CellSummary]) -> tuple[list[str], list[list[str]]]:
    shown = [k for k in varying(summary) if k != "cell"]
    headers = [*shown, "N", "rows", *[f"{p.removesuffix('_ms')} ms" for p in PHASES]]
    rows = []
    for c in summary:
        row = [str(c.get(k)) for k in shown]
        row += [f"{c.output_tokens:g}" if c.output_tokens is not None else "-", str(c.n)]
        for p in PHASES:
            s = c.phases[p]
            median, spread = _cell(s.median, s.q1, s.q3)
            row.append(f"{median} {spread}".strip())
        rows.append(row)
    return headers, rows


def _check_rows(checks: Sequence[CheckResult]) -> list[list[str]]:
    return [[r.check, r.scope, "-" if r.value is None else str(r.value), r.verdict, r.detail] for r in checks]


def markdown(summary: list[CellSummary], checks: Sequence[CheckResult], title: str) -> str:
    """Markdown: a heading, the phase table, the checks."""
    def md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
        esc = [[v.replace("|", "\\|") for v in row] for row in rows]
        return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), *("| " + " | ".join(r) + " |" for r in esc)]

    headers, rows = _rows(summary)
    lines = [f"# {title}", "", "Median per cell, interquartile range in brackets (ms). TPOT is decode / (N - 1) for "
             "the direct method; the legacy subtraction's own per-token value is decode / N.", "",
             *md_table(headers, rows), "", "## Checks", "",
             *md_table(["check", "scope", "value", "verdict", "detail"], _check_rows(checks)), ""]
    return "\n".join(lines)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "≥": r"$\geq$", "±": r"$\pm$"}


def tex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def latex(summary: list[CellSummary], checks: Sequence[CheckResult], title: str) -> str:
    """LaTeX (booktabs): the phase table and the checks, each a ``table`` with its caption."""
    def tabular(headers: list[str], rows: list[list[str]], caption: str, spec: str) -> list[str]:
        return [r"\begin{table}[t]", r"\centering\small", f"\\caption{{{tex_escape(caption)}}}",
                f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(tex_escape(h) for h in headers) + r" \\",
                r"\midrule", *(" & ".join(tex_escape(v) for v in row) + r" \\" for row in rows), r"\bottomrule",
                r"\end{tabular}", r"\end{table}", ""]

    headers, rows = _rows(summary)
    shown = len(headers) - len(PHASES)
    lines = [f"% {tex_escape(title)}: written by phasetime report --format tex (needs \\usepackage{{booktabs}})", ""]
    lines += tabular(headers, rows, f"{title}: median per cell, interquartile range in brackets (ms); TPOT = decode / "
                                    "(N - 1) (direct method).", "l" * shown + "r" * len(PHASES))
    lines += tabular(["check", "scope", "value", "verdict", "detail"], _check_rows(checks), f"{title}: checks.",
                     "llrlp{0.45\\linewidth}")
    return "\n".join(lines)


__all__ = ["FORMATS", "latex", "markdown", "tex_escape"]
