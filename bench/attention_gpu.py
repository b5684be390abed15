"""Packed attention on one GPU: isolation per implementation, and packed vs unpacked throughput; one JSON object.

  python bench/attention_gpu.py [--impls sdpa,flex_attention,flash_attention_2,flash_attention_3] [--steps 8]
  python bench/attention_gpu.py --cpu-dry-run      # tiny shapes on CPU (eager, sdpa, flex): every code path

Model: a random Mistral-architecture model (mistral-1b shape: 16 layers, hidden 2048, vocab 32768) in bf16,
fed exactly as the trainer feeds it (`xlam_hpc.train.tasks._model_inputs`, varlen implementations through
`xlam_hpc.train.attention.flatten_packed`), loss by the trainer's chunked `token_loss_sum`.
- isolation: the max |logit| difference between every sample inside a packed micro-batch and the same sample
  run alone, per implementation (bf16: a leak shows as O(1), kernel noise as O(1e-2));
- throughput: forward + backward tokens/s of (a) unpacked plain-causal rows [rows, seq] of random ids, the
  fastest case (sdpa's flash kernel, no mask) and (b) packed rows of the same width holding samples of
  lognormal lengths (collate_packed, best-fit-decreasing), counted in real (non-pad) tokens. Goal: packed ≥ 0.95x
  of unpacked sdpa. Flash implementations run only where their package is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def available(impl: str) -> bool:
    package = PACKAGES.get(impl)
    return package is None or importlib.util.find_spec(package) is not None


def make_model(dry: bool, device: Any, dtype: Any) -> Any:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    shape = (
        {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
        if dry
        else {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16, "num_attention_heads": 16}
    )
    cfg = MistralConfig(vocab_size=32768, num_key_value_heads=4, sliding_window=None, **shape)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return MistralForCausalLM(cfg).to(device=device, dtype=dtype)


def packed_batch(seq: int, rows: int, seed: int = 0) -> dict[str, Any]:
    """Samples of lognormal lengths (median seq/6) packed into `rows` rows of width `seq`."""
    import numpy as np

    from xlam_hpc.collate.encode import Sample
    from xlam_hpc.collate.packing import collate_packed

    rng = np.random.default_rng(seed)
    samples, total = [], 0
    while total < rows * seq * 0.97:
        n = int(min(seq, max(16, rng.lognormal(np.log(seq / 6), 0.8))))
        mask = np.zeros(n, dtype=bool)
        mask[n // 2 :] = True
        samples.append(Sample(f"s{len(samples)}", rng.integers(3, 32000, n), mask))
        total += n
    batch = collate_packed(samples, seq, pad_id=0)
    while batch["input_ids"].shape[0] > rows:  # best-fit opened another row: fewer samples
        samples.pop()
        batch = collate_packed(samples, seq, pad_id=0)
    batch["num_samples"] = len(samples)
    return batch


def _feed(batch: dict[str, Any], impl: str) -> dict[str, Any]:
    from xlam_hpc.train.attention import VARLEN, flatten_packed

    return flatten_packed(batch) if impl in VARLEN and "row_lengths" in batch else batch


def isolation(model: Any, impl: str, device: Any) -> float:
    """Max |packed - alone| logit difference over all samples of a small packed batch."""
    import torch

    from xlam_hpc.train.tasks import _model_inputs

    model.config._attn_implementation = impl
    batch = packed_batch(256, 2, seed=1)
    feed = _feed(batch, impl)
    worst = 0.0
    with torch.no_grad():
        logits = model(**_model_inputs(feed, device)).logits.float()
        lengths = feed["row_lengths"].tolist() if "row_lengths" in feed else [feed["input_ids"].shape[1]]
        for r, n in enumerate(lengths):
            pos = feed["position_ids"][r, :n].tolist()
            starts = [i for i, p in enumerate(pos) if p == 0] + [n]
            for a, b in itertools.pairwise(starts):
                alone = model(input_ids=feed["input_ids"][r, a:b][None].to(device), use_cache=False).logits[0]
                worst = max(worst, float((logits[r, a:b] - alone.float()).abs().max()))
    return worst


def throughput(model: Any, impl: str, batch: dict[str, Any], steps: int, device: Any) -> float:
    """Real tokens/s of forward + backward (trainer loss path), after one warm-up step."""
    import torch

    from xlam_hpc.train import loss as lm
    from xlam_hpc.train.tasks import _model_inputs

    model.config._attn_implementation = impl
    feed = _feed(batch, impl)
    inputs = _model_inputs(feed, device)
    labels = feed["labels"].to(device)
    real = int(batch.get("num_tokens", batch["input_ids"].numel()))

    def step() -> None:
        loss = lm.token_loss_sum(model, model, inputs, labels, chunk=4096)
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return real * steps / (time.perf_counter() - start)


def unpacked_batch(seq: int, rows: int) -> dict[str, Any]:
    import torch

    ids = torch.randint(3, 32000, (rows, seq), generator=torch.Generator().manual_seed(0))
    return {
        "input_ids": ids,
        "labels": ids.clone(),
        "position_ids": torch.arange(seq).expand(rows, seq).contiguous(),
        "num_tokens": rows * seq,
    }


def main() -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impls", default="sdpa,flex_attention,flash_attention_2,flash_attention_3")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cpu-dry-run", action="store_true")
    args = p.parse_args()
    dry = args.cpu_dry_run
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    seq, rows, steps = (128, 2, 2) if dry else (args.seq, args.rows, args.steps)
    impls = [i for i in args.impls.split(",") if i]
    if dry:
        impls = ["eager", "sdpa", "flex_attention"]
    model = make_model(dry, device, dtype)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    out["unpacked_sdpa_tokens_per_s"] = base = throughput(model, "sdpa", unpacked_batch(seq, rows), steps, device)
    packed = packed_batch(seq, rows)
    out["packed_real_tokens"] = int(packed["num_tokens"])
    out["packed_samples"] = packed["num_samples"]
    for impl in impls:
        if not available(impl):
            out[impl] = {"skipped": f"{PACKAGES[impl]} is not installed"}
            continue
        result: dict[str, Any] = {}
        try:
            result["isolation_max_abs_logit_diff"] = isolation(model, impl, device)
            if impl == "flex_attention" and device.type == "cpu":
                result["throughput"] = "skipped: FlexAttention has no backward on CPU"
            else:
                rate = throughput(model, impl, packed, steps, device)
                result.update(packed_tokens_per_s=rate, packed_vs_unpacked_sdpa=rate / base)
        except Exception as exc:  # one backend failing must not hide the others' numbers
            result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        out[impl] = result
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
