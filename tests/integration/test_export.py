"""output_dir/final and `xlam-hpc export` of real 2-rank ZeRO-3 runs (torchrun, gloo, CPU).

Full fine-tuning: final is sharded (a tiny shard size forces several files), loads with
AutoModelForCausalLM and generates, and holds exactly the consolidated checkpoint's weights; an export
from checkpoint-N likewise. LoRA: final holds the adapter alone; `--merge-lora` gives a plain model whose
logits are PeftModel's (base + adapter).
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.integration.conftest import write_recipe
from xlam_hpc.cli import main
from xlam_hpc.testing.runs import torchrun_train
from xlam_hpc.train.export import INDEX, load_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _train(tmp: Path, shards: Path, train: dict) -> Path:
    recipe = write_recipe(tmp / "recipe.yaml", shards, train={"trace_samples": False, **train})
    out = tmp / "run"
    proc = torchrun_train(recipe, out, log=tmp / "run.log")
    assert proc.wait(timeout=600) == 0, (tmp / "run.log").read_text()[-4000:]
    return out


def _consolidated(checkpoint: Path, frozen: bool = True) -> dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag="ds", exclude_frozen_parameters=not frozen)


def _generates(folder: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert out.shape == (1, ids.shape[1] + 4)


def _export(*args: str) -> int:
    return main(["export", *map(str, args)])


@pytest.fixture(scope="module")
def full_run(train_data, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export-full")
    train = {"deepspeed": "zero3", "max_steps": 3, "save_interval": 2, "export_shard_size": "2MB"}
    return _train(tmp, train_data["sft"], train)


@pytest.fixture(scope="module")
def lora_run(train_data, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export-lora")
    return _train(tmp, train_data["sft"], {"deepspeed": "zero3", "max_steps": 2, "lora": {"r": 4, "alpha": 8}})


def test_final_of_a_zero3_run_is_sharded_loads_and_equals_the_checkpoint(full_run):
    final = full_run / "final"
    index = json.loads((final / INDEX).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files == sorted(p.name for p in final.glob("model-*-of-*.safetensors"))
    assert not (final / "model.safetensors").exists()
    for name in files:  # bounded: at most 2 MB, or a single larger tensor
        keys = [k for k, f in index["weight_map"].items() if f == name]
        assert (final / name).stat().st_size <= 2_000_000 + 10_000 or len(keys) == 1, (name, keys)
    config = json.loads((final / "config.json").read_text())
    assert config["sliding_window"] == 4096  # dropped for training at seq_length 768, written back
    _generates(final)
    weights = load_weights(final)
    ckpt = _consolidated(full_run / "checkpoint-3")
    assert weights.keys() <= ckpt.keys() and "lm_head.weight" in weights
    assert all(torch.equal(weights[k], ckpt[k]) for k in weights)
    memory = json.loads((full_run / "memory.json").read_text())["peak_rss_mib"]
    assert set(memory) == {"model", "setup", "train", "export"} and all(len(v) == 2 for v in memory.values())


def test_export_from_final_and_from_a_checkpoint(full_run, tmp_path):
    assert _export(full_run, "-o", tmp_path / "final") == 0
    assert {p.name for p in (tmp_path / "final").iterdir()} == {p.name for p in (full_run / "final").iterdir()}
    out = tmp_path / "ckpt2"
    assert _export(full_run, "--checkpoint", 2, "--max-shard-size", "5MB", "-o", out) == 0
    weights, ckpt = load_weights(out), _consolidated(full_run / "checkpoint-2")
    assert weights.keys() == load_weights(full_run / "final").keys()
    assert all(torch.equal(weights[k], ckpt[k]) for k in weights)
    assert not all(torch.equal(weights[k], load_weights(full_run / "final")[k]) for k in weights)  # step 2 != 3
    template = json.loads((full_run / "final" / "tokenizer_config.json").read_text()).get("chat_template")
    assert template == json.loads((out / "tokenizer_config.json").read_text()).get("chat_template")
    assert (out / "chat_template.jinja").read_text() == (full_run / "final" / "chat_template.jinja").read_text()
    _generates(out)
    half = tmp_path / "bf16"
    assert _export(full_run, "--checkpoint", 3, "--dtype", "bf16", "-o", half) == 0
    final = load_weights(full_run / "final")
    assert all(torch.equal(t, final[k].to(torch.bfloat16)) for k, t in load_weights(half).items())
    assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"


def test_export_errors_name_the_path(full_run, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    cases = [
        ((full_run, "--merge-lora", "-o", tmp_path / "a"), "trained the full model"),
        ((full_run, "--checkpoint", 99, "-o", tmp_path / "b"), f"{full_run / 'checkpoint-99'} does not exist"),
        ((full_run, "-o", tmp_path / "busy"), f"{tmp_path / 'busy'}: the output directory is not empty"),
        ((tmp_path / "nothing", "-o", tmp_path / "c"), "not a training run directory"),
        ((full_run, "--dtype", "bf16", "-o", tmp_path / "d"), "--dtype applies to"),
    ]
    for args, message in cases:
        assert _export(*args) == 2
        err = capsys.readouterr().err
        assert message in err, (args, err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_lora_final_is_the_adapter_and_merge_gives_base_plus_adapter(lora_run, tmp_path):
    from peft import PeftModel

    from xlam_hpc.recipe import load_recipe
    from xlam_hpc.train.model import build_model

    final = lora_run / "final"
    assert (final / "adapter_config.json").exists() and not list(final.glob("model*.safetensors"))
    adapter = load_weights(final)
    assert adapter and all("lora_" in k for k in adapter)
    # export from the checkpoint (adapter only): the same adapter
    assert _export(lora_run, "--checkpoint", 2, "-o", tmp_path / "adapter") == 0
    again = load_weights(tmp_path / "adapter")
    assert again.keys() == adapter.keys() and all(torch.equal(again[k], adapter[k]) for k in adapter)

    merged_dir = tmp_path / "merged"
    assert _export(lora_run, "--merge-lora", "-o", merged_dir) == 0
    assert not list(merged_dir.glob("adapter*"))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    recipe = load_recipe(None, base=_recipe(lora_run))
    base = build_model(recipe.model, recipe.load_tokenizer(), seq_length=recipe.collate.seq_length, seed=recipe.seed)
    peft = PeftModel.from_pretrained(base, final).eval()
    ids = torch.randint(0, 32000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft(ids).logits, rtol=1e-4, atol=1e-4)
    _generates(merged_dir)


def _recipe(run: Path) -> dict:
    from xlam_hpc.config import load_yaml

    data = load_yaml(run / "config.yaml")
    data.pop("fingerprint")
    return data


def test_presets_are_the_same_under_zero3_on_two_ranks_as_on_one_process(tmp_path):
    """The export rebuilds a LoRA run's preset base on one process: ZeRO-3's partitioned init must give it."""
    script = tmp_path / "check.py"
    script.write_text(
        textwrap.dedent(
            """
            import deepspeed, torch
            from xlam_hpc.collate import load_tokenizer
            from xlam_hpc.runenv.dist import detect
            from xlam_hpc.train.config import ModelConfig
            from xlam_hpc.train.model import build_model
            from xlam_hpc.train.runtime import deepspeed_config, init_process_group

            dist = detect(port_base=29500)
            init_process_group(dist, timeout_s=120)
            tok, cfg = load_tokenizer("mistral-v3"), ModelConfig(name_or_path="tiny-mistral")
            ds = deepspeed_config("zero3", per_rank_batch=1, world_size=2, grad_clip=1.0, precision="fp32")
            sharded = build_model(cfg, tok, ds_config=ds, seq_length=768, seed=7)
            assert all(p.numel() == 0 for p in sharded.parameters())  # partitioned from the start
            plain = build_model(cfg, tok, seq_length=768, seed=7)
            for (name, p), q in zip(sharded.named_parameters(), plain.parameters(), strict=True):
                with deepspeed.zero.GatheredParameters([p]):
                    assert torch.equal(p.detach(), q), name
            print("IDENTICAL", dist.rank)
            """
        )
    )
    import subprocess

    from xlam_hpc.testing.runs import _free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    done = subprocess.run([*cmd, str(script)], check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.count("IDENTICAL") == 2, done.stdout[-2000:] + done.stderr[-4000:]
