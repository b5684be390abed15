"""Each rank draws its own dropout masks: the trainer seeds every rank's RNGs from (seed, rank).

Two ranks train on a one-record dataset, so both ranks see the same tokens with the same initial weights:
their step-1 losses can differ only through dropout. With dropout they must differ (identical RNG streams
would give bitwise equal losses, as they did before seed_rank was applied); without dropout they must be equal.
"""

from __future__ import annotations

import pytest

from tests.conftest import make_record, write_jsonl, write_recipe
from xlam_hpc.shard import ShardConfig, write_shards
from xlam_hpc.testing.runs import effective_trace, torchrun_train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def one_record(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    src = write_jsonl(root / "one.jsonl", [make_record(0, "solo", turns=3)])
    write_shards(ShardConfig(inputs=[str(src)], output_dir=str(root / "shards"), samples_per_shard=1, progress=False))
    return root / "shards"


def _step1_losses(one_record, tmp_path, dropout: float) -> list[float]:
    out = tmp_path / f"dropout-{dropout}"
    recipe = write_recipe(
        tmp_path / f"recipe-{dropout}.yaml",
        one_record,
        data={"shards": [str(one_record)], "global_batch_size": 2},
        model={"name_or_path": "tiny-mistral", "dropout": dropout},
        train={"max_steps": 1},
    )
    proc = torchrun_train(recipe, out, log=tmp_path / "run.log")
    assert proc.wait(timeout=500) == 0, (tmp_path / "run.log").read_text()[-3000:]
    trace = effective_trace(out)
    assert trace[0][1]["sample_ids"] == trace[1][1]["sample_ids"] == ["solo:0"]
    return [trace[rank][1]["loss"] for rank in (0, 1)]


def test_ranks_draw_different_dropout_masks(one_record, tmp_path):
    with_dropout = _step1_losses(one_record, tmp_path, 0.3)
    without = _step1_losses(one_record, tmp_path, 0.0)
    assert without[0] == without[1]  # same tokens, same weights: the only difference can be dropout
    assert with_dropout[0] != with_dropout[1]
