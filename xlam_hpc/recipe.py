"""Recipe: the one YAML file per run (`xlam-hpc stream|train|submit RECIPE.yaml key=value ...`).

Sections map to one config dataclass per stage: `data` (StreamConfig), `collate` (CollateConfig),
`model`/`train` (TrainConfig), `launch` (LaunchConfig). Unknown keys fail with the valid ones listed and
a close-match suggestion; dotted `key=value` overrides are applied before validation; the resolved
recipe is what gets written to `output_dir/config.yaml`.

`tokenizer: model` (the default) is resolved when the recipe is built, so the fingerprint, config.yaml and
every stage see the same tokenizer: a local model folder's own tokenizer (and with it its chat template), or
'mistral-v3' for the presets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xlam_hpc.collate.config import CollateConfig
from xlam_hpc.config import apply_overrides, config_from_dict, config_to_dict, fingerprint, load_yaml
from xlam_hpc.errors import ConfigError
from xlam_hpc.launch.config import LaunchConfig
from xlam_hpc.stream.config import StreamConfig
from xlam_hpc.train.attention import check_attention
from xlam_hpc.train.config import ModelConfig, TrainConfig
from xlam_hpc.train.model import PRESETS

__all__ = ["MODEL_TOKENIZER", "Recipe", "load_recipe", "resolve_tokenizer"]

MODEL_TOKENIZER = "model"
PRESET_TOKENIZER = "mistral-v3"
"""What `tokenizer: model` means for a model preset (their vocabulary is this tokenizer's)."""


def resolve_tokenizer(tokenizer: str, model_name_or_path: str) -> str:
    """The tokenizer a recipe means: 'model' → the model folder itself, or 'mistral-v3' for a preset."""
    if tokenizer != MODEL_TOKENIZER:
        return tokenizer
    return PRESET_TOKENIZER if model_name_or_path in PRESETS else model_name_or_path


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass(kw_only=True)
class Recipe:
    """A whole run."""

    task: Literal["sft", "dpo"] = "sft"
    seed: int = 0
    """Base seed: data order, per-rank/per-worker RNGs and model init all derive from it."""
    output_dir: str = "runs/default"
    tokenizer: str = MODEL_TOKENIZER
    """'model': the tokenizer (and chat template) of the local model folder `model.name_or_path`, or
    'mistral-v3' for a preset; else a tokenizer folder, or 'mistral-v3' (shipped in the mistral-common wheel).
    Resolved when the recipe is built: `recipe.tokenizer` is never 'model'."""
    resume: Literal["auto", "never", "force"] = "auto"
    """auto: continue from output_dir's newest valid checkpoint; never: refuse a non-empty output_dir;
    force: continue even if the checkpoint's config fingerprint differs."""
    data: StreamConfig
    collate: CollateConfig = field(default_factory=CollateConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def __post_init__(self) -> None:
        self.tokenizer = resolve_tokenizer(self.tokenizer, self.model.name_or_path)
        check_attention(self.model.attn_implementation, packing=self.collate.packing)
        if self.data.eval is not None and self.task == "dpo" and self.train.dpo.reference == "precomputed":
            raise ConfigError(
                "data.eval with train.dpo.reference 'precomputed': reference log-probs are precomputed for the "
                "training stream only; use reference 'model' (or LoRA) to validate a DPO run"
            )

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def load_tokenizer(self) -> Any:
        """The recipe's tokenizer (what training, the loader probe and the export use)."""
        from xlam_hpc.collate import load_tokenizer

        if self.tokenizer == self.model.name_or_path:
            folder = Path(self.tokenizer)
            if folder.is_dir() and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
                raise ConfigError(
                    f"model folder {folder} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}): set `tokenizer:` "
                    "to the folder of the model's tokenizer"
                )
        return load_tokenizer(self.tokenizer)

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
            "report_to",
            "grace_period_s",
            # memory/speed knobs: same result (to float tolerance), and an OOM fix must be able to resume
            "micro_batch_tokens",
            "loss_chunk_tokens",
            "compile",
            "fused_kernels",
            "deterministic",
            "export_shard_size",
        ):
            data["train"].pop(key, None)
        data["model"].pop("attn_implementation", None)  # a kernel choice; isolation holds on all of them
        for key in ("num_workers", "prefetch_factor", "index_cache_mb", "max_open_files"):
            data["data"].pop(key, None)
        if data["data"].get("weights_default") is None:  # unset: the fingerprints of runs made before it existed
            data["data"].pop("weights_default", None)
        data["train"].pop("eval_interval", None)
        split = data["data"].pop("eval", None) or {}
        if split.get("fraction"):  # only the split changes what is trained: validation can be added later
            data["data"]["eval"] = {"fraction": split["fraction"], "seed": split["seed"]}
        return fingerprint(data)


def load_recipe(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), base: dict[str, Any] | None = None
) -> Recipe:
    """Recipe from YAML (or `base`) plus dotted overrides; ConfigError on any problem."""
    data = load_yaml(path) if path is not None else dict(base or {})
    data = apply_overrides(data, list(overrides))
    return config_from_dict(Recipe, data, source=str(path) if path else "recipe")
