"""`xlam-hpc eval` end to end with real tiny models: the untrained recipe model through the CLI, a run directory
(its final/ and its --untrained rebuild agree), a killed eval resumed, --limit, and a perfect reference whose
outputs are the gold calls as each family's chat template writes them (100% whole-call exact)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA, write_recipe
from tests.families import model_folder
from xlam_hpc.cli import main
from xlam_hpc.collate.messages import to_hf_messages
from xlam_hpc.config import save_yaml
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.errors import ConfigError, DataError
from xlam_hpc.evaluate import EvalConfig, EvalItem, items_from_unified, run_eval
from xlam_hpc.evaluate.generate import render_prompt, resolve_target
from xlam_hpc.evaluate.items import item_turns
from xlam_hpc.recipe import load_recipe
from xlam_hpc.schema import ToolCall, Turn

TOKENS = 12  # new tokens per item: enough to see output, cheap on a busy CPU


def _quiet(msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-data")
    out = {}
    for name, src in {
        "xlam": DATA / "xlam_fc" / "xlam_fc_sample.jsonl",
        "glaive": DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json",
    }.items():
        out[name] = root / f"{name}.jsonl"
        convert_files(ConvertConfig(inputs=[str(src)], output=str(out[name]), progress=False), log=_quiet)
    return out


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-recipe")
    return write_recipe(root / "recipe.yaml", root / "shards")


@pytest.fixture(scope="module")
def run_dir(recipe_path, tmp_path_factory) -> Path:
    """A run directory as the trainer leaves it (config.yaml, final/ with the training chat template), holding
    the recipe's initial model: what `export_final` writes, without spending a training run on it."""
    import torch

    from xlam_hpc.train.export import save_tokenizer, training_template, write_config
    from xlam_hpc.train.model import build_model

    recipe = load_recipe(recipe_path)
    run = tmp_path_factory.mktemp("eval-run")
    save_yaml({**recipe.to_dict(), "fingerprint": recipe.fingerprint()}, run / "config.yaml")
    tok = recipe.load_tokenizer()
    model = build_model(recipe.model, tok, seq_length=recipe.collate.seq_length, seed=recipe.seed)
    final = run / "final"
    model.save_pretrained(final)
    write_config(model, final, torch.float32)
    save_tokenizer(final, tok, training_template(recipe.collate, tok), recipe.collate)
    return run


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_untrained_recipe_model_through_the_cli(recipe_path, data, tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["eval", str(recipe_path), "--untrained", "--data", str(data["xlam"]), str(data["glaive"])]
    argv += ["--limit", "3", "--max-new-tokens", str(TOKENS), "--batch-size", "4", "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    expected = items_from_unified([str(data["xlam"]), str(data["glaive"])], limit=3)
    assert results["n"] == len(expected) == 6
    assert results["style"] == "mistral" and results["max_new_tokens"] == TOKENS and results["untrained"]
    overall = results["metrics"]["overall"]
    assert overall["n"] == 6
    for key in ("parse_rate", "tool_name_accuracy", "argument_exact_match", "whole_call_exact_match"):
        assert 0.0 <= overall[key] <= 1.0
    assert overall["ast_accuracy"] is None  # no benchmark items
    assert set(results["metrics"]["by_source"]) == {"xlam-fc-60k", "sharegpt"}
    rows = _lines(Path(results["items_file"]))
    assert [r["id"] for r in rows] == [i.id for i in expected]
    assert all(isinstance(r["output"], str) and r["gold"] == i.gold for r, i in zip(rows, expected, strict=True))
    markdown = out.with_suffix(".md").read_text()
    assert "| overall |" in markdown and "| xlam-fc-60k |" in markdown and "whole-call exact" in markdown
    assert f"{results['n']} items: parse rate" in capsys.readouterr().out


def test_run_dir_final_and_its_untrained_rebuild_answer_alike(run_dir, data):
    trained = run_eval(EvalConfig(model=str(run_dir), data=[str(data["xlam"])], max_new_tokens=TOKENS), log=_quiet)
    assert Path(trained["items_file"]).parent == run_dir / "eval"
    assert (run_dir / "eval" / "results.json").is_file() and (run_dir / "eval" / "results.md").is_file()
    cfg = EvalConfig(model=str(run_dir), untrained=True, data=[str(data["xlam"])], max_new_tokens=TOKENS)
    untrained = run_eval(cfg, log=_quiet)
    assert (run_dir / "eval" / "untrained.json").is_file()  # next to the trained results, not over them
    # final/ holds the seed-7 initial weights: the rebuild from config.yaml must generate the same text
    outputs = [(r["id"], r["output"]) for r in _lines(Path(trained["items_file"]))]
    assert outputs == [(r["id"], r["output"]) for r in _lines(Path(untrained["items_file"]))]
    assert trained["metrics"] == untrained["metrics"]


def test_another_configuration_needs_overwrite(run_dir, data, tmp_path):
    out = str(tmp_path / "r.json")
    run_eval(
        EvalConfig(model=str(run_dir), data=[str(data["xlam"])], limit=1, max_new_tokens=2, output=out), log=_quiet
    )
    again = EvalConfig(model=str(run_dir), data=[str(data["xlam"])], limit=1, max_new_tokens=3, output=out)
    with pytest.raises(ConfigError, match="--overwrite"):
        run_eval(again, log=_quiet)
    again.resume = False
    assert run_eval(again, log=_quiet)["max_new_tokens"] == 3
    assert [r["id"] for r in _lines(tmp_path / "r.items.jsonl")] == [items_from_unified([str(data["xlam"])])[0].id]


def _wait_for_lines(path: Path, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= 1:
            return
        if proc.poll() is not None:
            raise AssertionError(f"eval exited ({proc.returncode}) before writing a result")
        time.sleep(0.005)
    raise AssertionError("no result written in time")


def test_killed_eval_resumes_where_it_stopped(run_dir, data, tmp_path):
    paths = [str(data["glaive"]), str(data["xlam"])]
    # batches of 2: the resumed eval must generate each remaining item in the batch it had in the whole run
    args = ["--data", *paths, "--limit", "4", "--batch-size", "2", "--max-new-tokens", "8", "--no-progress"]
    out = tmp_path / "results.json"
    items_file = tmp_path / "results.items.jsonl"
    cmd = [sys.executable, "-m", "xlam_hpc", "eval", str(run_dir), *args, "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_lines(items_file, proc)
    finally:
        proc.kill()
        proc.wait()
    total = len(items_from_unified(paths, limit=4))
    scored_before = items_file.read_bytes().count(b"\n")
    assert proc.returncode != 0 and 1 <= scored_before < total  # stopped part-way

    assert main(["eval", str(run_dir), *args, "-o", str(out)]) == 0
    ids = [r["id"] for r in _lines(items_file)]
    assert sorted(ids) == sorted(i.id for i in items_from_unified(paths, limit=4))  # each scored exactly once
    resumed = json.loads(out.read_text())

    whole = run_eval(
        EvalConfig(
            model=str(run_dir), data=paths, limit=4, batch_size=2, max_new_tokens=8, output=str(tmp_path / "w.json")
        ),
        log=_quiet,
    )
    assert resumed["metrics"] == whole["metrics"]
    by_id = {r["id"]: r["output"] for r in _lines(items_file)}
    assert by_id == {r["id"]: r["output"] for r in _lines(tmp_path / "w.items.jsonl")}


def _reference(tokenizer: Any, options: dict[str, Any]):
    """A perfect model: each item's gold calls (or a plain answer when none is right), written by the chat
    template itself as the assistant turn that follows the prompt, up to its end-of-turn marker."""
    specials = sorted(tokenizer.all_special_tokens, key=len, reverse=True)

    def answer(item: EvalItem, prompt: str) -> str:
        system, turns = item_turns(item)
        calls = [ToolCall(id=f"call{j}", name=c["name"], arguments=c["arguments"]) for j, c in enumerate(item.gold)]
        reply = Turn(role="assistant", content="" if calls else "No tool is needed for that.", tool_calls=calls)
        messages = to_hf_messages(system, [*turns, reply], options["tool_arguments"], options["tool_call_ids"])
        full = tokenizer.apply_chat_template(messages, tools=_tools(item), tokenize=False, **options["template_kwargs"])
        assert full.startswith(prompt)
        text = full[len(prompt) :].rstrip()
        while any(text.endswith(s) for s in specials):
            text = text[: -len(next(s for s in specials if text.endswith(s)))].rstrip()
        return text

    def _tools(item: EvalItem) -> list[dict[str, Any]]:
        return [{"type": "function", "function": t} for t in item.tools]

    return lambda items, prompts: [answer(i, p) for i, p in zip(items, prompts, strict=True)]


@pytest.fixture(scope="module")
def family_models(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "family-models"  # model_folder reuses folders other modules made


@pytest.mark.parametrize(("family", "style"), [("run", "mistral"), ("qwen2.5", "hermes")])
def test_perfect_answers_score_100_percent(family, style, run_dir, family_models, data, tmp_path):
    model = run_dir if family == "run" else model_folder(family, family_models, with_model=True)
    target = resolve_target(str(model))
    cfg = EvalConfig(
        model=str(model), data=[str(data["xlam"]), str(data["glaive"])], limit=6, output=str(tmp_path / "p.json")
    )
    results = run_eval(cfg, log=_quiet, generate_fn=_reference(target.tokenizer, target.options))
    assert results["style"] == style
    m = results["metrics"]["overall"]
    assert m["n"] == 4 + 6 and m["n_irrelevance"] > 0  # all 4 xlam-fc items, the first 6 of glaive
    assert m["parse_rate"] == 1.0
    assert m["tool_name_accuracy"] == m["argument_exact_match"] == m["whole_call_exact_match"] == 1.0
    assert m["irrelevance_accuracy"] == 1.0 and m["calls_when_none"] == 0
    # the reference really wrote the family's syntax (what the parser had to read)
    prompt = render_prompt(items_from_unified([str(data["xlam"])])[0], target.tokenizer, target.options)
    assert prompt.endswith({"run": "[/INST]", "qwen2.5": "<|im_start|>assistant\n"}[family])


def test_errors_name_what_is_wrong(run_dir, data, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"bare: no tokenizer files"):
        run_eval(EvalConfig(model=str(bare), data=[str(data["xlam"])]), log=_quiet)
    with pytest.raises(ConfigError, match=r"final does not exist"):
        empty_run = tmp_path / "run"
        empty_run.mkdir()
        (empty_run / "config.yaml").write_text((run_dir / "config.yaml").read_text())
        run_eval(EvalConfig(model=str(empty_run), data=[str(data["xlam"])]), log=_quiet)
    with pytest.raises(ConfigError, match="unknown bench bfcl-nope"):
        EvalConfig(model=str(run_dir), benches=["bfcl-simple", "bfcl-nope"])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no evaluation items"):
        run_eval(EvalConfig(model=str(run_dir), data=[str(tmp_path / "empty.jsonl")]), log=_quiet)
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        EvalConfig(model=str(run_dir))
    with pytest.raises(ConfigError, match="--untrained"):
        run_eval(EvalConfig(model=str(run_dir / "final"), untrained=True, data=[str(data["xlam"])]), log=_quiet)


def test_perfect_answers_pass_bfcl_ast_checks(run_dir, tmp_path):
    """BFCL questions through the same path (wheel data, rendered with training's template, AST-checked)."""
    target = resolve_target(str(run_dir))
    benches = ["bfcl-simple", "bfcl-multiple", "bfcl-parallel-multiple", "bfcl-live-simple", "bfcl-irrelevance"]
    cfg = EvalConfig(model=str(run_dir), benches=benches, limit=4, output=str(tmp_path / "b.json"))
    results = run_eval(cfg, log=_quiet, generate_fn=_reference(target.tokenizer, target.options))
    m = results["metrics"]["overall"]
    assert m["n"] == 20 and m["n_irrelevance"] == 4
    assert m["parse_rate"] == m["whole_call_exact_match"] == m["ast_accuracy"] == m["irrelevance_accuracy"] == 1.0
    assert set(results["metrics"]["by_source"]) == set(benches)


def test_lora_run_is_evaluated_with_its_base_rebuilt(recipe_path, data, tmp_path):
    """A LoRA run's final/ is an adapter: the base comes from the run's recipe (seed), the adapter is merged.
    Freshly initialized LoRA (B = 0) changes nothing, so the outputs are the untrained model's."""
    import yaml

    from xlam_hpc.train.export import save_tokenizer, training_template
    from xlam_hpc.train.model import add_lora, build_model

    recipe = load_recipe(recipe_path, ["train.lora={r: 4}"])
    run = tmp_path / "lora-run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(recipe.to_dict()))
    tok = recipe.load_tokenizer()
    model = add_lora(
        build_model(recipe.model, tok, seq_length=recipe.collate.seq_length, seed=recipe.seed), recipe.train.lora
    )
    model.save_pretrained(run / "final")
    save_tokenizer(run / "final", tok, training_template(recipe.collate, tok), recipe.collate)
    assert (run / "final" / "adapter_config.json").is_file() and not (run / "final" / "config.json").exists()
    cfg = {"data": [str(data["xlam"])], "limit": 2, "max_new_tokens": TOKENS}
    merged = run_eval(EvalConfig(model=str(run), **cfg), log=_quiet)
    base = run_eval(EvalConfig(model=str(run), untrained=True, **cfg), log=_quiet)
    outputs = [r["output"] for r in _lines(Path(merged["items_file"]))]
    assert outputs == [r["output"] for r in _lines(Path(base["items_file"]))]
    with pytest.raises(ConfigError, match="LoRA adapter without its run"):
        run_eval(EvalConfig(model=str(run / "final"), **cfg, output=str(tmp_path / "x.json")), log=_quiet)


def test_items_the_template_cannot_render_are_reported_not_scored(run_dir, tmp_path):
    import shutil

    from tests.conftest import make_record, write_jsonl

    folder = tmp_path / "model"
    shutil.copytree(run_dir / "final", folder)
    template = (folder / "chat_template.jinja").read_text()
    refuse = '{%- for m in messages %}{% if m.role == "tool" %}{{ raise_exception("no tool results") }}{% endif %}'
    (folder / "chat_template.jinja").write_text(refuse + "{%- endfor -%}\n" + template)
    data = write_jsonl(tmp_path / "d.jsonl", [make_record(0, "s")])  # a call, then an answer after the result
    cfg = EvalConfig(model=str(folder), data=[str(data)], output=str(tmp_path / "r.json"))
    results = run_eval(cfg, log=_quiet, generate_fn=lambda items, prompts: ["" for _ in items])
    assert results["n"] == 1 and results["skipped"][0]["id"] == "s-0#3"
    assert "no tool results" in results["skipped"][0]["reason"]
    assert "1 item(s) not evaluated" in (tmp_path / "r.md").read_text()
