"""The synthetic tool-calling task: deterministic, valid, held out by phrasing and by value, every kind present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xlam_hpc.cli import main
from xlam_hpc.schema import Trajectory, decode_record
from xlam_hpc.synth.toolcall import ASKS, CONNECTORS, KINDS, POOLS, TAILS, TOOLS, make_split, write_toolcall_dataset

BY_NAME = {t.name: t for t in TOOLS}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, list[Trajectory]]:
    out = tmp_path_factory.mktemp("toolcall")
    write_toolcall_dataset(out, seed=3, train=600, heldout=200)
    return {split: _read(out / f"{split}.jsonl") for split in ("train", "heldout")}


def _read(path: Path) -> list[Trajectory]:
    return [decode_record(line) for line in path.read_bytes().splitlines()]


def _calls(rec: Trajectory) -> list[tuple[str, dict[str, Any], str]]:
    """(tool name, arguments, the user text that asked for it) of every call."""
    out, user = [], ""
    for turn in rec.conversation:
        if turn.role == "user":
            user = turn.content
        out += [(c.name, c.arguments, user) for c in turn.tool_calls]
    return out


def _free_values(rec: Trajectory) -> set[tuple[str, Any]]:
    return {
        (p.type, args[p.name])
        for name, args, _ in _calls(rec)
        for p in BY_NAME[name].params
        if p.type in ("string", "integer", "number")
    }


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_toolcall_dataset(a, seed=7, train=50, heldout=20)
    write_toolcall_dataset(b, seed=7, train=50, heldout=20)
    write_toolcall_dataset(c, seed=8, train=50, heldout=20)
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()


def test_every_record_validates_and_is_well_formed(dataset):
    for split, records in dataset.items():
        assert len({r.unique_trajectory_id for r in records}) == len(records)
        for rec in records:
            assert rec.split == split and rec.meta["kind"] in KINDS
            offered = {t.name for t in rec.tools}
            for name, args, user in _calls(rec):
                assert name in offered
                tool = BY_NAME[name]
                assert set(args) == {p.name for p in tool.params}
                for p in tool.params:
                    v = args[p.name]
                    if p.type == "enum":
                        assert v in p.enum and v in user
                    elif p.type == "boolean":
                        assert isinstance(v, bool)
                    else:  # free values are copied from the request text
                        expected = {"string": str, "integer": int, "number": float}[p.type]
                        assert type(v) is expected, (rec.unique_trajectory_id, p.name, v)
                        assert (json.dumps(v) if p.type == "number" else str(v)) in user
            assert rec.conversation[-1].role == "assistant" and not rec.conversation[-1].tool_calls


def test_every_kind_present_in_both_splits(dataset):
    for records in dataset.values():
        seen = {r.meta["kind"] for r in records}
        assert seen == set(KINDS)
        for rec in records:
            calls_per_turn = [len(t.tool_calls) for t in rec.conversation if t.role == "assistant"]
            users = sum(t.role == "user" for t in rec.conversation)
            kind = rec.meta["kind"]
            if kind == "no_call":
                assert calls_per_turn == [0] and users == 1
            elif kind == "single":
                assert calls_per_turn == [1, 0] and users == 1
            elif kind == "parallel":
                assert calls_per_turn == [2, 0] and users == 1
                assert len({(n, json.dumps(a, sort_keys=True)) for n, a, _ in _calls(rec)}) == 2
            else:
                assert calls_per_turn == [1, 0, 1, 0] and users == 2
                assert len({n for n, _, _ in _calls(rec)}) == 2


def test_heldout_shares_no_template_and_no_free_value_with_train(dataset):
    templates = {s: {t for r in recs for t in r.meta["templates"]} for s, recs in dataset.items()}
    assert templates["train"].isdisjoint(templates["heldout"])
    values = {s: set().union(*(_free_values(r) for r in recs)) for s, recs in dataset.items()}
    assert values["train"].isdisjoint(values["heldout"])
    for kind in ("string", "integer", "number"):  # each side has its own values of every type
        assert {v for t, v in values["heldout"] if t == kind}
    # the user texts themselves: no held-out request is a training request
    texts = {s: {t.content for r in recs for t in r.conversation if t.role == "user"} for s, recs in dataset.items()}
    assert texts["train"].isdisjoint(texts["heldout"])


def test_split_covers_every_template_group_and_integer_range():
    train, heldout = make_split(0)
    for group, indexes in train.templates.items():
        assert indexes and heldout.templates[group]
        assert set(indexes).isdisjoint(heldout.templates[group])
    for tool in TOOLS:
        for p in tool.params:
            if p.type == "integer":
                assert train.ints(p.pool) and heldout.ints(p.pool)
                assert set(train.ints(p.pool)).isdisjoint(heldout.ints(p.pool))


def test_cli_writes_both_files(tmp_path, capsys):
    assert main(["synth", "toolcall", "-o", str(tmp_path), "--seed", "1", "--train", "12", "--heldout", "5"]) == 0
    assert len((tmp_path / "train.jsonl").read_bytes().splitlines()) == 12
    assert len((tmp_path / "heldout.jsonl").read_bytes().splitlines()) == 5
    out = capsys.readouterr().out
    assert "train.jsonl" in out and "heldout.jsonl" in out


def test_cli_refuses_an_empty_split(tmp_path, capsys):
    assert main(["synth", "toolcall", "-o", str(tmp_path), "--heldout", "0"]) != 0
    assert "--heldout" in capsys.readouterr().err


def test_string_values_are_written_with_the_tokens_the_call_writes(dataset):
    """A free string value's tokens in the request (quoted) are the tokens of that value in the call's JSON, so a
    correct call copies tokens; unquoted, mistral-v3 splits the word after a space differently."""
    from xlam_hpc.collate.tokenizer import load_tokenizer

    tok = load_tokenizer("mistral-v3")

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    checked = 0
    for rec in dataset["heldout"][:60]:
        for name, args, user in _calls(rec):
            for p in BY_NAME[name].params:
                if p.type != "string":
                    continue
                value = args[p.name]
                in_call = ids(json.dumps({p.name: value}))
                quoted = ids(f"'{value}'")
                assert f"'{value}'" in user
                assert quoted[1:-1] == in_call[-(len(quoted) - 1) : -1], (value, quoted, in_call)  # between the quotes
                checked += 1
    assert checked >= 40
    assert ids(" Krakow") != ids('"Krakow"')[1:-1]  # why the quotes: a value after a space is other tokens


PURPOSE = {
    "get_weather": "weather",
    "convert_currency": "{from_currency}",
    "book_table": "table",
    "send_message": "message",
    "search_flights": "flight",
    "add_todo": "to-do",
    "get_stock_price": "stock",
    "set_timer": "timer",
    "calculate_tip": "tip",
}


def test_every_phrasing_names_its_tool_and_the_shared_words_name_none():
    """Held-out phrasings are new sentences; what carries over is the word naming the tool's purpose (and, for
    currency conversion, the currency codes), while the ask and tail around it are shared by every tool."""
    assert set(PURPOSE) == set(BY_NAME)
    for name, word in PURPOSE.items():
        for template in BY_NAME[name].templates:
            assert word in template, (name, template)
    for shared in ASKS + TAILS + tuple(c.format(a="", b="") for c in CONNECTORS):
        assert not any(w in shared.lower() for w in PURPOSE.values() if not w.startswith("{")), shared


def test_names_are_made_up_and_too_many_to_memorize():
    for pool in ("city", "person", "restaurant", "ticker"):
        assert len(POOLS[pool]) >= 1000 and len(set(POOLS[pool])) == len(POOLS[pool]), pool
        assert not any("'" in v for v in POOLS[pool])
