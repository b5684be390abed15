"""The checks a recipe must pass before any work: shared by the trainer (every rank, before the process group)
and by `submit`/`sweep`/`--dry-run` (before anything is queued), so a typo is an error at the prompt.

`preflight(recipe, world_size)` reads configs only: shard manifests, config.json, the tokenizer files, the
DeepSpeed JSON, the output_dir's last checkpoint manifest. It loads no model weights, never initializes CUDA
and writes nothing (the output_dir lock and config.yaml are the trainer's, later). Checks that need the
hardware (devices, the precision `auto` resolves to, attention kernels) stay in the trainer; at submission
`precision=None` accepts any precision the job could resolve to.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.recipe import Recipe

__all__ = ["Preflight", "check_data", "check_output_dir", "preflight"]


@dataclass
class Preflight:
    """What the checks produced (the trainer keeps using it)."""

    ds_config: dict[str, Any]
    model_config: Any
    """config.json of a local model folder (with config_overrides); None for a preset."""
    tokenizer: Any
    chat_template: Any
    sources: dict[str, float] = field(default_factory=dict)
    """The mixture: used source → normalized weight."""


def _candidate_precisions(recipe: Recipe) -> list[str]:
    """What train.precision can resolve to on the job's hardware (unknown at submission)."""
    precision = recipe.train.precision
    if precision != "auto":
        return [precision]
    return ["bf16", "fp16"] if recipe.launch.gpus_per_node > 0 else ["fp32"]


def _deepspeed(recipe: Recipe, world_size: int, precision: str | None) -> dict[str, Any]:
    from xlam_hpc.stream.partition import per_rank_batch
    from xlam_hpc.train import runtime

    t = recipe.train
    per_rank = per_rank_batch(recipe.data.global_batch_size, world_size)
    candidates = [precision] if precision is not None else _candidate_precisions(recipe)
    first: ConfigError | None = None
    for p in candidates:  # the file must agree with one precision the job can run with
        try:
            return runtime.deepspeed_config(
                t.deepspeed, per_rank_batch=per_rank, world_size=world_size, grad_clip=t.grad_clip, precision=p
            )
        except ConfigError as exc:
            first = first or exc
    assert first is not None
    raise first


def check_output_dir(recipe: Recipe) -> None:
    """output_dir can be written (or created) and holds no checkpoint of another configuration (the same
    fingerprint check as at resume); `resume: never` refuses one that holds checkpoints. Writes nothing."""
    from xlam_hpc.train.checkpoint import check_fingerprint, list_checkpoints

    out = Path(recipe.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} exists and is not a directory")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output_dir {out}: {existing} is not a directory, so it cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == out else f"cannot be created: {existing} is not writable"
        raise ConfigError(f"output_dir {out} {what} by this user")
    if not out.is_dir():
        return
    latest = out / "latest"
    if latest.exists() and recipe.resume != "force":
        try:
            manifest = json.loads((out / latest.read_text().strip() / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = None  # damaged: the trainer's full verification falls back to an older checkpoint
        if manifest is not None:
            check_fingerprint(out, manifest, recipe.fingerprint(), force=False)
    if recipe.resume == "never" and list_checkpoints(out):
        raise ConfigError(f"{out} already holds checkpoints and resume is 'never'")


def check_data(recipe: Recipe) -> dict[str, float]:
    """Shard directories exist with their shard files, source names are unique, the weights fit the sources
    and every used source holds the record kind the task trains on; held-out shard directories exist.
    Manifests and file sizes only (no shard is read). Returns the normalized mixture."""
    from xlam_hpc.shard import load_manifest
    from xlam_hpc.stream.loader import check_source_kinds
    from xlam_hpc.stream.mixture import normalize_weights

    d = recipe.data
    sizes: dict[str, int] = {}
    kinds: dict[str, str] = {}
    where: dict[str, str] = {}
    for directory in d.shards:
        m = load_manifest(directory)
        if not d.skip_bad_shards:
            missing = [s.path for s in m.shards if not (Path(m.root) / s.path).is_file()]
            if missing:
                raise ConfigError(
                    f"{directory}: {len(missing)} shard file(s) listed in manifest.json are missing (first: "
                    f"{missing[0]}); restore them or set data.skip_bad_shards: true"
                )
        for name, info in m.sources.items():
            if name in sizes:
                raise ConfigError(f"source '{name}' appears in two shard directories ({where[name]} and {directory})")
            sizes[name], kinds[name], where[name] = int(info["num_samples"]), info["kind"], directory
    mixture = normalize_weights(d.weights, sizes, d.weights_default)
    check_source_kinds({name: kinds[name] for name in mixture}, recipe.task)
    if d.eval is not None:
        for directory in d.eval.shards:
            load_manifest(directory)
    return mixture


def preflight(recipe: Recipe, world_size: int, *, precision: str | None = None, tokenizer: Any = None) -> Preflight:
    """Every configuration check that needs neither a process group nor the hardware; ConfigError (or
    ShardError/ResumeError) on the first problem. `precision`: the resolved train.precision (the trainer), or
    None (submission: the DeepSpeed file must fit a precision the job can resolve to). `tokenizer`: an already
    loaded tokenizer of `recipe.tokenizer` (a sweep checks many recipes with one)."""
    from xlam_hpc.train.export import training_template
    from xlam_hpc.train.model import check_model_vocab, read_model_config

    r = recipe
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, got {world_size}")
    if "wandb" in r.train.report_to:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("train.report_to asks for wandb, which is not installed: pip install wandb")
    ds_config = _deepspeed(r, world_size, precision)  # also: global batch divisible by the world size
    check_output_dir(r)
    model_config = read_model_config(r.model)  # before the tokenizer: a missing folder is the clearer error
    tok = tokenizer if tokenizer is not None else r.load_tokenizer()
    check_model_vocab(r.model, model_config, tok, r.tokenizer)
    template = training_template(r.collate, tok)
    sources = check_data(r)
    return Preflight(ds_config, model_config, tok, template, sources)
