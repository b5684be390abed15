"""AgentInstruct (AgentTuning) and ETO WebShop SFT dialogs in ShareGPT layout.

Layouts (one record per JSON element / JSONL line):
- AgentInstruct, https://github.com/THUDM/AgentTuning (HF `THUDM/AgentInstruct`):
  `{"id": "<split>_<n>", "conversations": [{"from": "human"|"gpt", "value": str, "loss": null|bool}]}`,
  splits os, db, alfworld, webshop, kg, mind2web.
- The same data as normalized by ADP (https://github.com/neulab/agent-data-protocol):
  `{"id", "conversations": [{"role": "user"|"assistant", "content": str}]}` — ADP dropped the `loss` flag.
- ETO WebShop SFT, https://github.com/Yifan-Song793/ETO (HF `agent-eto/eto-sft-trajectory`):
  `{"id": "webshop_<n>", "conversations": [{from, value}], "reward": 0..1, "source": str}`.

These are text agent dialogs: actions (bash blocks, SQL, KG functions, `search[...]`/`click[...]`) stay in
the assistant text and observations come back as user turns, so turns are kept as user/assistant text
(convention 4). `loss: false` → `Turn(train=False)`. Source: `agentinstruct-<split>` (split from the id
prefix, also in meta["environment"]) or `eto-webshop` (records with a `reward`); ETO score = 5 * reward.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xlam_hpc.convert.base import Converter, Reject, Trajectory, Turn, make_id, require
from xlam_hpc.convert.common import is_number, reward_score
from xlam_hpc.convert.reader import RawRecord

__all__ = ["AgentInstruct"]

_ID = re.compile(r"^(alfworld|db|kg|mind2web|os|webshop)_\d+$")
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _turn_fields(turn: Any, i: int) -> tuple[str, str, Any]:
    """(role, text, loss) of one ShareGPT (`from`/`value`) or ADP (`role`/`content`) turn."""
    if not isinstance(turn, Mapping):
        raise Reject("bad_turn", f"turn {i} is not an object")
    role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
    role = _ROLES.get(str(turn.get(role_key)))
    if role is None:
        raise Reject("unknown_role", f"turn {i}: unknown {role_key} {turn.get(role_key)!r}")
    text = turn.get(text_key)
    if not isinstance(text, str):
        raise Reject("bad_turn", f"turn {i}: '{text_key}' should be a string, got {type(text).__name__}")
    return role, text, turn.get("loss")


class AgentInstruct(Converter):
    name = "agentinstruct"
    description = "AgentInstruct/AgentTuning ShareGPT (also ADP role/content) and ETO WebShop SFT with reward"
    default_source = "agentinstruct"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
            return 0.0
        convs = obj.get("conversations")
        if not _ID.match(obj["id"]) or not isinstance(convs, list) or not convs:
            return 0.0
        first = convs[0]
        if isinstance(first, Mapping) and (first.get("from") in _ROLES or first.get("role") in _ROLES):
            return 0.95
        return 0.0

    def source_for(self, raw: RawRecord) -> str:
        if self.source_override:
            return self.source_override
        obj = raw.obj
        if isinstance(obj, Mapping) and "reward" in obj:
            return "eto-webshop"
        return f"agentinstruct-{self._environment(obj)}"

    @staticmethod
    def _environment(obj: Any) -> str:
        native = obj.get("id") if isinstance(obj, Mapping) else None
        m = _ID.match(native) if isinstance(native, str) else None
        if m is None:
            raise Reject("bad_id", f"'id' should look like '<split>_<n>' (os, db, kg, ...), got {native!r}")
        return m.group(1)

    def convert(self, raw: RawRecord) -> Iterable[Trajectory]:
        obj = raw.obj
        native = require(obj, "id", str)
        env = self._environment(obj)
        convs = require(obj, "conversations", list)
        instruction = ""
        turns: list[Turn] = []
        for i, item in enumerate(convs):
            role, text, loss = _turn_fields(item, i)
            if role == "system":
                if i != 0:
                    raise Reject("late_system_turn", f"turn {i}: system turn after the start of the dialog")
                instruction = text
                continue
            if turns and turns[-1].role == role:
                raise Reject("consecutive_turns", f"turn {i}: two {role} turns in a row")
            # Without a loss field (ADP dropped it, ETO never had one) every assistant turn is trained,
            # including the "OK" acknowledgement of the instruction and AgentInstruct's in-context example.
            turns.append(Turn(role=role, content=text, train=not (role == "assistant" and loss is False)))
        source = self.source_for(raw)
        meta: dict[str, Any] = {"original_id": native, "environment": env, "file": Path(raw.path).name}
        score = None
        if "reward" in obj:
            reward = obj["reward"]
            if not is_number(reward):
                raise Reject("bad_reward", f"'reward' should be a number in 0..1, got {reward!r}")
            score = reward_score(reward)
            meta["reward"] = reward
            meta["score_scale"] = "5 * reward"
            if isinstance(obj.get("source"), str):
                meta["origin"] = obj["source"]
        return [
            Trajectory(
                unique_trajectory_id=make_id(source, raw, native),
                source=source,
                task_instruction=instruction,
                conversation=turns,
                score=score,
                meta=meta,
            )
        ]
