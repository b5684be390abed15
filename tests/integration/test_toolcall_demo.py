"""`xlam-hpc demo --toolcall` learns: on held-out requests (phrasings and argument values never trained on), the
trained tiny model writes well-formed calls to the right tool where the untrained model writes none.

The real pipeline end to end (synth, shard, eval of the untrained recipe model, SFT on the local launcher with
DeepSpeed ZeRO-2 on CPU, eval of RUN/final, report), with under half the demo's steps. Copying argument values
that were never trained on is not learned within the demo's CPU budget yet (whole-call exact match stays ~0:
docs/benchmarks.md, toolcall-demo), and neither is telling a held-out chit-chat question from a request, so
the margin asserted is on tool choice, parse rate and answering (not calling again) after a tool result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xlam_hpc.demo import run_toolcall_demo, toolcall_recipe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 600
HELDOUT = 40


def test_shipped_recipe_is_the_demo_recipe():
    shipped = yaml.safe_load((Path(__file__).parents[2] / "configs/recipes/toolcall-demo.yaml").read_text())
    ours = toolcall_recipe(Path("runs/toolcall-demo"))
    ours["data"]["shards"] = shipped["data"]["shards"]  # the shipped recipe reads `xlam-hpc synth` output
    assert shipped == {**ours, "output_dir": "runs/toolcall-demo"}


def test_training_beats_the_untrained_model_on_held_out_calls(tmp_path):
    lines: list[str] = []
    r = run_toolcall_demo(tmp_path, steps=STEPS, heldout=HELDOUT, seed=0, log=lines.append)
    before, after = r["before"]["metrics"], r["after"]["metrics"]
    assert r["before"]["n"] == r["after"]["n"] > HELDOUT  # the same items, several per record
    b, a = before["overall"], after["overall"]
    assert b["whole_call_exact_match"] == 0.0 and b["tool_name_accuracy"] <= 0.05, b
    # what 600 steps of 8 records reliably learn on held-out phrasings: the call syntax, which tool a request
    # wants, and that the turn after a tool result is an answer, not another call
    assert a["tool_name_accuracy"] - b["tool_name_accuracy"] >= 0.3, (b, a)
    assert a["parse_rate"] >= 0.75, a
    items = [json.loads(line) for line in Path(r["after"]["items_file"]).read_text().splitlines()]
    after_results = [i for i in items if i["kind"] == "irrelevance" and "-no_call#" not in i["id"]]
    assert len(after_results) >= HELDOUT // 2
    assert sum(not i["calls"] for i in after_results) >= 0.9 * len(after_results), after_results
    assert after["by_category"]["simple"]["tool_name_accuracy"] > 0.3, after["by_category"]
    for key in ("eval_before", "eval_after", "report"):
        assert Path(r[key]).is_file(), key
    assert json.loads(Path(r["eval_after"]).read_text())["n"] == r["after"]["n"]
    table = "\n".join(lines)
    assert "whole-call exact match" in table and "before" in table and "after" in table
    assert r["report"] in table
