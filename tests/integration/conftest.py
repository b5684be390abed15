"""Fixtures for multi-process training tests: small real shards (SFT and DPO) and recipe files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.shard import ShardConfig, write_shards


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


def write_recipe(path: Path, data: Path, *, task: str = "sft", **sections) -> Path:
    recipe = {
        "task": task,
        "seed": 7,
        "data": {"shards": [str(data)], "global_batch_size": 4},
        "collate": {"seq_length": 768, "chat_template": "builtin"},
        "model": {"name_or_path": "tiny-mistral", "dropout": 0.1},
        "train": {"max_steps": 8, "save_interval": 100, "lr": 1.0e-3, "warmup_steps": 2, "trace_samples": True},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(recipe))
    return path
