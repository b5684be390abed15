"""Chat templates → (text, spans): the character spans of every turn and which ones are trained.

Two renderers with one contract:
- `BuiltinRenderer`: xlam-hpc's Mistral-style template with tools (templates/mistral_tools.jinja), written
  out in Python. Rendering through Jinja costs ~55 µs per turn here, more than tokenizing the turn;
  the Python version costs ~2 µs. A test renders every test record both ways and requires equal text
  and spans; the Jinja file is what gets saved with the tokenizer for inference.
- `JinjaRenderer`: any tokenizer's own template through transformers' renderer; assistant spans come
  from its `{% generation %}` blocks (required: without them we would need string matching).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from xlam_hpc.errors import ConfigError
from xlam_hpc.schema import FunctionSpec, Turn

__all__ = [
    "BUILTIN_TEMPLATE",
    "BuiltinRenderer",
    "JinjaRenderer",
    "Rendered",
    "make_renderer",
    "to_hf_messages",
]

BUILTIN_TEMPLATE = resources.files("xlam_hpc.collate").joinpath("templates/mistral_tools.jinja").read_text()


@dataclass
class Rendered:
    """A rendered conversation."""

    text: str
    assistant_spans: list[tuple[int, int]]
    """Character span of every assistant turn, in conversation order."""
    group_starts: list[int] | None
    """Character offset where each turn group (a user turn and what follows it) starts; None when the
    template does not expose it (then truncation re-renders instead of estimating)."""
    specials: list[tuple[int, str]] | None = None
    """(end offset, text) of every control token the template wrote, in order; None when unknown. Every
    span and group boundary of the built-in template sits right after one, so its token index can be read
    from the ids alone (see SampleEncoder) without the tokenizer's offsets."""


