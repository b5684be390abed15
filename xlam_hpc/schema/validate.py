"""Semantic checks on unified records, beyond what the types express.

Rules (each failure is a `RecordInvalid` whose `reason` is a short stable code used in summaries):
- the conversation is non-empty, starts with a user turn and contains an assistant turn;
- turns alternate sensibly: user → assistant; assistant with calls → tool turns answering them;
  tool turns → more tool turns or an assistant; assistant without calls → user;
- tool-call ids are unique, and every call is answered by a tool turn before the next assistant turn,
  unless its assistant turn is the last turn;
- arguments are objects; a JSON string is parsed, invalid JSON is a rejection;
- call names exist in `tools` when tools are given;
- only assistant turns carry `reasoning`, and reasoning alone is not a reply (content or calls needed).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from xlam_hpc.schema.types import Preference, Trajectory, Turn

__all__ = ["RecordInvalid", "decode_record", "validate_preference", "validate_trajectory"]

_json = msgspec.json.Decoder()


class RecordInvalid(ValueError):
    """A record breaks the schema; `reason` is a stable code, the message explains."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _parse_arguments(turn_idx: int, call_id: str, args: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(args, dict):
        return args
    text = args.strip()
    if not text:
        return {}
    try:
        parsed = _json.decode(text)
    except msgspec.DecodeError as exc:
        raise RecordInvalid(
            "arguments_invalid_json",
            f"turn {turn_idx}: arguments of call '{call_id}' are not valid JSON ({exc})",
        ) from None
    if not isinstance(parsed, dict):
        raise RecordInvalid(
            "arguments_not_object",
            f"turn {turn_idx}: arguments of call '{call_id}' must be an object, got {type(parsed).__name__}",
        )
    return parsed


def _check_turns(conv: list[Turn], tool_names: set[str], *, allow_open_end: bool) -> None:
    """Shared rules for a conversation (a trajectory, or a DPO prompt plus one continuation)."""
    if not conv:
        raise RecordInvalid("empty_conversation", "conversation is empty")
    if conv[0].role != "user":
        raise RecordInvalid("bad_role_order", f"turn 0: conversation must start with a user turn, got {conv[0].role}")
    seen_ids: set[str] = set()
    pending: dict[str, str] = {}  # call id -> name, waiting for a tool turn
    prev: Turn | None = None
    for i, turn in enumerate(conv):
        if turn.reasoning and turn.role != "assistant":
            raise RecordInvalid("reasoning_not_assistant", f"turn {i}: only assistant turns carry reasoning")
        if turn.role == "assistant":
            if not turn.content.strip() and not turn.tool_calls:
                raise RecordInvalid(
                    "empty_assistant_turn", f"turn {i}: assistant turn has neither content nor tool_calls"
                )
            if pending:
                raise RecordInvalid(
                    "unanswered_tool_call",
                    f"turn {i}: tool call(s) {sorted(pending)} were never answered by a tool turn",
                )
            if prev is not None and prev.role == "assistant":
                raise RecordInvalid("bad_role_order", f"turn {i}: two assistant turns in a row")
            for call in turn.tool_calls:
                if not call.id:
                    raise RecordInvalid("missing_call_id", f"turn {i}: tool call '{call.name}' has an empty id")
                if call.id in seen_ids:
                    raise RecordInvalid("duplicate_call_id", f"turn {i}: tool call id '{call.id}' is used twice")
                seen_ids.add(call.id)
                if tool_names and call.name not in tool_names:
                    raise RecordInvalid(
                        "unknown_tool", f"turn {i}: call to '{call.name}' but tools are {sorted(tool_names)}"
                    )
                call.arguments = _parse_arguments(i, call.id, call.arguments)
                pending[call.id] = call.name
        elif turn.role == "tool":
            if prev is None or prev.role not in ("assistant", "tool"):
                raise RecordInvalid("bad_role_order", f"turn {i}: tool turn does not follow an assistant tool call")
            if turn.tool_call_id is None or turn.tool_call_id not in pending:
                raise RecordInvalid(
                    "unmatched_tool_turn",
                    f"turn {i}: tool turn answers '{turn.tool_call_id}', which is not a pending call "
                    f"(pending: {sorted(pending)})",
                )
            called = pending.pop(turn.tool_call_id)
            if turn.name is not None and turn.name != called:
                raise RecordInvalid(
                    "tool_name_mismatch",
                    f"turn {i}: tool turn named '{turn.name}' answers a call to '{called}'",
                )
            turn.name = called
        else:  # user
            if prev is not None and prev.role == "user":
                raise RecordInvalid("bad_role_order", f"turn {i}: two user turns in a row")
            if pending:
                raise RecordInvalid(
                    "unanswered_tool_call",
                    f"turn {i}: tool call(s) {sorted(pending)} were never answered by a tool turn",
                )
        prev = turn
    if pending and not (allow_open_end and conv[-1].role == "assistant"):
        raise RecordInvalid(
            "unanswered_tool_call", f"tool call(s) {sorted(pending)} were never answered by a tool turn"
        )


