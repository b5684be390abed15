"""Shared fixtures: tiny unified records, a record factory, paths to bundled test data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


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
