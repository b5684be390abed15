"""ModelConfig and TrainConfig: recipe sections `model:` and `train:`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["DpoConfig", "LoraConfig", "ModelConfig", "TrainConfig"]


@dataclass(kw_only=True)
class ModelConfig:
    """Recipe section `model:`."""

    name_or_path: str = "tiny-mistral"
    """A local checkpoint folder (any causal LM transformers can load) or a preset: tiny-mistral, tiny-llama."""
    dropout: float = 0.0
    """Attention dropout (and hidden dropout where the architecture has one)."""
    attn_implementation: str = "auto"
    """auto (CUDA: the installed varlen flash kernel, else flex_attention when packing, else sdpa; CPU: sdpa),
    eager, sdpa, flex_attention, flash_attention_2/3/4. Packed samples are kept apart on each of them
    (xlam_hpc.train.attention); anything else is refused with packing on."""
    trust_remote_code: bool = False
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra model-config fields (presets: hidden_size, num_hidden_layers, ...)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass(kw_only=True)
class LoraConfig:
    """Recipe section `train.lora:` (peft)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass(kw_only=True)
class DpoConfig:
    """Recipe section `train.dpo:` (TRL's DPO losses)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    reference: Literal["model", "precomputed"] = "model"
    """model: a frozen copy of the initial policy (the base model with adapters disabled for LoRA);
    precomputed: reference log-probs computed once per batch before the policy update."""


@dataclass(kw_only=True)
class TrainConfig:
    """Recipe section `train:`."""

    max_steps: int = 100
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    grad_clip: float = 1.0
    deepspeed: str = "zero2"
    """'zero2', 'zero3' (configs/deepspeed/*.json, shipped in the package) or a path to a DeepSpeed JSON."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on a GPU that supports it, else fp16 (DeepSpeed's dynamic loss scaling); fp32 on CPU."""
    micro_batch_tokens: int = 16384
    """Per rank: each step's rows are run in micro-batches of at most this many tokens (rows x row length;
    at least one row or DPO pair each), gradients accumulated, the loss normalized over the whole global step.
    Peak activation memory depends on this, not on data.global_batch_size."""
    loss_chunk_tokens: int = 4096
    """The LM loss runs over this many tokens at a time: full-vocabulary logits exist for one chunk only."""
    compile: Literal["auto"] | bool = "auto"
    """torch.compile the model; auto: on GPU only."""
    fused_kernels: Literal["auto"] | bool = "auto"
    """Liger kernels (RoPE, RMSNorm, SwiGLU, fused linear cross-entropy); auto: on GPU when liger-kernel is
    installed. true fails when it is not."""
    export_shard_size: str = "5GB"
    """Largest safetensors shard of output_dir/final (decimal units: 5GB, 500MB)."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms on GPU (slower); on CPU, runs are bitwise reproducible anyway."""
    save_interval: int = 50
    keep_last: int = 3
    log_interval: int = 1
    eval_interval: int = 0
    """Validation loss on data.eval every this many steps and at the last step; 0 = only at the last step
    (when data.eval is set)."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Where rank 0 logs scalars besides history.jsonl: "tensorboard" (OUTPUT_DIR/tensorboard) and/or "wandb"
    (only when asked; needs `pip install wandb` and its usual WANDB_* environment, never a key in the recipe)."""
    trace_samples: bool = False
    """Write trace/rank<R>.jsonl: one line per optimizer step {step, rank, sample_ids, loss}."""
    grace_period_s: float = 60.0
    """Budget for the collective save after SIGTERM/SIGUSR1/SIGUSR2 (logged; warned when exceeded)."""
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = None
    dpo: DpoConfig = field(default_factory=DpoConfig)

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.save_interval < 1 or self.keep_last < 1:
            raise ValueError("train.max_steps, train.save_interval and train.keep_last must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        unknown = sorted(set(self.report_to) - {"tensorboard", "wandb"})
        if unknown:
            raise ValueError(f"train.report_to: unknown {unknown}; valid: tensorboard, wandb")
        if self.eval_interval < 0 or self.log_interval < 1:
            raise ValueError("train.eval_interval must be >= 0 and train.log_interval >= 1")
        if self.micro_batch_tokens < 1 or self.loss_chunk_tokens < 1:
            raise ValueError("train.micro_batch_tokens and train.loss_chunk_tokens must be >= 1")
