"""Packed samples never attend to each other, whatever the attention implementation (xlam_hpc.train.attention).

Each sample's logits and loss inside a packed micro-batch, fed to the model exactly as training feeds it,
equal those of the sample run alone. CPU has eager, sdpa and flex_attention. The flash kernels cannot run
here: for flash_attention_2 transformers' own flash path runs (masking, `_flash_attention_forward`, the
varlen branch) with the CUDA kernel replaced by a PyTorch reference of `flash_attn_varlen_func`; the same test
shows that the multi-row packed batch without flattening does leak there (the failure this guards against).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
from transformers import modeling_flash_attention_utils as fa_utils

from xlam_hpc.collate.encode import Sample
from xlam_hpc.collate.packing import collate_packed
from xlam_hpc.errors import ConfigError
from xlam_hpc.train import loss as lm
from xlam_hpc.train.attention import check_attention, flatten_packed, resolve_attention
from xlam_hpc.train.microbatch import filler, split
from xlam_hpc.train.tasks import SftTask, _model_inputs

VOCAB = 97
LENGTHS = [23, 9, 31, 4, 17, 12, 26, 7, 1, 15]


def _samples() -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for k, n in enumerate(LENGTHS):
        mask = np.zeros(n, dtype=bool)
        mask[n // 3 :] = True  # the tail is the "assistant" part
        out.append(Sample(f"s{k}", rng.integers(1, VOCAB, n).astype(np.int64), mask))
    return out


def _model(impl: str) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    cfg._attn_implementation = "sdpa" if impl.startswith("flash") else impl
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    model.config._attn_implementation = impl  # flash: transformers' check would refuse it on a CPU build
    return model


def _alone(model: LlamaForCausalLM, sample: Sample) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(sample.input_ids)[None], use_cache=False).logits[0]


def _segments(micro: dict) -> list[tuple[int, int, int]]:
    """(row, start, length) of every sample in a micro-batch, from its restarting position_ids."""
    out = []
    lengths = micro["row_lengths"].tolist() if "row_lengths" in micro else [micro["input_ids"].shape[1]]
    for r, n in enumerate(lengths):
        pos = micro["position_ids"][r, :n].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [n]
        out += [(r, a, b - a) for a, b in itertools.pairwise(starts)]
    return out


def _check_isolated(model: LlamaForCausalLM, micros: list[dict], varlen: bool, atol: float = 2e-5) -> float:
    """Max |packed - alone| over every token of every sample (asserted below atol); also the loss."""
    samples = {tuple(s.input_ids.tolist()): s for s in _samples()}
    worst, seen = 0.0, 0
    for micro in micros:
        feed = flatten_packed(micro) if varlen else micro
        inputs = _model_inputs(feed, "cpu")
        with torch.no_grad():
            logits = model(**inputs).logits
            packed_loss = lm.token_loss_sum(model, model, inputs, feed["labels"], chunk=16)
        expected_loss = 0.0
        for r, a, n in _segments(feed):
            ids = tuple(feed["input_ids"][r, a : a + n].tolist())
            sample = samples[ids]
            alone = _alone(model, sample)
            worst = max(worst, float((logits[r, a : a + n] - alone).abs().max()))
            target = torch.as_tensor(np.where(sample.train_mask, sample.input_ids, -100))[1:]
            expected_loss += float(F.cross_entropy(alone[:-1], target, ignore_index=-100, reduction="sum"))
            seen += 1
        assert float(packed_loss) == pytest.approx(expected_loss, rel=1e-5)
    assert seen == len(LENGTHS)
    assert worst < atol, worst
    return worst


def _micro_batches(budget: int = 2 * 48) -> list[dict]:
    batch = collate_packed(_samples(), 48, pad_id=0)
    assert batch["input_ids"].shape[0] >= 4  # several packed rows, several samples per row
    micros = split(batch, budget)
    assert len(micros) >= 2 and any(m["input_ids"].shape[0] > 1 for m in micros)
    return micros


@pytest.mark.parametrize("impl", ["eager", "sdpa", "flex_attention"])
def test_packed_rows_are_isolated_on_cpu_backends(impl: str) -> None:
    _check_isolated(_model(impl), _micro_batches(), varlen=False)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_flattened_micro_batches_are_isolated_too(impl: str) -> None:
    """The varlen layout (one padding-free row) keeps samples apart under the dense-mask backends as well."""
    _check_isolated(_model(impl), _micro_batches(), varlen=True)


def _reference_flash(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the CUDA flash kernels by PyTorch references of their contracts; returns the calls made."""
    calls: list[str] = []

    def attend(q, k, v, causal, scale):  # [S, H, D] each; GQA: repeat the kv heads like the kernel does
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=causal, scale=scale
        )
        return out.transpose(0, 1)

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1)):
        calls.append("dense")
        return torch.stack([attend(q[b], k[b], v[b], causal, softmax_scale) for b in range(q.shape[0])])

    def flash_attn_varlen_func(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        dropout_p=0.0,
        softmax_scale=None,
        causal=False,
        window_size=(-1, -1),
    ):
        calls.append("varlen")
        assert torch.equal(cu_seqlens_q, cu_seqlens_k) and int(cu_seqlens_q[-1]) == q.shape[0]
        bounds = cu_seqlens_q.tolist()
        assert max(b - a for a, b in itertools.pairwise(bounds)) == int(max_seqlen_q)
        parts = [attend(q[a:b], k[a:b], v[a:b], causal, softmax_scale) for a, b in itertools.pairwise(bounds)]
        return torch.cat(parts)

    def lazy_imports(implementation, attention_wrapper=None, allow_all_kernels=False):
        return flash_attn_func, flash_attn_varlen_func, None, fa_utils._pad_input, fa_utils._unpad_input

    monkeypatch.setattr(fa_utils, "_lazy_imports", lazy_imports)
    monkeypatch.setattr(fa_utils, "_loaded_implementation", None)
    return calls


