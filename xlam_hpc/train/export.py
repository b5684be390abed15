"""output_dir/final: the trained model as a plain transformers folder, written one module at a time.

Under ZeRO-3 no rank ever holds the whole model: each module's parameters are gathered (all ranks take
part), rank 0 copies them into the current shard and writes a shard file as soon as it is complete. The
shards are planned from the parameter shapes first, so their names (model-0000i-of-0000N.safetensors)
are known before any data moves. Host memory on rank 0: one shard (5 GB by default) plus one module.
LoRA runs save the adapter only (peft format), gathering only the adapter parameters.

transformers' own save_pretrained would do the sharding too, but it needs the whole state dict in
memory (under ZeRO-3: gathered on every rank), which is what this module exists to avoid.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import resource
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xlam_hpc.collate.config import CollateConfig
from xlam_hpc.errors import ConfigError

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "RENDER_OPTIONS",
    "ShardWriter",
    "export_final",
    "load_weights",
    "model_entries",
    "parse_size",
    "peak_rss_mib",
    "plan_shards",
    "render_options",
    "save_tokenizer",
    "shard_names",
    "training_template",
    "write_adapter",
    "write_model",
]

log = logging.getLogger("xlam_hpc.train")

RENDER_OPTIONS = "xlam_render.json"
"""File in output_dir/final with the collate options the template was rendered with (when not the defaults)."""
DEFAULT_SHARD_SIZE = 5 * 10**9
"""Environment variable: the largest shard of output_dir/final, e.g. 2GB (default 5GB, as transformers)."""
INDEX = "model.safetensors.index.json"
_WEIGHT_FILES = re.compile(
    r"^(model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json|adapter_model\.safetensors)$"
)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_size(text: str | int) -> int:
    """Bytes from 5GB / 500MB / 10KB / 1234 (decimal units, as transformers' max_shard_size)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not m:
        raise ConfigError(f"shard size '{text}': expected e.g. 5GB, 500MB or a number of bytes")
    unit = {"": 1, "B": 1, "KB": 10**3, "K": 10**3, "MB": 10**6, "M": 10**6, "GB": 10**9, "G": 10**9}[m[2]]
    size = int(float(m[1]) * unit)
    if size < 1:
        raise ConfigError(f"shard size '{text}' must be positive")
    return size


# -- planning (pure) -------------------------------------------------------------------------------
def plan_shards(sizes: Sequence[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """(name, bytes) in writing order → names per shard, in order, each shard at most `max_bytes` (a tensor
    larger than that gets a shard of its own)."""
    shards: list[list[str]] = []
    used = max_bytes  # forces a first shard
    for name, size in sizes:
        if used + size > max_bytes or not shards:
            if shards and not shards[-1]:
                shards.pop()
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def shard_names(n: int) -> list[str]:
    """transformers' file names: model.safetensors for one shard, model-0000i-of-0000N.safetensors else."""
    return ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


# -- writing -----------------------------------------------------------------------------------------
class ShardWriter:
    """Collects tensors in plan order and writes each shard when its last tensor arrives (rank 0 only)."""

    def __init__(self, folder: Path, sizes: Sequence[tuple[str, int]], max_bytes: int, dtype: Any = None) -> None:
        self.folder = folder
        self.dtype = dtype  # floating tensors are cast to it (None: as they come)
        self.plan = plan_shards(sizes, max_bytes)
        self.names = shard_names(len(self.plan))
        self.total = sum(size for _, size in sizes)
        self.pending: dict[str, Any] = {}
        self.done = 0

    def add(self, name: str, tensor: Any) -> None:
        from safetensors.torch import save_file

        dtype = self.dtype if self.dtype is not None and tensor.is_floating_point() else tensor.dtype
        self.pending[name] = tensor.detach().to("cpu", dtype=dtype, copy=True).contiguous()
        while self.done < len(self.plan) and all(k in self.pending for k in self.plan[self.done]):
            shard = {k: self.pending.pop(k) for k in self.plan[self.done]}
            save_file(shard, str(self.folder / self.names[self.done]), metadata={"format": "pt"})
            self.done += 1

    def close(self) -> None:
        if self.done != len(self.plan) or self.pending:
            missing = [k for keys in self.plan[self.done :] for k in keys if k not in self.pending]
            raise RuntimeError(f"export incomplete: no tensor for {missing[:5]}")
        if len(self.plan) > 1:
            weight_map = {k: self.names[i] for i, keys in enumerate(self.plan) for k in keys}
            index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
            (self.folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def _numel(tensor: Any) -> int:
    shape = getattr(tensor, "ds_shape", None)  # a ZeRO-3 parameter is empty outside a gather
    n = 1
    for d in shape if shape is not None else tensor.shape:
        n *= int(d)
    return n


def model_entries(model: Any) -> Iterator[tuple[Any, list[tuple[str, Any]]]]:
    """(module, [(state-dict key, parameter or persistent buffer)]) per module, in state-dict order.

    A tied parameter appears once, under its first name (the input embedding), which is what transformers
    writes and expects (the tied lm_head.weight is absent from the files)."""
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        own = []
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor is None or id(tensor) in seen or name in getattr(module, "_non_persistent_buffers_set", ()):
                continue
            seen.add(id(tensor))
            own.append((f"{prefix}.{name}" if prefix else name, tensor))
        if own:
            yield module, own


def _nbytes(tensor: Any, dtype: Any) -> int:
    size = dtype.itemsize if dtype is not None and tensor.is_floating_point() else tensor.element_size()
    return _numel(tensor) * size


def write_model(model: Any, folder: Path, *, rank: int, max_bytes: int, dtype: Any = None) -> None:
    """Sharded safetensors + config.json (+ generation_config.json) of a (possibly ZeRO-3) transformers model,
    floating tensors in `dtype` (None: as they are). Every rank must call this (the gathers are collective);
    only rank 0 writes."""
    import deepspeed
    import torch

    entries = list(model_entries(model))
    sizes = [(key, _nbytes(t, dtype)) for _, own in entries for key, t in own]
    writer = ShardWriter(folder, sizes, max_bytes, dtype) if rank == 0 else None
    for _, own in entries:
        params = [t for _, t in own if isinstance(t, torch.nn.Parameter)]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):  # a no-op unless ZeRO-3
            if writer is not None:
                for key, tensor in own:
                    writer.add(key, tensor)
    if writer is not None:
        writer.close()
        if dtype is None:
            dtype = next((t.dtype for _, own in entries for _, t in own if t.is_floating_point()), torch.float32)
        write_config(model, folder, dtype)


def write_config(model: Any, folder: Path, dtype: Any) -> None:
    """config.json (with a sliding window dropped for training restored) and generation_config.json."""
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.dtype = str(dtype).removeprefix("torch.")
    text = config.get_text_config()
    for key, value in getattr(model, "xlam_config_restore", {}).items():
        setattr(text, key, value)
    config.save_pretrained(folder)
    generation = getattr(model, "generation_config", None)
    if generation is not None and model.can_generate():
        generation.save_pretrained(folder)


def write_adapter(peft_model: Any, folder: Path, *, rank: int) -> None:
    """adapter_model.safetensors + adapter_config.json (peft format) from the trainable parameters alone:
    the base model is never gathered. Collective, like write_model."""
    import deepspeed

    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    # adapters are small (tens of MB at 7B with r=16): one gather for all of them
    with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
        state = {n: p.detach().to("cpu", copy=True) for n, p in named} if rank == 0 else None
    if state is not None:
        peft_model.save_pretrained(folder, state_dict=state, safe_serialization=True)


def clear_weights(folder: Path) -> None:
    """Weight files of an earlier export into `folder` (another shard count would leave stale files)."""
    for path in folder.iterdir() if folder.is_dir() else ():
        if _WEIGHT_FILES.match(path.name):
            path.unlink()


def load_weights(folder: str | Path) -> dict[str, Any]:
    """All tensors of a folder written here (one file, an index of shards, or an adapter)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / INDEX).exists():
        files = sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))
        return {k: v for f in files for k, v in load_file(folder / f).items()}
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if (folder / name).exists():
            return load_file(folder / name)
    raise FileNotFoundError(f"no weights in {folder}")


# -- tokenizer and template ------------------------------------------------------------------------
def training_template(collate: CollateConfig, tokenizer: Any) -> str | dict[str, str]:
    """The chat template training renders with: the renderer's own (so a bad `collate.chat_template` fails
    here, in preflight), which is what the export saves for inference."""
    from xlam_hpc.collate.template import BuiltinRenderer, renderer_for

    renderer = renderer_for(collate, tokenizer)
    if isinstance(renderer, BuiltinRenderer):
        return renderer.template
    templates: dict[str, str] = renderer.templates
    return templates["default"] if list(templates) == ["default"] else templates


def render_options(collate: CollateConfig) -> dict[str, Any] | None:
    """The collate options besides the template that change the rendering, when any differs from its default
    (the built-in template takes none)."""
    if collate.chat_template == "builtin":
        return None
    default = CollateConfig()
    options = {name: getattr(collate, name) for name in ("template_kwargs", "tool_arguments", "tool_call_ids")}
    if all(value == getattr(default, name) for name, value in options.items()):
        return None
    return options


def save_tokenizer(final: Path, tokenizer: Any, template: str | dict[str, str], collate: CollateConfig) -> None:
    """`tokenizer` saved into `final` with `template` as its chat template (the live tokenizer is left as it
    was), plus RENDER_OPTIONS when the collate options that change the rendering are not the defaults."""
    own = tokenizer.chat_template
    tokenizer.chat_template = template
    try:
        tokenizer.save_pretrained(final)
    finally:
        tokenizer.chat_template = own
    options = render_options(collate)
    target = final / RENDER_OPTIONS
    if options is None:
        target.unlink(missing_ok=True)  # from an earlier export of this output_dir
    else:
        target.write_text(json.dumps(options, indent=1, ensure_ascii=False) + "\n")


# -- the trainer's export ----------------------------------------------------------------------------
def save_module(module: Any, folder: Path, *, rank: int, max_bytes: int) -> None:
    """A LoRA-wrapped model's adapter, or a whole model, into `folder` (collective; rank 0 writes)."""
    from peft import PeftModel

    module = getattr(module, "_orig_mod", module)  # torch.compile's wrapper would prefix every name
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        clear_weights(folder)
    if isinstance(module, PeftModel):
        write_adapter(module, folder, rank=rank)
    else:
        write_model(module, folder, rank=rank, max_bytes=max_bytes)


def export_final(run: Any) -> None:
    """output_dir/final: the model (or LoRA adapter) and the tokenizer with the chat template used in training.

    With non-default `collate.template_kwargs` / `tool_arguments` / `tool_call_ids`, final/xlam_render.json
    holds them: inference renders identically with `tokenizer.apply_chat_template(to_hf_messages(system, turns,
    tool_arguments, tool_call_ids), tools=..., **template_kwargs)`.
    Also output_dir/memory.json: each rank's peak RSS after setup, training and export.
    """
    final = run.out / "final"
    rank = run.dist.rank
    memory: dict[str, float] = dict(getattr(run, "memory", {}))
    memory["train"] = peak_rss_mib()
    save_module(run.engine.module, final, rank=rank, max_bytes=parse_size(run.recipe.train.export_shard_size))
    memory["export"] = peak_rss_mib()
    if rank == 0:
        save_tokenizer(final, run.tokenizer, run.chat_template, run.recipe.collate)
        log.info("final model written to %s", final)
    _write_memory(run, memory)


def _write_memory(run: Any, memory: dict[str, float]) -> None:
    gathered: list[dict[str, float]] = run.coll.all_gather_object(memory)
    if run.dist.rank == 0:
        stages = {stage: [round(m.get(stage, 0.0), 1) for m in gathered] for stage in memory}
        (run.out / "memory.json").write_text(json.dumps({"peak_rss_mib": stages}, indent=1) + "\n")


# -- `xlam-hpc export`: a run's final or checkpoint-N as a plain folder ------------------------------
def export_run(
    run_dir: str | Path,
    output: str | Path,
    *,
    checkpoint: int | None = None,
    merge_lora: bool = False,
    max_bytes: int = DEFAULT_SHARD_SIZE,
    dtype: str | None = None,
) -> Path:
    """Write RUN_DIR/final or RUN_DIR/checkpoint-N to `output` as a transformers folder (a peft adapter folder
    for a LoRA run without `merge_lora`) with the tokenizer and chat template used in training. One process,
    no GPU; the base of a LoRA run is rebuilt from the run's recipe (model.name_or_path, or the preset with
    the run's seed). `dtype` (bf16, fp16, fp32; default fp32) is what a consolidated or merged model is written
    in; `final` is copied as it is."""
    from xlam_hpc.train.model import train_dtype

    run_dir, output = Path(run_dir), Path(output)
    recipe = _run_recipe(run_dir)
    lora = recipe.train.lora is not None
    if merge_lora and not lora:
        raise ConfigError(f"{run_dir}: --merge-lora, but this run trained the full model (no train.lora)")
    source = _source(run_dir, checkpoint)
    copy_final = checkpoint is None and not merge_lora
    if dtype is not None and (copy_final or (lora and not merge_lora)):
        raise ConfigError("--dtype applies to a full model from --checkpoint N or to --merge-lora")
    out_dtype = train_dtype(dtype or "fp32")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"{output}: the output directory is not empty")
    tokenizer = recipe.load_tokenizer()
    template = training_template(recipe.collate, tokenizer)
    output.mkdir(parents=True, exist_ok=True)
    if copy_final:  # final is that folder already: copy, whatever its size
        import shutil

        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copy2(path, output / path.name)
        return output
    if lora:
        model = _lora_model(recipe, tokenizer, source, checkpoint is not None)
        if merge_lora:
            write_model(model.merge_and_unload(), output, rank=0, max_bytes=max_bytes, dtype=out_dtype)
        else:
            write_adapter(model, output, rank=0)
    else:
        _write_consolidated(recipe, tokenizer, source, output, max_bytes=max_bytes, dtype=out_dtype)
    save_tokenizer(output, tokenizer, template, recipe.collate)
    return output


def _run_recipe(run_dir: Path) -> Any:
    """The resolved recipe a run wrote (RUN_DIR/config.yaml)."""
    from xlam_hpc.config import load_yaml
    from xlam_hpc.recipe import load_recipe

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a training run directory (no {path.name})")
    data = load_yaml(path)
    data.pop("fingerprint", None)
    return load_recipe(None, base=data)


def _source(run_dir: Path, checkpoint: int | None) -> Path:
    if checkpoint is None:
        final = run_dir / "final"
        if not final.is_dir():
            raise ConfigError(f"{final} does not exist (the run has not finished): export a --checkpoint N")
        return final
    from xlam_hpc.train.checkpoint import verify_checkpoint

    path = run_dir / f"checkpoint-{checkpoint}"
    if not path.is_dir():
        have = sorted(p.name for p in run_dir.glob("checkpoint-*") if p.is_dir())
        raise ConfigError(f"{path} does not exist (found: {', '.join(have) or 'no checkpoints'})")
    problem = verify_checkpoint(path)  # sizes and sha256 from the manifest: only files the run wrote are read
    if problem is not None:
        raise ConfigError(problem)
    return path


def _consolidated(checkpoint: Path, frozen: bool) -> dict[str, Any]:
    """fp32 master weights from the ZeRO-2/3 partitions (DeepSpeed's zero_to_fp32), lazily: a tensor is
    assembled from the rank files when asked for (`.contiguous()`), so memory stays at about one tensor."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    # DeepSpeed's checkpoint files hold Python objects (loss scaler, config) besides tensors, so its loader
    # unpickles them: this reads only checkpoints whose hashes verify_checkpoint matched with the manifest
    return get_fp32_state_dict_from_zero_checkpoint(
        str(checkpoint), tag="ds", exclude_frozen_parameters=not frozen, lazy_mode=True
    )


def _write_consolidated(recipe: Any, tokenizer: Any, source: Path, output: Path, *, max_bytes: int, dtype: Any) -> None:
    """A full-model checkpoint → sharded safetensors, tensor by tensor, on a meta-device skeleton."""
    import torch
    from transformers import AutoModelForCausalLM

    from xlam_hpc.train.model import model_config

    config, restore = model_config(recipe.model, tokenizer, recipe.collate.seq_length)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    skeleton.xlam_config_restore = restore
    state = _consolidated(source, frozen=True)
    entries = [(key, t) for _, own in model_entries(skeleton) for key, t in own]
    missing = [key for key, _ in entries if key not in state]
    if missing:
        raise ConfigError(f"{source}: the checkpoint lacks {missing[:3]} of {recipe.model.name_or_path}")
    writer = ShardWriter(output, [(key, _nbytes(t, dtype)) for key, t in entries], max_bytes, dtype)
    for key, _ in entries:
        writer.add(key, state[key].contiguous())
    writer.close()
    write_config(skeleton, output, dtype)


def _lora_model(recipe: Any, tokenizer: Any, source: Path, from_checkpoint: bool) -> Any:
    """The run's base (rebuilt) with its trained adapter loaded, in fp32."""
    from peft import set_peft_model_state_dict

    from xlam_hpc.train.model import add_lora, build_model

    base = build_model(recipe.model, tokenizer, seq_length=recipe.collate.seq_length, seed=recipe.seed)
    model = add_lora(base, recipe.train.lora)
    if from_checkpoint:  # the engine's names: base_model.model.….lora_A.default.weight
        state = {k: v.contiguous() for k, v in _consolidated(source, frozen=False).items()}
        result = model.load_state_dict(state, strict=False)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        if result.unexpected_keys or trained - set(state):
            raise ConfigError(f"{source}: adapter weights do not match train.lora of {source.parent / 'config.yaml'}")
    else:
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(source / "adapter_model.safetensors"))
    return model.eval()
