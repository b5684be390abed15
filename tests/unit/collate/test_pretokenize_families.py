"""`shard --tokenizer MODEL_FOLDER`: the model's own template, samples equal to the loader's, rejects counted
in the manifest and shown by `inspect`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import DATA, make_record, write_jsonl
from tests.families import model_folder
from xlam_hpc.cli import main
from xlam_hpc.collate import CollateConfig, SampleEncoder, load_tokenizer
from xlam_hpc.collate.pretokenize import decode_token_members
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.recipe import load_recipe
from xlam_hpc.shard import ShardReader, load_manifest
from xlam_hpc.stream import StreamConfig, build_loader


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "family-models"  # shared with the other modules using model_folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Tool-calling records of two shapes: text beside a call (make_record) and real glaive conversations."""
    root = tmp_path_factory.mktemp("pretok")
    ours = write_jsonl(root / "alpha.jsonl", [make_record(i, "alpha", turns=1 + i % 2) for i in range(6)])
    converted = root / "glaive20.jsonl"
    src = DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json"
    convert_files(ConvertConfig(inputs=[str(src)], output=str(converted), progress=False, source="glaive"), log=print)
    glaive = root / "glaive.jsonl"
    glaive.write_bytes(b"".join(converted.read_bytes().splitlines(keepends=True)[:8]))
    return [ours, glaive]


def _shard(inputs, out, *options: str) -> None:
    args = ["shard", *map(str, inputs), "-o", str(out), "--samples-per-shard", "4", "--no-progress", *options]
    assert main(args) == 0


def _plain(inputs, out) -> None:
    assert main(["shard", *map(str, inputs), "-o", str(out), "--samples-per-shard", "4", "--no-progress"]) == 0


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3"])
def test_model_folder_template_stored_and_used_by_the_loader(family, models, inputs, tmp_path, capsys):
    folder = model_folder(family, models)
    stored, plain = tmp_path / "stored", tmp_path / "plain"
    _shard(inputs, stored, "--tokenizer", str(folder), "--seq-length", "1024")
    _plain(inputs, plain)
    capsys.readouterr()
    info = load_manifest(stored).tokenizer
    assert info["chat_template"] == "tokenizer" and info["collate"]["chat_template"] == "tokenizer"

    tok = load_tokenizer(str(folder))
    collate = CollateConfig(seq_length=1024)  # a recipe's defaults: the tokenizer's own template
    encoder = SampleEncoder(tok, collate)
    with ShardReader(load_manifest(stored)) as reader:
        for source, n in reader.sources.items():
            for i in range(n):
                sid = f"{source}:{i}"
                raw = reader.read_members(source, i, ("tok.ids", "tok.mask", "tok.len"))
                kept = decode_token_members(sid, *raw, task="sft")
                fresh = encoder.encode_sft([(sid, reader.record(source, i))])
                assert [s.sample_id for s in kept] == [s.sample_id for s in fresh]
                for a, b in zip(kept, fresh, strict=True):
                    assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.train_mask, b.train_mask)
    if family == "qwen3":  # Qwen3 rewrites earlier turns: per-turn samples, their turn tags kept
        assert info["encode_stats"]["split_per_turn"] > 0 and info["encode_stats"]["samples"] > 14

    fast = build_loader(StreamConfig(shards=[str(stored)], global_batch_size=4), collate, tok, seed=1)
    fly = build_loader(StreamConfig(shards=[str(plain)], global_batch_size=4), collate, tok, seed=1)
    assert fast.stored_tokens == {"alpha", "glaive"} and fly.stored_tokens == frozenset()

    def no_tokenizing(texts, *a, **k):
        assert not texts, "the pre-tokenized path must not render or tokenize"
        return []

    fast.encoder._tokenize = fast.encoder.renderer.render = no_tokenizing
    for _ in range(3):  # 12 of the 14 records: no record twice in a step (see the report on stream/dataset.py)
        a, b = next(fly), next(fast)
        assert a["sample_ids"] == b["sample_ids"]
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