def test_flash_varlen_path_is_isolated_and_the_naive_batch_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _reference_flash(monkeypatch)
    model = _model("flash_attention_2")
    micros = _micro_batches()
    _check_isolated(model, micros, varlen=True)
    assert "varlen" in calls  # ("dense": the samples run alone)
    # without flattening, several packed rows go to the dense kernel: later samples see earlier ones
    calls.clear()
    with pytest.raises(AssertionError):
        _check_isolated(model, micros, varlen=False, atol=1e-2)
    assert "dense" in calls


def test_sft_task_flattens_for_varlen_and_gives_the_same_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training entry point: SftTask.micro_loss with varlen on (flash) equals the row layout on sdpa."""
    _reference_flash(monkeypatch)

    class Engine:
        def __init__(self, module):
            self.module, self.device = module, "cpu"

        def __call__(self, **kwargs):
            return self.module(**kwargs)

    micros = _micro_batches()
    rows = SftTask(lambda v: v, 1, chunk_tokens=16)
    flat = SftTask(lambda v: v, 1, chunk_tokens=16, varlen=True)
    for micro in micros:
        with torch.no_grad():
            a = rows.micro_loss(Engine(_model("sdpa")), micro, 1.0)[0]
            b = flat.micro_loss(Engine(_model("flash_attention_2")), micro, 1.0)[0]
        assert float(a) == pytest.approx(float(b), rel=1e-5)
    # a filler micro-batch (a rank with fewer micro-batches) flattens to its own columns, no label
    fill = flatten_packed(filler(collate_packed(_samples(), 48, pad_id=0)))
    assert fill["input_ids"].shape == (1, 8) and bool((fill["labels"] == -100).all())


def test_flatten_drops_padding_and_keeps_boundaries() -> None:
    batch = collate_packed(_samples(), 48, pad_id=0)
    flat = flatten_packed(split(batch, 10**9)[0])
    assert flat["input_ids"].shape == (1, sum(LENGTHS))  # padding-free
    bounds = flat["cu_seq_lens_q"].tolist()
    assert sorted(b - a for a, b in itertools.pairwise(bounds)) == sorted(LENGTHS)
    assert flat["max_length_q"] == max(LENGTHS)
    assert bool((flat["labels"][0, bounds[:-1]] == -100).all())  # no target across a boundary
    # all samples dropped for length: one unlabelled token, never an empty row
    empty = collate_packed([], 48, pad_id=0)
    assert flatten_packed(split(empty, 10**9)[0])["input_ids"].shape == (1, 1)


def test_packed_labels_never_target_across_a_boundary() -> None:
    batch = collate_packed(_samples(), 48, pad_id=0)
    for r, bounds in enumerate(batch["cu_seqlens"]):
        assert all(int(batch["labels"][r, b]) == -100 for b in bounds[:-1])
    assert batch["num_loss_tokens"] == int((batch["labels"] != -100).sum())


def test_attention_choice() -> None:
    for impl in ("eager", "sdpa", "flash_attention_2", "flash_attention_3"):
        assert resolve_attention(impl, packing=True, cuda_capability=None) == impl
    assert resolve_attention("flex_attention", packing=True, cuda_capability=(8, 0)) == "flex_attention"
    with pytest.raises(ConfigError, match="no backward on CPU"):
        resolve_attention("flex_attention", packing=True, cuda_capability=None)
    assert resolve_attention("auto", packing=True, cuda_capability=None) == "sdpa"
    gpu = resolve_attention("auto", packing=True, cuda_capability=(9, 0))
    assert gpu in ("flash_attention_3", "flash_attention_2", "flex_attention")  # flex when no flash kernel
    with pytest.raises(ConfigError, match=r"kernels-community/flash-attn2.*not known to keep packed samples apart"):
        check_attention("kernels-community/flash-attn2", packing=True)
    check_attention("kernels-community/flash-attn2", packing=False)  # unpacked: the user's choice
