"""Models: a local checkpoint folder, or a tiny random-init preset built from a config (no hub needed).

Presets exist so everything (tests, demo, container smoke test) runs offline on a CPU; their vocabulary
is the tokenizer's. LoRA adapters come from peft. `trust_remote_code` stays off unless the recipe
asks for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.train.config import LoraConfig, ModelConfig

__all__ = [
    "PRESETS",
    "build_model",
    "check_model_vocab",
    "check_vocab",
    "drop_sliding_window",
    "model_config",
    "read_model_config",
    "train_dtype",
]

log = logging.getLogger("xlam_hpc.train")

_TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny-mistral": {"model_type": "mistral", **_TINY},
    "tiny-llama": {"model_type": "llama", **_TINY},
    "mistral-1b": {
        "model_type": "mistral",
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 16,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
    },
}


def _preset_config(cfg: ModelConfig, vocab_size: int, pad_id: int, bos_id: int | None, eos_id: int | None) -> Any:
    from transformers import AutoConfig

    spec = {**PRESETS[cfg.name_or_path], **cfg.config_overrides}
    model_type = spec.pop("model_type")
    spec.setdefault("vocab_size", vocab_size)
    config = AutoConfig.for_model(model_type, **spec, pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id)
    return config


def _apply_dropout(config: Any, p: float) -> None:
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if hasattr(config, name):
            setattr(config, name, p)


def check_vocab(model_vocab: int, tokenizer: Any, where: str, tokenizer_source: str | None = None) -> None:
    """The model must have an embedding row for every token id the tokenizer can produce."""
    if model_vocab < len(tokenizer):
        source = f" from {tokenizer_source}" if tokenizer_source else ""
        raise ConfigError(
            f"{where}: model vocabulary ({model_vocab}) is smaller than the tokenizer's ({len(tokenizer)}){source}; "
            "they do not belong together (or resize the embeddings first)"
        )


def read_model_config(cfg: ModelConfig) -> Any | None:
    """A local model folder's config (config.json plus `config_overrides`, no weights read); None for a preset."""
    if cfg.name_or_path in PRESETS:
        return None
    from transformers import AutoConfig

    path = Path(cfg.name_or_path)
    if not path.is_dir():
        raise ConfigError(
            f"model.name_or_path '{cfg.name_or_path}' is neither a preset ({', '.join(PRESETS)}) nor an existing "
            "checkpoint folder (no model hub is used)"
        )
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the model config in {path}: {exc}") from None
    for key, value in cfg.config_overrides.items():
        setattr(config, key, value)
    return config


def check_model_vocab(
    cfg: ModelConfig, config: Any | None, tokenizer: Any, tokenizer_source: str | None = None
) -> None:
    """The vocabulary check from the config alone, before any weights are read (a 7B model is ~15 GB of host
    RAM per rank before the post-load check could fail)."""
    if config is None:  # a preset: its vocabulary is the tokenizer's unless overridden
        vocab = cfg.config_overrides.get("vocab_size", len(tokenizer))
        where = cfg.name_or_path
    else:
        vocab = getattr(config.get_text_config(), "vocab_size", None)
        where = f"{Path(cfg.name_or_path) / 'config.json'}"
    if isinstance(vocab, int):
        check_vocab(vocab, tokenizer, where, tokenizer_source)


