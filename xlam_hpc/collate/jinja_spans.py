"""Any model's own Jinja chat template → text plus the character span of every trained assistant turn.

Real templates (Llama 3.x, Qwen2.5/3, Hermes, Mistral) have no `{% generation %}` blocks, so a turn's
span is derived from renderings of conversation prefixes, the way inference sees the conversation:

    prompt_k = render(messages[:i], add_generation_prompt=True)    # what the model is given
    turn_k   = render(messages[:i + 1])                            # plus what it must produce
    span_k   = [len(prompt_k), len(turn_k.rstrip()))               # ends with the end-of-turn marker

The derivation is checked on every sample, never assumed:
- `turn_k` must start with `prompt_k` (else the template renders a finished turn differently from the
  prompt the model gets: the sample is rejected, reason `prefix_unstable`);
- the full rendering must start with every `turn_k` (else the template rewrites earlier turns depending
  on later ones, e.g. Qwen3 drops earlier reasoning, Mistral moves tools before the last user turn:
  `HistoryRewritten`, and the encoder falls back to one sample per trained turn, each rendered the way
  inference renders it, which is exact by construction);
- everything in the record must appear in the rendering (content, tool calls, tool results, system
  prompt, tools): a template that silently drops e.g. an assistant's text next to a tool call rejects
  the sample (reason `drops_<what>`) rather than training a target the data does not hold.
Trailing whitespace after the end-of-turn marker (Qwen's "\\n" after <|im_end|>) is not trained: the
model stops at the marker. Templates with `{% generation %}` blocks use those blocks instead.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any

from xlam_hpc.collate.messages import (
    ReasoningStyle,
    ToolArguments,
    ToolCallIds,
    assistant_text,
    reasoning_style,
    to_hf_messages,
    tools_json,
)
from xlam_hpc.collate.rendered import HistoryRewritten, Rendered, Unrenderable
from xlam_hpc.schema import FunctionSpec, Turn

__all__ = ["TemplateRenderer", "has_generation_blocks"]

log = logging.getLogger(__name__)

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
_THINK = re.compile(r"</?think>")
_COMMENT = re.compile(r"\{#.*?#\}", re.S)


@functools.lru_cache(maxsize=16)
def has_generation_blocks(template: str) -> bool:
    """Whether the template marks assistant output with {% generation %} blocks (comments ignored)."""
    return bool(_GENERATION.search(_COMMENT.sub("", template)))


def _compiled(template: str) -> Any:
    # transformers' own compiled template (its sandboxed environment, tojson, raise_exception, strftime_now),
    # rendered directly: render_jinja_template deep-copies every message first, which made it 2.4x slower
    # on our freshly built dicts. The family tests check the text equals apply_chat_template's.
    from transformers.utils.chat_template_utils import _compile_jinja_template

    return _compile_jinja_template(template)


def _render(template: str, conversations: list[list[dict[str, Any]]], tools: Any, gen: bool, kw: dict) -> list[str]:
    compiled = _compiled(template)
    try:
        return [
            compiled.render(messages=m, tools=tools, documents=None, add_generation_prompt=gen, **kw)
            for m in conversations
        ]
    except Exception as exc:  # a template's raise_exception(), or one that cannot take this input
        raise Unrenderable("template_error", f"{type(exc).__name__}: {exc}") from None


class TemplateRenderer:
    """A Jinja chat template (or a dict of named ones, as HF tokenizers keep them) rendered by transformers."""

    name = "jinja"

    def __init__(
        self,
        template: str | dict[str, str],
        special_tokens: dict[str, Any],
        origin: str,
        *,
        template_kwargs: dict[str, Any] | None = None,
        tool_arguments: ToolArguments = "object",
        tool_call_ids: ToolCallIds = "keep",
    ) -> None:
        self.templates = template if isinstance(template, dict) else {"default": template}
        self.origin = origin
        self.kwargs = {**special_tokens, **(template_kwargs or {})}
        self.tool_arguments, self.tool_call_ids = tool_arguments, tool_call_ids
        # Turn.reasoning in `reasoning_content` for templates that render it (Qwen3), else before the content
        self.reasoning: ReasoningStyle = reasoning_style(self.templates)
        if any("strftime_now" in t for t in self.templates.values()) and "date_string" not in self.kwargs:
            log.warning(
                "the chat template from %s writes today's date (strftime_now): samples rendered on another day "
                "differ, so set collate.template_kwargs.date_string for runs that must resume exactly",
                origin,
            )
        # what the fingerprint of pre-tokenized shards covers
        self.template = json.dumps(
            {
                "templates": self.templates,
                "kwargs": template_kwargs or {},
                "arguments": tool_arguments,
                "call_ids": tool_call_ids,
                **({"reasoning": "field"} if self.reasoning == "field" else {}),
            },
            sort_keys=True,
        )

    def _pick(self, has_tools: bool) -> str:
        # transformers' get_chat_template: 'tool_use' when tools are given and it exists, else 'default'
        if has_tools and "tool_use" in self.templates:
            return self.templates["tool_use"]
        if "default" in self.templates:
            return self.templates["default"]
        raise Unrenderable("template_error", f"no 'default' template among {sorted(self.templates)}")

    def render(
        self, system: str, tools: list[FunctionSpec], turns: list[Turn], trained: list[bool] | None = None
    ) -> Rendered:
        """Text and spans; spans of assistant turns not in `trained` (when given) are None (not derived)."""
        messages = to_hf_messages(system, turns, self.tool_arguments, self.tool_call_ids, self.reasoning)
        tool_list = tools_json(tools) or None
        template = self._pick(tool_list is not None)
        offset = len(messages) - len(turns)
        positions = [offset + i for i, t in enumerate(turns) if t.role == "assistant"]
        wanted = [k for k in range(len(positions)) if trained is None or trained[k]]
        if has_generation_blocks(template):
            rendered = self._render_generation(template, messages, tool_list, len(positions))
        else:
            try:
                rendered = self._render_prefixes(template, messages, tool_list, positions, wanted)
            except Unrenderable as exc:
                if exc.reason == "prefix_unstable":  # report the cause when it is content the template drops
                    (text,) = _render(template, [messages], tool_list, False, self.kwargs)
                    blank = Rendered(text, [None] * len(positions), None)
                    _check_expressed(blank, system, tools, turns, self.reasoning)
                raise
        _check_expressed(rendered, system, tools, turns, self.reasoning)
        return rendered

    def _render_generation(
        self, template: str, messages: list[dict[str, Any]], tools: Any, n_assistant: int
    ) -> Rendered:
        from transformers.utils.chat_template_utils import render_jinja_template

        try:
            texts, indices = render_jinja_template(
                conversations=[messages],
                tools=tools,
                chat_template=template,
                return_assistant_tokens_mask=True,
                **self.kwargs,
            )
        except Exception as exc:
            raise Unrenderable("template_error", f"{type(exc).__name__}: {exc}") from None
        spans = [tuple(s) for s in indices[0]]
        if len(spans) != n_assistant:
            raise Unrenderable(
                "generation_blocks",
                f"{len(spans)} {{% generation %}} blocks for {n_assistant} assistant turns "
                f"(template from {self.origin})",
            )
        return Rendered(texts[0], spans, None)  # type: ignore[arg-type]

    def _render_prefixes(
        self,
        template: str,
        messages: list[dict[str, Any]],
        tools: Any,
        positions: list[int],
        wanted: list[int],
    ) -> Rendered:
        last_only = wanted == [len(positions) - 1] and positions[-1] == len(messages) - 1
        # one call per generation-prompt setting: transformers renders a batch of conversations in one go
        fulls = _render(template, [messages[: positions[k] + 1] for k in wanted], tools, False, self.kwargs)
        prompts = _render(template, [messages[: positions[k]] for k in wanted], tools, True, self.kwargs)
        text = fulls[-1] if last_only else _render(template, [messages], tools, False, self.kwargs)[0]
        spans: list[tuple[int, int] | None] = [None] * len(positions)
        prev_end = 0
        for k, full, prompt in zip(wanted, fulls, prompts, strict=True):
            if not full.startswith(prompt):
                if not last_only:
                    raise HistoryRewritten(k)
                return self._splice(template, messages[: positions[k]], tools, (prompt, full), (len(positions), k))
            if not text.startswith(full):
                raise HistoryRewritten(k)
            start, end = len(prompt), len(full.rstrip())
            if end <= start or start < prev_end:
                raise Unrenderable("prefix_unstable", f"assistant turn {k}: empty or overlapping span")
            spans[k] = (start, end)
            prev_end = end
        return Rendered(text, spans, None)  # type: ignore[arg-type]

    def _splice(
        self, template: str, history: list[dict[str, Any]], tools: Any, texts: tuple[str, str], turn: tuple[int, int]
    ) -> Rendered:
        """Inference prompt + the reply as the template writes it, for a template whose history changes once a
        reply follows (Hermes 3 writes "\\n" before </tool_response> and <|im_end|> only then). The reply starts
        after the last generation prompt in `full`; the generation prompt is what add_generation_prompt adds."""
        (prompt, full), (n, k) = texts, turn
        (bare,) = _render(template, [history], tools, False, self.kwargs)
        gen = prompt[len(bare) :] if prompt.startswith(bare) else ""
        at = full.rfind(gen) if gen.strip() else -1
        if at < 0:
            raise Unrenderable(
                "prefix_unstable",
                f"assistant turn {k}: the rendered conversation does not start with the generation prompt "
                "rendered for it, and the reply cannot be told apart (no generation prompt in the template)",
            )
        reply = full[at + len(gen) :]
        spans: list[tuple[int, int] | None] = [None] * n
        spans[k] = (len(prompt), len(prompt) + len(reply.rstrip()))
        return Rendered(prompt + reply, spans, None, spliced=True)  # type: ignore[arg-type]


def _contains(haystack: str, content: str) -> bool:
    # as written, or JSON-quoted (Llama 3.x writes tool results through `tojson`)
    return content in haystack or json.dumps(content, ensure_ascii=False)[1:-1] in haystack


def _check_expressed(
    r: Rendered, system: str, tools: list[FunctionSpec], turns: list[Turn], reasoning: ReasoningStyle = "content"
) -> None:
    """Raise Unrenderable when the rendering lost part of the record (checked on trimmed text)."""
    text = r.text
    if system.strip() and system.strip() not in text:
        raise Unrenderable("drops_system", "the template does not render the system prompt here")
    for f in tools:
        if f.name not in text:
            raise Unrenderable("drops_tools", f"tool '{f.name}' is not rendered")
    k = 0
    for i, t in enumerate(turns):
        if t.role != "assistant":
            if t.content.strip() and not _contains(text, t.content.strip()):
                raise Unrenderable(f"drops_{t.role}", f"turn {i} ({t.role}) is not rendered")
            continue
        span = r.assistant_spans[k]
        k += 1
        where = text if span is None else text[span[0] : span[1]]
        # reasoning of earlier turns may be left out of the history, as inference renders it (Qwen3)
        content = assistant_text(t) if reasoning == "content" else t.content
        pieces = _THINK.split(content) if span is not None else content.rsplit("</think>", 1)[-1:]
        for piece in pieces:
            if piece.strip() and not _contains(where, piece.strip()):
                raise Unrenderable("drops_assistant_content", f"turn {i}: the assistant text is not rendered")
        if (
            reasoning == "field"
            and span is not None
            and t.reasoning.strip()
            and not _contains(where, t.reasoning.strip())
        ):
            raise Unrenderable("drops_reasoning", f"turn {i}: the assistant reasoning is not rendered")
        for call in t.tool_calls:
            if where.count(call.name) < sum(c.name == call.name for c in t.tool_calls):
                raise Unrenderable("drops_tool_call", f"turn {i}: tool call '{call.name}' is not rendered")
            args = call.arguments if isinstance(call.arguments, dict) else {}
            for key in args:
                if json.dumps(key, ensure_ascii=False) not in where:
                    detail = f"turn {i}: argument '{key}' of '{call.name}' is not rendered"
                    raise Unrenderable("drops_tool_call", detail)
