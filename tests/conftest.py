"""Shared fixtures: tiny unified records, a record factory, paths to bundled test data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.shard import ShardConfig, write_shards

DATA = Path(__file__).parent / "data"
pytest_plugins = ["xlam_hpc.testing.skips"]  # under CI=true, only a missing GPU may skip a test


def make_record(i: int, source: str = "src", *, turns: int = 1, text: str = "hello") -> dict[str, Any]:
    """A valid unified trajectory whose content encodes (source, i)."""
    conv: list[dict[str, Any]] = []
    for t in range(turns):
        conv += [
            {"role": "user", "content": f"{text} {source} {i} turn {t}"},
            {
                "role": "assistant",
                "content": f"thinking {i}.{t}",
                "tool_calls": [{"id": f"c{t}", "name": "lookup", "arguments": {"q": f"{source}-{i}-{t}"}}],
            },
            {"role": "tool", "tool_call_id": f"c{t}", "name": "lookup", "content": f"result {i}.{t}"},
            {"role": "assistant", "content": f"answer {source} {i}.{t}"},
        ]
    return {
        "unique_trajectory_id": f"{source}-{i}",
        "source": source,
        "task_instruction": "You are a helpful agent.",
        "tools": [
            {
                "name": "lookup",
                "description": "Look something up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            }
        ],
        "conversation": conv,
        "score": float(i % 6),
    }


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def record_factory():
    return make_record


@pytest.fixture(scope="session")
def tokenizer():
    """The real Mistral v3 tokenizer from the mistral-common wheel."""
    from xlam_hpc.collate import load_tokenizer

    return load_tokenizer("mistral-v3")


SOURCES = {"alpha": (37, 5), "beta": (11, 4), "gamma": (3, 2)}
"""name → (samples, samples per shard): uneven shard counts and sizes on purpose."""


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
    """A 3-source shard directory whose records encode their own (source, index)."""
    from xlam_hpc.shard import ShardConfig, write_shards

    root = tmp_path_factory.mktemp("mix")
    out = root / "shards"
    for name, (n, per) in SOURCES.items():
        rows = [make_record(i, name, turns=1 + i % 3) for i in range(n)]
        src = write_jsonl(root / f"{name}.jsonl", rows)
        write_shards(ShardConfig(inputs=[str(src)], output_dir=str(out / name), samples_per_shard=per, progress=False))
    return out


# --- training data and recipes (integration and cluster tests) ---


def _shards(root: Path, name: str, inputs: list[Path]) -> Path:
    out = root / f"{name}.jsonl"
    convert_files(ConvertConfig(inputs=[str(p) for p in inputs], output=str(out), progress=False), log=lambda m: None)
    write_shards(ShardConfig(inputs=[str(out)], output_dir=str(root / name), samples_per_shard=8, progress=False))
    return root / name


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-data")
    return {
        "sft": _shards(
            root,
            "sft",
            [
                DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json",
                DATA / "xlam_fc" / "xlam_fc_sample.jsonl",
            ],
        ),
        "dpo": _shards(
            root,
            "dpo",
            [
                DATA / "llamafactory_dpo_sharegpt" / "v1_dpo_demo.jsonl",
                DATA / "dpo_trl" / "dpo_trl_sample.jsonl",
                DATA / "llamafactory_dpo_sharegpt" / "dpo_en_demo.head10.json",
            ],
        ),
    }


def write_recipe(path: Path, shards: Path, *, task: str = "sft", **sections) -> Path:
    recipe = {
        "task": task,
        "seed": 7,
        "data": {"shards": [str(shards)], "global_batch_size": 4},
        "collate": {"seq_length": 768, "chat_template": "builtin"},
        "model": {"name_or_path": "tiny-mistral", "dropout": 0.1},
        "train": {"max_steps": 8, "save_interval": 100, "lr": 1.0e-3, "warmup_steps": 2, "trace_samples": True},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(recipe))
    return path
