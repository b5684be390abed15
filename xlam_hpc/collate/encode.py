"""Records → token ids with loss masks, in context, without string matching.

A conversation is rendered once into text plus the character span of each assistant turn; the whole
text is tokenized once (batched, in Rust) with offsets, and a token is trained when it starts inside
the span of a trained assistant turn. Over-long samples drop whole leading turn groups (a user turn and
what follows it) while the system prompt and tools stay, or are dropped — counted either way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlam_hpc.collate.config import CollateConfig
from xlam_hpc.collate.template import BuiltinRenderer, Rendered, make_renderer
from xlam_hpc.errors import ConfigError
from xlam_hpc.schema import Preference, Trajectory, Turn

__all__ = ["PairSample", "Sample", "SampleEncoder"]


@dataclass
class Sample:
    """One SFT sample: ids and a boolean mask of trained tokens."""

    sample_id: str
    input_ids: np.ndarray
    train_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PairSample:
    """One DPO sample: prompt + chosen and prompt + rejected, each with its trained-token mask."""

    sample_id: str
    chosen: Sample
    rejected: Sample


class SampleEncoder:
    """Renders and tokenizes records according to a CollateConfig; `stats` counts truncations and drops."""

    def __init__(self, tokenizer: Any, cfg: CollateConfig) -> None:
        self.cfg = cfg
        self.renderer = make_renderer(cfg.chat_template, tokenizer)
        self.backend = tokenizer.backend_tokenizer
        self.stats: Counter[str] = Counter()

    # -- tokenization ---------------------------------------------------------------------------
    def _tokenize(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        encs = self.backend.encode_batch(texts, add_special_tokens=False)
        return [
            (np.asarray(e.ids, dtype=np.int32), np.fromiter((o[0] for o in e.offsets), np.int64, len(e.ids)))
            for e in encs
        ]

    @staticmethod
    def _mask(starts: np.ndarray, spans: list[tuple[int, int]], trained: list[bool]) -> np.ndarray:
        if not spans:
            return np.zeros(len(starts), dtype=bool)
        span_starts = np.fromiter((s for s, _ in spans), np.int64, len(spans))
        span_ends = np.fromiter((e for _, e in spans), np.int64, len(spans))
        k = np.searchsorted(span_starts, starts, side="right") - 1
        inside = (k >= 0) & (starts < span_ends[np.maximum(k, 0)])
        return inside & np.asarray(trained, dtype=bool)[np.maximum(k, 0)]

    def prefix_length(self, rec: Trajectory | Preference) -> int:
        """Tokens of the part truncation never removes: BOS, tools and system prompt."""
        r = self.renderer.render(rec.task_instruction, rec.tools, [Turn(role="user", content="")])
        return len(self._tokenize([r.text])[0][0])

    # -- SFT ------------------------------------------------------------------------------------
    def _trained_flags(self, turns: list[Turn]) -> list[bool]:
        flags = [t.train for t in turns if t.role == "assistant"]
        if self.cfg.loss_on == "last" and flags:
            last = max(i for i, f in enumerate(flags) if f) if any(flags) else -1
            flags = [i == last for i in range(len(flags))]
        return flags

    def _fit(
        self,
        sample_id: str,
        rec: Trajectory | Preference,
        variants: list[tuple[list[Turn], list[bool]]],
        first: list[tuple[Rendered, np.ndarray, np.ndarray]] | None = None,
    ) -> list[Sample] | None:
        """Render+tokenize each variant (turns, trained flag per assistant turn). Variants share their leading
        turns (DPO: prompt+chosen, prompt+rejected) and are truncated by the same turn groups, so they keep
        one prompt. Returns None when the sample is dropped."""
        limit = self.cfg.seq_length
        if first is None:
            rendered = [self.renderer.render(rec.task_instruction, rec.tools, turns) for turns, _ in variants]
            first = [(r, *t) for r, t in zip(rendered, self._tokenize([r.text for r in rendered]), strict=True)]
        longest = max(range(len(first)), key=lambda i: len(first[i][1]))
        if len(first[longest][1]) <= limit:
            return self._finish(sample_id, first, [flags for _, flags in variants])
        if self.cfg.overflow == "drop":
            self.stats["dropped_overlong"] += 1
            return None
        turns = variants[longest][0]
        users = [i for i, t in enumerate(turns) if t.role == "user"]
        r, ids, starts = first[longest]
        drop = self._estimate_groups_to_drop(r, starts, len(ids) - limit)
        while drop < len(users):
            cut = users[drop]
            skipped = sum(t.role == "assistant" for t in turns[:cut])
            kept = [(v_turns[cut:], v_flags[skipped:]) for v_turns, v_flags in variants]
            rendered = [self.renderer.render(rec.task_instruction, rec.tools, t) for t, _ in kept]
            tokens = self._tokenize([x.text for x in rendered])
            if max(len(ids) for ids, _ in tokens) <= limit:
                self.stats["truncated"] += 1
                self.stats["turns_truncated"] += cut
                done = [(x, *t) for x, t in zip(rendered, tokens, strict=True)]
                return self._finish(sample_id, done, [flags for _, flags in kept])
            drop += 1
        self.stats["dropped_overlong"] += 1
        return None

    @staticmethod
    def _estimate_groups_to_drop(rendered: Rendered, starts: np.ndarray, excess: int) -> int:
        """Smallest number of leading groups whose tokens cover `excess` (1 when the template hides groups)."""
        groups = rendered.group_starts
        if not groups or len(groups) < 2:
            return 1
        bounds = np.searchsorted(starts, np.asarray(groups), side="left")
        sizes = np.diff(bounds)  # tokens per group except the last
        need = int(np.searchsorted(np.cumsum(sizes), excess, side="left")) + 1
        return max(1, min(need, len(groups) - 1))

    def _finish(
        self, sample_id: str, done: list[tuple[Rendered, np.ndarray, np.ndarray]], flags: list[list[bool]]
    ) -> list[Sample] | None:
        samples = []
        for (rendered, ids, starts), f in zip(done, flags, strict=True):
            mask = self._mask(starts, rendered.assistant_spans, f)
            if not mask.any():
                self.stats["dropped_no_trained_tokens"] += 1
                return None
            samples.append(Sample(sample_id, ids, mask))
        return samples

    def encode_sft(self, items: list[tuple[str, Trajectory]]) -> list[Sample]:
        """SFT samples of a list of (sample id, record), in order (prompt_answer expands records)."""
        jobs: list[tuple[str, Trajectory, list[Turn], list[bool]]] = []
        for sid, rec in items:
            if not isinstance(rec, Trajectory):
                raise ConfigError(f"sample {sid} is a preference pair; task 'sft' needs trajectory sources")
            flags = self._trained_flags(rec.conversation)
            if self.cfg.mode == "trajectory":
                jobs.append((sid, rec, rec.conversation, flags))
                continue
            positions = [i for i, t in enumerate(rec.conversation) if t.role == "assistant"]
            for k, (pos, trained) in enumerate(zip(positions, flags, strict=True)):
                if trained:
                    jobs.append((f"{sid}#{k}", rec, rec.conversation[: pos + 1], [False] * k + [True]))
        if isinstance(self.renderer, BuiltinRenderer) and self.cfg.mode == "prompt_answer":
            return self._encode_prefixes(jobs)
        rendered = [self.renderer.render(rec.task_instruction, rec.tools, turns) for _, rec, turns, _ in jobs]
        tokens = self._tokenize([r.text for r in rendered])
        out = []
        for (sid, rec, turns, flags), r, (ids, starts) in zip(jobs, rendered, tokens, strict=True):
            fitted = self._fit(sid, rec, [(turns, flags)], [(r, ids, starts)])
            if fitted is not None:
                out += fitted
        return out

    def _encode_prefixes(self, jobs: list[tuple[str, Trajectory, list[Turn], list[bool]]]) -> list[Sample]:
        # The built-in template renders a conversation prefix as a text prefix, and every assistant span
        # ends with the EOS special token (a token boundary), so each prompt_answer sample is a slice of
        # one tokenization of the whole conversation.
        cache: dict[str, tuple[Rendered, np.ndarray, np.ndarray]] = {}
        out = []
        for sid, rec, turns, flags in jobs:
            full = cache.get(rec.unique_trajectory_id)
            if full is None:
                r = self.renderer.render(rec.task_instruction, rec.tools, rec.conversation)
                full = cache[rec.unique_trajectory_id] = (r, *self._tokenize([r.text])[0])
            r, ids, starts = full
            k = len(flags) - 1
            end = int(np.searchsorted(starts, r.assistant_spans[k][1], side="left"))
            prefix = Rendered(r.text[: r.assistant_spans[k][1]], r.assistant_spans[: k + 1], r.group_starts)
            fitted = self._fit(sid, rec, [(turns, flags)], [(prefix, ids[:end], starts[:end])])
            if fitted is not None:
                out += fitted
        return out

    # -- DPO ------------------------------------------------------------------------------------
    def encode_dpo(self, items: list[tuple[str, Preference]]) -> list[PairSample]:
        """DPO pairs; chosen and rejected keep the same (possibly truncated) prompt."""
        out = []
        for sid, rec in items:
            if not isinstance(rec, Preference):
                raise ConfigError(f"sample {sid} is a trajectory; task 'dpo' needs preference sources")
            flags = [False] * sum(t.role == "assistant" for t in rec.conversation) + [True]
            variants = [([*rec.conversation, rec.chosen], flags), ([*rec.conversation, rec.rejected], flags)]
            fitted = self._fit(sid, rec, variants)
            if fitted is not None:
                out.append(PairSample(sid, *fitted))
        return out
