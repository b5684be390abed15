"""Bring your own model: a local model folder of each family trains with its own tokenizer and chat template.

Each folder (tests/families.py) holds the family's real tokenizer and chat template and a tiny random model of
the family's architecture. The shipped recipe configs/recipes/qwen2.5-local-sft.yaml (`tokenizer: model`,
`chat_template: tokenizer`) is run as its header says, from the repository root on shards of the bundled
samples, with `model.name_or_path` pointed at each family's folder: the real trainer (`xlam-hpc train`, one
rank, DeepSpeed ZeRO-2) runs a few steps. Then output_dir/final must render like training did:
`AutoTokenizer.from_pretrained(final).apply_chat_template(...)` (with final/xlam_render.json's options) gives
the training renderer's text and token ids, and the model loads with transformers.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.families import FAMILIES, model_folder
from xlam_hpc.collate import load_tokenizer
from xlam_hpc.collate.messages import reasoning_style, to_hf_messages, tools_json
from xlam_hpc.collate.rendered import HistoryRewritten, Rendered, Unrenderable
from xlam_hpc.collate.template import make_renderer
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.demo import SFT_SAMPLES, samples_dir
from xlam_hpc.schema import Trajectory, Turn, decode_record
from xlam_hpc.shard import ShardConfig, write_shards
from xlam_hpc.train.stepper import RENDER_OPTIONS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "recipes" / "qwen2.5-local-sft.yaml"
STEPS = 2

COLLATE: dict[str, dict[str, Any]] = {
    # what a real run of the family sets: Llama 3.2 writes today's date unless given one
    "llama-3.2": {"template_kwargs": {"date_string": "26 Jul 2024"}},
    # Mistral templates refuse tool call ids that are not 9 alphanumeric characters
    "mistral-nemo": {"tool_call_ids": "alnum9"},
}
DEFAULT_OPTIONS = {"template_kwargs": {}, "tool_arguments": "object", "tool_call_ids": "keep"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> tuple[Path, list[Trajectory]]:
    """Shards of the bundled SFT samples (what the recipe's header makes) and up to 3 records of each source."""
    root = tmp_path_factory.mktemp("bundled")
    jsonl = root / "sft.jsonl"
    inputs = [str(samples_dir() / name) for name in SFT_SAMPLES]
    convert_files(ConvertConfig(inputs=inputs, output=str(jsonl), progress=False), log=lambda m: None)
    write_shards(
        ShardConfig(inputs=[str(jsonl)], output_dir=str(root / "shards"), samples_per_shard=64, progress=False)
    )
    by_source: dict[str, list[Trajectory]] = defaultdict(list)
    for line in jsonl.read_bytes().splitlines():
        rec = decode_record(line)
        assert isinstance(rec, Trajectory)
        if len(by_source[rec.source]) < 3:
            by_source[rec.source].append(rec)
    return root / "shards", [r for recs in by_source.values() for r in recs]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(recipe: Path, out: Path, *overrides: str) -> None:
    """`xlam-hpc train RECIPE ...` from the repository root as one rank (its own rendezvous port: other runs
    on this machine may hold the default one)."""
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(_free_port())
    cmd = [sys.executable, "-m", "xlam_hpc", "train", str(recipe), f"output_dir={out}", *overrides]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _check_trained(out: Path, steps: int) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == steps and math.isfinite(metrics["final_loss"])
    losses = [json.loads(x)["loss"] for x in (out / "trace" / "rank0.jsonl").read_text().splitlines()]
    assert len(losses) == steps and all(math.isfinite(v) for v in losses if v is not None)
    # a step whose every sample the template refused has no loss (not 0), and the refusals are reported
    assert metrics["steps_without_loss_tokens"] == losses.count(None) < steps
    assert not losses.count(None) or sum(metrics["samples_dropped"].values()) > 0
    assert json.loads((out / "FINISHED").read_text())["step"] == steps
    assert (out / "final" / "model.safetensors").is_file()


def _training_texts(renderer: Any, rec: Trajectory) -> list[tuple[list[Turn], Rendered]]:
    """Each text training renders for `rec`: the whole conversation, or one per assistant turn when the
    template rewrites history (as SampleEncoder splits it); none when the record is rejected."""
    turns = rec.conversation
    try:
        return [(turns, renderer.render(rec.task_instruction, rec.tools, turns))]
    except Unrenderable:
        return []
    except HistoryRewritten:
        pass
    out = []
    positions = [i for i, t in enumerate(turns) if t.role == "assistant"]
    for k, pos in enumerate(positions):
        with_turn = turns[: pos + 1]
        try:
            out.append((with_turn, renderer.render(rec.task_instruction, rec.tools, with_turn, [False] * k + [True])))
        except (HistoryRewritten, Unrenderable):
            continue
    return out


def _check_export_renders_like_training(final: Path, source: Path, collate: dict[str, Any], records: list) -> int:
    """final/'s tokenizer + xlam_render.json reproduce the training texts and ids; how many texts were compared."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved = AutoTokenizer.from_pretrained(final)
    options = json.loads((final / RENDER_OPTIONS).read_text()) if (final / RENDER_OPTIONS).exists() else None
    assert options == ({**DEFAULT_OPTIONS, **collate} if collate else None)  # written only when not the defaults
    options = options or DEFAULT_OPTIONS
    kwargs, arguments, call_ids = options["template_kwargs"], options["tool_arguments"], options["tool_call_ids"]

    trained_tok = load_tokenizer(str(source))  # what training loaded: `tokenizer: model`
    renderer = make_renderer("tokenizer", trained_tok, **collate)
    # a template that renders `reasoning_content` (Qwen3) gets the thoughts there, as training rendered them
    reasoning = reasoning_style(saved.chat_template)
    compared = 0
    for rec in records:
        tools = tools_json(rec.tools) or None
        for turns, rendered in _training_texts(renderer, rec):
            messages = to_hf_messages(rec.task_instruction, turns, arguments, call_ids, reasoning)
            ids = trained_tok(rendered.text, add_special_tokens=False)["input_ids"]  # as SampleEncoder tokenizes
            if rendered.spliced:  # trained as inference sees it: the generation prompt, then the reply
                prompt = saved.apply_chat_template(
                    messages[:-1], tools=tools, tokenize=False, add_generation_prompt=True, **kwargs
                )
                assert rendered.text.startswith(prompt)
                prompt_ids = saved.apply_chat_template(
                    messages[:-1], tools=tools, add_generation_prompt=True, return_dict=False, **kwargs
                )
                assert ids[: len(prompt_ids)] == list(prompt_ids)
            else:
                assert saved.apply_chat_template(messages, tools=tools, tokenize=False, **kwargs) == rendered.text
                assert list(saved.apply_chat_template(messages, tools=tools, return_dict=False, **kwargs)) == ids
            compared += 1
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.get_input_embeddings().num_embeddings >= len(saved)
    return compared


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_model_trains_with_the_recipe_and_exports_its_template(family, models, bundled, tmp_path):
    folder = model_folder(family, models, with_model=True)
    shards, records = bundled
    collate = COLLATE.get(family, {})
    out = tmp_path / "out"
    overrides = [f"model.name_or_path={folder}", f"data.shards=[{shards}]", f"train.max_steps={STEPS}"]
    overrides.append("data.num_workers=0")  # 2 cores: a loader worker only competes with the step
    overrides += [f"collate.{key}={json.dumps(value)}" for key, value in collate.items()]
    _train(RECIPE, out, *overrides)
    _check_trained(out, STEPS)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["tokenizer"] == str(folder) and config["train"]["deepspeed"] == "zero2"  # `tokenizer: model`
    final = out / "final"
    assert (final / "chat_template.jinja").read_text() == (folder / "chat_template.jinja").read_text()
    assert _check_export_renders_like_training(final, folder, collate, records) >= 5
