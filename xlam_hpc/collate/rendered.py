"""What a renderer returns (`Rendered`) and the two ways a record can fail to render."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HistoryRewritten", "Rendered", "Unrenderable"]


@dataclass
class Rendered:
    """A rendered conversation."""

    text: str
    assistant_spans: list[tuple[int, int] | None]
    """Character span of every assistant turn, in conversation order (None: not derived, as the turn is not
    trained)."""
    group_starts: list[int] | None
    """Character offset where each turn group (a user turn and what follows it) starts; None when the
    template does not expose it (then truncation re-renders instead of estimating)."""
    specials: list[tuple[int, str]] | None = None
    """(end offset, text) of every control token the template wrote, in order; None when unknown. Every
    span and group boundary of the built-in template sits right after one, so its token index can be read
    from the ids alone (see SampleEncoder) without the tokenizer's offsets."""
    spliced: bool = False
    """True when the text is the inference prompt + the reply, not the template's rendering of the whole
    conversation (a template whose history changes once a reply follows; see jinja_spans)."""


class Unrenderable(Exception):
    """The chat template cannot express this record exactly; the sample is rejected and counted by `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class HistoryRewritten(Exception):
    """The template renders earlier turns differently once later ones follow (e.g. drops earlier reasoning);
    the whole conversation has no single consistent set of spans, but each turn rendered as inference
    renders it does."""

    def __init__(self, turn: int) -> None:
        super().__init__(f"assistant turn {turn} is rendered differently once later turns follow")
        self.turn = turn
