"""The chunked LM losses equal transformers' own `labels=` loss and the full-logits sequence log-probs, in value
and in gradient, for chunk sizes below, at and above the token count, with ignored labels and packed rows."""

from __future__ import annotations

import pytest
import torch

from xlam_hpc.train.loss import sequence_logps, token_loss_sum
from xlam_hpc.train.tasks import sequence_logps as logits_sequence_logps

VOCAB = 97


def _model(tied: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config).float()


def _packed_batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 24), generator=gen)
    # row 0: samples of 10 and 14 tokens, row 1: one of 17 then a padding tail; prompts unlabelled
    pos = torch.cat([torch.arange(10), torch.arange(14)]).repeat(2, 1)
    pos[1] = torch.cat([torch.arange(17), torch.arange(7)])
    labels = ids.clone()
    labels[0, :4], labels[0, 10:15], labels[1, :6], labels[1, 17:] = -100, -100, -100, -100
    return {"input_ids": ids, "position_ids": pos, "use_cache": False}, labels


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        torch.testing.assert_close(value, b[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk", [5, 26, 1000])  # 26 labelled tokens: below, equal to, above
def test_token_loss_matches_transformers(tied, chunk):
    model = _model(tied)
    inputs, labels = _packed_batch()
    assert int((labels[:, 1:] != -100).sum()) == 26
    ref = model(**inputs, labels=labels, num_items_in_batch=26).loss * 26
    ref.backward()
    want = _grads(model)
    ours = token_loss_sum(model, model, inputs, labels, chunk=chunk)
    ours.backward()
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-5, atol=1e-5)
    _close(_grads(model), want)
    assert "forward" not in model.get_output_embeddings().__dict__  # the head is restored


def test_token_loss_with_lora_and_nothing_labelled():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    inputs, labels = _packed_batch()
    ref = model(**inputs, labels=labels, num_items_in_batch=26).loss * 26
    ref.backward()
    want = _grads(model)
    ours = token_loss_sum(model, model, inputs, labels, chunk=7)
    ours.backward()
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-5, atol=1e-5)
    _close(_grads(model), want)
    nothing = token_loss_sum(model, model, inputs, torch.full_like(labels, -100), chunk=7)
    nothing.backward()  # still connected: zero gradients, not none
    assert float(nothing.detach()) == 0.0 and all(float(g.abs().sum()) == 0.0 for g in _grads(model).values())


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk", [5, 26, 1000])  # 26 labelled tokens
def test_sequence_logps_match_full_logits(tied, chunk):
    model = _model(tied)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, VOCAB, (4, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 9:], mask[3, 5:] = 0, 0  # right padding
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100
    inputs = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])
    ref = logits_sequence_logps(model(**inputs).logits.float(), ids, labels)
    (ref * weights).sum().backward()
    want = _grads(model)
    ours = sequence_logps(model, model, inputs, labels, chunk=chunk)
    (ours * weights).sum().backward()
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-5, atol=1e-5)
    _close(_grads(model), want)
    with torch.no_grad():
        torch.testing.assert_close(sequence_logps(model, model, inputs, labels, chunk=chunk), ref.detach())
