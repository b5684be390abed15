"""results.md: the metrics of results.json as markdown tables (overall, per source, per category)."""

from __future__ import annotations

from typing import Any

__all__ = ["COLUMNS", "results_markdown"]

COLUMNS: list[tuple[str, str]] = [
    ("n", "n"),
    ("parse rate", "parse_rate"),
    ("name acc", "tool_name_accuracy"),
    ("arg exact", "argument_exact_match"),
    ("whole-call exact", "whole_call_exact_match"),
    ("AST", "ast_accuracy"),
    ("irrelevance", "irrelevance_accuracy"),
]
"""(column header, metric key) of every table."""


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key == "n" or isinstance(value, bool) or not isinstance(value, float | int):
        return str(value)
    return f"{100 * value:.1f}%"


def _irrelevance(m: dict[str, Any]) -> str:
    acc = m.get("irrelevance_accuracy")
    n = m.get("n_irrelevance") or 0
    return "–" if acc is None or not n else f"{100 * acc:.1f}% of {n}"


def _table(title: str, rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    head = [title, *(h for h, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|"]
    for name, m in rows:
        cells = [_irrelevance(m) if key == "irrelevance_accuracy" else _cell(key, m.get(key)) for _, key in COLUMNS]
        lines.append("| " + " | ".join([name.replace("|", "\\|"), *cells]) + " |")
    return lines


def results_markdown(results: dict[str, Any]) -> str:
    """The markdown text of a results.json dict."""
    metrics = results["metrics"]
    lines = [
        f"# Evaluation of {results['model']}",
        "",
        f"{results['n']} items; style {results['style']}; max_new_tokens {results['max_new_tokens']}; "
        f"data {', '.join(results['data']) or '–'}; benches {', '.join(results['benches']) or '–'}.",
        "",
        *_table("group", [("overall", metrics["overall"])]),
    ]
    skipped = results.get("skipped") or []
    if skipped:
        lines.insert(3, f"{len(skipped)} item(s) not evaluated (the chat template cannot render them).")
    for title, key in (("source", "by_source"), ("category", "by_category")):
        groups = metrics.get(key) or {}
        if groups:
            lines += ["", *_table(title, sorted(groups.items()))]
    lines += [
        "",
        "parse rate: outputs that are a well-formed answer; name acc: same multiset of called function names; "
        "arg exact: every gold call matched with equal arguments; whole-call exact: both; AST: BFCL's checker "
        "(benchmark items); irrelevance: items where no call is right, answered without one.",
        "",
    ]
    return "\n".join(lines)
