"""The loader contract, proven by comparing sample-id traces (ranks simulated in-process)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.conftest import SOURCES
from xlam_hpc.collate import CollateConfig
from xlam_hpc.errors import ConfigError, ResumeError, ShardError
from xlam_hpc.stream import StreamConfig, build_loader

WEIGHTS = {"alpha": 0.5, "beta": 0.3, "gamma": 0.2}


def _cfg(shard_dir, **kw):
    base = {"shards": [str(shard_dir / n) for n in SOURCES], "weights": WEIGHTS, "global_batch_size": 10}
    return StreamConfig(**{**base, **kw})


def _collate(**kw):
    return CollateConfig(**{"seq_length": 1024, "chat_template": "builtin", **kw})


def _take(loader, n):
    return [next(loader)["drawn_ids"] for _ in range(n)]


def _loader(shard_dir, tokenizer, rank=0, world=1, seed=11, **kw):
    return build_loader(_cfg(shard_dir, **kw), _collate(), tokenizer, rank=rank, world_size=world, seed=seed)


def test_exact_resume_at_every_step_and_across_epochs(shard_dir, tokenizer):
    full = _take(_loader(shard_dir, tokenizer), 14)  # 140 samples > one epoch of 51
    for k in (0, 1, 5, 6, 13):
        first = _loader(shard_dir, tokenizer)
        _take(first, k)
        state = json.loads(json.dumps(first.state_dict()))  # survives a JSON round trip
        second = _loader(shard_dir, tokenizer)
        second.load_state_dict(state)
        assert _take(second, 14 - k) == full[k:]
    assert len(json.dumps(state)) < 4096


def test_several_resumes_in_a_row(shard_dir, tokenizer):
    full = _take(_loader(shard_dir, tokenizer), 12)
    got, state = [], None
    for chunk in (3, 1, 4, 4):
        loader = _loader(shard_dir, tokenizer)
        if state:
            loader.load_state_dict(state)
        got += _take(loader, chunk)
        state = loader.state_dict()
    assert got == full and state["epoch"] == 120 // 51


def test_resume_far_away_replays_nothing(shard_dir, tokenizer):
    loader = _loader(shard_dir, tokenizer)
    state = loader.state_dict() | {"samples_consumed": 1_000_000, "steps_consumed": 100_000}
    reads = Counter()
    loader.load_state_dict(state)
    for reader in set(loader.catalog.readers.values()):
        original = reader.record

        def counted(source, index, _orig=original):
            reads[source] += 1
            return _orig(source, index)

        reader.record = counted
    batch = next(loader)
    assert sum(reads.values()) == 10  # exactly the batch, no skipped sample was read
    expected = [f"{s}:{i}" for s, i in (loader.order.sample_at(p) for p in range(1_000_000, 1_000_010))]
    assert batch["drawn_ids"] == expected


@pytest.mark.parametrize("balance", ["samples", "tokens"])
@pytest.mark.parametrize("new_world", [1, 5])
def test_elastic_resume_continues_the_global_stream(shard_dir, tokenizer, new_world, balance):
    def global_stream(world, steps, state=None):
        loaders = [_loader(shard_dir, tokenizer, rank=r, world=world, balance=balance) for r in range(world)]
        for ld in loaders:
            if state:
                ld.load_state_dict(state)
        out = []
        for _ in range(steps):
            step = [i for ld in loaders for i in next(ld)["drawn_ids"]]
            # samples: concatenating ranks in order gives the global order; tokens: the same samples per step
            out.append(step if balance == "samples" else sorted(step))
        return out, loaders[0].state_dict()

    reference, _ = global_stream(1, 8)
    head, state = global_stream(2, 3)
    tail, _ = global_stream(new_world, 5, state)
    assert head + tail == reference  # nothing duplicated, nothing dropped


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_count_does_not_change_the_stream(shard_dir, tokenizer, workers):
    ref = _take(_loader(shard_dir, tokenizer, rank=1, world=2), 7)
    with_workers = _loader(shard_dir, tokenizer, rank=1, world=2, num_workers=workers)
    assert _take(with_workers, 7) == ref
    with_workers.close()


def test_equal_batches_per_rank_and_ranks_partition_each_step(shard_dir, tokenizer):
    world, steps = 5, 11  # 110 samples: crosses two epochs of 51 with uneven shards
    loaders = [_loader(shard_dir, tokenizer, rank=r, world=world, balance="samples") for r in range(world)]
    per_rank = [_take(ld, steps) for ld in loaders]
    assert {len(batches) for batches in per_rank} == {steps}
    assert {len(b) for batches in per_rank for b in batches} == {2}
    reference = _take(_loader(shard_dir, tokenizer), steps)
    for step in range(steps):  # the ranks' batches of a step are exactly that step's global batch, in rank order
        assert [i for r in range(world) for i in per_rank[r][step]] == reference[step]


def test_mixture_is_exact_per_block(shard_dir, tokenizer):
    stream = [i for b in _take(_loader(shard_dir, tokenizer), 30) for i in b]
    for k in range(30):
        counts = Counter(i.split(":")[0] for i in stream[k * 10 : (k + 1) * 10])
        for name, w in WEIGHTS.items():
            assert abs(counts[name] - w * 10) <= 1
    # gamma has 3 samples and weight 0.2: it repeats (per-source epochs), each epoch a permutation
    gamma = [i for i in stream if i.startswith("gamma")]
    assert len(gamma) == 60
    for e in range(20):
        assert sorted(gamma[e * 3 : e * 3 + 3]) == ["gamma:0", "gamma:1", "gamma:2"]


def test_seed_changes_order_and_stream_is_reproducible(shard_dir, tokenizer):
    a = _take(_loader(shard_dir, tokenizer, seed=1), 5)
    assert a == _take(_loader(shard_dir, tokenizer, seed=1), 5)
    assert a != _take(_loader(shard_dir, tokenizer, seed=2), 5)


def test_state_from_another_config_is_refused(shard_dir, tokenizer):
    state = _loader(shard_dir, tokenizer, seed=1).state_dict()
    for other in (
        _loader(shard_dir, tokenizer, seed=2),
        build_loader(
            _cfg(shard_dir, weights={"alpha": 1, "beta": 1}, weights_default=0), _collate(), tokenizer, seed=1
        ),
    ):
        with pytest.raises(ResumeError, match="another data stream"):
            other.load_state_dict(state)
        other.load_state_dict(state, allow_fingerprint_mismatch=True)
        assert other.position == 0


def test_bad_inputs_fail_clearly(shard_dir, tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="unknown source 'delta'"):
        build_loader(_cfg(shard_dir, weights={"delta": 1}), _collate(), tokenizer)
    with pytest.raises(ConfigError, match="not divisible by the world size 3"):
        build_loader(_cfg(shard_dir), _collate(), tokenizer, world_size=3)
    with pytest.raises(ConfigError, match=r"seq_length 40 is smaller than the system\+tools prefix of source"):
        build_loader(_cfg(shard_dir), _collate(seq_length=40), tokenizer)
    with pytest.raises(ConfigError, match="no chat template and no fallback"):
        build_loader(_cfg(shard_dir), _collate(chat_template="tokenizer"), tokenizer)
    with pytest.raises(ConfigError, match="task 'dpo' needs preference records"):
        build_loader(_cfg(shard_dir), _collate(), tokenizer, task="dpo")


def test_missing_shard_is_named_or_skipped(shard_dir, tokenizer, tmp_path):
    import shutil

    copy = tmp_path / "alpha"
    shutil.copytree(shard_dir / "alpha", copy)
    (copy / "alpha-000002.tar").unlink()
    cfg = _cfg(shard_dir, shards=[str(copy), str(shard_dir / "beta")], weights={})
    with pytest.raises(ShardError, match=r"alpha-000002.tar: missing"):
        build_loader(cfg, _collate(), tokenizer)
    cfg.skip_bad_shards = True
    loader = build_loader(cfg, _collate(), tokenizer)
    assert loader.catalog.sizes == {"alpha": 32, "beta": 11} and len(loader.catalog.skipped) == 1
    # skipping changes the stream, so a state from the complete data is refused
    with pytest.raises(ResumeError):
        loader.load_state_dict(
            build_loader(
                _cfg(
                    shard_dir,
                    shards=cfg.shards[1:] and [str(shard_dir / "alpha"), str(shard_dir / "beta")],
                    weights={},
                ),
                _collate(),
                tokenizer,
            ).state_dict()
        )


@pytest.mark.timeout(120)
def test_workers_survive_tokenizers_parallelism_in_the_parent(shard_dir, tokenizer, monkeypatch):
    # The parent's Rust thread pool is live and TOKENIZERS_PARALLELISM=true: a naive fork would hang.
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    tokenizer.backend_tokenizer.encode_batch(["warm up the thread pool"] * 256)
    loader = _loader(shard_dir, tokenizer, num_workers=2)
    assert _take(loader, 3) == _take(_loader(shard_dir, tokenizer), 3)
    loader.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_torchdata_own_state_dict_round_trip(shard_dir, tokenizer, workers):
    # Our dataset speaks torchdata's Stateful protocol: the raw StatefulDataLoader state also resumes exactly
    # (same world size and worker count; our loader's own small state is the elastic one).
    loader = _loader(shard_dir, tokenizer, num_workers=workers)
    dl = loader.dataloader(0)
    it = iter(dl)
    head = [next(it)["drawn_ids"] for _ in range(3)]
    state = dl.state_dict()
    tail = [next(it)["drawn_ids"] for _ in range(3)]
    fresh = loader.dataloader(0)
    fresh.load_state_dict(state)
    it2 = iter(fresh)
    assert [next(it2)["drawn_ids"] for _ in range(3)] == tail
    assert head + tail == _take(_loader(shard_dir, tokenizer), 6)


def test_a_record_drawn_twice_in_one_step_gives_its_samples_twice_not_four_times(shard_dir, tokenizer):
    # gamma has 3 records at weight 0.9: a 20-sample step draws each several times
    loader = build_loader(
        _cfg(shard_dir, weights={"alpha": 0.05, "beta": 0.05, "gamma": 0.9}, global_batch_size=20),
        _collate(packing=False),
        tokenizer,
        seed=3,
    )
    batch = next(loader)
    drawn = Counter(batch["drawn_ids"])
    assert max(drawn.values()) > 1
    assert Counter(batch["sample_ids"]) == drawn  # trajectory mode: one sample per draw
