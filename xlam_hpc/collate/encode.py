"""Records → token ids with loss masks, in context, without string matching.

A conversation is rendered once into text plus the character span of each assistant turn; the whole
text is tokenized once (batched, in Rust), and the tokens from the one holding a trained span's first
character up to the one holding the character after it are trained. With the built-in template every
span and group boundary sits right after a control token (an added token: the tokenizer splits on it
before anything else), so a boundary's token index is read off the ids: the tokenizer runs without
offsets (`encode_batch_fast`, ~1.5x faster), and the control tokens found in the ids must be exactly the
ones the template wrote, else that text is tokenized again with offsets (Rust char→token lookups), as
every text of a Jinja template is.
Over-long samples drop whole leading turn groups (a user turn and what follows it) while the system
prompt and tools stay, or are dropped — counted either way. A record the chat template cannot express
exactly is rejected and counted by reason (`rejected_<reason>`, first one of each reason logged with its
id); one whose template rewrites history is split into one sample per trained turn (`split_per_turn`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlam_hpc.collate.config import CollateConfig
from xlam_hpc.collate.rendered import HistoryRewritten, Rendered, Unrenderable
from xlam_hpc.collate.template import BuiltinRenderer, renderer_for
from xlam_hpc.errors import ConfigError
from xlam_hpc.schema import Preference, Trajectory, Turn

__all__ = ["PairSample", "Sample", "SampleEncoder"]

log = logging.getLogger(__name__)
_MAX_REJECT_EXAMPLES = 20


class _Tokens:
    """Token ids of one text plus char→token lookups: the Rust Encoding's (per-token offsets are never
    converted to Python, which cost more than the tokenization itself) or, on the ids-only path, a
    table of the boundaries right after each control token."""

    __slots__ = ("_after", "_enc", "_text_len", "ids")

    def __init__(self, ids: np.ndarray, enc: Any, text_len: int, after: dict[int, int] | None = None) -> None:
        self.ids, self._enc, self._text_len, self._after = ids, enc, text_len, after

    def __len__(self) -> int:
        return len(self.ids)

    def token_at(self, char: int) -> int:
        """Index of the token holding character `char` (the next token if none does), or len at the end."""
        n = len(self.ids)
        if self._after is not None:
            return min(self._after[char], n)
        while char < self._text_len:
            t = self._enc.char_to_token(char)
            if t is not None:
                return min(t, n)
            char += 1
        return n

    def token_after(self, char: int) -> int:
        """Index after the token holding character `char - 1` (the last character of a span): a token that
        runs past a span's end is trained, as the model must produce its first characters."""
        if self._after is not None or char <= 0:
            return self.token_at(char)
        n = len(self.ids)
        while char > 0:
            t = self._enc.char_to_token(char - 1)
            if t is not None:
                return min(t + 1, n)
            char -= 1
        return 0

    def straddles(self, start: int, end: int) -> bool:
        """Whether the span's first or last token reaches outside it (needs offsets; False on the ids path)."""
        if self._enc is None or end <= start:
            return False
        first, last = self._enc.char_to_token(start), self._enc.char_to_token(end - 1)
        return (first is not None and self._enc.offsets[first][0] < start) or (
            last is not None and self._enc.offsets[last][1] > end
        )

    def head(self, n_tokens: int, text_len: int) -> _Tokens:
        return _Tokens(self.ids[:n_tokens], self._enc, text_len, self._after)


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
        self.renderer = renderer_for(cfg, tokenizer)
        # Our own copy of the Rust tokenizer: HF's __call__ leaves padding/truncation switched on in the shared
        # backend (e.g. after `tokenizer(x, padding="max_length")`), which would silently pad our ids.
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_padding()
        self.backend.no_truncation()
        self.stats: Counter[str] = Counter()
        self.reject_examples: list[tuple[str, str]] = []
        """(sample id, reason: detail) of the first rejected samples, for `inspect`/`render`."""
        self._control_ids = self._control_token_ids()
        self._is_control = np.zeros(self.backend.get_vocab_size(with_added_tokens=True), dtype=bool)
        self._is_control[list((self._control_ids or {}).values())] = True

    # -- tokenization ---------------------------------------------------------------------------
    def _control_token_ids(self) -> dict[str, int] | None:
        """Id of each control token the renderer writes, when all are plain added tokens (no stripping of
        neighbouring spaces, which would move a boundary into the control token); else None."""
        if not isinstance(self.renderer, BuiltinRenderer):
            return None
        added = {tok.content: (i, tok) for i, tok in self.backend.get_added_tokens_decoder().items()}
        ids = {}
        for text in self.renderer.control_tokens:
            i, tok = added.get(text, (None, None))
            if tok is None or tok.lstrip or tok.rstrip or tok.single_word:
                return None
            ids[text] = i
        return ids

    def _tokenize(self, rendered: list[Rendered]) -> list[_Tokens]:
        if self._control_ids is None:
            return self._tokenize_with_offsets([r.text for r in rendered])
        encs = self.backend.encode_batch_fast([r.text for r in rendered], add_special_tokens=False)
        out = [self._read_boundaries(r, np.asarray(e.ids, dtype=np.int32)) for r, e in zip(rendered, encs, strict=True)]
        redo = [i for i, t in enumerate(out) if t is None]
        if redo:
            for i, tokens in zip(redo, self._tokenize_with_offsets([rendered[i].text for i in redo]), strict=True):
                out[i] = tokens
        return out  # type: ignore[return-value]

    def _tokenize_with_offsets(self, texts: list[str]) -> list[_Tokens]:
        encs = self.backend.encode_batch(texts, add_special_tokens=False)
        return [_Tokens(np.asarray(e.ids, dtype=np.int32), e, len(t)) for e, t in zip(encs, texts, strict=True)]

    def _read_boundaries(self, r: Rendered, ids: np.ndarray) -> _Tokens | None:
        """Tokens with boundary lookups from the control tokens' positions in `ids`, or None when the ids
        hold other control tokens than the template wrote (e.g. "[INST]" typed in a message)."""
        if r.specials is None:
            return None
        found = np.flatnonzero(self._is_control[ids])
        expected = [self._control_ids[text] for _, text in r.specials]  # type: ignore[index]
        if len(found) != len(expected) or ids[found].tolist() != expected:
            return None
        after = {end: int(i) + 1 for (end, _), i in zip(r.specials, found, strict=True)}
        needed = [c for span in r.assistant_spans for c in span] + (r.group_starts or [])
        if any(c not in after for c in needed):
            return None
        return _Tokens(ids, None, len(r.text), after)

    def _mask(self, tokens: _Tokens, spans: list[tuple[int, int] | None], trained: list[bool]) -> np.ndarray:
        mask = np.zeros(len(tokens), dtype=bool)
        for span, on in zip(spans, trained, strict=True):
            if on and span is not None:
                mask[tokens.token_at(span[0]) : tokens.token_after(span[1])] = True
                if tokens.straddles(*span):  # a token shared with the prompt: the tokenizer merged across turns
                    self.stats["boundary_straddles"] += 1
        return mask

    def prefix_length(self, rec: Trajectory | Preference) -> int:
        """Tokens of the part truncation never removes: BOS, tools and system prompt."""
        try:
            r = self.renderer.render(rec.task_instruction, rec.tools, [Turn(role="user", content="")])
        except (Unrenderable, HistoryRewritten):
            return 0
        return len(self._tokenize([r])[0])

    def _reject(self, sample_id: str, exc: Unrenderable | HistoryRewritten) -> None:
        if isinstance(exc, HistoryRewritten):  # even one turn alone has no consistent span
            exc = Unrenderable("prefix_unstable", str(exc))
        key = f"rejected_{exc.reason}"
        if not self.stats[key]:
            log.warning("sample %s rejected by the chat template (%s); counted as %s", sample_id, exc, key)
        self.stats[key] += 1
        if len(self.reject_examples) < _MAX_REJECT_EXAMPLES:
            self.reject_examples.append((sample_id, str(exc)))

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
        first: list[tuple[Rendered, _Tokens]] | None = None,
    ) -> list[Sample] | None:
        """Render+tokenize each variant (turns, trained flag per assistant turn). Variants share their leading
        turns (DPO: prompt+chosen, prompt+rejected) and are truncated by the same turn groups, so they keep
        one prompt. Returns None when the sample is dropped."""
        limit = self.cfg.seq_length
        if first is None:
            first = self._render_all(rec, variants)
        longest = max(range(len(first)), key=lambda i: len(first[i][1]))
        if len(first[longest][1]) <= limit:
            return self._finish(sample_id, first, [flags for _, flags in variants])
        if self.cfg.overflow == "drop":
            self.stats["dropped_overlong"] += 1
            return None
        turns = variants[longest][0]
        users = [i for i, t in enumerate(turns) if t.role == "user"]
        rendered, tokens = first[longest]
        drop = self._estimate_groups_to_drop(rendered, tokens, len(tokens) - limit)
        while drop < len(users):
            cut = users[drop]
            skipped = sum(t.role == "assistant" for t in turns[:cut])
            kept = [(v_turns[cut:], v_flags[skipped:]) for v_turns, v_flags in variants]
            done = self._render_all(rec, kept)
            if max(len(tok) for _, tok in done) <= limit:
                self.stats["truncated"] += 1
                self.stats["turns_truncated"] += cut
                return self._finish(sample_id, done, [flags for _, flags in kept])
            drop += 1
        self.stats["dropped_overlong"] += 1
        return None

    def _render_all(
        self, rec: Trajectory | Preference, variants: list[tuple[list[Turn], list[bool]]]
    ) -> list[tuple[Rendered, _Tokens]]:
        rendered = [self._render(rec, turns, flags) for turns, flags in variants]
        return list(zip(rendered, self._tokenize(rendered), strict=True))

    def _render(self, rec: Trajectory | Preference, turns: list[Turn], flags: list[bool]) -> Rendered:
        r = self.renderer.render(rec.task_instruction, rec.tools, turns, flags)
        if r.spliced:
            self.stats["spliced_reply"] += 1
        return r

    @staticmethod
    def _estimate_groups_to_drop(rendered: Rendered, tokens: _Tokens, excess: int) -> int:
        """Smallest number of leading groups whose tokens cover `excess` (1 when the template hides groups)."""
        groups = rendered.group_starts
        if not groups or len(groups) < 2:
            return 1
        bounds = np.asarray([tokens.token_at(g) for g in groups])
        sizes = np.diff(bounds)  # tokens per group except the last
        need = int(np.searchsorted(np.cumsum(sizes), excess, side="left")) + 1
        return max(1, min(need, len(groups) - 1))

    def _finish(
        self, sample_id: str, done: list[tuple[Rendered, _Tokens]], flags: list[list[bool]]
    ) -> list[Sample] | None:
        samples = []
        for (rendered, tokens), f in zip(done, flags, strict=True):
            mask = self._mask(tokens, rendered.assistant_spans, f)
            if not mask.any():
                self.stats["dropped_no_trained_tokens"] += 1
                return None
            samples.append(Sample(sample_id, tokens.ids, mask))
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
        ready: list[tuple[str, Trajectory, list[Turn], list[bool]]] = []
        rendered: list[Rendered] = []
        queue = list(reversed(jobs))  # a stack, so split jobs keep their place in the order
        while queue:
            sid, rec, turns, flags = job = queue.pop()
            try:
                rendered.append(self._render(rec, turns, flags))
            except HistoryRewritten as exc:
                if sum(flags) == 1 and flags[-1] and turns[-1].role == "assistant":  # already one turn
                    self._reject(sid, exc)
                else:
                    self.stats["split_per_turn"] += 1
                    queue += reversed(self._per_turn(job))
                continue
            except Unrenderable as exc:
                self._reject(sid, exc)
                continue
            ready.append(job)
        tokens = self._tokenize(rendered)
        out = []
        for (sid, rec, turns, flags), r, tok in zip(ready, rendered, tokens, strict=True):
            try:
                fitted = self._fit(sid, rec, [(turns, flags)], [(r, tok)])
            except (Unrenderable, HistoryRewritten) as exc:  # a truncated variant the template cannot render
                self._reject(sid, exc)
                continue
            if fitted is not None:
                out += fitted
        return out

    @staticmethod
    def _per_turn(
        job: tuple[str, Trajectory, list[Turn], list[bool]],
    ) -> list[tuple[str, Trajectory, list[Turn], list[bool]]]:
        """One job per trained turn (ids '<id>#<turn>', as prompt_answer) for a template that rewrites earlier
        turns once later ones follow: each turn is then trained in the context inference gives it."""
        sid, rec, turns, flags = job
        positions = [i for i, t in enumerate(turns) if t.role == "assistant"]
        return [
            (f"{sid}#{k}", rec, turns[: pos + 1], [False] * k + [True])
            for k, (pos, on) in enumerate(zip(positions, flags, strict=True))
            if on
        ]

    def _encode_prefixes(self, jobs: list[tuple[str, Trajectory, list[Turn], list[bool]]]) -> list[Sample]:
        # The built-in template renders a conversation prefix as a text prefix, and every assistant span
        # ends with the EOS special token (a token boundary), so each prompt_answer sample is a slice of
        # one tokenization of the whole conversation.
        cache: dict[str, tuple[Rendered, _Tokens]] = {}
        out = []
        for sid, rec, turns, flags in jobs:
            full = cache.get(rec.unique_trajectory_id)
            if full is None:
                full = self._render_all(rec, [(rec.conversation, self._trained_flags(rec.conversation))])[0]
                cache[rec.unique_trajectory_id] = full
            r, tokens = full
            k = len(flags) - 1
            end_char = r.assistant_spans[k][1]
            prefix = Rendered(r.text[:end_char], r.assistant_spans[: k + 1], r.group_starts)
            head = tokens.head(tokens.token_at(end_char), end_char)
            fitted = self._fit(sid, rec, [(turns, flags)], [(prefix, head)])
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
            try:
                fitted = self._fit(sid, rec, variants)
            except (Unrenderable, HistoryRewritten) as exc:
                self._reject(sid, exc)
                continue
            if fitted is not None:
                out.append(PairSample(sid, *fitted))
        return out
