"""The model under evaluation: what it is (a model folder, a run's final/, or a recipe's untrained model),
how its prompts are rendered (the chat template and options training rendered with), and greedy generation.

Prompts are rendered exactly as inference after training sees them: the saved tokenizer's chat template with
`add_generation_prompt=True` over `to_hf_messages(system, turns, tool_arguments, tool_call_ids)` and
`tools_json(tools)`, plus final/xlam_render.json's `template_kwargs` (docs/export.md). The rendered text
already holds BOS and control tokens, so it is tokenized with `add_special_tokens=False`, as training does.
Outputs are decoded with special tokens kept (Mistral's [TOOL_CALLS] is one) and cut at the first EOS.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from xlam_hpc.collate.messages import reasoning_style, to_hf_messages, tools_json
from xlam_hpc.errors import ConfigError, DataError
from xlam_hpc.evaluate.items import EvalItem, item_turns
from xlam_hpc.schema import FunctionSpec

__all__ = ["GenerateFn", "HFGenerator", "Target", "load_model", "render_prompt", "resolve_target", "vllm_available"]

GenerateFn = Callable[[list[EvalItem], list[str]], list[str]]
"""(items, their rendered prompts) → the model's raw outputs, one per item."""

DEFAULT_OPTIONS: dict[str, Any] = {"template_kwargs": {}, "tool_arguments": "object", "tool_call_ids": "keep"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_RENDER_OPTIONS = "xlam_render.json"  # xlam_hpc.train.export.RENDER_OPTIONS


@dataclass
class Target:
    """What is evaluated, resolved from the `model` argument."""

    name: str
    """The path given (for results.json)."""
    tokenizer: Any
    options: dict[str, Any]
    """template_kwargs, tool_arguments, tool_call_ids: as training rendered."""
    folder: Path | None = None
    """The model folder to load (None: built from `recipe`, untrained)."""
    recipe: Any = None
    """The run's recipe, when known (a run directory or a recipe file)."""
    run_dir: Path | None = None
    untrained: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def chat_template(self) -> str:
        template = self.tokenizer.chat_template
        if isinstance(template, dict):
            return str(template.get("tool_use") or template.get("default") or "")
        return str(template or "")


def _load_run_recipe(path: Path) -> Any:
    from xlam_hpc.config import load_yaml
    from xlam_hpc.recipe import load_recipe

    data = load_yaml(path)
    data.pop("fingerprint", None)  # written next to the resolved recipe, not one of its keys
    return load_recipe(None, base=data)


def _recipe_target(name: str, recipe: Any, run_dir: Path | None) -> Target:
    """The recipe's model as training builds it before the first step (presets: random init from the seed)."""
    from xlam_hpc.train.export import training_template

    tokenizer = recipe.load_tokenizer()
    tokenizer.chat_template = training_template(recipe.collate, tokenizer)
    c = recipe.collate
    options = {
        "template_kwargs": c.template_kwargs,
        "tool_arguments": c.tool_arguments,
        "tool_call_ids": c.tool_call_ids,
    }
    return Target(name=name, tokenizer=tokenizer, options=options, recipe=recipe, run_dir=run_dir, untrained=True)


def _folder_target(name: str, folder: Path, recipe: Any, run_dir: Path | None) -> Target:
    from xlam_hpc.collate import load_tokenizer

    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ConfigError(
            f"{folder}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}): not a model folder to evaluate"
        )
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{folder}: no config.json: not a model folder to evaluate")
    tokenizer = load_tokenizer(str(folder))
    if not tokenizer.chat_template:
        raise ConfigError(f"{folder}: the tokenizer has no chat template, so prompts cannot be rendered")
    options = dict(DEFAULT_OPTIONS)
    opts_file = folder / _RENDER_OPTIONS
    if opts_file.is_file():
        try:
            options.update(json.loads(opts_file.read_text()))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{opts_file}: invalid JSON ({exc})") from None
    return Target(name=name, tokenizer=tokenizer, options=options, folder=folder, recipe=recipe, run_dir=run_dir)


def resolve_target(model: str, *, untrained: bool = False) -> Target:
    """A model folder, a run directory (its final/, or with `untrained` its recipe's initial model), or a recipe
    file (with `untrained` only)."""
    path = Path(model)
    if not path.exists():
        raise ConfigError(f"{model}: no such model folder, run directory or recipe")
    if path.is_file():
        if not untrained:
            raise ConfigError(f"{model}: a recipe file is evaluated with --untrained (its model before training)")
        from xlam_hpc.recipe import load_recipe

        return _recipe_target(model, load_recipe(path), None)
    run_config = path / "config.yaml"
    if run_config.is_file():  # a training run directory
        recipe = _load_run_recipe(run_config)
        if untrained:
            return _recipe_target(model, recipe, path)
        final = path / "final"
        if not final.is_dir():
            raise ConfigError(f"{final} does not exist (the run has not finished): evaluate a finished run")
        return _folder_target(model, final, recipe, path)
    if untrained:
        raise ConfigError(f"{model}: --untrained needs a run directory or a recipe file (the model folder is trained)")
    return _folder_target(model, path, None, None)


def load_model(target: Target, device: str) -> Any:
    """The causal LM of `target` in eval mode on `device` (fp32 on CPU, the saved dtype on GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    if target.untrained:
        from xlam_hpc.train.model import build_model

        r = target.recipe
        model = build_model(r.model, target.tokenizer, seq_length=r.collate.seq_length, seed=r.seed)
    else:
        assert target.folder is not None
        if (target.folder / "adapter_config.json").is_file():
            model = _merged_adapter(target)
        else:
            dtype = torch.float32 if device == "cpu" else "auto"
            try:
                # on a GPU, weights go straight to it (a 7B model is not staged in host RAM first)
                placement = {} if device == "cpu" else {"device_map": device}
                model = AutoModelForCausalLM.from_pretrained(target.folder, dtype=dtype, **placement)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{target.folder}: cannot load the model ({exc})") from None
    return model.to(device).eval()


def _merged_adapter(target: Target) -> Any:
    """A LoRA run's final/ (adapter only): the base rebuilt from the run's recipe, adapter merged."""
    if target.recipe is None or target.recipe.train.lora is None:
        raise ConfigError(
            f"{target.folder}: a LoRA adapter without its run: evaluate the run directory, or `xlam-hpc export "
            "--merge-lora` first"
        )
    from xlam_hpc.train.export import _lora_model

    return _lora_model(target.recipe, target.tokenizer, target.folder, False).merge_and_unload()


def _tools(item: EvalItem) -> list[dict[str, Any]]:
    try:
        specs = [
            msgspec.convert({k: t[k] for k in ("name", "description", "parameters") if k in t}, type=FunctionSpec)
            for t in item.tools
        ]
    except (msgspec.ValidationError, TypeError) as exc:
        raise DataError(f"item {item.id}: a tool is not a function spec ({exc})") from None
    return tools_json(specs)


def render_prompt(item: EvalItem, tokenizer: Any, options: dict[str, Any]) -> str:
    """The prompt text of an item: the conversation prefix and the generation prompt, as training rendered."""
    system, turns = item_turns(item)
    reasoning = reasoning_style(tokenizer.chat_template)  # reasoning in the prefix as training rendered it
    messages = to_hf_messages(system, turns, options["tool_arguments"], options["tool_call_ids"], reasoning)
    try:
        return str(
            tokenizer.apply_chat_template(
                messages,
                tools=_tools(item) or None,
                tokenize=False,
                add_generation_prompt=True,
                **options["template_kwargs"],
            )
        )
    except Exception as exc:  # a template's raise_exception() on this input
        raise DataError(f"item {item.id}: the chat template cannot render it ({type(exc).__name__}: {exc})") from None


def _eos_ids(tokenizer: Any, model: Any) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids += extra if isinstance(extra, list) else [extra] if extra is not None else []
    return sorted(set(ids))


class HFGenerator:
    """Greedy, batched (left padding) transformers generation."""

    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int, device: str) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_new_tokens = max_new_tokens
        self.eos = _eos_ids(tokenizer, model)
        pad = tokenizer.pad_token_id
        self.pad = pad if pad is not None else (self.eos[0] if self.eos else 0)

    def __call__(self, items: list[EvalItem], prompts: list[str]) -> list[str]:
        import torch
        from transformers import GenerationConfig

        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[self.pad] * (width - len(x)) + x for x in ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.pad,
            eos_token_id=self.eos or None,
        )
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
        return [self.decode(row[width:].tolist()) for row in out]

    def decode(self, new_ids: list[int]) -> str:
        """New tokens up to the first EOS, special tokens kept (the parser reads e.g. [TOOL_CALLS])."""
        for k, tok in enumerate(new_ids):
            if tok in self.eos:
                new_ids = new_ids[:k]
                break
        new_ids = [t for t in new_ids if t != self.pad]
        return str(self.tokenizer.decode(new_ids, skip_special_tokens=False))


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


class VLLMGenerator:
    """Greedy generation with vLLM (GPU, a model folder): the same prompts as token ids, same decoding rule."""

    def __init__(self, folder: Path, tokenizer: Any, *, max_new_tokens: int) -> None:
        from vllm import LLM, SamplingParams

        self.tokenizer = tokenizer
        self.llm = LLM(model=str(folder), tokenizer=str(folder), seed=0)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=False)

    def __call__(self, items: list[EvalItem], prompts: list[str]) -> list[str]:
        batch = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
        outputs = self.llm.generate(batch, self.params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]