def to_hf_messages(system: str, turns: list[Turn]) -> list[dict[str, Any]]:
    """Unified turns → the OpenAI/HF message dicts chat templates expect."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for t in turns:
        if t.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": t.content}
            if t.tool_calls:
                msg["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in t.tool_calls
                ]
            out.append(msg)
        elif t.role == "tool":
            out.append({"role": "tool", "tool_call_id": t.tool_call_id, "name": t.name, "content": t.content})
        else:
            out.append({"role": "user", "content": t.content})
    return out


def _tools_json(tools: list[FunctionSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


_encode = msgspec.json.Encoder().encode


def _dumps(value: Any) -> str:
    # Same output as Jinja's `tojson` filter in transformers (json.dumps with ensure_ascii=False, no sorting).
    return json.dumps(value, ensure_ascii=False)


# The built-in template's control tokens besides BOS/EOS (Mistral v3 added tokens).
_CONTROL = (
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[INST]",
    "[/INST]",
    "[TOOL_CALLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
)


class BuiltinRenderer:
    """Python twin of templates/mistral_tools.jinja."""

    name = "builtin"
    template = BUILTIN_TEMPLATE
    _TOOLS_CACHE_SIZE = 512

    def __init__(self, bos: str, eos: str) -> None:
        self.bos, self.eos = bos, eos
        self._tools_text: dict[bytes, str] = {}

    def _tools_json_text(self, tools: list[FunctionSpec]) -> str:
        # Records of one environment share their tool list; json.dumps of it was ~5% of loader time.
        key = _encode(tools)
        text = self._tools_text.get(key)
        if text is None:
            if len(self._tools_text) >= self._TOOLS_CACHE_SIZE:
                self._tools_text.clear()
            text = self._tools_text[key] = _dumps(_tools_json(tools))
        return text

    @property
    def control_tokens(self) -> tuple[str, ...]:
        """Every control token `render` writes (each must be one added token for the ids-only path)."""
        return tuple(t for t in (self.bos, self.eos, *_CONTROL) if t)

    def render(self, system: str, tools: list[FunctionSpec], turns: list[Turn]) -> Rendered:
        parts: list[str] = []
        specials: list[tuple[int, str]] = []
        pos = 0

        def add(*pieces: str) -> None:
            # pieces alternate: control token, text, control token, ... (text may be empty)
            nonlocal pos
            for k, piece in enumerate(pieces):
                parts.append(piece)
                pos += len(piece)
                if k % 2 == 0 and piece:
                    specials.append((pos, piece))

        add(self.bos)
        if tools:
            add("[AVAILABLE_TOOLS]", f" {self._tools_json_text(tools)}", "[/AVAILABLE_TOOLS]")
        spans: list[tuple[int, int]] = []
        groups: list[int] = []
        pending_system = system
        for t in turns:
            if t.role == "user":
                groups.append(pos)
                sys_part = f"{pending_system}\n\n" if pending_system else ""
                pending_system = ""
                add("[INST]", f" {sys_part}{t.content}", "[/INST]")
            elif t.role == "assistant":
                start = pos
                if t.content:
                    parts.append(f" {t.content}")
                    pos += len(t.content) + 1
                if t.tool_calls:
                    calls = ", ".join(
                        _dumps({"name": c.name, "arguments": c.arguments, "id": c.id}) for c in t.tool_calls
                    )
                    add("[TOOL_CALLS]", f" [{calls}]")
                add(self.eos)
                spans.append((start, pos))
            else:
                result = _dumps({"content": t.content, "call_id": t.tool_call_id})
                add("[TOOL_RESULTS]", f" {result}", "[/TOOL_RESULTS]")
        return Rendered("".join(parts), spans, groups, specials)


class JinjaRenderer:
    """A Jinja chat template with {% generation %} blocks, rendered by transformers."""

    name = "jinja"

    def __init__(self, template: str, special_tokens: dict[str, str], origin: str) -> None:
        if "generation" not in template or "{%" not in template:
            raise ConfigError(
                f"chat template from {origin} has no {{% generation %}} blocks, so assistant tokens cannot be "
                "found without string matching; set collate.chat_template=builtin or give a template file with them"
            )
        self.template, self.special_tokens = template, special_tokens

    def render(self, system: str, tools: list[FunctionSpec], turns: list[Turn]) -> Rendered:
        from transformers.utils.chat_template_utils import render_jinja_template

        texts, indices = render_jinja_template(
            conversations=[to_hf_messages(system, turns)],
            tools=_tools_json(tools) or None,
            chat_template=self.template,
            return_assistant_tokens_mask=True,
            **self.special_tokens,
        )
        spans = [tuple(s) for s in indices[0]]
        n_assistant = sum(t.role == "assistant" for t in turns)
        if len(spans) != n_assistant:
            raise ConfigError(
                f"chat template produced {len(spans)} generation blocks for {n_assistant} assistant turns; "
                "it must wrap each assistant message in exactly one {% generation %} block"
            )
        return Rendered(texts[0], spans, None)


def make_renderer(choice: str, tokenizer: Any) -> BuiltinRenderer | JinjaRenderer:
    """Renderer for `collate.chat_template` ('tokenizer' | 'builtin' | path to a Jinja file)."""
    specials = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
    if choice == "builtin":
        return BuiltinRenderer(specials["bos_token"], specials["eos_token"])
    if choice == "tokenizer":
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise ConfigError(
                "the tokenizer has no chat template and no fallback was chosen: set collate.chat_template=builtin "
                "(xlam-hpc's Mistral-style template with tools) or to a Jinja file"
            )
        if template == BUILTIN_TEMPLATE:
            return BuiltinRenderer(specials["bos_token"], specials["eos_token"])
        return JinjaRenderer(template, specials, "the tokenizer")
    path = Path(choice)
    if not path.is_file():
        raise ConfigError(f"collate.chat_template: '{choice}' is not 'tokenizer', 'builtin' or an existing file")
    return JinjaRenderer(path.read_text(encoding="utf-8"), specials, str(path))
