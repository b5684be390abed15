"""Kernel selection (torch.compile / Liger) from train.compile, train.fused_kernels, the device and what is
installed; torch.compile on CPU gives eager's loss and gradients, also through the chunked loss's head swap."""

from __future__ import annotations

import shutil

import pytest
import torch

from xlam_hpc.errors import ConfigError
from xlam_hpc.train.kernels import apply_kernels, compile_layers, detect_installed, select_kernels

LIGER = frozenset({"mistral", "llama", "qwen2"})

# compile, fused_kernels, device, liger installed, model type → (compile, liger)
TABLE = [
    ("auto", "auto", "cpu", True, "mistral", (False, False)),
    ("auto", "auto", "cpu", False, "mistral", (False, False)),
    ("auto", "auto", "cuda", False, "mistral", (True, False)),
    ("auto", "auto", "cuda", True, "mistral", (False, True)),  # both possible: Liger alone (see select_kernels)
    ("auto", "auto", "cuda", True, "gpt2", (True, False)),  # Liger has no kernels for it: compile
    ("auto", False, "cuda", True, "mistral", (True, False)),
    (False, "auto", "cuda", True, "mistral", (False, True)),
    (False, "auto", "cuda", False, "mistral", (False, False)),
    (False, False, "cuda", True, "mistral", (False, False)),
    (True, "auto", "cuda", True, "mistral", (True, False)),  # explicit compile wins over auto Liger
    ("auto", True, "cuda", True, "mistral", (False, True)),  # explicit Liger wins over auto compile
    (True, False, "cpu", False, "mistral", (True, False)),
    (True, "auto", "cpu", True, "mistral", (True, False)),
    (False, True, "cuda", True, "llama", (False, True)),
]


@pytest.mark.parametrize(("compile", "fused", "device", "liger", "model_type", "want"), TABLE)
def test_selection_table(compile, fused, device, liger, model_type, want):
    choice = select_kernels(
        compile,
        fused,
        device_type=device,
        model_type=model_type,
        liger_model_types=LIGER if liger else None,
        cxx=True,
    )
    assert (choice.compile, choice.liger) == want
    assert choice.why


def _select(compile, fused, device="cuda", liger=True, model_type="mistral", cxx=True, error=None):
    return select_kernels(
        compile,
        fused,
        device_type=device,
        model_type=model_type,
        liger_model_types=LIGER if liger else None,
        cxx=cxx,
        liger_error=error,
    )


def test_compile_and_liger_together_refused():
    with pytest.raises(ConfigError, match=r"cannot be combined.*wrong loss"):
        _select(True, True)


def test_fused_true_without_liger_says_how_to_install():
    with pytest.raises(ConfigError, match="pip install liger-kernel"):
        _select(False, True, liger=False)
    with pytest.raises(ConfigError, match="importing it failed: ImportError: no triton"):
        _select(False, True, liger=False, error="ImportError: no triton")


def test_fused_true_needs_cuda_and_a_supported_model():
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        _select(False, True, device="cpu")
    with pytest.raises(ConfigError, match="no kernels for model type 'gpt2'"):
        _select(False, True, model_type="gpt2")


def test_compile_true_on_cpu_needs_a_cxx_compiler():
    with pytest.raises(ConfigError, match=r"C\+\+ compiler"):
        _select(True, False, device="cpu", cxx=False)
    assert _select(True, False, device="cuda", cxx=False).compile  # CUDA: Triton, not C++


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_values(value):
    with pytest.raises(ConfigError, match="auto, true or false"):
        _select(value, "auto")
    with pytest.raises(ConfigError, match="auto, true or false"):
        _select("auto", value)


def _tiny(seed: int = 0):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=None,
    )
    return MistralForCausalLM(config).float()


def _batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 101, (2, 16), generator=gen)
    pos = torch.cat([torch.arange(7), torch.arange(9)]).repeat(2, 1)  # packed rows
    labels = ids.clone()
    labels[:, :3] = -100
    return {"input_ids": ids, "position_ids": pos, "use_cache": False}, labels


def test_apply_on_cpu_is_eager_by_default_and_refuses_liger():
    model = _tiny()
    choice = apply_kernels(model, "auto", "auto", "cpu")
    assert (choice.compile, choice.liger) == (False, False)
    assert all(m._compiled_call_impl is None for m in model.modules())
    with pytest.raises(ConfigError, match=r"liger-kernel|CUDA device"):
        apply_kernels(model, False, True, "cpu")


def test_detect_installed_here():
    found = detect_installed()
    assert (found.cxx is not None) == any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow  # inductor's first C++ build takes ~1 min on 2 cores (cached afterwards)
@pytest.mark.skipif(detect_installed(want_liger=False).cxx is None, reason="torch.compile on CPU needs g++")
def test_compile_true_on_cpu_matches_eager():
    import torch._dynamo

    from xlam_hpc.train.loss import token_loss_sum

    torch._dynamo.reset()
    eager, compiled = _tiny(), _tiny()
    choice = apply_kernels(compiled, True, "auto", "cpu")
    assert choice.compile and not choice.liger
    assert compile_layers(_tiny()) == 2  # both decoder layers
    assert all(layer._compiled_call_impl is not None for layer in compiled.model.layers)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep their names

    inputs, labels = _batch()
    want = eager(**inputs, labels=labels).loss
    got = compiled(**inputs, labels=labels).loss
    want.backward()
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    ref, ours = _grads(eager), _grads(compiled)
    assert ref.keys() == ours.keys()
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-5, msg=name)

    # the chunked loss swaps the head's forward on every call: the compiled layers must not recompile
    from torch._dynamo.utils import counters

    for model in (eager, compiled):
        model.zero_grad()
    frames = counters["stats"]["unique_graphs"]
    for step in range(3):
        inputs, labels = _batch(seed=10 + step)
        want = token_loss_sum(eager, eager, inputs, labels, chunk=8)
        got = token_loss_sum(compiled, compiled, inputs, labels, chunk=8)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == frames
