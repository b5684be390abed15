"""Tokenizers: a local path, or a Mistral tokenizer shipped inside the `mistral-common` wheel.

There is no model hub on the clusters we target (and none in CI), so the built-in tokenizers are
materialized from the wheel into a cache folder, converted once to a fast tokenizer (tokenizer.json) and
loaded from there afterwards. `trust_remote_code` stays off.
- 'mistral-v3': Mistral 7B v0.3's sentencepiece model (`tokenizer.model` + `tokenizer_config.json`).
- 'mistral-tekken': Mistral Nemo's tekken BPE (tekken_240718.json), converted by transformers'
  `MistralConverter`: mistral-common's 1000 special slots (<unk>, <s>, </s>, [INST], [/INST],
  [AVAILABLE_TOOLS], ... then <SPECIAL_20>...) as ids 0-999, the BPE ranks after them.
Neither carries a chat template: pair them with collate.chat_template (a Jinja file, or 'builtin').
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

__all__ = ["BUILTIN_TOKENIZERS", "FOLDER_HINT", "cache_dir", "load_tokenizer", "tokenizer_fingerprint"]

BUILTIN_TOKENIZERS = {
    "mistral-v3": "mistral_instruct_tokenizer_240323.model.v3",
    "mistral-tekken": "tekken_240718.json",  # Mistral Nemo (2407)
}
_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "add_bos_token": True,
    "add_eos_token": False,
    "legacy": False,
}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
FOLDER_HINT = (
    "A tokenizer folder (as written by save_pretrained, e.g. a model folder) must hold tokenizer.json (fast "
    "tokenizer) or tokenizer.model (sentencepiece), with tokenizer_config.json (special tokens, chat template)"
)

_TEKKEN_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


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
        if model.suffix == ".json":
            _save_tekken(model, tmp)
        else:
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


def _save_tekken(vocab_file: Path, out: Path) -> None:
    """A tekken.json → tokenizer.json + tokenizer_config.json (takes ~5 s, once)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.mistral.tokenizer import MistralConverter

    backend = MistralConverter(vocab_file=str(vocab_file)).converted()
    # BOS on `tokenizer(text)`, as Mistral's own HF tokenizer.json does; templates write it themselves
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    PreTrainedTokenizerFast(tokenizer_object=backend, **_TEKKEN_SPECIALS).save_pretrained(out)


def load_tokenizer(spec: str) -> Any:
    """A fast HF tokenizer from a folder path or a built-in name (see BUILTIN_TOKENIZERS)."""
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
        if not path.is_dir():
            raise ConfigError(
                f"tokenizer '{spec}' is a file; give the folder that holds it ({path.absolute().parent}). "
                + FOLDER_HINT
            )
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise ConfigError(f"tokenizer folder {path} holds no tokenizer files. {FOLDER_HINT}")
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load tokenizer from {path}: {exc}. {FOLDER_HINT}") from None
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
