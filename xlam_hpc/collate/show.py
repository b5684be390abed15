"""`xlam-hpc render`: samples exactly as the loader tokenizes them, trained tokens highlighted.

Records are encoded one at a time by a `SampleEncoder` (the loader's, built from the same collate config and
tokenizer), so each record's share of the encoder's counts (truncated turns, per-turn split, spliced reply,
`rejected_<reason>`) is known. The text shown is the token ids decoded one by one (a streaming decode: a
character split over several byte-level tokens appears with the token that completes it), never the
rendered string, so what is shown is what is trained on.

Trained tokens are shown
- in colour (`color=True`): bold green (ANSI SGR 1;32), everything else plain;
- with markers (`color=False`): each run of trained tokens between `⟦` and `⟧`. A literal `⟦`/`⟧` in the
  text is shown as `\\u27e6`/`\\u27e7`, so every marker in the output is one.
In both modes control characters other than newline and tab are shown escaped (`\\x1b`), so no text from
the data can emit terminal escapes.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlam_hpc.collate.encode import PairSample, Sample, SampleEncoder
from xlam_hpc.schema import Preference, Trajectory

__all__ = [
    "CLOSE",
    "OPEN",
    "EncodedRecord",
    "encode_records",
    "first_records",
    "format_report",
    "format_sample",
    "token_pieces",
    "trained_runs",
]

OPEN, CLOSE = "⟦", "⟧"
_ON, _OFF = "\x1b[1;32m", "\x1b[0m"
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F] if chr(c) not in "\n\t"}
_MARKER_ESCAPES = {**_ESCAPES, ord(OPEN): "\\u27e6", ord(CLOSE): "\\u27e7"}
_COUNTED = ("truncated", "turns_truncated", "split_per_turn", "spliced_reply", "boundary_straddles")


@dataclass
class EncodedRecord:
    """What encoding one record gave: its samples and the encoder counts it added."""

    record_id: str
    source: str
    samples: list[Sample | PairSample]
    stats: Counter[str] = field(default_factory=Counter)
    rejects: list[tuple[str, str]] = field(default_factory=list)
    """(sample id, 'reason: detail') of every sample of the record the chat template rejected."""


def encode_records(encoder: SampleEncoder, records: list[tuple[str, Trajectory | Preference]]) -> list[EncodedRecord]:
    """Encode (source, record) pairs one by one with `encoder` (preference pairs as DPO, trajectories as SFT);
    sample ids are record ids (prompt_answer and per-turn samples: '<id>#<turn>')."""
    out = []
    quiet = logging.getLogger("xlam_hpc.collate.encode")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # rejects are listed in the report, not logged once per reason
    try:
        for source, rec in records:
            before, at = Counter(encoder.stats), len(encoder.reject_examples)
            rid = rec.unique_trajectory_id
            samples: list[Any] = (
                encoder.encode_dpo([(rid, rec)]) if isinstance(rec, Preference) else encoder.encode_sft([(rid, rec)])
            )
            stats = Counter(encoder.stats)
            stats.subtract(before)
            rejects = list(encoder.reject_examples[at:])
            del encoder.reject_examples[at:]  # the encoder keeps only the first few; here every record's are wanted
            out.append(EncodedRecord(rid, source, samples, +stats, rejects))
    finally:
        quiet.setLevel(level)
    return out


def token_pieces(tokenizer: Any, ids: np.ndarray | list[int]) -> list[str]:
    """The text of each token id, decoded as a stream (special tokens kept); the pieces join to the decoded ids."""
    from tokenizers.decoders import DecodeStream

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    stream = DecodeStream(skip_special_tokens=False)
    return [stream.step(backend, int(i)) or "" for i in ids]


def format_sample(pieces: list[str], mask: np.ndarray, *, color: bool) -> str:
    """Token pieces with the trained ones (mask True) highlighted: ANSI colour or ⟦ ⟧ markers."""
    start, end = (_ON, _OFF) if color else (OPEN, CLOSE)
    table = _ESCAPES if color else _MARKER_ESCAPES
    out, on = [], False
    for piece, trained in zip(pieces, mask.tolist(), strict=True):
        if trained != on:
            out.append(start if trained else end)
            on = trained
        out.append(piece.translate(table))
    if on:
        out.append(end)
    return "".join(out)


def trained_runs(text: str) -> list[str]:
    """The trained runs of a markers-mode sample text (what sits between ⟦ and ⟧)."""
    runs, at = [], 0
    while (i := text.find(OPEN, at)) >= 0:
        j = text.index(CLOSE, i)
        runs.append(text[i + 1 : j])
        at = j + 1
    return runs


def _variants(sample: Sample | PairSample) -> list[tuple[str, Sample]]:
    if isinstance(sample, PairSample):
        return [(f"{sample.sample_id} [chosen]", sample.chosen), (f"{sample.sample_id} [rejected]", sample.rejected)]
    return [(sample.sample_id, sample)]


def _yes(n: int) -> str:
    return "yes" if n else "no"


def format_report(results: list[EncodedRecord], tokenizer: Any, *, color: bool = False) -> str:
    """Every sample of `results` as tokenized, a line of counts per sample, then the rejected and dropped
    records with their reasons and the totals."""
    lines: list[str] = []
    totals: Counter[str] = Counter()
    n_samples = n_tokens = n_trained = 0
    for r in results:
        totals.update(r.stats)
        for name, s in (v for sample in r.samples for v in _variants(sample)):
            trained = int(s.train_mask.sum())
            n_samples, n_tokens, n_trained = n_samples + 1, n_tokens + len(s), n_trained + trained
            lines.append(
                f"=== {name}  source {r.source}: {len(s)} tokens, {trained} trained, "
                f"truncated turns {r.stats['turns_truncated']}, split per turn {_yes(r.stats['split_per_turn'])}, "
                f"spliced reply {_yes(r.stats['spliced_reply'])}"
            )
            lines.append(format_sample(token_pieces(tokenizer, s.input_ids), s.train_mask, color=color))
            lines.append("")
    rejected = [(r, sid, why) for r in results for sid, why in r.rejects]
    lines.append(f"rejected by the chat template: {len(rejected)}")
    lines += [f"  {sid} (source {r.source}): {why}" for r, sid, why in rejected]
    dropped = [
        (r, key, n) for r in results for key, n in sorted(r.stats.items()) if key.startswith("dropped_") and n > 0
    ]
    if dropped:
        lines.append(f"dropped: {sum(n for _, _, n in dropped)}")
        lines += [f"  {r.record_id} (source {r.source}): {key} {n}" for r, key, n in dropped]
    reasons = {k.removeprefix("rejected_"): n for k, n in sorted(totals.items()) if k.startswith("rejected_")}
    counted = ", ".join(f"{k} {totals[k]}" for k in _COUNTED)
    lines.append(
        f"totals: {len(results)} records -> {n_samples} samples, {n_tokens} tokens, {n_trained} trained; "
        f"rejected {sum(reasons.values())}"
        + (f" ({', '.join(f'{k} {n}' for k, n in reasons.items())})" if reasons else "")
        + f"; {counted}"
        + "".join(f", {k} {n}" for k, n in sorted(totals.items()) if k.startswith("dropped_"))
    )
    return "\n".join(lines)


def first_records(
    directories: list[str], per_source: int, sources: list[str] | None = None
) -> tuple[list[tuple[str, Trajectory | Preference]], dict[str, str]]:
    """The first `per_source` records of each source of the shard directories (only `sources` when given), and
    each source's kind ('trajectory' | 'preference'). ConfigError for a named source that is not there."""
    from xlam_hpc.errors import ConfigError
    from xlam_hpc.shard import ShardReader, load_manifest

    out: list[tuple[str, Trajectory | Preference]] = []
    kinds: dict[str, str] = {}
    for d in directories:
        manifest = load_manifest(d)
        with ShardReader(manifest) as reader:
            for name, info in manifest.sources.items():
                if sources and name not in sources:
                    continue
                kinds[name] = info["kind"]
                out += [(name, reader.record(name, i)) for i in range(min(per_source, info["num_samples"]))]
    missing = sorted(set(sources or []) - set(kinds))
    if missing:
        raise ConfigError(f"source(s) {', '.join(missing)} not found in {', '.join(directories)}")
    return out, kinds
