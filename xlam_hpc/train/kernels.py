"""Drop-in model speed-ups: torch.compile and Liger's kernels, chosen from `train.compile`,
`train.fused_kernels` and the device.

`select_kernels` is the pure decision (config values, device type, what is installed); `apply_kernels`
detects what is installed, decides, and patches the model in place. Neither changes the model's
parameters or their names, so checkpoints are interchangeable between runs with and without them
(these knobs are left out of the recipe fingerprint).

- compile: every decoder layer is compiled in place (`nn.Module.compile`), not the whole model. The
  step's loss (xlam_hpc.train.loss) swaps the LM head's forward for its chunked loss on every call; a
  compiled whole model would guard on that new function and recompile each step. The decoder layers are
  nearly all of the FLOPs, identical (one graph, compiled once for all layers) and unaffected by the head.
  A `copy.deepcopy` of the model (a DPO reference) is eager again: torch drops the compiled call on copy.
- fused kernels: Liger's RoPE, RMSNorm and SwiGLU (or the architecture's equivalents) patched into the
  model instance. Liger's cross-entropy and fused-linear-cross-entropy replacements stay off: the loss is
  computed by our own loss module (which uses Liger's fused linear cross-entropy kernel by itself when it
  can, `loss.use_liger`).

Apply to the bare transformers model: before LoRA adapters are added and before DeepSpeed wraps it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from xlam_hpc.errors import ConfigError

__all__ = ["KernelChoice", "apply_kernels", "compile_layers", "detect_installed", "select_kernels"]


INSTALL_LIGER = "pip install liger-kernel (it needs a CUDA GPU and triton)"


@dataclass(frozen=True)
class KernelChoice:
    compile: bool
    liger: bool
    why: str
    """One line for the log: what was chosen and why."""


@dataclass(frozen=True)
class Installed:
    liger_model_types: frozenset[str] | None
    """Architectures (config.model_type) Liger can patch; None when liger_kernel cannot be imported."""
    liger_error: str | None
    """Why liger_kernel cannot be imported (None when it can, or when it is not installed at all)."""
    cxx: str | None
    """A C++ compiler on PATH (torch.compile on CPU generates C++), or None."""


def _check(name: str, value: Any) -> None:
    if not (value == "auto" or value is True or value is False):  # `in` would take 1 and 0
        raise ConfigError(f"train.{name} must be auto, true or false, got {value!r}")


def select_kernels(
    compile: str | bool,
    fused_kernels: str | bool,
    *,
    device_type: str,
    model_type: str,
    liger_model_types: Collection[str] | None,
    cxx: bool,
    liger_error: str | None = None,
) -> KernelChoice:
    """What to apply. `compile`/`fused_kernels`: "auto", True or False (the recipe's values); `device_type`:
    "cuda" or "cpu"; `model_type`: the model's config.model_type; `liger_model_types`: what Liger supports,
    None when liger_kernel is not importable (`liger_error`: why, if it is installed but fails to import);
    `cxx`: a C++ compiler is available (needed by torch.compile on CPU).

    Liger and torch.compile together are refused: on an H200 they gave a wrong loss (first step 413 instead
    of 10.8, ../shared/gpu/README.md). When `auto` would pick both, Liger alone is chosen: measured there
    (mistral-1b, bf16, 8x4096, fused AdamW) Liger ran at 83.7k tokens/s with a 36 GiB peak, torch.compile at
    85.1k (1.7% faster, one run each: within run-to-run noise) with the eager run's 64-72 GiB peak. Half the
    memory buys longer micro-batches or a larger model; Liger also costs no start-up compilation and no
    recompiles when the micro-batch shape changes. An explicit `true` for one of them with `auto` for the
    other keeps the explicit one only.
    """
    _check("compile", compile)
    _check("fused_kernels", fused_kernels)
    cuda = device_type == "cuda"
    if compile is True and fused_kernels is True:
        raise ConfigError(
            "train.compile: true and train.fused_kernels: true cannot be combined: Liger's kernels under "
            "torch.compile gave a wrong loss on an H200 (413 instead of 10.8 at the first step); set one of "
            "them to false (or auto)"
        )
    liger_ok = liger_model_types is not None and model_type in liger_model_types
    if fused_kernels is True:
        if liger_model_types is None:
            detail = f" (importing it failed: {liger_error})" if liger_error else ""
            raise ConfigError(f"train.fused_kernels: true needs liger-kernel{detail}: {INSTALL_LIGER}")
        if not cuda:
            raise ConfigError(
                f"train.fused_kernels: true needs a CUDA device (Liger's kernels are Triton GPU kernels); this "
                f"process has {device_type}. Set train.fused_kernels to auto or false"
            )
        if not liger_ok:
            raise ConfigError(
                f"train.fused_kernels: true, but Liger has no kernels for model type '{model_type}'; "
                "set train.fused_kernels to auto or false"
            )
    if compile is True and not cuda and not cxx:
        raise ConfigError(
            "train.compile: true on CPU needs a C++ compiler (torch.compile generates C++ there) and none was found "
            "(g++, c++, clang++ or $CXX); install g++ or set train.compile to false"
        )

    liger = fused_kernels is True or (fused_kernels == "auto" and compile is not True and cuda and liger_ok)
    comp = compile is True or (compile == "auto" and not liger and cuda)
    if liger:
        why = "fused_kernels: true" if fused_kernels is True else "fused_kernels: auto (CUDA, liger-kernel installed)"
        if compile == "auto" and cuda:
            why += (
                "; compile: auto stays off (with Liger it gave a wrong loss; Liger alone: same speed, half the memory)"
            )
    elif comp:
        why = "compile: true" if compile is True else "compile: auto (CUDA)"
        if fused_kernels == "auto" and liger_ok and cuda:
            why += "; fused_kernels: auto stays off (Liger + torch.compile gave a wrong loss)"
        elif fused_kernels == "auto" and cuda and liger_model_types is not None:
            why += f"; Liger has no kernels for '{model_type}'"
    else:
        why = "eager" if not cuda else "eager (compile: false, no Liger)"
    return KernelChoice(compile=comp, liger=liger, why=why)


def _find_cxx() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def detect_installed(want_liger: bool = True) -> Installed:
    """What the selection depends on: Liger's supported architectures (import only when `want_liger`; the
    import pulls in triton) and a C++ compiler."""
    types, error = None, None
    if want_liger and importlib.util.find_spec("liger_kernel") is not None:
        try:
            from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
        except Exception as exc:  # e.g. triton missing or a transformers version it rejects
            error = f"{type(exc).__name__}: {exc}"
        else:
            types = frozenset(MODEL_TYPE_TO_APPLY_LIGER_FN)
    return Installed(liger_model_types=types, liger_error=error, cxx=_find_cxx())


def _base(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)  # a peft model
    return get_base() if callable(get_base) else model


def _decoder_layers(model: Any) -> list[Any]:
    """The repeated transformer blocks: modules whose class transformers lists as never split across
    devices (`_no_split_modules`, e.g. MistralDecoderLayer)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def compile_layers(model: Any, **compile_kwargs: Any) -> int:
    """torch.compile each decoder layer of `model` in place; the number compiled (0: none found)."""
    layers = _decoder_layers(_base(model))
    for layer in layers:
        layer.compile(**compile_kwargs)
    return len(layers)