def _check_common(rec: Trajectory | Preference) -> set[str]:
    if not rec.unique_trajectory_id.strip():
        raise RecordInvalid("missing_id", "unique_trajectory_id is empty")
    if not rec.source.strip():
        raise RecordInvalid("missing_source", "source is empty")
    if rec.score is not None and not math.isfinite(rec.score):
        raise RecordInvalid("bad_score", f"score must be a finite number, got {rec.score}")
    names = [t.name for t in rec.tools]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise RecordInvalid("duplicate_tool", f"tools define {dup} more than once")
    return set(names)


def validate_trajectory(rec: Trajectory) -> Trajectory:
    """Check and normalize (JSON-string arguments are parsed in place). Raises RecordInvalid."""
    names = _check_common(rec)
    _check_turns(rec.conversation, names, allow_open_end=True)
    if not any(t.role == "assistant" for t in rec.conversation):
        raise RecordInvalid("no_assistant_turn", "conversation has no assistant turn (nothing to train on)")
    return rec


def validate_preference(rec: Preference) -> Preference:
    """Check a DPO pair: the prompt ends with user/tool, both continuations are valid assistant turns."""
    names = _check_common(rec)
    if not rec.conversation or rec.conversation[-1].role == "assistant":
        raise RecordInvalid("bad_prompt", "preference prompt must end with a user or tool turn")
    for side in ("chosen", "rejected"):
        turn: Turn = getattr(rec, side)
        if turn.role != "assistant":
            raise RecordInvalid("bad_preference_turn", f"{side} must be an assistant turn, got {turn.role}")
        _check_turns([*rec.conversation, turn], names, allow_open_end=True)
    _check_turns(rec.conversation, names, allow_open_end=False)
    if rec.chosen == rec.rejected:
        raise RecordInvalid("identical_pair", "chosen and rejected are identical")
    return rec


_decoders = {
    Trajectory: msgspec.json.Decoder(Trajectory),
    Preference: msgspec.json.Decoder(Preference),
}


def _decode_bytes(raw: bytes) -> Trajectory | Preference:
    # A "chosen" key marks a pair; the substring may also be a plain value, so fall back on failure.
    if b'"chosen"' in raw:
        try:
            return _decoders[Preference].decode(raw)
        except msgspec.ValidationError:
            pass
    return _decoders[Trajectory].decode(raw)


def decode_record(data: bytes | str | dict[str, Any]) -> Trajectory | Preference:
    """Decode and validate one unified record (JSON bytes/str or a dict). Raises RecordInvalid."""
    try:
        if isinstance(data, dict):
            kind = Preference if "chosen" in data else Trajectory
            rec = msgspec.convert(data, type=kind)
        else:
            raw = data.encode() if isinstance(data, str) else data
            rec = _decode_bytes(raw)
    except msgspec.ValidationError as exc:
        raise RecordInvalid("schema", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise RecordInvalid("invalid_json", str(exc)) from None
    except UnicodeDecodeError as exc:
        raise RecordInvalid("invalid_utf8", f"not UTF-8 at byte {exc.start}") from None
    if isinstance(rec, Preference):
        return validate_preference(rec)
    return validate_trajectory(rec)
