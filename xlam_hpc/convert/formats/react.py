"""ReAct Thought/Action/Observation text trajectories (ReAct prompts and WebShop runs, FireAct).

Sources and layouts:
- https://github.com/ysymyth/ReAct prompts: JSON documents `{prompt_name: text}` (prompts_naive.json
  HotpotQA `Question:`, fever.json `Claim:`, alfworld.json, WebShop notebook prompts). A few-shot prompt
  holds several examples; each becomes one trajectory. Step-numbered (`Thought 1:`/`Action 1:`/
  `Observation 1:`) and un-numbered grammars both parse; text before the first example (FEVER's task
  line) becomes `task_instruction`. ALFWorld text is `> action` lines followed by the observation.
- WebShop run log (ReAct notebook output): `{"episode_index", "printed_log"}`; reward = the
  `Your score (min 0.0, max 1.0): x` observation, else 0 (the notebook scores an unfinished episode 0);
  score = 5 * reward; the final `<n> <avg reward> <success rate> <fail rate>` line goes to meta.
- https://github.com/anchen1011/FireAct: OpenAI `{"messages"}` (observations are user turns starting
  `Observation:`), Alpaca `{"instruction", "input", "output"}` (the whole trajectory in `output`), and
  eval logs (one document `{index: {"traj", "reward", "em", "f1", "gt", "pred"}}`). The closing
  `Episode finished, reward = X` observation is dropped from the conversation: score = 5 if X is
  True/1 else 0, X in meta["reward"].

Representation: thoughts → assistant `reasoning`, actions → one call of a fixed synthesized tool set per
environment (`_TOOLSETS`), observations → tool turns. ALFWorld/WebShop `think` actions are not calls:
the thought becomes the reasoning of the next assistant turn and the env's "OK." reply is dropped.
`finish[x]`/`Finish[x]` (and the `Answer:` of CoT/direct prompts) becomes the final assistant turn with
content `"Final answer: x"` and the thought as reasoning (a template without a reasoning slot renders
`"<thought>\n\nFinal answer: x"`, as these records held before). A trailing thought with no action after
it (a run cut at the step limit) is the content of the last turn: it is the only reply there is.
Examples without actions (CoT / direct-answer prompts) are converted
to that single final turn with no tools (meta["method"] = "cot" / "direct"); act-only prompts give calls
without thoughts (method "act"). A prompt document and an eval log each hold several trajectories: an
example/entry that does not parse is rejected alone as '<position> item k' (k counts the document's
examples across its prompts, or the log's entries, in file order; the message names the prompt and
example, or the entry key) and the others are kept. Elsewhere unparseable text rejects the raw record.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xlam_hpc.convert.base import Converter, FunctionSpec, Reject, ToolCall, Trajectory, Turn, make_id, require
from xlam_hpc.convert.common import add_call, join_thought, object_schema, reward_score, tool_turn
from xlam_hpc.convert.reader import RawRecord

__all__ = ["ReAct"]


def _fn(name: str, arg: str, description: str, arg_description: str) -> FunctionSpec:
    params = object_schema({arg: {"type": "string", "description": arg_description}}, [arg])
    return FunctionSpec(name=name, description=description, parameters=params)


# The fixed tool set of each environment (ReAct/FireAct describe these actions in their prompts).
_TOOLSETS: dict[str, list[FunctionSpec]] = {
    "wikipedia": [
        _fn("search", "entity", "Wikipedia: the entity's first paragraph, else similar entities.", "Entity."),
        _fn("lookup", "keyword", "The next sentence with the keyword in the current passage.", "Keyword."),
    ],
    "google": [_fn("search", "query", "Searches Google and returns a short snippet.", "The search query.")],
    "webshop": [
        _fn("search", "query", "Searches the WebShop catalog (when a search box is shown).", "Keywords."),
        _fn("click", "target", "Clicks a button, product id or option shown on the page.", "The value."),
    ],
    "alfworld": [_fn("act", "action", "One text action in the ALFWorld household.", "E.g. 'go to shelf 1'.")],
}
_ENVS = {  # source name → toolset
    "hotpotqa-react": "wikipedia",
    "fever-react": "wikipedia",
    "fireact-hotpotqa": "google",
    "fireact-multitask": "google",
    "webshop-react": "webshop",
    "alfworld-react": "alfworld",
}
_LABEL = re.compile(r"^(Question|Claim|Thought|Action|Observation|Answer)(?: \d+)?:[ \t]?(.*)$")
_ACTION = re.compile(r"^(\w+)\[(.*)\]$", re.S)
_REWARD = re.compile(r"^Episode finished, reward = (\S+)\s*$")
_SCORE = re.compile(r"Your score \(min 0\.0, max 1\.0\): ([0-9.]+)")
_TOTALS = re.compile(r"\n(\d+) ([0-9.e-]+) ([0-9.e-]+) ([0-9.e-]+)\s*$")


def _pieces(text: str) -> list[list[str]]:
    """[label, text] pairs of a labelled transcript; unlabelled lines continue the previous piece."""
    out: list[list[str]] = []
    for line in text.split("\n"):
        m = _LABEL.match(line)
        if m:
            out.append([m.group(1), m.group(2)])
        elif out:
            out[-1][1] += "\n" + line
        elif line.strip():
            out.append(["Text", line])
    return [[label, body.strip()] for label, body in out]


class _Builder:
    """Turns a stream of (label, text) pieces into a conversation with calls of one toolset."""

    def __init__(self, toolset: str, user: str, where: str) -> None:
        self.tools = {f.name: f for f in _TOOLSETS[toolset]}
        self.turns = [Turn(role="user", content=user)]
        self.where = where
        self.thought = ""
        self.pending: ToolCall | None = None
        self.last_action = ""
        self.outcome: str | None = None
        self.actions = 0  # finish included
        self.calls = 0
        self.has_thought = False

    def feed(self, label: str, text: str) -> None:
        if label == "Thought":
            self.add_thought(text)
        elif label == "Action":
            self.action(text)
        elif label == "Observation":
            self.observation(text)
        elif label == "Answer":
            self.final(text)
        else:
            raise Reject("unexpected_text", f"{self.where}: unexpected {label!r} line: {text[:80]!r}")

    def action(self, text: str) -> None:
        m = _ACTION.match(text.strip())
        name = m.group(1).lower() if m else text.split("[", 1)[0].strip().lower()
        if name == "think":  # not a call; a generation cut by the token limit may lack the "]"
            self.add_thought(m.group(2) if m else text.split("[", 1)[-1])
            self.last_action = "think"
            return
        if m is None:
            raise Reject("unparseable_action", f"{self.where}: action is not name[argument]: {text[:80]!r}")
        self.actions += 1
        if name == "finish":
            self.final(m.group(2).strip())
            return
        if name not in self.tools:
            raise Reject("unknown_action", f"{self.where}: action {name!r} not in {sorted(self.tools)}")
        arg = next(iter(self.tools[name].parameters["properties"]))
        call = add_call(self.turns, name, {arg: m.group(2).strip()})
        self.turns[-1].reasoning = self.thought
        self.thought, self.pending, self.last_action = "", call, name
        self.calls += 1

    def add_thought(self, text: str) -> None:
        self.thought = join_thought(self.thought, text, "\n")
        self.has_thought = True

    def observation(self, text: str) -> None:
        if self.pending is not None:
            self.turns.append(tool_turn(self.pending, text))
            self.pending = None
        elif self.last_action == "finish":
            m = _REWARD.match(text)
            self.outcome = m.group(1) if m else text
        elif self.last_action != "think":  # the env's "OK." after a think is dropped
            raise Reject("orphan_observation", f"{self.where}: observation without an action: {text[:80]!r}")

    def final(self, answer: str) -> None:
        self.turns.append(Turn(role="assistant", content=f"Final answer: {answer}", reasoning=self.thought))
        self.thought, self.pending, self.last_action = "", None, "finish"

    def close(self) -> list[Turn]:
        if self.thought:  # a trailing thought (e.g. a run cut at the step limit)
            self.turns.append(Turn(role="assistant", content=self.thought))
        if len(self.turns) == 1:
            raise Reject("no_actions", f"{self.where}: no action, thought or answer")
        return self.turns


def _method(b: _Builder) -> str:
    if b.calls:
        return "react" if b.has_thought else "act"
    return "cot" if b.has_thought else "direct"


def _prompt_env(text: str) -> str:
    if "Your task is to:" in text and re.search(r"^> ", text, re.M):
        return "alfworld-react"
    if re.search(r"^\s*Webshop\s*$", text, re.M) or ("Instruction:" in text and "[Search]" in text):
        return "webshop-react"
    return "fever-react" if re.search(r"^Claim:", text, re.M) else "hotpotqa-react"


def _alfworld(text: str, where: str) -> _Builder:
    """`> action` lines each followed by the observation; `> think: ...` answered by "OK."."""
    head, _, rest = text.partition("\n>")
    b = _Builder("alfworld", head.strip(), where)
    for block in rest.split("\n>") if rest else []:
        line, _, obs = block.partition("\n")
        action = line.strip()
        if action.startswith("think:"):
            b.add_thought(action[len("think:") :])
            b.last_action = "think"
        else:
            b.action(f"act[{action}]")
            b.observation(obs.strip())
    return b


def _labelled(pieces: list[list[str]], toolset: str, user: str, where: str) -> _Builder:
    b = _Builder(toolset, user, where)
    for label, text in pieces:
        b.feed(label, text)
    return b


class ReAct(Converter):
    name = "react"
    description = "ReAct Thought/Action/Observation text: ReAct prompts, WebShop run logs, FireAct"
    default_source = "react"

    @classmethod
    def sniff(cls, obj: Any) -> float:
        if not isinstance(obj, Mapping) or not obj:
            return 0.0
        if "printed_log" in obj and "episode_index" in obj:
            return 0.95
        msgs = obj.get("messages")
        if isinstance(msgs, list):  # FireAct OpenAI layout: observations come back as user turns
            items = [(m.get("role"), str(m.get("content", ""))) for m in msgs if isinstance(m, Mapping)]
            acts = any(r == "assistant" and "Action:" in c for r, c in items)
            return 0.9 if acts and any(r == "user" and c.startswith("Observation:") for r, c in items) else 0.0
        output = obj.get("output")
        if isinstance(output, str) and "instruction" in obj:
            return 0.85 if re.search(r"^Action: \w+\[", output, re.M) and "\nObservation:" in output else 0.0
        values = list(obj.values())
        if all(isinstance(v, Mapping) and isinstance(v.get("traj"), list) for v in values):
            return 0.9
        if all(isinstance(v, str) for v in values) and any(
            re.search(r"^(Action( \d+)?: \w+\[|> )", v, re.M) for v in values
        ):
            return 0.9
        return 0.0

    def convert(self, raw: RawRecord) -> Iterable[Trajectory | Reject]:
        obj = raw.obj
        if not isinstance(obj, Mapping):
            raise Reject("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
        fireact = "fireact-multitask" if "multitask" in Path(raw.path).name else "fireact-hotpotqa"
        if "printed_log" in obj:
            return [self._webshop_log(raw, obj)]
        if "messages" in obj:
            return [self._messages(raw, require(obj, "messages", list), fireact, None, {})]
        if "output" in obj:
            user, output = require(obj, "instruction", str), require(obj, "output", str)
            extra = obj.get("input")
            b = _labelled(_pieces(output), "google", f"{user}\n{extra}" if extra else user, "output")
            return [self._emit(raw, fireact, b, None, {})]
        if obj and all(isinstance(v, Mapping) for v in obj.values()):
            items = (self._eval_log(raw, key, value, fireact) for key, value in obj.items())
        else:
            items = (t for name, text in obj.items() for t in self._prompt(raw, str(name), text))
        return [_numbered(k, t) for k, t in enumerate(items)]

    def _emit(self, raw: RawRecord, env: str, b: _Builder, native: Any, meta: dict) -> Trajectory:
        source = self.source_override or env
        method = _method(b)
        turns = b.close()
        score = meta.pop("score", None)
        if b.outcome is not None:  # FireAct: "Episode finished, reward = True|False|1|0"
            reward = {"True": True, "False": False}.get(b.outcome, b.outcome)
            with contextlib.suppress(ValueError):
                reward = float(reward) if isinstance(reward, str) else reward
            meta["reward"] = reward
            score = reward_score(reward is True or reward == 1)  # success: 5, else 0
        return Trajectory(
            unique_trajectory_id=make_id(source, raw, native),
            source=source,
            task_instruction=meta.pop("instruction", ""),
            tools=_TOOLSETS[_ENVS[env]] if b.actions else [],
            conversation=turns,
            score=score,
            meta={
                "file": Path(raw.path).name,
                "environment": env.removeprefix("fireact-").removesuffix("-react"),
                "method": method,
                **meta,
            },
        )

    def _messages(self, raw: RawRecord, msgs: list, env: str, native: Any, meta: dict) -> Trajectory:
        if not msgs or not isinstance(msgs[0], Mapping) or msgs[0].get("role") != "user":
            raise Reject("bad_role_order", "messages must start with the user's question")
        b = _Builder(_ENVS[env], str(msgs[0].get("content", "")).strip(), "message 0")
        for i, m in enumerate(msgs[1:], 1):
            if not isinstance(m, Mapping):
                raise Reject("bad_message", f"message {i} is not an object")
            role, content = m.get("role"), str(m.get("content", ""))
            b.where = f"message {i}"
            if role == "assistant":
                for label, text in _pieces(content):
                    b.feed(label, text)
            elif role == "user" and content.startswith("Observation:"):
                b.observation(content[len("Observation:") :].strip())
            else:
                raise Reject("unexpected_message", f"message {i}: {role} message that is not an observation")
        return self._emit(raw, env, b, native, meta)

    def _eval_log(self, raw: RawRecord, key: str, value: Mapping[str, Any], env: str) -> Trajectory | Reject:
        meta = {k: value.get(k) for k in ("em", "f1", "gt", "pred") if k in value}
        traj = value.get("traj")
        if not isinstance(traj, list):
            return Reject("missing_key", f"entry {key!r}: no 'traj' list")
        try:
            return self._messages(raw, traj, env, key, {"original_id": key, **meta})
        except Reject as exc:
            return Reject(exc.reason, f"entry {key!r}: {exc}")

    def _webshop_log(self, raw: RawRecord, obj: Mapping[str, Any]) -> Trajectory:
        log, native = require(obj, "printed_log", str), obj.get("episode_index")
        meta: dict[str, Any] = {"original_id": native}
        totals = _TOTALS.search(log)
        if totals:
            log = log[: totals.start()]
            keys = ("episodes", "avg_reward", "success_rate", "fail_rate")
            meta["run_totals"] = {k: float(v) for k, v in zip(keys, totals.groups(), strict=True)}
        pieces = _pieces(log)
        if len(pieces) < 2 or pieces[0] != ["Action", "reset"] or pieces[1][0] != "Observation":
            raise Reject("missing_reset", "printed_log should start with 'Action: reset' and its observation")
        b = _labelled(pieces[2:], "webshop", pieces[1][1], f"episode {native}")
        scores = _SCORE.findall(log)
        meta["reward"] = float(scores[-1]) if scores else 0.0
        meta["score"] = reward_score(meta["reward"])
        return self._emit(raw, "webshop-react", b, native, meta)

    def _prompt(self, raw: RawRecord, name: str, text: Any) -> list[Trajectory | Reject]:
        """The prompt's examples; a prompt that yields no example at all counts as one rejected item."""
        if not isinstance(text, str):
            return [Reject("wrong_type", f"prompt {name!r} should be a string, got {type(text).__name__}")]
        env, header = _prompt_env(text), ""
        examples = [text]
        if env in ("hotpotqa-react", "fever-react"):  # few-shot: one example per Question/Claim
            header, *examples = re.split(r"^(?=Question:|Claim:)", text.strip("\n"), flags=re.M)
            if not examples:
                return [Reject("no_examples", f"prompt {name!r}: no 'Question:'/'Claim:' example")]
        out: list[Trajectory | Reject] = []
        for k, example in enumerate(examples):
            try:
                out.append(self._example(raw, env, name, k, example=example, header=header))
            except Reject as exc:
                out.append(exc)
        return out

    def _example(self, raw: RawRecord, env: str, name: str, k: int, *, example: str, header: str) -> Trajectory:
        where = f"prompt {name!r} example {k}"
        if env == "alfworld-react":
            b = _alfworld(example, where)
        else:
            pieces = _pieces(example)
            first = pieces.pop(0) if pieces and pieces[0][0] in ("Question", "Claim", "Text") else ["Text", ""]
            if env == "webshop-react":  # the first page (instruction) is the user turn
                while pieces and pieces[0][0] not in ("Action", "Thought"):
                    first[1] += "\n" + pieces.pop(0)[1]
            user = first[1] if first[0] == "Text" else f"{first[0]}: {first[1]}"
            b = _labelled(pieces, _ENVS[env], user, where)
        meta = {"prompt": name, "example": k, "instruction": header.strip()}
        return self._emit(raw, env, b, f"{name}-{k}", meta)


def _numbered(k: int, rec: Trajectory | Reject) -> Trajectory | Reject:
    """A document's k-th item; a Reject gets `item=k` so the pipeline keeps the document's other items."""
    if isinstance(rec, Reject):
        rec.item = k
    return rec
