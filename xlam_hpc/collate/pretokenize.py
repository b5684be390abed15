"""Pre-tokenized shards: store each record's encoded samples so training does not tokenize.

Three extra members per sample, keyed by one render fingerprint in the manifest:
`tok.ids` (int32 token ids of all samples of the record, concatenated), `tok.mask` (uint8 trained-token
flags) and `tok.len` (int32 [m, 2]: length and tag of each sample — the assistant turn for
prompt_answer, 0/1 for DPO chosen/rejected, -1 otherwise). The loader uses them only when its own
fingerprint (tokenizer + template + collate options + task) is equal; otherwise it tokenizes on the fly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xlam_hpc.collate.config import CollateConfig
from xlam_hpc.collate.encode import PairSample, Sample, SampleEncoder
from xlam_hpc.collate.tokenizer import load_tokenizer, tokenizer_fingerprint
from xlam_hpc.config import fingerprint
from xlam_hpc.schema import Preference, Trajectory
from xlam_hpc.shard import ShardConfig, ShardSummary, write_shards

__all__ = ["TOKEN_MEMBERS", "decode_token_members", "render_fingerprint", "write_tokenized_shards"]

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


def write_tokenized_shards(
    cfg: ShardConfig, *, tokenizer: str, seq_length: int = 4096, collate: CollateConfig | None = None
) -> ShardSummary:
    """`xlam-hpc shard --tokenizer`: shards with JSON plus the encoded samples of every record."""
    tok = load_tokenizer(tokenizer)
    ccfg = collate or CollateConfig(
        seq_length=seq_length, chat_template="builtin" if not tok.chat_template else "tokenizer"
    )
    encoder = SampleEncoder(tok, ccfg)

    def extra(rec: Trajectory | Preference) -> dict[str, bytes]:
        if isinstance(rec, Preference):
            pairs = encoder.encode_dpo([("r", rec)])
            samples = [(p.chosen, 0) for p in pairs] + [(p.rejected, 1) for p in pairs]
        else:
            # a fixed placeholder id, so the turn tag can be read back whatever the record id contains
            encoded = encoder.encode_sft([("r", rec)])
            samples = [(s, int(s.sample_id[2:]) if s.sample_id != "r" else -1) for s in encoded]
        return _encode_members(samples)

    info = {
        "fingerprint": render_fingerprint(tok, encoder),
        "tokenizer": tokenizer,
        "chat_template": ccfg.chat_template,
        "seq_length": ccfg.seq_length,
        "mode": ccfg.mode,
        "loss_on": ccfg.loss_on,
        "overflow": ccfg.overflow,
    }
    summary = write_shards(cfg, extra=extra, extra_members=TOKEN_MEMBERS, tokenizer_info=info)
    summary.encode_stats = dict(encoder.stats)  # type: ignore[attr-defined]
    return summary