def train_dtype(precision: str) -> Any:
    """The dtype weights are loaded in for a resolved precision: bf16/fp16 as trained, else fp32."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:  # build_model runs twice with a DPO reference
        _logged.add(message)
        log.info(message)


def drop_sliding_window(config: Any, seq_length: int | None) -> dict[str, Any]:
    """Set `sliding_window` to None when no row is longer than the window (attention is then identical);
    returns the text config's original values of what changed ({}: nothing). With a window, transformers
    builds a dense sliding-window mask; without one it keeps the fast causal path. Per-layer-type models whose
    sliding layers have their own RoPE (Gemma 2/3 style) are left as they are."""
    text = config.get_text_config()
    window = getattr(text, "sliding_window", None)
    if seq_length is None or not isinstance(window, int) or window < seq_length:
        return {}
    original: dict[str, Any] = {"sliding_window": window}
    layer_types = getattr(text, "layer_types", None)
    if layer_types and "sliding_attention" in layer_types:
        rope = getattr(text, "rope_parameters", None)
        if isinstance(rope, dict) and "sliding_attention" in rope:
            return {}
        original["layer_types"] = list(layer_types)
        text.layer_types = ["full_attention" if t == "sliding_attention" else t for t in layer_types]
    if getattr(text, "use_sliding_window", None):  # Qwen2 style: the flag must agree with the absent window
        original["use_sliding_window"] = True
        text.use_sliding_window = False
    text.sliding_window = None
    _log_once(f"sliding_window {window} >= collate.seq_length {seq_length}: full causal attention (same result)")
    return original


def _attention(cfg: ModelConfig) -> str:
    # training resolves `auto` for its device and packing first (train.attention); other callers get sdpa
    return "sdpa" if cfg.attn_implementation == "auto" else cfg.attn_implementation


def _zero3(ds_config: dict[str, Any] | None) -> bool:
    return bool(ds_config) and ds_config.get("zero_optimization", {}).get("stage", 0) == 3


def model_config(cfg: ModelConfig, tokenizer: Any, seq_length: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The config build_model builds from, and what `drop_sliding_window` changed in it."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = read_model_config(cfg)
    check_model_vocab(cfg, config, tokenizer)
    if config is None:
        config = _preset_config(cfg, len(tokenizer), pad_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
        config._attn_implementation = _attention(cfg)
    _apply_dropout(config, cfg.dropout)
    return config, drop_sliding_window(config, seq_length)


def build_model(
    cfg: ModelConfig,
    tokenizer: Any,
    *,
    dtype: Any = None,
    ds_config: dict[str, Any] | None = None,
    seq_length: int | None = None,
    seed: int | None = None,
) -> Any:
    """The causal LM described by `cfg`: a local checkpoint's weights, or random init for a preset.

    dtype: the training dtype (default fp32); weights are read straight into it (transformers 5 builds on
    the meta device, so a checkpoint is never materialized twice in host memory).
    ds_config: the DeepSpeed config; under ZeRO-3 the model is built inside DeepSpeed's partitioned init
    (torch.distributed must be up): each rank holds 1/world of the weights from the start, a preset is
    initialized on rank 0 and broadcast, a checkpoint is read by rank 0 one module at a time.
    seq_length: drop a sliding window at least this long (see `drop_sliding_window`).
    seed: reseed the global RNG first, so that a second call (the DPO reference) builds the same preset.
    """
    from contextlib import nullcontext

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    dtype = dtype or torch.float32
    if seed is not None:
        torch.manual_seed(seed)
    preset = cfg.name_or_path in PRESETS
    config, restore = model_config(cfg, tokenizer, seq_length)
    # transformers' own ZeRO-3 path (zero.Init in from_config/from_pretrained) is switched on by this object
    # existing: keep a reference for the duration of the build
    hf_ds = None
    if _zero3(ds_config):
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds = HfDeepSpeedConfig(ds_config)
    try:
        if preset:
            # outside ZeRO-3 too, construction draws nothing and _reinit_like_zero3 initializes once
            with nullcontext() if hf_ds is not None else no_init_weights():
                model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                cfg.name_or_path,
                config=config,
                dtype=dtype,
                attn_implementation=_attention(cfg),
                trust_remote_code=cfg.trust_remote_code,
            )
    finally:
        del hf_ds
    if preset and not _zero3(ds_config):
        _reinit_like_zero3(model, torch.initial_seed())
    if restore:
        model.xlam_config_restore = restore  # the export writes the original config back
    check_vocab(_num_embeddings(model), tokenizer, cfg.name_or_path)
    return model


def _reinit_like_zero3(model: Any, seed: int) -> None:
    """Initialize a preset the way transformers does under ZeRO-3 (where module construction draws nothing
    from the RNG before the init), so a preset's weights depend on the seed alone, not on the ZeRO stage: an
    export rebuilds the base of a LoRA run on one process."""
    import torch

    for module in model.modules():
        module.__dict__.pop("_is_hf_initialized", None)
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            tensor.__dict__.pop("_is_hf_initialized", None)
    torch.manual_seed(seed)
    with torch.no_grad():
        model.initialize_weights()
    model.tie_weights()


def _num_embeddings(model: Any) -> int:
    weight = model.get_input_embeddings().weight
    shape = getattr(weight, "ds_shape", None)  # a ZeRO-3 partitioned parameter is empty locally
    return int(shape[0]) if shape is not None else int(weight.shape[0])


def add_lora(model: Any, lora: LoraConfig) -> Any:
    """Wrap with peft LoRA adapters (base weights frozen)."""
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in lora.target_modules if m not in names]
    if missing:
        raise ConfigError(f"train.lora.target_modules {missing} are not modules of this model")
    config = PeftLora(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
