"""The report as text: its markdown (printed and logged as `report.md`) and the same document as
one self-contained HTML page (`report.html`: inline CSS, figures as base64 data URIs, no links
or scripts), readable in the MLflow UI's artifact view and offline.

The HTML is converted from the markdown, so both always say the same: the converter knows only
what the report writes (headings, paragraphs, lists, pipe tables, images on their own line,
`code` and **bold**).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence

from lvtrack.report import BASELINE, COLUMNS, EARLIER, OWN, THIS, Cell, Source

DASH = "–"


def number(value: float | None) -> str:
    """A metric as the table shows it (4 significant digits)."""
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:.4g}"


def interval(lo: float | None, hi: float | None) -> str:
    """` [lo, hi]` (3 significant digits), or nothing when either end is unknown."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f" [{lo:.3g}, {hi:.3g}]"


def percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:.0%}"


def _where(cell: Cell) -> str:
    return f"{cell.column}, context {cell.context}"


def cell_note(cell: Cell) -> str | None:
    """The footnote of a cell not measured by its model's own run (None for one that was)."""
    if cell.how == THIS:
        return (
            f"{_where(cell)}: evaluated by this report in run `{cell.by}`, charged "
            f"{cell.flops:.3e} FLOPs"
        )
    if cell.how == EARLIER:
        return f"{_where(cell)}: evaluated by an earlier report in run `{cell.by}`"
    if cell.how == BASELINE:
        return f"{_where(cell)}: scored on the test split by baseline run `{cell.by}`"
    if cell.how == OWN:
        return None
    return f"{_where(cell)}: not filled: {cell.reason or 'not measured'}"


def results_table(cells: Sequence[Cell], contexts: Sequence[int]) -> list[str]:
    """The table (rows: contexts; per column MSE and CRPS with their 95% intervals, MAE, 80%
    coverage) and its footnotes: a cell not measured by its own model's run carries a mark [n]
    on its MSE."""
    head = ["context"]
    for column in COLUMNS:
        head += [f"{column} MSE", f"{column} MAE", f"{column} CRPS", f"{column} cov80"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    notes: list[str] = []
    at = {(c.column, c.context): c for c in cells}
    for ctx in contexts:
        row = [str(ctx)]
        for column in COLUMNS:
            cell = at[(column, ctx)]
            note = cell_note(cell)
            mark = ""
            if note is not None:
                notes.append(note)
                mark = f" [{len(notes)}]"
            m = cell.metrics
            if not cell.measured:
                row += [f"n/a{mark}", DASH, DASH, DASH]
                continue
            row += [
                number(m.get("mse")) + interval(m.get("mse_lo"), m.get("mse_hi")) + mark,
                number(m.get("mae")),
                number(m.get("crps")) + interval(m.get("crps_lo"), m.get("crps_hi")),
                percent(m.get("coverage80")),
            ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += [f"- [{i}] {n}." for i, n in enumerate(notes, 1)]
    return lines


def sources_list(sources: Mapping[str, Source | str]) -> list[str]:
    out = []
    for column in COLUMNS:
        src = sources[column]
        if isinstance(src, str):
            out.append(f"- **{column}**: none ({src})")
        elif src.run is None:
            out.append(f"- **{column}**: {src.note}")
        else:
            out.append(f"- **{column}**: run `{src.key}` ({src.note})")
    return out


def reference_table(refs: Mapping[str, Mapping[str, float]], horizon: int) -> list[str]:
    """name -> its test metrics (`mse`, `mse_lo`, `mse_hi`, `mae`): a row each."""
    if not refs:
        return [
            "No finished reference runs of this preset in the experiment (`mlflow run . -e reference`)."
        ]
    lines = [f"| forecaster | test MSE h{horizon} [95%] | test MAE h{horizon} |", "|---|---:|---:|"]
    for name, m in refs.items():
        mse = number(m.get("mse")) + interval(m.get("mse_lo"), m.get("mse_hi"))
        lines.append(f"| {name} | {mse} | {number(m.get('mae'))} |")
    return lines


def origins_table(
    metrics: Mapping[str, float], origins: Sequence[int], headline: int, horizon: int
) -> list[str]:
    """The final model's test scores from each origin (history length), as its run logged
    them: `test_mse_filled_h{H}` at the headline origin, `..._k{K}` at the others."""
    lines = [
        f"| history (steps in) | test MSE h{horizon} [95%] | test MAE h{horizon} | test CRPS h{horizon} |",
        "|---:|---:|---:|---:|",
    ]
    for k in origins:
        end = "" if k == headline else f"_k{k}"
        mse, mae, crps = (f"test_{m}_h{horizon}{end}" for m in ("mse_filled", "mae_filled", "crps"))
        cell = number(metrics.get(mse)) + interval(
            metrics.get(f"{mse}_lo"), metrics.get(f"{mse}_hi")
        )
        lines.append(f"| {k} | {cell} | {number(metrics.get(mae))} | {number(metrics.get(crps))} |")
    return lines


def differences_table(rows: Sequence[tuple[str, float, float, float]]) -> list[str]:
    """(comparison, difference, lo, hi) rows: a difference is resolved when its paired interval
    excludes 0."""
    lines = ["| comparison | difference | paired 95% interval | resolved |", "|---|---:|---:|---|"]
    for what, diff, lo, hi in rows:
        resolved = "yes" if lo > 0 or hi < 0 else "no: the interval includes 0"
        lines.append(f"| {what} | {number(diff)} |{interval(lo, hi)} | {resolved} |")
    return lines


# -- markdown to HTML --------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:72em;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;border-bottom:2px solid #ddd}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em}th{background:#f3f3f3}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}td.r{white-space:nowrap}
tr:nth-child(even) td{background:#fafafa}
code{background:#f1f1f1;padding:0 .2em;border-radius:3px;font-size:.92em}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
li{margin:.15em 0}
"""


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(rows: list[str]) -> list[str]:
    head, align = _cells(rows[0]), _cells(rows[1])
    right = [a.endswith(":") for a in align]

    def tr(cells: list[str], tag: str) -> str:
        inner = "".join(
            f"<{tag}{' class=r' if r else ''}>{_inline(c)}</{tag}>"
            for c, r in zip(cells, right, strict=False)
        )
        return f"<tr>{inner}</tr>"

    return ["<table>", tr(head, "th"), *(tr(_cells(r), "td") for r in rows[2:]), "</table>"]


_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")


def markdown_to_html(text: str, title: str, images: Mapping[str, bytes]) -> str:
    """One HTML page of the report's markdown; an image line `![alt](path)` embeds
    `images[path]` (PNG bytes) as a data URI, and says it is missing when it is not given."""
    body: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            body += _table(lines[i:j])
            i = j
        elif line.startswith("- "):
            body.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                body.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("</ul>")
        elif match := _IMAGE.match(line.strip()):
            alt, path = match.groups()
            data = images.get(path)
            if data is None:
                body.append(f"<p><em>{_inline(alt)}: figure {_inline(path)} missing</em></p>")
            else:
                uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
                body.append(f'<p><img alt="{html.escape(alt)}" src="{uri}"></p>')
            i += 1
        else:
            para: list[str] = []
            while (
                i < len(lines)
                and lines[i].strip()
                and not lines[i].startswith(("#", "|", "- "))
                and not (para and _IMAGE.match(lines[i].strip()))
            ):
                para.append(lines[i])
                i += 1
            body.append(f"<p>{_inline(' '.join(para))}</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
