"""`tokenizer: model`, the vocabulary check before any weights are read, and the template the export saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_recipe
from tests.families import TINY, model_folder
from xlam_hpc.cli import main
from xlam_hpc.collate import BUILTIN_TEMPLATE, CollateConfig, load_tokenizer
from xlam_hpc.errors import ConfigError
from xlam_hpc.recipe import load_recipe
from xlam_hpc.stream.probe import run_probe
from xlam_hpc.train.stepper import RENDER_OPTIONS, render_options, save_tokenizer, training_template

RECIPES = Path(__file__).resolve().parents[3] / "configs" / "recipes"


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    """A Qwen2.5 tokenizer folder with its chat template (no model)."""
    return model_folder("qwen2.5", tmp_path_factory.mktemp("models"))


def _recipe(**sections) -> dict:
    return {"data": {"shards": ["shards"]}, **sections}


def test_tokenizer_model_means_the_folder_or_mistral_v3_for_a_preset(qwen):
    assert load_recipe(None, base=_recipe()).tokenizer == "mistral-v3"
    assert load_recipe(None, base=_recipe(model={"name_or_path": "tiny-llama"})).tokenizer == "mistral-v3"
    assert load_recipe(None, [f"model.name_or_path={qwen}"], base=_recipe()).tokenizer == str(qwen)
    explicit = load_recipe(None, [f"model.name_or_path={qwen}", "tokenizer=/elsewhere"], base=_recipe())
    assert explicit.tokenizer == "/elsewhere"


def test_resolved_tokenizer_is_in_the_fingerprint_and_survives_config_yaml(qwen):
    # runs made when the default was 'mistral-v3' keep their fingerprint (resume still matches)
    assert load_recipe(None, base=_recipe(tokenizer="mistral-v3")).fingerprint() == (
        load_recipe(None, base=_recipe()).fingerprint()
    )
    own = load_recipe(None, [f"model.name_or_path={qwen}"], base=_recipe())
    assert own.fingerprint() == load_recipe(None, [f"tokenizer={qwen}"], base=own.to_dict()).fingerprint()
    assert own.fingerprint() != load_recipe(None, ["tokenizer=mistral-v3"], base=own.to_dict()).fingerprint()
    reloaded = load_recipe(None, base=yaml.safe_load(yaml.safe_dump(own.to_dict())))  # what config.yaml holds
    assert reloaded.tokenizer == str(qwen) and reloaded.fingerprint() == own.fingerprint()


def test_every_shipped_recipe_loads_with_a_resolved_tokenizer():
    paths = sorted(RECIPES.glob("*.yaml"))
    assert RECIPES / "qwen2.5-local-sft.yaml" in paths
    for path in paths:
        assert load_recipe(path).tokenizer != "model", path
    qwen = load_recipe(RECIPES / "qwen2.5-local-sft.yaml")
    assert qwen.model.name_or_path == qwen.tokenizer == "runs/models/qwen2.5"
    assert qwen.collate.chat_template == "tokenizer" and qwen.train.deepspeed == "zero2"
    assert "python -m tests.families qwen2.5 runs/models" in (RECIPES / "qwen2.5-local-sft.yaml").read_text()


def _fail(capsys, *argv) -> str:
    assert main(["train", *map(str, argv)]) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_vocabulary_is_checked_from_config_json_before_any_weights(train_data, tmp_path, capsys):
    from transformers import AutoConfig

    folder = model_folder("qwen2.5", tmp_path)
    AutoConfig.for_model("qwen2", vocab_size=1000, **TINY).save_pretrained(folder)  # no weights in the folder
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"], model={"name_or_path": str(folder)})
    msg = _fail(capsys, recipe, f"output_dir={tmp_path / 'out'}")
    vocab = len(load_tokenizer(str(folder)))
    assert (
        f"{folder / 'config.json'}: model vocabulary (1000) is smaller than the tokenizer's ({vocab}) from {folder};"
        in msg
    )


def test_model_folder_without_tokenizer_files(train_data, tmp_path, capsys):
    from transformers import AutoConfig

    folder = tmp_path / "bare"
    AutoConfig.for_model("qwen2", vocab_size=1000, **TINY).save_pretrained(folder)
    recipe = write_recipe(tmp_path / "r.yaml", train_data["sft"], model={"name_or_path": str(folder)})
    msg = _fail(capsys, recipe, f"output_dir={tmp_path / 'out'}")
    assert f"model folder {folder} has no tokenizer files" in msg and "set `tokenizer:`" in msg


def test_stream_probe_uses_the_model_folders_tokenizer_and_template(qwen, train_data, tmp_path):
    # mistral-v3 has no chat template: with it, collate.chat_template=tokenizer would fail
    base = yaml.safe_load(write_recipe(tmp_path / "r.yaml", train_data["sft"]).read_text())
    recipe = load_recipe(None, [f"model.name_or_path={qwen}", "collate.chat_template=tokenizer"], base=base)
    run_probe(recipe, steps=2, rank=0, world_size=1, trace=str(tmp_path / "trace.jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(x["tokens"] > 0 for x in lines)


def test_training_template_is_the_renderers(qwen, tmp_path):
    tok = load_tokenizer(str(qwen))
    own = (qwen / "chat_template.jinja").read_text()
    assert training_template(CollateConfig(), tok) == own == tok.chat_template
    assert training_template(CollateConfig(chat_template="builtin"), tok) == BUILTIN_TEMPLATE
    path = tmp_path / "mine.jinja"
    path.write_text(own.replace("You are a helpful assistant.", "You are a tool agent."))
    assert training_template(CollateConfig(chat_template=str(path)), tok) == path.read_text() != own
    with pytest.raises(ConfigError, match="not 'tokenizer', 'builtin' or an existing file"):
        training_template(CollateConfig(chat_template=str(tmp_path / "missing.jinja")), tok)
    with pytest.raises(ConfigError, match="no chat template"):
        training_template(CollateConfig(), load_tokenizer("mistral-v3"))


def test_render_options_only_when_not_the_defaults():
    assert render_options(CollateConfig()) is None
    assert render_options(CollateConfig(seq_length=128, packing=False)) is None
    assert render_options(CollateConfig(tool_call_ids="alnum9")) == {
        "template_kwargs": {},
        "tool_arguments": "object",
        "tool_call_ids": "alnum9",
    }
    # the built-in template takes no options
    assert render_options(CollateConfig(chat_template="builtin", template_kwargs={"x": 1})) is None


def test_saved_tokenizer_holds_the_training_template_and_options(qwen, tmp_path):
    from transformers import AutoTokenizer

    tok = load_tokenizer(str(qwen))
    own = tok.chat_template
    path = tmp_path / "mine.jinja"
    path.write_text(own.replace("You are a helpful assistant.", "You are a tool agent."))
    collate = CollateConfig(chat_template=str(path), template_kwargs={"date_string": "26 Jul 2024"})
    final = tmp_path / "final"
    save_tokenizer(final, tok, training_template(collate, tok), collate)
    assert tok.chat_template == own  # the live tokenizer is unchanged
    saved = AutoTokenizer.from_pretrained(final)
    assert saved.chat_template == path.read_text() and len(saved) == len(tok)
    assert json.loads((final / RENDER_OPTIONS).read_text()) == {
        "template_kwargs": {"date_string": "26 Jul 2024"},
        "tool_arguments": "object",
        "tool_call_ids": "keep",
    }
    builtin = CollateConfig(chat_template="builtin")
    save_tokenizer(final, tok, training_template(builtin, tok), builtin)  # an export over an earlier one
    assert AutoTokenizer.from_pretrained(final).chat_template == BUILTIN_TEMPLATE
    assert not (final / RENDER_OPTIONS).exists()
