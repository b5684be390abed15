"""build_model's sliding-window drop and dtype, and the export's shard planning (pure parts, no process group)."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoConfig

from xlam_hpc.errors import ConfigError
from xlam_hpc.train.config import ModelConfig
from xlam_hpc.train.export import model_entries, parse_size, plan_shards, shard_names
from xlam_hpc.train.model import build_model, drop_sliding_window, train_dtype

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


def test_sliding_window_at_least_seq_length_is_dropped_and_gives_the_same_logits(tokenizer, caplog):
    cfg = ModelConfig(name_or_path="tiny-mistral", config_overrides={"sliding_window": 64})
    with caplog.at_level(logging.INFO, logger="xlam_hpc.train"):
        full = build_model(cfg, tokenizer, seq_length=64, seed=3)
        again = build_model(cfg, tokenizer, seq_length=48, seed=3)  # a second build (DPO reference): no new line
    assert full.config.sliding_window is None and again.config.sliding_window is None
    assert full.xlam_config_restore == {"sliding_window": 64}  # what the export writes back
    assert sum("sliding_window 64 >= collate.seq_length 64" in r.message for r in caplog.records) == 1
    windowed = build_model(cfg, tokenizer, seed=3)  # no seq_length: kept
    assert windowed.config.sliding_window == 64 and not hasattr(windowed, "xlam_config_restore")
    pairs = zip(full.state_dict().values(), windowed.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    ids = torch.randint(0, len(tokenizer), (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(full(ids).logits, windowed(ids).logits)
    shorter = build_model(cfg, tokenizer, seq_length=65, seed=3)  # longer rows than the window: it matters
    assert shorter.config.sliding_window == 64


def test_sliding_window_drop_for_real_configs():
    mistral = AutoConfig.for_model("mistral", **TINY, sliding_window=4096)
    assert drop_sliding_window(mistral, 4096) == {"sliding_window": 4096} and mistral.sliding_window is None
    assert drop_sliding_window(AutoConfig.for_model("llama", **TINY), 4096) == {}  # no window at all
    qwen = AutoConfig.for_model("qwen2", **TINY, use_sliding_window=True, sliding_window=8192, max_window_layers=0)
    assert "sliding_attention" in qwen.layer_types
    original = drop_sliding_window(qwen, 2048)
    assert original["sliding_window"] == 8192 and original["use_sliding_window"] is True
    assert qwen.sliding_window is None and not qwen.use_sliding_window
    assert set(qwen.layer_types) == {"full_attention"}
    short = AutoConfig.for_model("mistral", **TINY, sliding_window=1024)
    assert drop_sliding_window(short, 2048) == {} and short.sliding_window == 1024


def test_train_dtype():
    assert train_dtype("bf16") is torch.bfloat16 and train_dtype("fp16") is torch.float16
    assert train_dtype("fp32") is torch.float32


def test_local_checkpoint_loads_in_the_training_dtype(tokenizer, tmp_path):
    model = build_model(ModelConfig(name_or_path="tiny-llama"), tokenizer, seed=1)
    model.save_pretrained(tmp_path / "m")
    loaded = build_model(ModelConfig(name_or_path=str(tmp_path / "m")), tokenizer, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    for (name, a), b in zip(model.named_parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a.to(torch.bfloat16), b), name


def test_presets_depend_on_the_seed_alone(tokenizer):
    cfg = ModelConfig(name_or_path="tiny-mistral")
    a = build_model(cfg, tokenizer, seed=5)
    torch.rand(100)  # whatever the RNG did in between
    b = build_model(cfg, tokenizer, seed=5)
    c = build_model(cfg, tokenizer, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_plan_shards_is_greedy_in_order_and_bounded():
    sizes = [("a", 4), ("b", 4), ("c", 3), ("big", 20), ("d", 1), ("e", 9)]
    assert plan_shards(sizes, 10) == [["a", "b"], ["c"], ["big"], ["d", "e"]]
    assert plan_shards(sizes, 100) == [["a", "b", "c", "big", "d", "e"]]
    assert plan_shards([("big", 20)], 10) == [["big"]]
    assert plan_shards([], 10) == []
    assert shard_names(1) == ["model.safetensors"]
    assert shard_names(3)[1] == "model-00002-of-00003.safetensors"


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("300KB") == 300_000 and parse_size("1234") == 1234
    assert parse_size("1.5MB") == 1_500_000 and parse_size(77) == 77
    with pytest.raises(ConfigError, match=r"expected e\.g\. 5GB"):
        parse_size("five")


def test_model_entries_list_a_tied_weight_once_and_skip_rotary_buffers(tokenizer):
    cfg = ModelConfig(name_or_path="tiny-llama", config_overrides={"tie_word_embeddings": True})
    model = build_model(cfg, tokenizer, seed=0)
    keys = [key for _, own in model_entries(model) for key, _ in own]
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    assert not any("rotary" in k or "inv_freq" in k for k in keys)
    assert keys == [k for k in model.state_dict() if k != "lm_head.weight"]  # state-dict order
