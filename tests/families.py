"""Local model folders of real model families, assembled from tests/data/model_families/ (offline).

`model_folder(family, root)` writes what a downloaded instruct model holds: the family's real tokenizer
(tokenizer.json + tokenizer_config.json with the instruct model's end-of-turn token as eos; Mistral Nemo's
tekken comes from the mistral-common wheel via xlam_hpc's built-in 'mistral-tekken'), its real chat
template as chat_template.jinja and, with `with_model=True`, a tiny random model of the family's
architecture (config.json + safetensors) whose vocabulary matches the tokenizer.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "model_families"

FAMILIES: dict[str, dict[str, Any]] = {
    # tokenizer folder, template file, model_type, tokenizer_config overrides of the instruct model;
    # "collate": the CollateConfig options the family needs (use `collate_options(family)`)
    "llama-3.1": {"tokenizer": "llama-3", "template": "llama-3.1.jinja", "model_type": "llama", "eos": "<|eot_id|>"},
    "llama-3.2": {
        "tokenizer": "llama-3",
        "template": "llama-3.2.jinja",
        "model_type": "llama",
        "eos": "<|eot_id|>",
        # else the template writes today's date into every system header (renderings change daily)
        "collate": {"template_kwargs": {"date_string": "26 Jul 2024"}},
    },
    "qwen2.5": {
        "tokenizer": "qwen2.5",
        "template": "qwen2.5.jinja",
        "model_type": "qwen2",
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
    },
    "qwen3": {
        "tokenizer": "qwen3",
        "template": "qwen3.jinja",
        "model_type": "qwen3",
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
    },
    # Hermes 3 is Llama 3.1 with ChatML: its tokenizer has <|im_start|>/<|im_end|> as special tokens
    "hermes-3": {
        "tokenizer": "llama-3",
        "template": "hermes-3.jinja",
        "model_type": "llama",
        "eos": "<|im_end|>",
        "added": ["<|im_start|>", "<|im_end|>"],
    },
    # tekken ships in the mistral-common wheel (xlam_hpc's built-in 'mistral-tekken'); the template wants
    # 9-char alphanumeric tool call ids: CollateConfig(tool_call_ids="alnum9")
    "mistral-nemo": {
        "builtin": "mistral-tekken",
        "template": "mistral-nemo.jinja",
        "model_type": "mistral",
        "eos": "</s>",
        "collate": {"tool_call_ids": "alnum9"},
    },
}

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}


def collate_options(family: str) -> dict[str, Any]:
    """CollateConfig keyword arguments the family's template needs (empty for most)."""
    return dict(FAMILIES[family].get("collate", {}))


def _tokenizer_files(spec: dict[str, Any], out: Path) -> None:
    if "builtin" in spec:
        from xlam_hpc.collate.tokenizer import BUILTIN_TOKENIZERS, _materialize

        assert spec["builtin"] in BUILTIN_TOKENIZERS
        src = _materialize(spec["builtin"])
        shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")
    else:
        src = DATA / "tokenizers" / spec["tokenizer"]
        with gzip.open(src / "tokenizer.json.gz", "rb") as f:
            (out / "tokenizer.json").write_bytes(f.read())
    config = json.loads((src / "tokenizer_config.json").read_text())
    config["eos_token"] = spec["eos"]
    if "pad" in spec:
        config["pad_token"] = spec["pad"]
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def model_folder(family: str, root: Path, *, with_model: bool = False, seed: int = 0) -> Path:
    """A local model folder for `family` under root/family (made once; reused when it exists)."""
    out = root / family
    if (out / "chat_template.jinja").is_file() and (not with_model or (out / "config.json").is_file()):
        return out
    spec = FAMILIES[family]
    tmp = root / f"{family}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _tokenizer_files(spec, tmp)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp)
    if spec.get("added"):
        tok.add_special_tokens({"additional_special_tokens": spec["added"]})
    tok.chat_template = (DATA / "templates" / spec["template"]).read_text()
    tok.save_pretrained(tmp)
    if with_model:
        save_tiny_model(tmp, spec["model_type"], tok, seed=seed)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def save_tiny_model(folder: Path, model_type: str, tok: Any, *, seed: int = 0) -> None:
    """A tiny random causal LM of `model_type` with one embedding row per token, saved into `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tok),
        pad_token_id=pad,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
        **TINY,
    )
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder, safe_serialization=True)


if __name__ == "__main__":  # python -m tests.families FAMILY OUT_DIR: a local model folder for recipes/demos
    import sys

    if len(sys.argv) != 3 or sys.argv[1] not in FAMILIES:
        sys.exit(f"usage: python -m tests.families {{{','.join(FAMILIES)}}} OUT_DIR")
    print(model_folder(sys.argv[1], Path(sys.argv[2]), with_model=True))
