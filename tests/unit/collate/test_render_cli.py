"""`xlam-hpc render`: samples shown exactly as tokenized, trained tokens marked, counts and rejects listed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from tests.conftest import make_record, write_jsonl
from tests.families import model_folder
from xlam_hpc.cli import main
from xlam_hpc.collate import CollateConfig, SampleEncoder, load_tokenizer
from xlam_hpc.collate.show import CLOSE, OPEN, encode_records, format_report, token_pieces, trained_runs
from xlam_hpc.schema import Trajectory, decode_record
from xlam_hpc.shard import ShardConfig, write_shards

_LINE = re.compile(r"^=== (\S+)  source (\S+): (\d+) tokens, (\d+) trained, truncated turns (\d+), .*$", re.M)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "family-models"  # model_folder reuses a folder made by another module


@pytest.fixture(scope="module")
def qwen(models):
    return load_tokenizer(str(model_folder("qwen2.5", models)))


def _rec(i: int, turns: int = 2) -> Trajectory:
    return decode_record(json.dumps(make_record(i, turns=turns)))


def _assistant_texts(encoder: SampleEncoder, rec: Trajectory) -> list[str]:
    """The assistant turns as the chat template writes them (the spans the encoder trains)."""
    r = encoder.renderer.render(rec.task_instruction, rec.tools, rec.conversation)
    return [r.text[a:b] for a, b in r.assistant_spans]


def _sample_texts(report: str) -> list[str]:
    """The text block that follows each per-sample line."""
    blocks = re.split(r"^=== .*\n", report, flags=re.M)[1:]
    return [b.rsplit("\n\n", 1)[0] if i == len(blocks) - 1 else b.removesuffix("\n\n") for i, b in enumerate(blocks)]


@pytest.mark.parametrize("family", ["mistral-v3", "qwen2.5"])
def test_trained_parts_shown_are_the_assistant_turns(family, tokenizer, qwen):
    tok, template = (tokenizer, "builtin") if family == "mistral-v3" else (qwen, "tokenizer")
    encoder = SampleEncoder(tok, CollateConfig(chat_template=template))
    recs = [_rec(3), _rec(4, turns=1)]
    results = encode_records(encoder, [("src", r) for r in recs])
    report = format_report(results, tok, color=False)
    texts = _sample_texts(report)
    assert len(texts) == 2 and "\x1b" not in report
    for rec, text in zip(recs, texts, strict=True):
        assert trained_runs(text) == _assistant_texts(encoder, rec)
        # what is shown is the ids: without the markers it is the decoded sample
        (s,) = [x for r in results if r.record_id == rec.unique_trajectory_id for x in r.samples]
        plain = text.replace(OPEN, "").replace(CLOSE, "")
        assert plain == tok.decode(s.input_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if family == "qwen2.5":
        assert trained_runs(texts[0])[-1] == "answer src 3.1<|im_end|>"  # the "\n" after <|im_end|> is not trained


def test_color_mode_has_ansi_and_the_same_text(qwen):
    encoder = SampleEncoder(qwen, CollateConfig())
    results = encode_records(encoder, [("src", _rec(5))])
    marked, colored = format_report(results, qwen, color=False), format_report(results, qwen, color=True)
    assert "\x1b[1;32m" in colored and OPEN not in colored
    strip = marked.replace(OPEN, "").replace(CLOSE, "")
    assert _ANSI.sub("", colored) == strip
    # trained runs: the coloured spans are the marked ones
    on = re.findall(r"\x1b\[1;32m(.*?)\x1b\[0m", colored, flags=re.S)
    assert on == trained_runs(marked)


def test_sample_lines_count_the_masks_and_truncation(tokenizer):
    encoder = SampleEncoder(tokenizer, CollateConfig(chat_template="builtin", seq_length=300))
    recs = [_rec(1, turns=1), decode_record(json.dumps(make_record(2, turns=6, text="word " * 20)))]
    results = encode_records(encoder, [("src", r) for r in recs])
    report = format_report(results, tokenizer)
    lines = _LINE.findall(report)
    samples = [s for r in results for s in r.samples]
    assert [sid for sid, *_ in lines] == [s.sample_id for s in samples] == ["src-1", "src-2"]
    for (_, _, n, trained, _), s in zip(lines, samples, strict=True):
        assert int(n) == len(s) and int(trained) == int(s.train_mask.sum()) > 0
    assert int(lines[1][4]) == results[1].stats["turns_truncated"] > 0 and int(lines[0][4]) == 0
    total = sum(int(t) for *_, t, _ in lines)
    assert f"{sum(len(s) for s in samples)} tokens, {total} trained" in report.splitlines()[-1]


def test_token_pieces_join_to_the_decoded_ids(qwen, tokenizer):
    for tok in (qwen, tokenizer):
        ids = tok("héllo 日本語 ✓ ⟦x⟧", add_special_tokens=False)["input_ids"]
        pieces = token_pieces(tok, ids)
        assert len(pieces) == len(ids) and "".join(pieces) == tok.decode(ids, clean_up_tokenization_spaces=False)
    # a literal marker in the data cannot pass for one
    shown = format_report(encode_records(SampleEncoder(qwen, CollateConfig()), [("s", _marker_record())]), qwen)
    assert "\\u27e6x\\u27e7" in shown and "\\x1b[31m" in shown and "\x1b" not in shown


def _marker_record() -> Trajectory:
    raw = make_record(0)
    raw["conversation"][0]["content"] = "say ⟦x⟧ and \x1b[31m red"
    return decode_record(json.dumps(raw))


def test_template_reject_is_listed_with_its_reason(models):
    llama = load_tokenizer(str(model_folder("llama-3.1", models)))
    encoder = SampleEncoder(llama, CollateConfig())
    ok = _rec(1)
    ok.conversation = [t for t in ok.conversation if not (t.role == "assistant" and t.tool_calls)][:1] + [
        t for t in ok.conversation if t.role == "assistant" and not t.tool_calls
    ][:1]  # user + a plain answer: Llama 3.1 renders it
    bad = _rec(2)  # text beside a tool call: Llama 3.1 writes only the call
    report = format_report(encode_records(encoder, [("src", ok), ("src", bad)]), llama)
    assert [sid for sid, *_ in _LINE.findall(report)] == ["src-1"]
    assert "rejected by the chat template: 1\n  src-2 (source src): drops_assistant_content: turn 1:" in report
    assert "rejected 1 (drops_assistant_content 1)" in report.splitlines()[-1]
    assert encoder.stats["rejected_drops_assistant_content"] == 1


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    src = write_jsonl(root / "in.jsonl", [make_record(i, "alpha", turns=1 + i % 2) for i in range(4)])
    write_shards(ShardConfig(inputs=[str(src)], output_dir=str(root / "shards"), progress=False))
    return root / "shards"


def test_render_shard_dir_and_recipe(shards, models, tmp_path, capsys):
    folder = model_folder("qwen2.5", models)
    assert main(["render", str(shards), "--tokenizer", str(folder), "--samples", "2", "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert [sid for sid, *_ in _LINE.findall(out)] == ["alpha-0", "alpha-1"] and "\x1b" not in out
    assert "<|im_start|>assistant\n⟦thinking 0.0\n<tool_call>" in out
    assert out.splitlines()[-1].startswith("totals: 2 records -> 2 samples")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"tokenizer": str(folder), "data": {"shards": [str(shards)]}}))
    assert main(["render", str(recipe), "collate.mode=prompt_answer", "--samples", "1", "--color", "always"]) == 0
    out = capsys.readouterr().out
    assert [sid for sid, *_ in _LINE.findall(out)] == ["alpha-0#0", "alpha-0#1"] and "\x1b[1;32m" in out
    # a DPO recipe on trajectory data fails like the loader, in one line
    assert main(["render", str(recipe), "task=dpo"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs preference records" in err


def test_render_errors_are_one_line(shards, tmp_path, capsys):
    assert main(["render", str(shards)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not pre-tokenized; give --tokenizer" in err
    assert main(["render", str(shards), "--tokenizer", "mistral-v3", "--source", "nope"]) != 0
    assert "source(s) nope not found" in capsys.readouterr().err
    # the shard-dir default for a tokenizer without a template: the built-in one (as `shard --tokenizer`)
    assert main(["render", str(shards), "--tokenizer", "mistral-v3", "--samples", "1", "--color", "never"]) == 0
    assert "[/INST]⟦ thinking 0.0[TOOL_CALLS]" in capsys.readouterr().out


def test_mask_runs_match_token_pieces(qwen):
    """format_sample opens and closes a marker exactly at each mask edge."""
    encoder = SampleEncoder(qwen, CollateConfig())
    (r,) = encode_records(encoder, [("src", _rec(8))])
    (s,) = r.samples
    runs = trained_runs(format_report([r], qwen))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], s.train_mask.astype(int), [0]])))
    pieces = token_pieces(qwen, s.input_ids)
    assert runs == ["".join(pieces[a:b]) for a, b in zip(edges[::2], edges[1::2], strict=True)]
