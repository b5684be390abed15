"""Rendering and loss masks with the real Mistral v3 tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import DATA, make_record
from xlam_hpc.collate import BUILTIN_TEMPLATE, CollateConfig, SampleEncoder
from xlam_hpc.collate.jinja_spans import TemplateRenderer
from xlam_hpc.collate.template import BuiltinRenderer, make_renderer
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.errors import ConfigError
from xlam_hpc.schema import decode_record


def _real_records(tmp_path_factory) -> list:
    """Unified records converted from several real sample files (tools, parallel calls, long observations)."""
    out = tmp_path_factory.mktemp("real") / "all.jsonl"
    inputs = [
        DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json",
        DATA / "hermes_function_calling_v1" / "hermes_fc_v1_card_examples.json",
        DATA / "fireact_hotpotqa_react" / "gpt_format_hotpotqa.head20.jsonl",
        DATA / "xlam_actionstudio_unified_v2" / "criticlam_example_trajectories.json",
    ]
    convert_files(ConvertConfig(inputs=[str(p) for p in inputs], output=str(out), progress=False), log=lambda m: None)
    return [decode_record(line) for line in out.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def real_records(tmp_path_factory):
    return _real_records(tmp_path_factory)


def test_python_renderer_equals_the_jinja_template(real_records, tokenizer):
    py = BuiltinRenderer(tokenizer.bos_token, tokenizer.eos_token)
    jinja = TemplateRenderer(BUILTIN_TEMPLATE, {"bos_token": "<s>", "eos_token": "</s>"}, "builtin")
    assert len(real_records) > 40
    for rec in [*real_records, decode_record(make_record(3, turns=3))]:
        a = py.render(rec.task_instruction, rec.tools, rec.conversation)
        b = jinja.render(rec.task_instruction, rec.tools, rec.conversation)
        assert a.text == b.text, rec.unique_trajectory_id
        assert a.assistant_spans == b.assistant_spans


def _encoder(tokenizer, **kw):
    return SampleEncoder(tokenizer, CollateConfig(**{"seq_length": 2048, "chat_template": "builtin", **kw}))


def _trained_text(tokenizer, sample) -> str:
    return " | ".join(_trained_runs(tokenizer, sample))


def _trained_runs(tokenizer, sample) -> list[str]:
    """Each contiguous run of trained tokens, decoded."""
    mask = sample.train_mask.astype(int)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask, [0]])))
    return [tokenizer.decode(sample.input_ids[a:b]).strip() for a, b in zip(edges[::2], edges[1::2], strict=True)]


def test_every_assistant_turn_is_trained_and_nothing_else(tokenizer):
    rec = decode_record(make_record(7, turns=2))
    (s,) = _encoder(tokenizer).encode_sft([("x", rec)])
    assert _trained_runs(tokenizer, s) == [
        'thinking 7.0[TOOL_CALLS] [{"name": "lookup", "arguments": {"q": "src-7-0"}, "id": "c0"}]</s>',
        "answer src 7.0</s>",
        'thinking 7.1[TOOL_CALLS] [{"name": "lookup", "arguments": {"q": "src-7-1"}, "id": "c1"}]</s>',
        "answer src 7.1</s>",
    ]
    # user text, tool results, tools and system prompt carry no loss
    untrained = tokenizer.decode(s.input_ids[~s.train_mask])
    assert "hello src 7 turn 0" in untrained and "result 7.1" in untrained and "You are a helpful agent." in untrained
    assert s.input_ids[0] == tokenizer.bos_token_id and not s.train_mask[0]


def test_last_only_and_untrained_turns(tokenizer):
    rec = decode_record(make_record(1, turns=2))
    (last,) = _encoder(tokenizer, loss_on="last").encode_sft([("x", rec)])
    assert _trained_runs(tokenizer, last) == ["answer src 1.1</s>"]
    rec.conversation[-1].train = False  # e.g. AgentInstruct loss: false
    (s,) = _encoder(tokenizer).encode_sft([("x", rec)])
    assert "answer src 1.1" not in _trained_text(tokenizer, s) and "answer src 1.0" in _trained_text(tokenizer, s)


def test_prompt_answer_mode_one_sample_per_turn_equals_separate_rendering(tokenizer):
    rec = decode_record(make_record(2, turns=2))
    enc = _encoder(tokenizer, mode="prompt_answer")
    samples = enc.encode_sft([("x", rec)])
    assert [s.sample_id for s in samples] == ["x#0", "x#1", "x#2", "x#3"]
    assert _trained_runs(tokenizer, samples[1]) == ["answer src 2.0</s>"]
    # the fast slicing path must equal rendering each prefix on its own
    for k, s in enumerate(samples):
        turns = [i for i, t in enumerate(rec.conversation) if t.role == "assistant"]
        prefix = rec.conversation[: turns[k] + 1]
        r = enc.renderer.render(rec.task_instruction, rec.tools, prefix)
        assert tokenizer.backend_tokenizer.encode(r.text, add_special_tokens=False).ids == s.input_ids.tolist()


def test_truncation_drops_whole_leading_turns_and_keeps_system_and_tools(tokenizer):
    rec = decode_record(make_record(4, turns=6, text="word " * 40))
    full = _encoder(tokenizer, seq_length=4096).encode_sft([("x", rec)])[0]
    enc = _encoder(tokenizer, seq_length=len(full) // 2)
    (s,) = enc.encode_sft([("x", rec)])
    text = tokenizer.decode(s.input_ids)
    assert len(s) <= len(full) // 2
    assert text.startswith("<s>[AVAILABLE_TOOLS]") and "You are a helpful agent." in text
    assert "turn 5" in text and "turn 0" not in text  # the newest groups survive, the oldest go
    assert enc.stats["truncated"] == 1 and enc.stats["turns_truncated"] > 0
    drop = _encoder(tokenizer, seq_length=len(full) // 2, overflow="drop")
    assert drop.encode_sft([("x", rec)]) == [] and drop.stats["dropped_overlong"] == 1


def test_sample_too_long_even_alone_is_dropped_and_counted(tokenizer):
    rec = decode_record(make_record(0, turns=1, text="long " * 400))
    enc = _encoder(tokenizer, seq_length=200)
    assert enc.encode_sft([("x", rec)]) == [] and enc.stats["dropped_overlong"] == 1


def test_dpo_pairs_share_the_prompt(tokenizer):
    base = make_record(5, turns=2)
    pair = {
        **{k: base[k] for k in ("unique_trajectory_id", "source", "tools", "task_instruction")},
        "conversation": base["conversation"][:5],
        "chosen": {"role": "assistant", "tool_calls": [{"id": "z", "name": "lookup", "arguments": {"q": "ok"}}]},
        "rejected": {"role": "assistant", "content": "I refuse."},
    }
    (p,) = _encoder(tokenizer).encode_dpo([("pair", decode_record(json.dumps(pair)))])
    c, r = p.chosen, p.rejected
    n = int(c.train_mask.argmax())
    assert n == int(r.train_mask.argmax()) and (c.input_ids[:n] == r.input_ids[:n]).all()
    assert _trained_runs(tokenizer, r) == ["I refuse.</s>"]
    assert '"arguments": {"q": "ok"}' in _trained_text(tokenizer, c)


def test_template_choice_errors(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="no chat template and no fallback"):
        make_renderer("tokenizer", tokenizer)
    with pytest.raises(ConfigError, match="not 'tokenizer', 'builtin' or an existing file"):
        make_renderer("nope.jinja", tokenizer)
    assert isinstance(make_renderer("builtin", tokenizer), BuiltinRenderer)
    good = tmp_path / "good.jinja"
    good.write_text(BUILTIN_TEMPLATE)
    assert isinstance(make_renderer(str(good), tokenizer), TemplateRenderer)


def test_template_without_generation_blocks_spans_from_prefixes(tokenizer, tmp_path):
    """A template with no {% generation %} blocks: spans come from prefix renderings and equal the builtin's."""
    plain = tmp_path / "plain.jinja"
    plain.write_text(BUILTIN_TEMPLATE.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", ""))
    rec = decode_record(make_record(5, turns=3))
    a = make_renderer("builtin", tokenizer).render(rec.task_instruction, rec.tools, rec.conversation)
    b = make_renderer(str(plain), tokenizer).render(rec.task_instruction, rec.tools, rec.conversation)
    assert a.text == b.text and a.assistant_spans == b.assistant_spans


def test_template_that_drops_content_rejects_and_counts(tokenizer, tmp_path):
    drops = tmp_path / "drops.jinja"  # writes tool calls only, losing the assistant's text beside them
    drops.write_text(BUILTIN_TEMPLATE.replace("{%- if message.content %} {{ message.content }}{% endif -%}", ""))
    enc = SampleEncoder(tokenizer, CollateConfig(seq_length=2048, chat_template=str(drops)))
    rec = decode_record(make_record(1, turns=1))
    assert enc.encode_sft([("x", rec)]) == []
    assert enc.stats["rejected_drops_assistant_content"] == 1
    assert enc.reject_examples[0][0] == "x" and "turn 1" in enc.reject_examples[0][1]
