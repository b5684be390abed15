"""`xlam-hpc report` of a real run: a tiny model trained in one process with a held-out validation split,
stopped by SIGUSR1 (time limit), classified by the requeue decision, resumed to the end. The page must state
what history.jsonl and metrics.json say, digit for digit, and every figure must be a real, drawn PNG.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import write_recipe
from xlam_hpc import cli
from xlam_hpc.evaluate import EvalConfig, run_eval
from xlam_hpc.launch.requeue import decide
from xlam_hpc.shard.manifest import load_manifest
from xlam_hpc.testing.runs import wait_for_step

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STEPS = 5


def _env() -> dict[str, str]:
    import socket

    with socket.socket() as s:  # our own rendezvous port: other runs on this machine may hold the default one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"} | {
        "MASTER_PORT": str(port)
    }


def _history(out: Path, kind: str = "train") -> dict[int, dict]:
    """step → the last line of `kind` written for it (the resumed process redoes the steps after its checkpoint)."""
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == kind}


def _fmt(value: float | int | None) -> str:
    return "none" if value is None else str(value) if isinstance(value, int) else f"{value:.4f}"


def _assert_png_drawn(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    assert pixels.var() > 0 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2, path


def test_report_of_a_real_stopped_and_resumed_run(train_data, tmp_path, capsys):
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        train_data["sft"],
        data={"global_batch_size": 2, "eval": {"fraction": 0.3, "seed": 5, "max_samples": 4}},
        collate={"seq_length": 512},
        train={"max_steps": STEPS, "log_interval": 1, "eval_interval": 2},
    )
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "xlam_hpc", "train", str(recipe), f"output_dir={out}"]
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
        wait_for_step(out, 2, launcher=proc)
        proc.send_signal(signal.SIGUSR1)
        code = proc.wait(timeout=300)
        decision = decide(out, code, max_timeouts=3, max_preemptions=3, max_failures=1)  # as a launcher does
        assert (decision.action, decision.reason) == ("requeue", "timeout"), (tmp_path / "log").read_text()[-3000:]
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), timeout=300, check=False)
    assert rc.returncode == 0, (tmp_path / "log").read_text()[-3000:]

    # the model before and after training, on a few of the training records (a report check, not a benchmark)
    for name, untrained in (("before", True), ("after", False)):
        cfg = EvalConfig(model=str(out), untrained=untrained, data=[str(train_data["sft"])], limit=3)
        cfg.output, cfg.max_new_tokens, cfg.progress = str(out / "eval" / f"{name}.json"), 8, False
        run_eval(cfg, log=lambda m: None)

    assert cli.main(["report", str(out)]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page == out / "report" / "report.html"
    for name in ("loss.png", "tokens_per_s.png", "mixture.png", "validation_by_source.png"):
        _assert_png_drawn(page.parent / name)
        assert f'<img src="{name}"' in page.read_text()
    text = page.read_text()
    cells = dict(re.findall(r'data-key="(\w+)">([^<]*)</td>', text))

    history, metrics = _history(out), json.loads((out / "metrics.json").read_text())
    stop = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines() if '"stop"' in x]
    assert len(stop) == 1 and stop[0]["signal"] == "SIGUSR1"
    assert sorted(history) == list(range(1, STEPS + 1))
    assert cells["state"] == "finished"
    assert cells["steps"] == str(metrics["step"]) == str(STEPS)
    assert cells["final_loss"] == f"{metrics['final_loss']:.4f}" == f"{history[STEPS]['loss']:.4f}"
    rates = [history[s]["tokens_per_s"] for s in sorted(history)]
    assert cells["tokens_per_s_mean"] == f"{sum(rates) / len(rates):.1f}"  # all steps, both processes
    assert cells["tokens"] == str(sum(r["tokens"] for r in history.values()))
    assert (cells["time_limits"], cells["preemptions"], cells["restarts"]) == ("1", "0", "1")
    assert (cells["ledger_timeouts"], cells["ledger_preemptions"], cells["ledger_failures"]) == ("1", "0", "0")
    evals = _history(out, "eval")
    assert max(evals) == STEPS and STEPS - 1 in evals  # every eval_interval steps and at the last one
    assert cells["eval_loss"] == f"{metrics['eval_loss']:.4f}" == f"{evals[STEPS]['loss']:.4f}"
    for source, v in evals[STEPS]["by_source"].items():
        assert f'<tr><td>{source}</td><td class="num">{STEPS}</td><td class="num">{v["loss"]:.4f}</td></tr>' in text
    assert f"<li>time limit (SIGUSR1) at step {stop[0]['step']}</li>" in text
    assert f"started again from step {stop[0]['step']}" in text

    # mixture: requested = proportional to the manifest's source sizes (data.weights is empty), realized =
    # the last train line's samples_by_source
    sizes = {k: v["num_samples"] for k, v in load_manifest(train_data["sft"]).sources.items()}
    counts = history[STEPS]["samples_by_source"]
    assert sum(counts.values()) == 2 * STEPS and counts == metrics["samples_by_source"]
    for source, size in sizes.items():
        requested = size / sum(sizes.values())
        realized = counts.get(source, 0) / (2 * STEPS)
        row = f'<tr><td>{source}</td><td class="num">{requested:.3f}</td><td class="num">{realized:.3f}</td></tr>'
        assert row in text
    # eval results: one column per file (after, before: file-name order), every metric as results.json has it
    section = text[text.index("Evaluation results") :]
    results = [json.loads((out / "eval" / f"{n}.json").read_text()) for n in ("after", "before")]
    assert f"after.json ({results[0]['model']})" in section and f"before.json ({results[1]['model']})" in section
    assert "items.jsonl" not in section
    for metric in ("n", "parse_rate", "tool_name_accuracy", "whole_call_exact_match", "ast_accuracy"):
        row = re.search(f"<tr><td>{metric}</td>(.*?)</tr>", section).group(1)
        values = [r["metrics"]["overall"][metric] for r in results]
        assert re.findall(r">([^<]*)</td>", row) == [_fmt(v) for v in values], metric
    for category, m in results[0]["metrics"]["by_category"].items():
        row = re.search(f"<tr><td>{re.escape(category)}</td><td>n</td>(.*?)</tr>", section).group(1)
        assert re.findall(r">([^<]*)</td>", row)[0] == str(m["n"])
