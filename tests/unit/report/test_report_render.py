"""The rendered page and figures: real PNGs, numbers as the logs say, escaped user text, sweeps, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.unit.report.conftest import assert_png_drawn, history_rows, write_run
from xlam_hpc import cli
from xlam_hpc.errors import XlamError
from xlam_hpc.report import write_report


def summary_cells(text: str) -> dict[str, str]:
    return dict(re.findall(r'<td class="num" data-key="(\w+)">([^<]*)</td>', text))


def test_run_report_draws_every_figure_and_states_the_logs_numbers(run_dir):
    out = write_report(run_dir)
    assert out == run_dir / "report" / "report.html"
    pngs = sorted(p.name for p in out.parent.glob("*.png"))
    assert pngs == ["loss.png", "mixture.png", "tokens_per_s.png", "validation_by_source.png"]
    for name in pngs:
        assert_png_drawn(out.parent / name)
    text = out.read_text()
    for name in pngs:
        assert f'<img src="{name}"' in text  # relative: the folder can be copied or served as it is
    cells = summary_cells(text)
    assert cells["steps"] == "8" and cells["final_loss"] == "1.7000" and cells["eval_loss"] == "2.0500"
    assert cells["tokens_per_s_mean"] == "212.5"  # (100 + 200 + 4 * 200 + 2 * 300) / 8
    assert (cells["restarts"], cells["preemptions"], cells["time_limits"]) == ("2", "1", "1")
    assert (cells["ledger_timeouts"], cells["ledger_failures"], cells["wall_time_s"]) == ("1", "0", "320.0")
    assert "<li>preemption (SIGTERM) at step 4</li>" in text and "<li>time limit (SIGUSR1) at step 6</li>" in text


def test_eval_results_side_by_side(run_dir):
    text = write_report(run_dir).read_text()
    section = text[text.index("Evaluation results") :]
    assert "after.json (run/final)" in section and "before.json (tiny-mistral)" in section
    assert "items.jsonl" not in section  # per-item files are not results
    # one row per metric, one column per file (sorted by name: after, then before)
    row = re.search(r"<tr><td>tool_name_accuracy</td>(.*?)</tr>", section).group(1)
    assert re.findall(r">([^<]*)</td>", row) == ["0.7500", "0.5000"]
    assert "<h3>by_category</h3>" in section
    row = re.search(r"<tr><td>parallel</td><td>whole_call_exact_match</td>(.*?)</tr>", section).group(1)
    assert re.findall(r">([^<]*)</td>", row) == ["0.3750", "0.2500"]
    assert re.search(r"<tr><td>ast_accuracy</td><td class=\"num\">none</td>", section)


def test_text_from_the_run_is_escaped(tmp_path):
    evil = '<script>alert("x")</script>'
    out = write_run(tmp_path / "a&b <run>", rows=history_rows((evil, "beta")), weights={evil: 1, "beta": 1})
    text = write_report(out).read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text and "a&amp;b &lt;run&gt;" in text


def test_a_run_with_nothing_yet_renders_none_everywhere(tmp_path):
    out = write_run(tmp_path / "run", rows=[], finished=False, evals=False)
    report = write_report(out, tmp_path / "elsewhere" / "page.html")
    assert report == tmp_path / "elsewhere" / "page.html" and list(report.parent.glob("*.png")) == []
    text = report.read_text()
    cells = summary_cells(text)
    assert cells["steps"] == cells["final_loss"] == cells["eval_loss"] == cells["tokens_per_s_mean"] == "none"
    assert "Stops and restarts: none" in text and "loss vs step: none" in text
    assert '<td data-key="state">not finished</td>' in text


def test_figures_of_a_named_output_carry_its_stem(run_dir, tmp_path):
    report = write_report(run_dir, tmp_path / "r" / "weekly.html")
    assert sorted(p.name for p in report.parent.glob("*.png"))[0] == "weekly-loss.png"
    assert 'src="weekly-loss.png"' in report.read_text()


def test_a_path_that_is_neither_a_run_nor_a_sweep_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(XlamError, match=f"{tmp_path / 'empty'} is neither a run directory nor a sweep"):
        write_report(tmp_path / "empty")
    with pytest.raises(XlamError, match=f"{tmp_path / 'missing'} does not exist"):
        write_report(tmp_path / "missing")


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    tasks = []
    for i, lr in enumerate([1e-3, 2e-3, 4e-3]):
        out = sweep / f"task-{i:04d}"
        if i < 2:
            rows = history_rows()
            for r in rows:
                if r["kind"] == "train":
                    r["loss"] = r["loss"] - i
            write_run(out, rows=rows, weights={"alpha": 1}, evals=False, finished=i == 0)
        # task 2 never started; its output_dir was given relative to another working directory
        tasks.append({"index": i, "assignment": {"train.lr": lr}, "seed": i, "output_dir": f"elsewhere/task-{i:04d}"})
    (sweep / "sweep.json").write_text(json.dumps({"cluster": "local", "array_job_id": "1", "tasks": tasks}))
    return sweep


def test_sweep_report_compares_the_tasks(tmp_path):
    sweep = _sweep(tmp_path)
    report = write_report(sweep)
    assert report == sweep / "report" / "report.html"
    assert_png_drawn(report.parent / "sweep_loss.png")
    text = report.read_text()
    rows = re.findall(r"<tr>(<td class=\"num\" data-key=\"task\">.*?)</tr>", text)
    assert len(rows) == 2
    assert re.findall(r'data-key="final_loss">([^<]*)<', text) == ["1.7000", "0.7000"]
    assert re.findall(r'data-key="state">([^<]*)<', text) == ["finished", "not finished"]
    assert "<td>0.001</td>" in text and "<td>0.004</td>" in text and "not started" in text
    assert "holds no run yet" in text
    assert "href=" not in text  # no task report rendered yet


def test_sweep_tasks_flag_renders_and_links_each_task_report(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    assert cli.main(["report", str(sweep), "--tasks"]) == 0
    report = Path(capsys.readouterr().out.strip())
    assert report == sweep / "report" / "report.html"
    text = report.read_text()
    assert text.count('<a href="../task-0000/report/report.html">report</a>') == 1
    assert text.count('<a href="../task-0001/report/report.html">report</a>') == 1
    for i in (0, 1):
        assert_png_drawn(sweep / f"task-{i:04d}" / "report" / "loss.png")


def test_cli_report_prints_the_page_and_errors_in_one_line(run_dir, tmp_path, capsys):
    assert cli.main(["report", str(run_dir), "-o", str(tmp_path / "x.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x.html")
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xlam-hpc report: error: ") and str(tmp_path / "nope") in err
