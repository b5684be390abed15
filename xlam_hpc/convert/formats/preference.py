"""DPO preference pairs → `Preference` records.

- TRL (https://huggingface.co/docs/trl/dataset_formats#preference): `{"prompt"?, "chosen", "rejected"}`, each
  a string (standard) or an OpenAI message list (conversational; chosen/rejected may repeat the prompt,
  e.g. UltraFeedback-binarized, or carry it implicitly when `prompt` is absent: then the shared prefix is
  the prompt). Optional `score_chosen`/`score_rejected`/`prompt_id` → meta, `tools` → tools.
- LLaMA-Factory (https://github.com/hiyouga/LLaMA-Factory/blob/main/data/README.md): sharegpt ranking
  `{"conversations": [{from, value}], "chosen": {from, value}, "rejected": {from, value}, "system"?,
  "tools"?}`
  and v1 `{"chosen_messages": [...], "rejected_messages": [...]}` (typed parts) whose messages must agree up
  to the final assistant message.
- KTO (unpaired: TRL `{prompt, completion, label}`, LLaMA-Factory `label`/kto_tag): no pair, no Preference;
  claimed by `dpo-trl` (TRL layout) or the chat converters (LLaMA-Factory layouts) and rejected with the
  reason `kto_unsupported`, never converted to SFT data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from xlam_hpc.convert.base import Converter, Preference, Reject, Turn, record_id, require
from xlam_hpc.convert.common import is_chat, parse_tools, reject_kto, top_level_system
from xlam_hpc.convert.formats.llamafactory_messages import convert_messages
from xlam_hpc.convert.formats.openai_messages import messages_to_turns
from xlam_hpc.convert.formats.sharegpt import conversations_to_turns
from xlam_hpc.convert.reader import RawRecord

__all__ = ["DpoLlamaFactory", "DpoTrl"]


def _messages(value: Any, key: str, role: str) -> list[Any]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, Mapping) for m in value):
        return value
    raise Reject("wrong_type", f"'{key}' should be a string or a list of messages")


def _completion(side: list[Any], prompt: list[Any], key: str) -> list[Any]:
    """The completion part of a chosen/rejected list that may repeat the prompt."""
    n = len(prompt)
    if side[:n] == prompt:
        rest = side[n:]
    elif len(side) == n + 1 and [m.get("role") for m in side[:n]] == [m.get("role") for m in prompt]:
        rest = side[n:]  # the prompt repeated with small differences (whitespace): keep the final turn
    else:
        rest = side
    if len(rest) != 1 or rest[0].get("role") != "assistant":
        roles = [m.get("role") for m in rest]
        raise Reject("bad_completion", f"'{key}' must add exactly one assistant message to the prompt, got {roles}")
    return rest


def _pair(source: str, raw: RawRecord, system: str, prompt: list[Turn], sides: tuple[Turn, Turn]) -> Preference:
    return Preference(
        unique_trajectory_id=record_id(source, raw),
        source=source,
        task_instruction=system,
        tools=parse_tools(raw.obj.get("tools")),
        conversation=prompt,
        chosen=sides[0],
        rejected=sides[1],
    )


class DpoTrl(Converter):
    name = "dpo-trl"
    description = "TRL preference pairs {prompt?, chosen, rejected}: strings or conversational message lists"
    default_source = "trl-preference"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping) or "conversations" in obj or "conversation" in obj:
            return 0.0
        if "completion" in obj and isinstance(obj.get("label"), bool):
            return 0.6  # TRL unpaired preference (KTO): claimed here to be rejected
        chosen, rejected = obj.get("chosen"), obj.get("rejected")
        if not (isinstance(chosen, (str, list)) and isinstance(rejected, (str, list))):
            return 0.0
        return 0.9 if "prompt" in obj or isinstance(chosen, list) else 0.6

    def convert(self, raw: RawRecord) -> Iterable[Preference]:
        obj = raw.obj
        reject_kto(obj)
        chosen = _messages(require(obj, "chosen", (str, list)), "chosen", "assistant")
        rejected = _messages(require(obj, "rejected", (str, list)), "rejected", "assistant")
        if obj.get("prompt") is not None:
            prompt = _messages(obj["prompt"], "prompt", "user")
        else:  # implicit prompt: the messages both sides share
            n = 0
            while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
                n += 1
            prompt = chosen[:n]
        chosen, rejected = _completion(chosen, prompt, "chosen"), _completion(rejected, prompt, "rejected")
        system, turns = messages_to_turns(prompt + chosen, label="prompt+chosen")
        _, rejected_turns = messages_to_turns(prompt + rejected, label="prompt+rejected")
        rec = _pair(self.source_for(raw), raw, system, turns[:-1], (turns[-1], rejected_turns[-1]))
        rec.meta = {k: obj[k] for k in ("prompt_id", "score_chosen", "score_rejected") if obj.get(k) is not None}
        return [rec]


class DpoLlamaFactory(Converter):
    name = "dpo-llamafactory"
    description = "LLaMA-Factory DPO pairs: sharegpt ranking (conversations+chosen+rejected) or v1 *_messages"
    default_source = "llamafactory-dpo"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping):
            return 0.0
        if isinstance(obj.get("chosen_messages"), list) and isinstance(obj.get("rejected_messages"), list):
            return 0.95
        if is_chat(obj.get("conversations"), "from", "value") and isinstance(obj.get("chosen"), Mapping):
            return 0.95 if "from" in obj["chosen"] and isinstance(obj.get("rejected"), Mapping) else 0.0
        return 0.0

    def convert(self, raw: RawRecord) -> Iterable[Preference]:
        obj = raw.obj
        source = self.source_for(raw)
        if "chosen_messages" in obj:
            chosen = require(obj, "chosen_messages", list)
            rejected = require(obj, "rejected_messages", list)
            if not chosen or not rejected:
                raise Reject("bad_completion", "chosen_messages/rejected_messages is empty")
            diff = next((i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1], strict=False)) if a != b), None)
            if diff is not None or len(chosen) != len(rejected):
                where = f"message {diff}" if diff is not None else "length"
                raise Reject(
                    "prompt_mismatch",
                    f"chosen_messages and rejected_messages differ before the end ({where})",
                )
            for key, msgs in (("chosen_messages", chosen), ("rejected_messages", rejected)):
                if not isinstance(msgs[-1], Mapping) or msgs[-1].get("role") != "assistant":
                    raise Reject("bad_completion", f"{key}: the last message must be an assistant message")
            system, turns = convert_messages(chosen, "chosen_messages")
            _, rejected_turns = convert_messages(rejected, "rejected_messages")
            return [_pair(source, raw, system, turns[:-1], (turns[-1], rejected_turns[-1]))]
        convs = require(obj, "conversations", list)
        sides = []
        for key in ("chosen", "rejected"):
            side = require(obj, key, Mapping)
            system, turns = conversations_to_turns([*convs, side], label=f"conversations+{key}")
            _, prompt = conversations_to_turns(convs)
            if len(turns) != len(prompt) + 1 or turns[-1].role != "assistant":
                raise Reject("bad_completion", f"'{key}' does not add one assistant turn after the conversation")
            sides.append(turns[-1])
        return [_pair(source, raw, top_level_system(obj, system), prompt, (sides[0], sides[1]))]
