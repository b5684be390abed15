"""The report page: one self-contained HTML file (inline CSS, PNGs by relative path).

Every text that comes from the run (paths, source names, categories, grid values) goes through `esc`;
every number through summary.fmt, so the page and the logs can be compared digit for digit.
Summary cells carry data-key attributes naming the value they show.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from xlam_hpc.report.summary import fmt

__all__ = ["DIGITS", "esc", "figure", "page", "section", "table"]

DIGITS = {"loss": 4, "rate": 1, "share": 3, "metric": 4, "seconds": 1}
"""Decimals per kind of number (docs/report.md lists them)."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
h1{font-size:1.5em;word-break:break-all}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:0.2em 0.6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee}.none{color:#888;font-style:italic}.notes{color:#a60}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def cell(value: Any, digits: int = 4, key: str | None = None) -> str:
    """A table cell: numbers right-aligned through fmt, text escaped."""
    attr = f' data-key="{esc(key)}"' if key else ""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return f'<td class="num"{attr}>{esc(fmt(value, digits))}</td>'
    return f"<td{attr}>{esc(value)}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, raw_header: bool = False) -> str:
    """Rows are lists of ready-made <td> cells (see `cell`); header texts are escaped unless raw."""
    head = "".join(f"<th>{h if raw_header else esc(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def none(text: str = "none") -> str:
    return f'<p class="none">{esc(text)}</p>'


def figure(name: str | None, alt: str) -> str:
    """An <img> of a PNG next to the page (by relative file name), or 'none' when nothing was drawn."""
    if name is None:
        return none(f"{alt}: none")
    return f'<p><img src="{esc(name)}" alt="{esc(alt)}"></p>'


def section(title: str, *parts: str) -> str:
    return f"<h2>{esc(title)}</h2>\n" + "\n".join(parts)


def page(title: str, subtitle: str, sections: list[str], notes: list[str]) -> str:
    note = "".join(f"<li>{esc(n)}</li>" for n in notes)
    note_html = f'<ul class="notes">{note}</ul>' if notes else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{esc(title)}</h1>\n<p>{esc(subtitle)}</p>\n{note_html}\n" + "\n".join(sections) + "\n</body></html>\n"
    )