def test_template_rejects_counted_in_the_manifest_and_shown(models, inputs, tmp_path, capsys):
    folder = model_folder("llama-3.1", models)
    out = tmp_path / "llama"
    _shard(inputs, out, "--tokenizer", str(folder))
    printed = capsys.readouterr().out
    # Llama 3.1 writes only the call of a turn with text beside it: every make_record record is rejected
    assert "14 records -> 8 samples" in printed
    assert "rejected by the chat template: 6 (drops_assistant_content 6)" in printed
    info = load_manifest(out).tokenizer
    assert info["encode_stats"]["rejected_drops_assistant_content"] == 6
    assert [e["id"] for e in info["reject_examples"]] == [f"alpha-{i}" for i in range(6)]
    assert all(e["reason"].startswith("drops_assistant_content: turn 1:") for e in info["reject_examples"])
    # the JSON stays; the rejected records store no samples
    with ShardReader(load_manifest(out)) as reader:
        assert reader.record("alpha", 0).unique_trajectory_id == "alpha-0"
        assert (
            decode_token_members("a", *reader.read_members("alpha", 0, ("tok.ids", "tok.mask", "tok.len")), "sft") == []
        )

    assert main(["inspect", str(out), "--samples", "0"]) == 0
    text = capsys.readouterr().out
    assert "rejected by the chat template: 6 (drops_assistant_content 6)" in text
    assert "  rejected alpha-5: drops_assistant_content: turn 1: the assistant text is not rendered" in text
    assert main(["inspect", str(out), "--samples", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["template_rejects"] == {"drops_assistant_content": 6}
    assert report["tokenizer"]["encode_stats"]["records"] == 14
    # render of pre-tokenized shards: the manifest's tokenizer and collate options, the same reject
    assert main(["render", str(out), "--samples", "1", "--color", "never"]) == 0
    shown = capsys.readouterr().out
    assert "=== glaive-" in shown and "<|start_header_id|>assistant<|end_header_id|>\n\n⟦" in shown
    assert "rejected by the chat template: 1\n  alpha-0 (source alpha): drops_assistant_content: turn 1:" in shown


def test_shard_with_a_recipe_matches_that_recipes_loader(models, inputs, tmp_path, capsys):
    """The recipe's template_kwargs travel to the shards (Llama 3.x write `date_string`; 3.2 defaults to today)."""
    folder = model_folder("llama-3.1", models)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "tokenizer": str(folder),
                "data": {"shards": [str(tmp_path / "stored")]},
                "collate": {"seq_length": 2048, "template_kwargs": {"date_string": "02 Jan 2025"}},
            }
        )
    )
    _shard(inputs[1:], tmp_path / "stored", "--recipe", str(recipe))
    r = load_recipe(recipe)
    tok = load_tokenizer(r.tokenizer)
    assert "Today Date: 02 Jan 2025" in tok.decode(_first_ids(tmp_path / "stored"))
    assert build_loader(r.data, r.collate, tok).stored_tokens == {"glaive"}
    # the same options on the command line give the same render fingerprint; another date does not
    _shard(inputs[1:], tmp_path / "cli", "--tokenizer", str(folder), "--seq-length", "2048",
           "--collate", "template_kwargs.date_string='02 Jan 2025'")  # fmt: skip
    _shard(inputs[1:], tmp_path / "other", "--tokenizer", str(folder), "--seq-length", "2048",
           "--collate", "template_kwargs.date_string='03 Jan 2025'")  # fmt: skip
    fps = [load_manifest(tmp_path / d).tokenizer["fingerprint"] for d in ("stored", "cli", "other")]
    assert fps[0] == fps[1] != fps[2]
    capsys.readouterr()
    assert main(["shard", str(inputs[1]), "-o", str(tmp_path / "x"), "--tokenizer", str(folder), "--collate", "nope=1"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    assert main(["shard", str(inputs[1]), "-o", str(tmp_path / "y"), "--mode", "prompt_answer"]) != 0
    assert "need --tokenizer" in capsys.readouterr().err


def _first_ids(directory) -> list[int]:
    with ShardReader(load_manifest(directory)) as reader:
        source = next(iter(reader.sources))
        return np.frombuffer(reader.read_member(source, 0, "tok.ids"), dtype="<i4").tolist()


def test_inspect_of_shards_without_counts():
    from xlam_hpc.shard.inspect import template_rejects, tokenizer_lines

    old = {"fingerprint": "f", "tokenizer": "mistral-v3", "chat_template": "builtin", "seq_length": 4096}
    assert len(tokenizer_lines(old)) == 1 and template_rejects(old) == {} and tokenizer_lines(None) == []
