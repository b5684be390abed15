"""Tokenizers: a local path, or Mistral's v3 tokenizer shipped inside the `mistral-common` wheel.

There is no model hub on the clusters we target (and none in CI), so 'mistral-v3' is materialized from
the wheel into a cache folder as `tokenizer.model` + `tokenizer_config.json`, converted once to a fast
tokenizer (tokenizer.json) and loaded from there afterwards. `trust_remote_code` stays off.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError

__all__ = ["BUILTIN_TOKENIZERS", "cache_dir", "load_tokenizer", "tokenizer_fingerprint"]

BUILTIN_TOKENIZERS = {"mistral-v3": "mistral_instruct_tokenizer_240323.model.v3"}
_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "add_bos_token": True,
    "add_eos_token": False,
    "legacy": False,
}


def cache_dir() -> Path:
    """$XLAM_HPC_CACHE, else $XDG_CACHE_HOME/xlam-hpc, else ~/.cache/xlam-hpc."""
    if os.environ.get("XLAM_HPC_CACHE"):
        return Path(os.environ["XLAM_HPC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xlam-hpc"


def _materialize(name: str) -> Path:
    import mistral_common

    src = resources.files(mistral_common).joinpath("data", BUILTIN_TOKENIZERS[name])
    target = cache_dir() / "tokenizers" / name
    if (target / "tokenizer.json").is_file():
        return target
    tmp = target.with_name(f"{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with resources.as_file(src) as model:
        shutil.copyfile(model, tmp / "tokenizer.model")
    (tmp / "tokenizer_config.json").write_text(json.dumps(_CONFIG, indent=1))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp)  # sentencepiece → fast conversion, once
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tokenizer(spec: str) -> Any:
    """A fast HF tokenizer from a folder path or a built-in name ('mistral-v3')."""
    from transformers import AutoTokenizer

    if spec in BUILTIN_TOKENIZERS:
        path = _materialize(spec)
    else:
        path = Path(spec)
        if not path.exists():
            raise ConfigError(
                f"tokenizer '{spec}' not found: give a local folder with tokenizer files or one of "
                f"{sorted(BUILTIN_TOKENIZERS)} (no model hub is used)"
            )
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load tokenizer from {path}: {exc}") from None
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"tokenizer at {path} is not a fast (Rust) tokenizer; offsets are needed for loss masks")
    return tok


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of everything that changes token ids: the vocabulary/merges/normalizer and special tokens."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None)  # call-time settings, not part of the vocabulary
    spec.pop("padding", None)
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    h.update(json.dumps([tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token]).encode())
    return h.hexdigest()[:16]
