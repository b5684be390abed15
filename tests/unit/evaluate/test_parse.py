"""parse_tool_calls reads back exactly what each model family's own chat template writes for a tool-call turn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mistral_common
import pytest
from mistral_common.protocol.instruct.messages import AssistantMessage
from mistral_common.protocol.instruct.tool_calls import FunctionCall
from mistral_common.protocol.instruct.tool_calls import ToolCall as MistralToolCall
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy, SpecialTokens, TokenizerVersion
from mistral_common.tokens.tokenizers.instruct import InstructTokenizerV11, InstructTokenizerV13
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from tests.families import DATA, FAMILIES, collate_options
from xlam_hpc.collate.jinja_spans import TemplateRenderer
from xlam_hpc.collate.template import BUILTIN_TEMPLATE, BuiltinRenderer
from xlam_hpc.evaluate.parse import parse_tool_calls, style_for_template
from xlam_hpc.schema import FunctionSpec, ToolCall, Turn

TOOLS = [
    FunctionSpec(
        name="get_weather",
        description="Weather forecast for a city.",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}},
            "required": ["city"],
        },
    ),
    FunctionSpec(
        name="math.stats",
        description="Statistics of numbers.",
        parameters={
            "type": "object",
            "properties": {"values": {"type": "array", "items": {"type": "number"}}, "options": {"type": "object"}},
            "required": ["values"],
        },
    ),
]
CALLS = [
    {"name": "get_weather", "arguments": {"city": 'São Paulo; "centro"', "days": 3, "metric": True}},
    {"name": "math.stats", "arguments": {"values": [1.5, -2, 3e-05], "options": {"mode": "mean", "skip": None}}},
]
# bos/eos as each family's instruct tokenizer has them (tests/families.py)
BOS = {"llama-3.1": "<|begin_of_text|>", "llama-3.2": "<|begin_of_text|>", "hermes-3": "<|begin_of_text|>"}
STYLE = {
    "llama-3.1": "llama3",
    "llama-3.2": "llama3",
    "qwen2.5": "hermes",
    "qwen3": "hermes",
    "hermes-3": "hermes",
    "mistral-nemo": "mistral",
}


def _turns(calls: list[dict[str, Any]]) -> list[Turn]:
    tool_calls = [ToolCall(id=f"call_{k}", name=c["name"], arguments=c["arguments"]) for k, c in enumerate(calls)]
    return [
        Turn(role="user", content="Weather in São Paulo, and stats please."),
        Turn(role="assistant", tool_calls=tool_calls),
    ]


def _assistant_text(renderer: Any, calls: list[dict[str, Any]], system: str = "You are a helpful assistant.") -> str:
    rendered = renderer.render(system, TOOLS, _turns(calls))
    start, end = rendered.assistant_spans[0]
    return rendered.text[start:end]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reads_back_each_family_template_rendering(family):
    spec = FAMILIES[family]
    template = (DATA / "templates" / spec["template"]).read_text()
    options = collate_options(family)
    renderer = TemplateRenderer(
        template,
        {"bos_token": BOS.get(family, "<s>" if family.startswith("mistral") else ""), "eos_token": spec["eos"]},
        family,
        template_kwargs=options.get("template_kwargs"),
        tool_call_ids=options.get("tool_call_ids", "keep"),
    )
    # Llama 3.x templates take one call per assistant turn
    calls = CALLS[:1] if family.startswith("llama") else CALLS
    # Mistral Nemo's template renders the system prompt only into the last user turn (none precedes a reply)
    text = _assistant_text(renderer, calls, "" if family == "mistral-nemo" else "You are a helpful assistant.")
    style = style_for_template(template, None)
    assert style == STYLE[family]
    for chosen in (style, "auto"):
        out = parse_tool_calls(text, chosen)
        assert (out.calls, out.parsed, out.attempted, out.error) == (calls, True, True, None), (family, chosen, text)
    # the end-of-turn marker is not content; Qwen3 may write an empty think block before the calls
    assert parse_tool_calls(text).content in ("", "<think>\n\n</think>")


def test_reads_back_the_builtin_mistral_template():
    renderer = BuiltinRenderer("<s>", "</s>")
    text = _assistant_text(renderer, CALLS)
    assert text.startswith("[TOOL_CALLS] [") and text.endswith("</s>")
    assert style_for_template(BUILTIN_TEMPLATE, None) == "mistral"
    assert parse_tool_calls(text, "mistral").calls == CALLS
    assert parse_tool_calls(f" Checking both.{text}").content == "Checking both."


def _tekken(version: str) -> Tekkenizer:
    # the wheel's tekken vocabulary (first 5000 ranks) with [ARGS]/[CALL_ID] at their v11 ranks: mistral-common
    # ships no v11+ tokenizer file
    data = json.loads((Path(mistral_common.__file__).parent / "data" / "tekken_240718.json").read_text())
    named = {s["rank"]: s["token_str"] for s in Tekkenizer.DEPRECATED_SPECIAL_TOKENS}
    named |= {32: SpecialTokens.args.value, 33: SpecialTokens.call_id.value}
    specials = [{"rank": r, "token_str": named.get(r, f"<SPECIAL_{r}>"), "is_control": True} for r in range(100)]
    return Tekkenizer(data["vocab"][:5000], specials, data["config"]["pattern"], 5100, 100, TokenizerVersion(version))


@pytest.mark.parametrize(("version", "instruct"), [("v11", InstructTokenizerV11), ("v13", InstructTokenizerV13)])
def test_reads_back_mistral_v11_and_v13_tool_calls(version, instruct):
    tok = _tekken(version)
    message = AssistantMessage(
        tool_calls=[
            MistralToolCall(id=f"abcdefgh{k}", function=FunctionCall(name=c["name"], arguments=c["arguments"]))
            for k, c in enumerate(CALLS)
        ]
    )
    ids = instruct(tok).encode_assistant_message(message, is_before_last_user_message=False)
    text = tok.decode(ids, special_token_policy=SpecialTokenPolicy.KEEP)
    assert text.count("[TOOL_CALLS]") == 2 and "[ARGS]" in text
    assert ("[CALL_ID]" in text) == (version == "v11")
    for style in ("mistral", "auto"):
        out = parse_tool_calls(text, style)
        assert (out.calls, out.parsed, out.attempted) == (CALLS, True, True), text


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        ('{"name": "f", "parameters": {"a": 1}}; {"name": "g", "parameters": {}}', [("f", {"a": 1}), ("g", {})]),
        (
            '{"name": "f", "parameters": {"a": 1}}\n{"name": "g", "parameters": {"b": "x;y"}}',
            [("f", {"a": 1}), ("g", {"b": "x;y"})],
        ),
        ('<|python_tag|>{"name": "f", "parameters": {"a": [1]}}<|eom_id|>', [("f", {"a": [1]})]),
    ],
)
def test_llama3_several_calls(text, calls):
    out = parse_tool_calls(text, "llama3")
    assert out.calls == [{"name": n, "arguments": a} for n, a in calls]
    assert parse_tool_calls(text).calls == out.calls


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "f", "arguments": {"a": 1, "b": "two"}}',
        '[{"name": "f", "arguments": {"a": 1, "b": "two"}}]',
        '{"name": "f", "arguments": "{\\"a\\": 1, \\"b\\": \\"two\\"}"}',
        '```json\n{"name": "f", "arguments": {"a": 1, "b": "two"}}\n```',
        '{"tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1, "b": "two"}}}]}',
    ],
)
def test_plain_json(text):
    for style in ("json", "auto"):
        out = parse_tool_calls(text, style)
        assert (out.calls, out.parsed, out.attempted) == (
            [{"name": "f", "arguments": {"a": 1, "b": "two"}}],
            True,
            True,
        )


def test_plain_json_list_of_calls_without_arguments():
    out = parse_tool_calls('[{"name": "a"}, {"name": "b", "parameters": {"x": 1}}]', "json")
    assert out.calls == [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]


@pytest.mark.parametrize(
    ("style", "text"),
    [
        ("mistral", '[TOOL_CALLS][{"name": "f", "arguments": {"a": 1'),  # truncated
        ("mistral", '[TOOL_CALLS][{"arguments": {"a": 1}}]</s>'),  # no name
        ("mistral", '[TOOL_CALLS]{"name": "f", "arguments": {}}'),  # neither v3 list nor v11 [ARGS]
        ("mistral", '[TOOL_CALLS]f[ARGS]{"a": '),
        ("mistral", '[TOOL_CALLS][{"name": "f", "arguments": [1, 2]}]'),  # arguments not an object
        ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>'),
        ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": '),  # cut off by max_new_tokens
        ("hermes", '<tool_call>\n{"arguments": {"a": 1}}\n</tool_call><|im_end|>'),
        ("hermes", '<tool_call>\n{"name": "f", "arguments": "{not json"}\n</tool_call>'),
        ("llama3", '{"name": "f", "parameters": {"a": 1}'),
        ("llama3", '{"parameters": {"a": 1}}<|eot_id|>'),
        ("llama3", '<|python_tag|>brave_search.call(query="x")'),
        ("json", '[{"name": "f", "arguments": {"a": 1}}, {"name": '),
        ("json", '{"answer": 42}'),
    ],
)
def test_malformed_calls(style, text):
    for chosen in (style, "auto"):
        out = parse_tool_calls(text, chosen)
        assert (out.calls, out.parsed, out.attempted) == ([], False, True), (chosen, out)
        assert out.error


@pytest.mark.parametrize("style", ["auto", "mistral", "hermes", "llama3", "json"])
def test_plain_text_is_no_call(style):
    out = parse_tool_calls("It is sunny in Paris today, 24°C.<|im_end|>", style)
    assert (out.calls, out.parsed, out.attempted, out.error) == ([], True, False, None)
    assert out.content == "It is sunny in Paris today, 24°C."


def test_content_next_to_calls_is_kept():
    out = parse_tool_calls('Let me look.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>')
    assert out.content == "Let me look." and out.calls == [{"name": "f", "arguments": {}}]


def test_style_from_the_model_name_and_unknown_style():
    assert style_for_template(None, "mistralai/Mistral-Nemo-Instruct-2407") == "mistral"
    assert style_for_template(None, "Qwen/Qwen2.5-7B-Instruct") == "hermes"
    assert style_for_template(None, "meta-llama/Llama-3.1-8B-Instruct") == "llama3"
    assert style_for_template("{{ messages }}", "gpt2") == "auto"
    with pytest.raises(ValueError, match="unknown tool-call style"):
        parse_tool_calls("x", "xml")
