"""Every bundled sample dataset converts with a summary that balances: records in = converted + rejected +
filtered (below --min-score) + duplicates, in total and per file (issue 13 "Done when").

Each dataset folder is one `convert DIR` run (a directory input: its *.json/*.jsonl files, formats
auto-detected), as a user would convert a downloaded dataset. The folders are those of tests/data and, on
machines that have it, the full raw sample collection in ../shared/data (the source of tests/data).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xlam_hpc.convert import ConvertConfig, convert_files

ROOT = Path(__file__).resolve().parents[3]
NOT_DATASETS = {"model_families"}  # tokenizers and chat templates


def _datasets() -> list[Path]:
    found = []
    for base in (ROOT / "tests" / "data", ROOT.parent / "shared" / "data"):
        if base.is_dir():
            found += sorted(p for p in base.iterdir() if p.is_dir() and p.name not in NOT_DATASETS)
    return found


DATASETS = _datasets()


def test_the_bundled_datasets_are_all_found():
    names = {p.name for p in DATASETS if p.parent == ROOT / "tests" / "data"}
    assert {"toolbench", "toolalpaca", "api_bank", "react_prompts_hotpotqa_alfworld_webshop"} <= names
    assert len(names) >= 15


@pytest.mark.parametrize("folder", DATASETS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
@pytest.mark.parametrize("min_score", [None, 3.0])
def test_summary_balances(folder, min_score, tmp_path):
    cfg = ConvertConfig(
        inputs=[str(folder)], output=str(tmp_path / "out.jsonl"), min_score=min_score, dedup=True, progress=False
    )
    s = convert_files(cfg, log=lambda _: None)
    assert s.converted > 0 or set(s.rejected) == {"kto_unsupported"}, folder  # KTO data is refused with its reason
    assert s.read == s.converted + s.num_rejected + s.filtered_min_score + s.duplicates_removed, s.to_dict()
    assert s.balanced
    for name, f in s.files.items():
        assert f["read"] == f["converted"] + f["rejected"] + f["filtered_min_score"] + f["duplicates_removed"], name
    assert sum(f["rejected"] for f in s.files.values()) == s.num_rejected
    written = sum(len(Path(p).read_bytes().splitlines()) for p in s.outputs.values())
    assert written == s.converted
