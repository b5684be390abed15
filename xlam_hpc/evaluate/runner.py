"""`run_eval`: items → prompts → greedy outputs → parsed calls → scores → results.json / results.md.

Resumable: every scored item is appended (and flushed) to the per-item JSONL next to results.json after each
batch, tagged with the run's fingerprint (model path, untrained or not, data paths, benches, max_new_tokens,
style). A rerun with the same fingerprint scores only the items not in the file yet; a different fingerprint
is an error unless `resume=False` (`--overwrite`), which starts the file over. The metrics are computed from
the file, over the items of this run, so an interrupted and resumed run reports what one pass would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xlam_hpc.errors import ConfigError, DataError
from xlam_hpc.evaluate.items import EvalItem, items_from_unified
from xlam_hpc.evaluate.report_md import results_markdown

if TYPE_CHECKING:  # generate imports the collate stage (torch): only when a run starts
    from xlam_hpc.evaluate.generate import GenerateFn, Target

__all__ = ["STYLES", "EvalConfig", "default_output", "fingerprint", "items_path", "run_eval", "score_item"]

STYLES = ("auto", "mistral", "hermes", "llama3", "json")
BACKENDS = ("auto", "transformers", "vllm")


@dataclass(kw_only=True)
class EvalConfig:
    """What `xlam-hpc eval` evaluates, on what, and where the results go."""

    model: str
    """A model folder (e.g. RUN/final), a run directory (its final/), or with `untrained` a run directory or
    recipe file (the recipe's model before training)."""
    data: list[str] = field(default_factory=list)
    """Held-out unified JSONL files or shard directories."""
    benches: list[str] = field(default_factory=list)
    """BFCL categories (bfcl-simple, bfcl-multiple, ...)."""
    output: str | None = None
    """results.json (default RUN_DIR/eval/results.json for a run directory, RUN_DIR/eval/untrained.json with
    `untrained`, else ./eval-results.json)."""
    limit: int | None = None
    """The first N items of each data file and each bench."""
    batch_size: int = 8
    max_new_tokens: int = 256
    style: str = "auto"
    """Tool-call syntax of the outputs: auto (from the chat template), mistral, hermes, llama3, json."""
    progress: bool = True
    resume: bool = True
    """Continue a results file of the same configuration; False: start it over."""
    untrained: bool = False
    backend: str = "auto"
    """auto: vLLM when it is installed and a GPU is there, else transformers."""
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.data and not self.benches:
            raise ConfigError("nothing to evaluate: give --data (held-out unified data) and/or --bench")
        if self.style not in STYLES:
            raise ConfigError(f"--style {self.style}: expected one of {', '.join(STYLES)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend}: expected one of {', '.join(BACKENDS)}")
        for name, value in (("--batch-size", self.batch_size), ("--max-new-tokens", self.max_new_tokens)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        from xlam_hpc.evaluate.bfcl import BFCL_CATEGORIES

        unknown = [b for b in self.benches if b not in BFCL_CATEGORIES]
        if unknown:
            raise ConfigError(f"unknown bench {', '.join(unknown)}: expected one of {', '.join(BFCL_CATEGORIES)}")


def default_output(model: str, untrained: bool = False) -> Path:
    """RUN_DIR/eval/results.json for a run directory (RUN_DIR/eval/untrained.json with `untrained`, so the
    "before" and "after" results live side by side), else ./eval-results.json."""
    path = Path(model)
    if path.is_dir() and (path / "config.yaml").is_file():
        return path / "eval" / ("untrained.json" if untrained else "results.json")
    return Path("eval-results.json")


def items_path(output: Path) -> Path:
    """The per-item JSONL next to results.json (results.json → results.items.jsonl)."""
    return output.with_name(f"{output.stem}.items.jsonl")


def fingerprint(cfg: EvalConfig) -> str:
    """Identity of a results file: changing any of these changes what an item's result means."""
    spec = {
        "model": str(Path(cfg.model).resolve()),
        "untrained": cfg.untrained,
        "data": [str(Path(p).resolve()) for p in cfg.data],
        "benches": list(cfg.benches),
        "max_new_tokens": cfg.max_new_tokens,
        "style": cfg.style,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _load_items(cfg: EvalConfig) -> list[EvalItem]:
    items = items_from_unified(cfg.data, cfg.limit) if cfg.data else []
    if cfg.benches:
        from xlam_hpc.evaluate.bfcl import bfcl_wheel, load_bfcl

        wheel = bfcl_wheel()
        for bench in cfg.benches:
            items += load_bfcl(bench, wheel, limit=cfg.limit)
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"item id {dup} appears twice among the data and benches")
    return items


# -- the resumable per-item file ---------------------------------------------------------------------------
def _read_done(path: Path, fp: str, resume: bool) -> dict[str, dict[str, Any]]:
    """Results already in `path` (by item id). A torn last line (a killed write) is cut off the file."""
    if not path.exists():
        return {}
    if not resume:
        path.unlink()
        return {}
    raw = path.read_bytes()
    keep = raw[: raw.rfind(b"\n") + 1]
    done: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(keep.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(
                f"{path}:{lineno}: not a result line (edited by hand?): remove it or use --overwrite"
            ) from None
        if row.get("fingerprint") != fp:
            raise ConfigError(
                f"{path} holds results of another evaluation (model, data, benches, max_new_tokens or style differ): "
                "use --overwrite to start it over, or another -o"
            )
        done[row["id"]] = row
    if len(keep) != len(raw):
        with path.open("r+b") as f:
            f.truncate(len(keep))
    return done


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# -- scoring ------------------------------------------------------------------------------------------------
def score_item(item: EvalItem, output: str, style: str) -> dict[str, Any]:
    """The per-item result line of one output (parse, unified-gold score, BFCL AST when the item has one)."""
    from xlam_hpc.evaluate.parse import parse_tool_calls
    from xlam_hpc.evaluate.score import ast_match, score_calls

    parsed = parse_tool_calls(output, style)
    scores = score_calls(parsed.calls, item.gold)
    ast: bool | None = None
    ast_error: str | None = None
    if item.possible_answer is not None:
        ast, ast_error = ast_match(parsed.calls, item.possible_answer, item.functions or item.tools, item.category)
    return {
        "id": item.id,
        "source": item.source,
        "category": item.category,
        "kind": item.kind,
        "output": output,
        "calls": parsed.calls,
        "parsed": parsed.parsed,
        "attempted": parsed.attempted,
        "gold": item.gold,
        "name_correct": bool(scores["name_correct"]),
        "args_exact": bool(scores["args_exact"]),
        "exact": bool(scores["exact"]),
        "ast": ast,
        "ast_error": ast_error,
    }


def _metrics(results: list[dict[str, Any]]) -> dict[str, Any]:
    from xlam_hpc.evaluate.score import aggregate

    return aggregate(results)


# -- generation backends -------------------------------------------------------------------------------------
def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _generator(cfg: EvalConfig, target: Target, log: Callable[[str], None]) -> GenerateFn:
    from xlam_hpc.evaluate.generate import HFGenerator, VLLMGenerator, load_model, vllm_available

    device = _device(cfg.device)
    use_vllm = cfg.backend == "vllm" or (
        cfg.backend == "auto" and device.startswith("cuda") and target.folder is not None and vllm_available()
    )
    if use_vllm:
        if target.folder is None or not vllm_available():
            raise ConfigError("--backend vllm needs vLLM installed and a model folder (not --untrained)")
        log(f"generating with vLLM from {target.folder}")
        return VLLMGenerator(target.folder, target.tokenizer, max_new_tokens=cfg.max_new_tokens)
    what = "untrained model of the recipe" if target.untrained else str(target.folder)
    log(f"generating with transformers on {device}: {what}")
    model = load_model(target, device)
    return HFGenerator(model, target.tokenizer, max_new_tokens=cfg.max_new_tokens, device=device)


# -- the run --------------------------------------------------------------------------------------------------
class _Progress:
    """tqdm on a terminal, else a plain line at most every 30 s (and at the end)."""

    def __init__(self, total: int, done: int, enabled: bool, log: Callable[[str], None]) -> None:
        self.total, self.done, self.log = total, done, log
        self.bar = None
        self.last = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc="eval", unit="item")
        self.enabled = enabled

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and (time.monotonic() - self.last >= 30 or self.done == self.total):
            self.last = time.monotonic()
            self.log(f"eval: {self.done}/{self.total} items")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_eval(
    cfg: EvalConfig, log: Callable[[str], None] = print, *, generate_fn: GenerateFn | None = None
) -> dict[str, Any]:
    """Evaluate, write results.json, results.md and the per-item JSONL; return results.json's content.

    `generate_fn` replaces the model's generation (items, prompts → outputs), e.g. a scripted reference."""
    from xlam_hpc.evaluate.generate import render_prompt, resolve_target
    from xlam_hpc.evaluate.parse import style_for_template

    output = Path(cfg.output) if cfg.output else default_output(cfg.model, cfg.untrained)
    target = resolve_target(cfg.model, untrained=cfg.untrained)
    items = _load_items(cfg)
    if not items:
        raise DataError(f"no evaluation items in {', '.join([*cfg.data, *cfg.benches])}")
    style = (
        cfg.style if cfg.style != "auto" else style_for_template(target.chat_template, target.tokenizer.name_or_path)
    )
    fp = fingerprint(cfg)
    output.parent.mkdir(parents=True, exist_ok=True)
    per_item = items_path(output)
    done = _read_done(per_item, fp, cfg.resume)
    todo = [it for it in items if it.id not in done]
    skipped: dict[str, str] = {}
    if done:
        log(f"resuming {per_item}: {len(items) - len(todo)} of {len(items)} items already scored")
    if todo:
        generate = generate_fn or _generator(cfg, target, log)
        progress = _Progress(len(items), len(items) - len(todo), cfg.progress, log)
        try:
            # fixed batches of the whole item list: a resumed eval generates each remaining item in the same
            # batch (same padding) as an uninterrupted one would, so its outputs are the same
            for start in range(0, len(items), cfg.batch_size):
                chunk = [it for it in items[start : start + cfg.batch_size] if it.id not in done]
                if not chunk:
                    continue
                batch, prompts = [], []
                for it in chunk:
                    try:
                        prompts.append(render_prompt(it, target.tokenizer, target.options))
                        batch.append(it)
                    except DataError as exc:  # e.g. a template refusing parallel calls in the history
                        skipped[it.id] = str(exc)
                if not batch:
                    progress.update(len(chunk))
                    continue
                outputs = generate(batch, prompts)
                rows = [
                    {**score_item(it, out, style), "fingerprint": fp} for it, out in zip(batch, outputs, strict=True)
                ]
                _append(per_item, rows)
                done.update((r["id"], r) for r in rows)
                progress.update(len(chunk))
        finally:
            progress.close()
    if skipped:
        log(
            f"{len(skipped)} item(s) not evaluated, the chat template cannot render them; first: "
            f"{next(iter(skipped.values()))}"
        )
    results = [done[it.id] for it in items if it.id in done]
    summary = {
        "model": cfg.model,
        "untrained": cfg.untrained,
        "data": list(cfg.data),
        "benches": list(cfg.benches),
        "style": style,
        "max_new_tokens": cfg.max_new_tokens,
        "n": len(results),
        "metrics": _metrics(results),
        "skipped": [{"id": k, "reason": v} for k, v in skipped.items()],
        "items_file": str(per_item),
        "fingerprint": fp,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    output.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    output.with_suffix(".md").write_text(results_markdown(summary))
    log(f"results {output} (markdown {output.with_suffix('.md')}, items {per_item})")
    return summary
