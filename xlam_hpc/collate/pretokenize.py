"""Pre-tokenized shards: store each record's encoded samples so training does not tokenize.

Three extra members per sample, keyed by one render fingerprint in the manifest:
`tok.ids` (int32 token ids of all samples of the record, concatenated), `tok.mask` (uint8 trained-token
flags) and `tok.len` (int32 [m, 2]: length and tag of each sample — the assistant turn for
prompt_answer, 0/1 for DPO chosen/rejected, -1 otherwise). The loader uses them only when its own
fingerprint (tokenizer + template + collate options + task) is equal; otherwise it tokenizes on the fly.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from xlam_hpc.collate.config import CollateConfig
from xlam_hpc.collate.encode import PairSample, Sample, SampleEncoder
from xlam_hpc.collate.tokenizer import load_tokenizer, tokenizer_fingerprint
from xlam_hpc.config import config_to_dict, fingerprint
from xlam_hpc.schema import Preference, Trajectory
from xlam_hpc.shard import ShardConfig, ShardSummary, write_shards

__all__ = ["TOKEN_MEMBERS", "decode_token_members", "default_collate", "render_fingerprint", "write_tokenized_shards"]

TOKEN_MEMBERS = ["tok.ids", "tok.mask", "tok.len"]


def render_fingerprint(tokenizer: Any, encoder: SampleEncoder) -> str:
    """Everything that changes the encoded samples of a record (its kind decides SFT vs DPO encoding)."""
    cfg: CollateConfig = encoder.cfg
    return fingerprint(
        {
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "template": getattr(encoder.renderer, "template", ""),
            "seq_length": cfg.seq_length,
            "mode": cfg.mode,
            "loss_on": cfg.loss_on,
            "overflow": cfg.overflow,
        }
    )


def _encode_members(samples: list[tuple[Sample, int]]) -> dict[str, bytes]:
    ids = np.concatenate([s.input_ids for s, _ in samples]) if samples else np.zeros(0, np.int32)
    mask = np.concatenate([s.train_mask for s, _ in samples]) if samples else np.zeros(0, bool)
    lens = np.asarray([[len(s), tag] for s, tag in samples], dtype=np.int32).reshape(-1, 2)
    return {
        "tok.ids": ids.astype("<i4").tobytes(),
        "tok.mask": mask.astype(np.uint8).tobytes(),
        "tok.len": lens.astype("<i4").tobytes(),
    }


def decode_token_members(
    sample_id: str, ids: bytes, mask: bytes, lens: bytes, task: str
) -> list[Sample] | list[PairSample]:
    """Inverse of the writer: the stored samples of one record (pairs for DPO)."""
    all_ids = np.frombuffer(ids, dtype="<i4")
    all_mask = np.frombuffer(mask, dtype=np.uint8).astype(bool)
    table = np.frombuffer(lens, dtype="<i4").reshape(-1, 2)
    out: list[Sample] = []
    at = 0
    for length, tag in table:
        sid = f"{sample_id}#{tag}" if task == "sft" and tag >= 0 else sample_id
        out.append(Sample(sid, all_ids[at : at + length], all_mask[at : at + length]))
        at += int(length)
    if task == "dpo":
        return [PairSample(sample_id, out[0], out[1])] if len(out) == 2 else []
    return out


def default_collate(tokenizer: Any, seq_length: int = 4096) -> CollateConfig:
    """`shard --tokenizer` without collate options: the tokenizer's own chat template when it has one (a model
    folder's chat_template.jinja / tokenizer_config.json), else the built-in Mistral-style template."""
    return CollateConfig(seq_length=seq_length, chat_template="tokenizer" if tokenizer.chat_template else "builtin")


def write_tokenized_shards(
    cfg: ShardConfig,
    *,
    tokenizer: str,
    seq_length: int = 4096,
    collate: CollateConfig | None = None,
    loaded: Any = None,
) -> ShardSummary:
    """`xlam-hpc shard --tokenizer`: shards with JSON plus the encoded samples of every record.

    The manifest's tokenizer info records the render options (all of `collate`), the fingerprint the loader
    compares, and what encoding counted: `encode_stats` (samples, tokens, truncations, `rejected_<reason>`...)
    and `reject_examples` (the first rejected samples' ids with their reasons). A record the chat template
    rejects keeps its JSON and stores no samples, as the loader would train none for it. `loaded`: the tokenizer
    `tokenizer` names, when the caller has loaded it already."""
    tok = loaded if loaded is not None else load_tokenizer(tokenizer)
    ccfg = collate or default_collate(tok, seq_length)
    encoder = SampleEncoder(tok, ccfg)
    counts: Counter[str] = Counter()
    info: dict[str, Any] = {
        "fingerprint": render_fingerprint(tok, encoder),
        "tokenizer": tokenizer,
        "chat_template": ccfg.chat_template,
        "seq_length": ccfg.seq_length,
        "mode": ccfg.mode,
        "loss_on": ccfg.loss_on,
        "overflow": ccfg.overflow,
        "collate": config_to_dict(ccfg),
        "encode_stats": {},
        "reject_examples": [],
    }

    def extra(rec: Trajectory | Preference) -> dict[str, bytes]:
        rid = rec.unique_trajectory_id
        if isinstance(rec, Preference):
            pairs = encoder.encode_dpo([(rid, rec)])
            samples = [(p.chosen, 0) for p in pairs] + [(p.rejected, 1) for p in pairs]
        else:
            # prompt_answer / per-turn samples are '<id>#<turn>': the tag is read after the id, whatever it holds
            encoded = encoder.encode_sft([(rid, rec)])
            samples = [(s, int(s.sample_id[len(rid) + 1 :]) if s.sample_id != rid else -1) for s in encoded]
        counts["records"] += 1
        counts["samples"] += len(samples)
        counts["tokens"] += sum(len(s) for s, _ in samples)
        counts["trained_tokens"] += sum(int(s.train_mask.sum()) for s, _ in samples)
        # write_shards builds the manifest from `info` after the last record: keep it current
        info["encode_stats"] = dict(sorted((counts + encoder.stats).items()))
        info["reject_examples"] = [{"id": sid, "reason": why} for sid, why in encoder.reject_examples]
        return _encode_members(samples)

    summary = write_shards(cfg, extra=extra, extra_members=TOKEN_MEMBERS, tokenizer_info=info)
    summary.encode_stats = dict(info["encode_stats"])  # type: ignore[attr-defined]
    summary.reject_examples = list(info["reject_examples"])  # type: ignore[attr-defined]
    return summary
