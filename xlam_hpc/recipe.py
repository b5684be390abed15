"""Recipe: the one YAML file per run (`xlam-hpc stream|train|submit RECIPE.yaml key=value ...`).

Sections map to one config dataclass per stage: `data` (StreamConfig), `collate` (CollateConfig),
`model`/`train` (TrainConfig), `launch` (LaunchConfig). Unknown keys fail with the valid ones listed and
a close-match suggestion; dotted `key=value` overrides are applied before validation; the resolved
recipe is what gets written to `output_dir/config.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xlam_hpc.collate.config import CollateConfig
from xlam_hpc.config import apply_overrides, config_from_dict, config_to_dict, fingerprint, load_yaml
from xlam_hpc.launch.config import LaunchConfig
from xlam_hpc.stream.config import StreamConfig
from xlam_hpc.train.config import ModelConfig, TrainConfig

__all__ = ["Recipe", "load_recipe"]


@dataclass(kw_only=True)
class Recipe:
    """A whole run."""

    task: Literal["sft", "dpo"] = "sft"
    seed: int = 0
    """Base seed: data order, per-rank/per-worker RNGs and model init all derive from it."""
    output_dir: str = "runs/default"
    tokenizer: str = "mistral-v3"
    """A tokenizer folder, or 'mistral-v3' (shipped in the mistral-common wheel)."""
    resume: Literal["auto", "never", "force"] = "auto"
    """auto: continue from output_dir's newest valid checkpoint; never: refuse a non-empty output_dir;
    force: continue even if the checkpoint's config fingerprint differs."""
    data: StreamConfig
    collate: CollateConfig = field(default_factory=CollateConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def fingerprint(self) -> str:
        """Identity of what is trained: everything except where/how it runs and how long."""
        data = self.to_dict()
        for key in ("output_dir", "resume", "launch"):
            data.pop(key)
        for key in (
            "max_steps",
            "save_interval",
            "keep_last",
            "log_interval",
            "trace_samples",
            "grace_period_s",
        ):
            data["train"].pop(key, None)
        data["data"].pop("num_workers", None)
        data["data"].pop("prefetch_factor", None)
        return fingerprint(data)


def load_recipe(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), base: dict[str, Any] | None = None
) -> Recipe:
    """Recipe from YAML (or `base`) plus dotted overrides; ConfigError on any problem."""
    data = load_yaml(path) if path is not None else dict(base or {})
    data = apply_overrides(data, list(overrides))
    return config_from_dict(Recipe, data, source=str(path) if path else "recipe")