def apply_kernels(model: Any, compile: str | bool, fused_kernels: str | bool, device: Any) -> KernelChoice:
    """Choose (select_kernels) and apply to `model` in place; returns the choice (log its `why`)."""
    import torch

    device_type = torch.device(device).type
    installed = detect_installed(want_liger=fused_kernels is not False)
    base = _base(model)
    model_type = getattr(getattr(base, "config", None), "model_type", "") or ""
    choice = select_kernels(
        compile,
        fused_kernels,
        device_type=device_type,
        model_type=model_type,
        liger_model_types=installed.liger_model_types,
        cxx=installed.cxx is not None,
        liger_error=installed.liger_error,
    )
    if choice.liger:
        from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

        # keyword arguments an architecture's apply function lacks are dropped by Liger (e.g. swiglu for GeGLU)
        _apply_liger_kernel_to_instance(
            model=base, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
        )
    if choice.compile:
        if not _decoder_layers(base):
            if compile is True:
                raise ConfigError(
                    f"train.compile: true, but no decoder layers were found in {type(base).__name__} "
                    "(no _no_split_modules); set train.compile to false"
                )
            choice = KernelChoice(compile=False, liger=choice.liger, why=choice.why + "; no decoder layers to compile")
        else:
            compile_layers(base)
    return choice
