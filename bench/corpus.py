"""The benchmarks' SFT corpus: every SFT record the converters make from tests/data (real samples of each
format), copied with new ids up to `records`."""

from __future__ import annotations

import glob
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sft_corpus(work: Path, records: int) -> Path:
    """WORK/corpus.jsonl with `records` unified SFT records."""
    from xlam_hpc.convert import ConvertConfig, convert_files

    inputs = [p for p in glob.glob(str(ROOT / "tests/data/**/*.json*"), recursive=True) if "README" not in p]
    converted = work / "converted.jsonl"
    convert_files(ConvertConfig(inputs=inputs, output=str(converted), progress=False), log=lambda m: None)
    rows = [json.loads(x) for x in converted.read_text().splitlines()]
    rows = [r for r in rows if "chosen" not in r]  # SFT records only
    corpus = work / "corpus.jsonl"
    with corpus.open("w") as f:
        for k in range(records):
            r = dict(rows[k % len(rows)])
            r["unique_trajectory_id"] = f"{r['unique_trajectory_id']}~{k}"
            f.write(json.dumps(r) + "\n")
    return corpus
