"""CSV, Markdown and LaTeX renderings of a table (see layout.py for the shape they read).

The CSV keeps every number (one column per (group, quantity), named "group:quantity"); Markdown
and LaTeX print the study's layout: a CI next to its number as "0.55 [0.50, 0.61]", icons before
their number, std rows as "±0.05", p-values with three decimals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from .layout import HIGH, ICON, LOW, MARK, STD_ROW
from .marks import NOTE_COLUMN

P_QUANTITIES = frozenset({"p", "p (McNemar)"})
COUNT_QUANTITIES = frozenset({"images"})
MISSING = "-"


def flat(table: pd.DataFrame) -> pd.DataFrame:
    """The CSV form: row labels as leading columns, value columns named "group:quantity"."""
    out = table.copy()
    out.columns = [f"{g}:{q}" if g else q for g, q in table.columns]
    return out.reset_index()


def _number(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, str):
        return value
    text = f"{value:.{digits}f}"
    # A bound like -1e-17 is zero; "-0.00" would read as a negative rate.
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _p(value) -> str:
    if value is None or math.isnan(value):
        return MISSING
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _shown_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The columns that get their own printed column: CI bounds, icons and marks join their
    quantity; the rows' footnotes are printed under the table."""
    present = set(table.columns)
    shown = []
    for g, q in table.columns:
        attached = any(q.endswith(s) and (g, q[: -len(s)]) in present for s in (LOW, HIGH, ICON, MARK))
        if not attached and (g, q) != NOTE_COLUMN:
            shown.append((g, q))
    return shown


def _cell(table: pd.DataFrame, row, column: tuple[str, str], digits: int, std_row: bool) -> str:
    g, q = column
    value = table.at[row, column]
    if q in P_QUANTITIES:
        return MISSING if std_row else _p(value)
    text = _number(value, 0 if q in COUNT_QUANTITIES else digits)
    if std_row:
        return MISSING if text == MISSING else f"±{text}"
    low, high, icon = (g, q + LOW), (g, q + HIGH), (g, q + ICON)
    if low in table.columns and high in table.columns and not pd.isna(table.at[row, low]):
        text += f" [{_number(table.at[row, low], digits)}, {_number(table.at[row, high], digits)}]"
    if icon in table.columns and isinstance(table.at[row, icon], str):
        text = f"{table.at[row, icon]} {text}"
    mark = (g, q + MARK)
    if mark in table.columns and isinstance(table.at[row, mark], str):
        text = f"{text} {table.at[row, mark]}"
    return text


def _row_labels(table: pd.DataFrame) -> list[list[str]]:
    """Row labels, one list per row; a label equal to the one above is left blank, as in the study."""
    out, previous = [], None
    for row in table.index:
        labels = [str(x) for x in (row if isinstance(row, tuple) else (row,))]
        shown = list(labels)
        if previous is not None:
            for i in range(len(labels) - 1):  # the last level always shows
                if labels[: i + 1] == previous[: i + 1]:
                    shown[i] = ""
        out.append(shown)
        previous = labels
    return out


def _grid(table: pd.DataFrame, digits: int):
    columns = _shown_columns(table)
    body = []
    for row, labels in zip(table.index, _row_labels(table)):
        std_row = (row[-1] if isinstance(row, tuple) else row) == STD_ROW
        body.append(labels + [_cell(table, row, c, digits, std_row) for c in columns])
    return columns, body


def md_escape(text: str) -> str:
    """A Markdown table cell's text: its `|` escaped."""
    return text.replace("|", "\\|")


def to_markdown(table: pd.DataFrame, digits: int = 2, caption: str | None = None) -> str:
    columns, body = _grid(table, digits)
    names = [str(n) for n in table.index.names]
    header = names + [f"{g} {q}".strip() for g, q in columns]
    lines = []
    if caption:
        lines += [caption, ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([" --- "] * len(names) + [" ---: "] * len(columns)) + "|")
    lines += ["| " + " | ".join(md_escape(cell) for cell in r) + " |" for r in body]
    notes = table.attrs.get("notes") or []
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


LATEX_TEXT = {
    "M": "$M$",
    "M_ed": "$M_{\\mathrm{ed}}$",
    "M_ft": "$M_{\\mathrm{ft}}$",
    "M_ed_ft": "$M_{\\mathrm{ed\\_ft}}$",
    "p": "$p$",
}
# Unicode the tables print, as LaTeX (the icons need \usepackage{harveyballs}).
LATEX_CHARS = {
    "Δ": "$\\Delta$", "δ": "$\\delta$", "κ": "$\\kappa$", "±": "$\\pm$", "<": "\\textless{}",
    "○": "\\harveyBallNone{}", "◔": "\\harveyBallQuarter{}", "◑": "\\harveyBallHalf{}",
    "◕": "\\harveyBallThreeQuarter{}", "●": "\\harveyBallFull{}",
    "†": "\\dag{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{", "}": "\\}",
    "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "\\": "\\textbackslash{}",
}


def latex_escape(text: str) -> str:
    if text in LATEX_TEXT:
        return LATEX_TEXT[text]
    return "".join(LATEX_CHARS.get(ch, ch) for ch in text)


def _runs(groups: Sequence[str]) -> list[tuple[str, int, int]]:
    """(group, first, last) of each run of equal consecutive group labels (0-based, inclusive)."""
    runs: list[tuple[str, int, int]] = []
    for i, g in enumerate(groups):
        if runs and runs[-1][0] == g:
            runs[-1] = (g, runs[-1][1], i)
        else:
            runs.append((g, i, i))
    return runs


def to_latex(table: pd.DataFrame, digits: int = 2, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs tabular: group labels spanning their columns over the quantity labels."""
    columns, body = _grid(table, digits)
    n_labels = table.index.nlevels
    lines = []
    if any(ICON in q for _, q in table.columns):
        lines.append("% needs \\usepackage{harveyballs}")
    lines += ["\\begin{table}[t]", "\\centering"]
    if caption:
        lines.append(f"\\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines.append("\\begin{tabular}{" + "l" * n_labels + "r" * len(columns) + "}")
    lines.append("\\toprule")
    runs = _runs([g for g, _ in columns])
    if any(g for g, _, _ in runs):
        spans = [f"\\multicolumn{{{b - a + 1}}}{{c}}{{{latex_escape(g)}}}" if b > a else latex_escape(g)
                 for g, a, b in runs]
        lines.append(" & ".join([""] * n_labels + spans) + " \\\\")
        rules = [f"\\cmidrule(lr){{{a + n_labels + 1}-{b + n_labels + 1}}}" for g, a, b in runs if g]
        lines.append(" ".join(rules))
    names = [latex_escape(str(n)) for n in table.index.names]
    lines.append(" & ".join(names + [latex_escape(q) for _, q in columns]) + " \\\\")
    lines.append("\\midrule")
    for r in body:
        lines.append(" & ".join(latex_escape(cell) for cell in r) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    for note in table.attrs.get("notes") or []:
        lines.append(f"\\par\\footnotesize {latex_escape(note)}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"
