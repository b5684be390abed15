"""Chat templates → (text, spans): the character spans of every turn and which ones are trained.

Two renderers with one contract (`render(system, tools, turns, trained=None) -> Rendered`):
- `BuiltinRenderer`: xlam-hpc's Mistral-style template with tools (templates/mistral_tools.jinja), written
  out in Python. Rendering through Jinja costs ~55 µs per turn here, more than tokenizing the turn;
  the Python version costs ~2 µs. A test renders every test record both ways and requires equal text
  and spans; the Jinja file is what gets saved with the tokenizer for inference.
- `TemplateRenderer` (jinja_spans.py): any model's own template, spans from `{% generation %}` blocks
  when it has them, else derived from prefix renderings and verified on every sample.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from xlam_hpc.collate.messages import ToolArguments, ToolCallIds, assistant_text, tools_json
from xlam_hpc.collate.rendered import Rendered
from xlam_hpc.errors import ConfigError
from xlam_hpc.schema import FunctionSpec, Turn

if TYPE_CHECKING:
    from xlam_hpc.collate.config import CollateConfig

__all__ = [
    "BUILTIN_TEMPLATE",
    "BuiltinRenderer",
    "Rendered",
    "make_renderer",
    "renderer_for",
]

BUILTIN_TEMPLATE = resources.files("xlam_hpc.collate").joinpath("templates/mistral_tools.jinja").read_text()

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
            text = self._tools_text[key] = _dumps(tools_json(tools))
        return text

    @property
    def control_tokens(self) -> tuple[str, ...]:
        """Every control token `render` writes (each must be one added token for the ids-only path)."""
        return tuple(t for t in (self.bos, self.eos, *_CONTROL) if t)

    def render(
        self, system: str, tools: list[FunctionSpec], turns: list[Turn], trained: list[bool] | None = None
    ) -> Rendered:
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
                text = assistant_text(t)  # reasoning before the content, as mistral_tools.jinja gets it
                if text:
                    parts.append(f" {text}")
                    pos += len(text) + 1
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


def make_renderer(
    choice: str,
    tokenizer: Any,
    *,
    template_kwargs: dict[str, Any] | None = None,
    tool_arguments: ToolArguments = "object",
    tool_call_ids: ToolCallIds = "keep",
) -> Any:
    """Renderer for `collate.chat_template` ('tokenizer' | 'builtin' | path to a Jinja file)."""
    from xlam_hpc.collate.jinja_spans import TemplateRenderer

    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    # what apply_chat_template passes: every special token by name, then the caller's kwargs
    specials = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    specials.setdefault("bos_token", bos)
    specials.setdefault("eos_token", eos)
    opts: dict[str, Any] = {
        "template_kwargs": template_kwargs,
        "tool_arguments": tool_arguments,
        "tool_call_ids": tool_call_ids,
    }
    if choice == "builtin":
        return BuiltinRenderer(bos, eos)
    if choice == "tokenizer":
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise ConfigError(
                "the tokenizer has no chat template and no fallback was chosen: set collate.chat_template=builtin "
                "(xlam-hpc's Mistral-style template with tools) or to a Jinja file"
            )
        if (
            template == BUILTIN_TEMPLATE
            and not template_kwargs
            and (tool_arguments, tool_call_ids) == ("object", "keep")
        ):
            return BuiltinRenderer(bos, eos)
        return TemplateRenderer(template, specials, "the tokenizer", **opts)
    path = Path(choice)
    if not path.is_file():
        raise ConfigError(f"collate.chat_template: '{choice}' is not 'tokenizer', 'builtin' or an existing file")
    return TemplateRenderer(path.read_text(encoding="utf-8"), specials, str(path), **opts)


def renderer_for(cfg: CollateConfig, tokenizer: Any) -> Any:
    """The renderer a collate section asks for (what the encoder renders with and the export saves)."""
    return make_renderer(
        cfg.chat_template,
        tokenizer,
        template_kwargs=cfg.template_kwargs,
        tool_arguments=cfg.tool_arguments,
        tool_call_ids=cfg.tool_call_ids,
    )
