"""Models: a local checkpoint folder, or a tiny random-init preset built from a config (no hub needed).

Presets exist so everything (tests, demo, container smoke test) runs offline on a CPU; their vocabulary
is the tokenizer's. LoRA adapters come from peft. `trust_remote_code` stays off unless the recipe
asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.train.config import LoraConfig, ModelConfig

__all__ = ["PRESETS", "build_model", "check_model_vocab", "check_vocab", "read_model_config"]

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


def build_model(cfg: ModelConfig, tokenizer: Any, *, dtype: Any = None) -> Any:
    """The causal LM described by `cfg`; random init for presets (seed the RNG before calling)."""
    import torch
    from transformers import AutoModelForCausalLM

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = read_model_config(cfg)
    check_model_vocab(cfg, config, tokenizer)
    if config is None:
        config = _preset_config(cfg, len(tokenizer), pad_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
        _apply_dropout(config, cfg.dropout)
        config._attn_implementation = cfg.attn_implementation
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    else:
        _apply_dropout(config, cfg.dropout)
        model = AutoModelForCausalLM.from_pretrained(
            cfg.name_or_path,
            config=config,
            dtype=dtype or torch.float32,
            attn_implementation=cfg.attn_implementation,
            trust_remote_code=cfg.trust_remote_code,
        )
    check_vocab(model.get_input_embeddings().num_embeddings, tokenizer, cfg.name_or_path)
    return model


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
