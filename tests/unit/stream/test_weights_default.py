"""`data.weights` naming only some sources: an error listing the others, unless `data.weights_default` says
what they get (0: left out on purpose)."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import SOURCES
from xlam_hpc.cli import main
from xlam_hpc.collate import CollateConfig
from xlam_hpc.errors import ConfigError
from xlam_hpc.recipe import load_recipe
from xlam_hpc.stream import StreamConfig, build_loader, normalize_weights


def _cfg(shard_dir, **kw):
    return StreamConfig(shards=[str(shard_dir / n) for n in SOURCES], global_batch_size=10, **kw)


def _collate():
    return CollateConfig(seq_length=1024, chat_template="builtin")


def test_unlisted_sources_are_an_error_that_names_them():
    with pytest.raises(ConfigError) as err:
        normalize_weights({"a": 1}, {"a": 5, "b": 3, "c": 2})
    assert "unlisted: b, c" in str(err.value) and "data.weights_default: 0" in str(err.value)


def test_weights_default_zero_leaves_them_out_and_a_positive_one_weighs_them():
    sizes = {"a": 5, "b": 3, "c": 2}
    assert normalize_weights({"a": 1}, sizes, default=0) == {"a": 1.0}
    assert normalize_weights({"a": 2}, sizes, default=1) == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert normalize_weights({"a": 1, "b": 1}, {"a": 5, "b": 3, "empty": 0}) == {"a": 0.5, "b": 0.5}  # nothing lost
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="weights_default must be a finite number >= 0"):
            normalize_weights({"a": 1}, sizes, default=bad)


def test_the_loader_refuses_a_partial_mixture_and_takes_an_explicit_default(shard_dir, tokenizer):
    with pytest.raises(ConfigError, match="names 2 of the 3 sources; unlisted: gamma"):
        build_loader(_cfg(shard_dir, weights={"alpha": 1, "beta": 1}), _collate(), tokenizer)
    loader = build_loader(_cfg(shard_dir, weights={"alpha": 1, "beta": 1}, weights_default=0), _collate(), tokenizer)
    drawn = [sid for _ in range(6) for sid in next(loader)["drawn_ids"]]
    assert len(drawn) == 60 and {sid.split(":")[0] for sid in drawn} == {"alpha", "beta"}  # gamma left out
    loader.close()


def test_weights_default_in_a_recipe_and_through_the_cli(shard_dir, tmp_path, capsys):
    shards = [str(shard_dir / n) for n in SOURCES]
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"shards": shards, "weights": {"alpha": 1}, "global_batch_size": 2},
                "collate": {"seq_length": 1024, "chat_template": "builtin"},
                "model": {"name_or_path": "tiny-mistral"},
                "output_dir": str(tmp_path / "out"),
            }
        )
    )
    assert main(["stream", str(path), "--steps", "1", "--trace", str(tmp_path / "t.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "xlam-hpc stream: error: data.weights names 1 of the 3 sources; unlisted: beta, gamma" in err
    assert (
        main(["stream", str(path), "--steps", "1", "--trace", str(tmp_path / "t.jsonl"), "data.weights_default=0"]) == 0
    )
    assert load_recipe(path, ["data.weights_default=0"]).data.weights_default == 0
    # unset, the fingerprint is the one recipes had before the field existed; set, it is part of the identity
    assert load_recipe(path).fingerprint() != load_recipe(path, ["data.weights_default=0"]).fingerprint()
