"""`xlam-hpc inspect DIR`: per-source counts, integrity check, what pre-tokenizing counted (chat-template
rejects with reasons, truncations), and a few samples rendered as text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xlam_hpc.schema import Preference, Trajectory, Turn
from xlam_hpc.shard.manifest import load_manifest
from xlam_hpc.shard.reader import ShardReader, check_shards

__all__ = ["inspect_dataset", "render_text", "template_rejects", "tokenizer_lines"]


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _turn_lines(turn: Turn, width: int) -> list[str]:
    if turn.role == "tool":
        return [f"  tool[{turn.name}] ← {_clip(turn.content, width)}"]
    lines = [f"  {turn.role} (reasoning): {_clip(turn.reasoning, width)}"] if turn.reasoning else []
    lines += [f"  {turn.role}: {_clip(turn.content, width)}"] if turn.content else []
    for call in turn.tool_calls:
        args = json.dumps(call.arguments, ensure_ascii=False)
        lines.append(f"  {turn.role} → {call.name}({_clip(args, width)})")
    if turn.role == "assistant" and not turn.train:
        lines = [line + "  [not trained]" for line in lines]
    return lines


def render_text(rec: Trajectory | Preference, width: int = 100) -> str:
    """Human-readable rendering of a record (for inspection, not for training)."""
    head = f"{rec.unique_trajectory_id}  source={rec.source}"
    if rec.score is not None:
        head += f"  score={rec.score:g}"
    lines = [head]
    if rec.task_instruction:
        lines.append(f"  system: {_clip(rec.task_instruction, width)}")
    if rec.tools:
        inferred = " (inferred from the calls)" if rec.meta.get("tools_inferred") else ""
        lines.append(f"  tools{inferred}: " + ", ".join(t.name for t in rec.tools))
    for turn in rec.conversation:
        lines += _turn_lines(turn, width)
    if isinstance(rec, Preference):
        lines += [f"  CHOSEN {line.strip()}" for line in _turn_lines(rec.chosen, width)]
        lines += [f"  REJECTED {line.strip()}" for line in _turn_lines(rec.rejected, width)]
    return "\n".join(lines)


def template_rejects(info: dict[str, Any] | None) -> dict[str, int]:
    """reason → samples the chat template rejected, from a manifest's tokenizer info (empty if none)."""
    stats = (info or {}).get("encode_stats") or {}
    return {k.removeprefix("rejected_"): int(v) for k, v in sorted(stats.items()) if k.startswith("rejected_") and v}


def tokenizer_lines(info: dict[str, Any] | None) -> list[str]:
    """The text lines `inspect` prints about pre-tokenized shards (none for JSON-only shards)."""
    if not info:
        return []
    lines = [
        f"tokenized: tokenizer {info.get('tokenizer')}, chat_template {info.get('chat_template')}, "
        f"seq_length {info.get('seq_length')}, mode {info.get('mode')}, loss_on {info.get('loss_on')}, "
        f"render fingerprint {info.get('fingerprint')}"
    ]
    stats = info.get("encode_stats")
    if stats is None:  # shards written before the counts were recorded
        return lines
    rejects = template_rejects(info)
    lines.append(
        f"  {stats.get('records', 0)} records -> {stats.get('samples', 0)} samples, {stats.get('tokens', 0)} tokens "
        f"({stats.get('trained_tokens', 0)} trained); rejected by the chat template: {sum(rejects.values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in rejects.items())})" if rejects else "")
    )
    shown = {"records", "samples", "tokens", "trained_tokens"}
    other = [f"{k} {v}" for k, v in stats.items() if k not in shown and not k.startswith("rejected_") and v]
    if other:
        lines.append("  " + ", ".join(other))
    for ex in info.get("reject_examples") or []:
        lines.append(f"  rejected {ex.get('id')}: {ex.get('reason')}")
    return lines


def inspect_dataset(directory: str | Path, *, samples: int = 2, verify: bool = True) -> dict[str, Any]:
    """Counts per source, integrity problems (sha256) and `samples` rendered records per source."""
    manifest = load_manifest(directory)
    problems = check_shards(manifest) if verify else []
    report: dict[str, Any] = {
        "directory": str(directory),
        "fingerprint": manifest.fingerprint,
        "schema_version": manifest.schema_version,
        "members": manifest.members,
        "member_checksum": manifest.member_checksum or "none (written before member checksums)",
        "tokenizer": manifest.tokenizer,
        "template_rejects": template_rejects(manifest.tokenizer),
        "sources": manifest.sources,
        "shards": len(manifest.shards),
        "bytes": sum(s.num_bytes for s in manifest.shards),
        "integrity": "ok" if not problems else "FAILED",
        "problems": problems,
        "samples": {},
    }
    if samples > 0:
        with ShardReader(manifest, skip_bad_shards=True) as reader:
            for source, n in reader.sources.items():
                report["samples"][source] = [render_text(reader.record(source, i)) for i in range(min(samples, n))]
    return report
