"""Turn.reasoning in chat templates: Qwen3 (reads `reasoning_content`) renders it in its <think> block; templates
without a reasoning slot (Qwen2.5, Llama 3.1, Hermes 3, the builtin Mistral one) render exactly what they rendered
before the field existed, when converters wrote the thought into `content`."""

from __future__ import annotations

from pathlib import Path

import pytest

from xlam_hpc.collate.jinja_spans import TemplateRenderer
from xlam_hpc.collate.messages import assistant_text, supports_reasoning, to_hf_messages
from xlam_hpc.collate.template import BUILTIN_TEMPLATE, BuiltinRenderer
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.schema import FunctionSpec, ToolCall, Turn, decode_record

ROOT = Path(__file__).resolve().parents[3]
TEMPLATES = ROOT / "tests" / "data" / "model_families" / "templates"
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}
TOOLS = [FunctionSpec(name="search", parameters={"type": "object", "properties": {"q": {"type": "string"}}})]


def _turns(folded: bool) -> list[Turn]:
    """A tool-using conversation; folded=True writes each thought into content (the records before the field)."""

    def assistant(reasoning: str, content: str = "", calls: list[ToolCall] | None = None) -> Turn:
        if folded:
            return Turn(
                role="assistant", content="\n\n".join(s for s in (reasoning, content) if s), tool_calls=calls or []
            )
        return Turn(role="assistant", content=content, reasoning=reasoning, tool_calls=calls or [])

    call = ToolCall(id="call_1_0", name="search", arguments={"q": "capital of France"})
    return [
        Turn(role="user", content="What is the capital of France?"),
        assistant("I should look it up.", calls=[call]),
        Turn(role="tool", tool_call_id="call_1_0", name="search", content="Paris is the capital of France."),
        assistant("The search says Paris.", "Final answer: Paris"),
    ]


def test_assistant_text_and_hf_messages():
    turn = Turn(role="assistant", content="Final answer: Paris", reasoning="It is Paris.")
    assert assistant_text(turn) == "It is Paris.\n\nFinal answer: Paris"
    assert assistant_text(Turn(role="assistant", reasoning="only a thought")) == "only a thought"
    assert to_hf_messages("", [turn]) == [{"role": "assistant", "content": "It is Paris.\n\nFinal answer: Paris"}]
    assert to_hf_messages("", [turn], reasoning="field") == [
        {"role": "assistant", "content": "Final answer: Paris", "reasoning_content": "It is Paris."}
    ]
    assert to_hf_messages("", [Turn(role="assistant", content="x")], reasoning="field") == [
        {"role": "assistant", "content": "x"}  # no empty reasoning_content key
    ]


def test_which_templates_have_a_reasoning_slot():
    found = {p.stem: supports_reasoning(p.read_text(encoding="utf-8")) for p in sorted(TEMPLATES.glob("*.jinja"))}
    assert found == {
        "hermes-3": False,
        "llama-3.1": False,
        "llama-3.2": False,
        "mistral-nemo": False,
        "qwen2.5": False,
        "qwen3": True,
    }
    assert not supports_reasoning(BUILTIN_TEMPLATE)


def test_qwen3_renders_reasoning_in_its_think_block():
    r = TemplateRenderer((TEMPLATES / "qwen3.jinja").read_text(encoding="utf-8"), SPECIALS, "qwen3")
    assert r.reasoning == "field"
    turns = _turns(folded=False)
    # each turn as the encoder trains it (Qwen3 rewrites history, so turns are rendered one by one)
    first = r.render("", TOOLS, turns[:2])
    span = first.assistant_spans[0]
    assert span is not None
    assert first.text[span[0] : span[1]].startswith("<think>\nI should look it up.\n</think>\n\n<tool_call>")
    last = r.render("", TOOLS, turns, trained=[False, True])
    span = last.assistant_spans[1]
    assert span is not None
    assert last.text[span[0] : span[1]] == "<think>\nThe search says Paris.\n</think>\n\nFinal answer: Paris<|im_end|>"
    assert last.text.count("The search says Paris.") == 1  # not also in the content
    # the same record with thoughts in content (as converted before) renders them as plain text
    old = r.render("", TOOLS, _turns(folded=True), trained=[False, True])
    assert "<think>\nThe search says Paris.\n</think>" not in old.text
    assert "The search says Paris.\n\nFinal answer: Paris" in old.text


@pytest.mark.parametrize("name", ["qwen2.5", "llama-3.1", "llama-3.2", "hermes-3", "mistral-nemo"])
def test_templates_without_a_reasoning_slot_get_the_messages_of_before(name):
    r = TemplateRenderer((TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"), SPECIALS, name)
    assert r.reasoning == "content"
    # the same messages as the record with thoughts in content: the template renders what it rendered before
    assert to_hf_messages("", _turns(folded=False), reasoning=r.reasoning) == to_hf_messages("", _turns(folded=True))


def test_qwen25_renders_reasoning_before_the_content_as_before():
    r = TemplateRenderer((TEMPLATES / "qwen2.5.jinja").read_text(encoding="utf-8"), SPECIALS, "qwen2.5")
    new, old = r.render("", TOOLS, _turns(folded=False)), r.render("", TOOLS, _turns(folded=True))
    assert (new.text, new.assistant_spans) == (old.text, old.assistant_spans)
    assert "The search says Paris.\n\nFinal answer: Paris<|im_end|>" in new.text


def test_builtin_mistral_template_renders_reasoning_before_the_content_as_before():
    r = BuiltinRenderer("<s>", "</s>")
    new, old = r.render("", TOOLS, _turns(folded=False)), r.render("", TOOLS, _turns(folded=True))
    assert (new.text, new.assistant_spans, new.specials) == (old.text, old.assistant_spans, old.specials)
    # and its Jinja twin agrees
    jinja = TemplateRenderer(BUILTIN_TEMPLATE, SPECIALS, "builtin").render("", TOOLS, _turns(folded=False))
    assert jinja.text == new.text


def test_real_react_sample_renders_thoughts_in_qwen3_think_blocks(tmp_path):
    out = tmp_path / "react.jsonl"
    src = ROOT / "tests" / "data" / "fireact_hotpotqa_react"
    files = sorted(p for p in src.iterdir() if p.suffix in (".json", ".jsonl"))
    convert_files(ConvertConfig(inputs=[str(files[0])], output=str(out), progress=False), log=lambda _: None)
    rec = decode_record(out.read_text(encoding="utf-8").splitlines()[0])
    thoughts = [t.reasoning for t in rec.conversation if t.role == "assistant" and t.reasoning]
    assert thoughts, "ReAct Thought: lines are reasoning"
    qwen3 = TemplateRenderer((TEMPLATES / "qwen3.jinja").read_text(encoding="utf-8"), SPECIALS, "qwen3")
    text = qwen3.render(rec.task_instruction, rec.tools, rec.conversation).text
    for thought in thoughts:
        assert f"<think>\n{thought.strip()}\n</think>" in text
