"""Pre-tokenized shards give the same batches without tokenizing; 2 real processes equal the simulation."""

from __future__ import annotations

import functools
import json
import operator
import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import SOURCES, make_record, write_jsonl
from xlam_hpc.collate import CollateConfig
from xlam_hpc.collate.pretokenize import write_tokenized_shards
from xlam_hpc.shard import ShardConfig
from xlam_hpc.stream import StreamConfig, build_loader


def test_pretokenized_shards_match_on_the_fly(tmp_path, tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", [make_record(i, "tok", turns=1 + i % 3) for i in range(12)])
    collate = CollateConfig(seq_length=512, chat_template="builtin", mode="prompt_answer")
    plain, stored = tmp_path / "plain", tmp_path / "stored"
    write_tokenized_shards(
        ShardConfig(inputs=[str(src)], output_dir=str(stored), samples_per_shard=5, progress=False),
        tokenizer="mistral-v3",
        collate=collate,
    )
    from xlam_hpc.shard import write_shards

    write_shards(ShardConfig(inputs=[str(src)], output_dir=str(plain), samples_per_shard=5, progress=False))
    fresh = build_loader(StreamConfig(shards=[str(plain)], global_batch_size=4), collate, tokenizer, seed=3)
    fast = build_loader(StreamConfig(shards=[str(stored)], global_batch_size=4), collate, tokenizer, seed=3)
    assert fast.stored_tokens == {"tok"} and fresh.stored_tokens == frozenset()

    def no_tokenizing(*a, **k):
        raise AssertionError("pre-tokenized path must not tokenize")

    fast.encoder._tokenize = no_tokenizing
    for _ in range(4):
        a, b = next(fresh), next(fast)
        assert a["sample_ids"] == b["sample_ids"]
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    # another seq_length → another fingerprint → tokenized on the fly again
    other = build_loader(
        StreamConfig(shards=[str(stored)], global_batch_size=4),
        CollateConfig(seq_length=256, chat_template="builtin", mode="prompt_answer"),
        tokenizer,
    )
    assert other.stored_tokens == frozenset()


@pytest.mark.slow
def test_two_real_processes_equal_in_process_ranks_and_resume_across_world_sizes(shard_dir, tokenizer, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "seed": 5,
                "data": {"shards": [str(shard_dir / n) for n in SOURCES], "global_batch_size": 6, "num_workers": 1},
                "collate": {"seq_length": 1024, "chat_template": "builtin"},
            }
        )
    )

    def run(rank, world, steps, trace, resume=None):
        cmd = [
            sys.executable,
            "-m",
            "xlam_hpc",
            "stream",
            str(recipe),
            "--steps",
            str(steps),
            "--rank",
            str(rank),
            "--world-size",
            str(world),
            "--trace",
            str(trace),
        ]
        if resume:
            cmd += ["--resume", str(resume)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [run(r, 2, 4, tmp_path / f"r{r}.jsonl") for r in range(2)]  # two ranks, concurrently
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    traces = [[json.loads(x) for x in (tmp_path / f"r{r}.jsonl").read_text().splitlines()] for r in range(2)]
    cfg = StreamConfig(shards=[str(shard_dir / n) for n in SOURCES], global_batch_size=6)
    collate = CollateConfig(seq_length=1024, chat_template="builtin")
    for r in range(2):
        sim = build_loader(cfg, collate, tokenizer, rank=r, world_size=2, seed=5)
        for line in traces[r]:
            b = next(sim)
            assert line["sample_ids"] == b["sample_ids"] and line["rank"] == r and line["tokens"] == b["num_tokens"]
    # continue with world size 3 from rank 0's state: the union of ranks continues the global stream
    state = tmp_path / "r0.jsonl.state.json"
    assert json.loads(state.read_text())["samples_consumed"] == 24
    procs = [run(r, 3, 2, tmp_path / f"w3r{r}.jsonl", state) for r in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    reference = build_loader(cfg, collate, tokenizer, seed=5)
    ref = [next(reference)["sample_ids"] for _ in range(6)]
    got = [traces[0][s]["sample_ids"] + traces[1][s]["sample_ids"] for s in range(4)]
    w3 = [[json.loads(x) for x in (tmp_path / f"w3r{r}.jsonl").read_text().splitlines()] for r in range(3)]
    got += [functools.reduce(operator.iadd, (w3[r][s]["sample_ids"] for r in range(3)), []) for s in range(2)]
    assert [sorted(x) for x in got] == [sorted(x) for x in ref]  # token balance: same samples per step
    assert [line["step"] for line in w3[0]] == [5, 6]
