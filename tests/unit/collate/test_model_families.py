"""Real model families (tests/families.py: real tokenizers, real chat templates) on real converted tool-call data.

What the encoder produces is checked against the tokenizer's own `apply_chat_template`, the public API
inference uses: kept samples are the template's rendering (or, for templates that rewrite history, the
inference prompt of a turn plus its reply), trained tokens are exactly the assistant turns, truncation drops
whole turn groups, and every record the template cannot express is counted with a reason.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pytest

from tests.conftest import DATA, write_jsonl
from tests.families import FAMILIES, collate_options, model_folder
from xlam_hpc.collate import CollateConfig, SampleEncoder, load_tokenizer
from xlam_hpc.collate.encode import Sample
from xlam_hpc.collate.messages import reasoning_style, to_hf_messages, tools_json
from xlam_hpc.convert import ConvertConfig, convert_files
from xlam_hpc.schema import Trajectory, Turn, decode_record, encode_record
from xlam_hpc.shard import ShardConfig, write_shards
from xlam_hpc.stream import StreamConfig, build_loader

FILES = [
    "llamafactory_sharegpt_glaive_toolcall/glaive_toolcall_en_demo.head20.json",  # multi-turn, one call per turn
    "xlam_fc/xlam_fc_sample.jsonl",  # parallel calls
    "hermes_function_calling_v1/hermes_fc_v1_card_examples.json",
    "openai_messages/openai_sample.jsonl",  # parallel calls, system prompt, text next to calls
    "llamafactory_v1_messages_reason_tool_use/reason_tool_use_demo_50.head13.jsonl",  # <think>, system prompt
    "toolbench/toolllama_processed/G1_demo_DFS_woFilter_w2.json",  # long system prompt, chains of calls
    "xlam_actionstudio_unified_v2/criticlam_example_trajectories.json",  # long trajectories
]
MULTI_TURN = "sharegpt---glaive_toolcall_en_demo.head20---3"  # 3 user turns, each answered with a call
PARALLEL = "xlam-fc-60k---xlam_fc_sample---1"  # one assistant turn with two calls
TEXT_AND_CALL = "llamafactory-messages---reason_tool_use_demo_50.head13---5"  # text + a call in one turn
SINGLE_TURN = "sharegpt---glaive_toolcall_en_demo.head20---10"  # user, call, result, answer; no system
CRITIC = "xlam-actionstudio---criticlam_example_trajectories---0"  # text + a call in every turn; no system
SEQ_LENGTH = 16384
_THINK = re.compile(r"</?think>")


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[Trajectory]:
    out = tmp_path_factory.mktemp("family-data") / "records.jsonl"
    convert_files(
        ConvertConfig(inputs=[str(DATA / f) for f in FILES], output=str(out), progress=False), log=lambda m: None
    )
    recs = [decode_record(line) for line in out.read_bytes().splitlines()]
    return [r for r in recs if isinstance(r, Trajectory) and any(t.tool_calls for t in r.conversation)]


@dataclass
class Outcome:
    """What encoding one record alone produced."""

    samples: list[Sample]
    stats: Counter[str]
    rejects: list[tuple[str, str]]


@dataclass
class Family:
    name: str
    tok: Any
    options: dict[str, Any]
    eot: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def collate(self, **kw: Any) -> CollateConfig:
        return CollateConfig(**{"seq_length": SEQ_LENGTH, **self.options, **kw})

    def messages(self, rec: Trajectory, turns: list[Turn]) -> list[dict[str, Any]]:
        # Turn.reasoning as the renderer passes it: `reasoning_content` for templates that read it (Qwen3)
        style = reasoning_style(self.tok.chat_template)
        return to_hf_messages(rec.task_instruction, turns, "object", self.options.get("tool_call_ids", "keep"), style)

    def render(self, rec: Trajectory, turns: list[Turn], *, prompt: bool = False) -> str:
        """`apply_chat_template` as inference calls it."""
        return self.tok.apply_chat_template(
            self.messages(rec, turns),
            tools=tools_json(rec.tools) or None,
            add_generation_prompt=prompt,
            tokenize=False,
            **self.options.get("template_kwargs", {}),
        )

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids


def encode_each(enc: SampleEncoder, records: list[Trajectory]) -> dict[str, Outcome]:
    out = {}
    for rec in records:
        before = Counter(enc.stats)
        enc.reject_examples.clear()  # the encoder keeps only the first few; we want each record's
        samples = enc.encode_sft([(rec.unique_trajectory_id, rec)])
        delta = Counter(enc.stats)
        delta.subtract(before)
        out[rec.unique_trajectory_id] = Outcome(samples, +delta, list(enc.reject_examples))
    return out


@pytest.fixture(scope="module")
def families(records, tmp_path_factory) -> Callable[[str], Family]:
    """Family by name, each assembled, loaded and run over the records once per module."""
    root = tmp_path_factory.getbasetemp() / "family-models"  # model_folder reuses folders other modules made
    cache: dict[str, Family] = {}

    def get(name: str) -> Family:
        if name not in cache:
            tok = load_tokenizer(str(model_folder(name, root)))
            fam = Family(name, tok, collate_options(name), FAMILIES[name]["eos"])
            fam.outcomes = encode_each(SampleEncoder(tok, fam.collate()), records)
            cache[name] = fam
        return cache[name]

    return get


@pytest.fixture(params=list(FAMILIES))
def family(request, families) -> Family:
    return families(request.param)


def _decode(tok: Any, ids: np.ndarray) -> str:
    return tok.decode(ids.tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _assistant_positions(turns: list[Turn]) -> list[int]:
    return [i for i, t in enumerate(turns) if t.role == "assistant"]


def _expected(fam: Family, rec: Trajectory, sample: Sample, outcome: Outcome) -> tuple[str, list[tuple[int, int]]]:
    """The sample's text and trained character spans, from apply_chat_template alone (see module docstring)."""
    rid, turns = rec.unique_trajectory_id, rec.conversation
    text = _decode(fam.tok, sample.input_ids)
    assert fam.ids(text) == sample.input_ids.tolist(), "decoding must round-trip for the comparisons below"
    if sample.sample_id == rid and not outcome.stats["spliced_reply"]:
        assert text == fam.render(rec, turns), rid  # the template's rendering of the whole conversation
        spans = []
        for i, t in zip(_assistant_positions(turns), [t for t in turns if t.role == "assistant"], strict=True):
            if not t.train:
                continue
            prompt, full = fam.render(rec, turns[:i], prompt=True), fam.render(rec, turns[: i + 1])
            assert full.startswith(prompt) and text.startswith(full)
            spans.append((len(prompt), len(full.rstrip())))
        return text, spans
    # one turn: the inference prompt of that turn, then the reply as the template writes it
    k = int(sample.sample_id.rpartition("#")[2]) if sample.sample_id != rid else len(_assistant_positions(turns)) - 1
    assert sample.sample_id in (rid, f"{rid}#{k}")
    pos = _assistant_positions(turns)[k]
    prompt, full = fam.render(rec, turns[:pos], prompt=True), fam.render(rec, turns[: pos + 1])
    assert text.startswith(prompt), sample.sample_id
    reply = text[len(prompt) :]
    assert text == full or (outcome.stats["spliced_reply"] and full.endswith(reply)), sample.sample_id
    return text, [(len(prompt), len(text.rstrip()))]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _contains(haystack: str, content: str) -> bool:
    return content in haystack or json.dumps(content, ensure_ascii=False)[1:-1] in haystack


def test_mistral_tekken_ids_equal_mistral_common(families):
    """The built-in 'mistral-tekken' (Nemo) tokenizes rendered samples exactly as mistral-common's Tekkenizer."""
    family = families("mistral-nemo")
    from importlib import resources

    import mistral_common
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    with resources.as_file(resources.files(mistral_common).joinpath("data", "tekken_240718.json")) as path:
        ref = Tekkenizer.from_file(path)
    named = {t["token_str"]: t["rank"] for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS}
    assert {n: family.tok.convert_tokens_to_ids(n) for n in named} == named  # [INST]=3, [TOOL_CALLS]=9, ...
    assert len(family.tok) == ref.n_words == 131072
    split = re.compile("(" + "|".join(re.escape(n) for n in named) + ")")

    def reference(text: str) -> list[int]:  # Tekkenizer.encode reads "[INST]" as plain text: split first
        return [
            i
            for piece in split.split(text)
            if piece
            for i in ([named[piece]] if piece in named else ref.encode(piece, bos=False, eos=False))
        ]

    texts = [_decode(family.tok, s.input_ids) for o in family.outcomes.values() for s in o.samples]
    texts += ["héllo wörld 日本語 😀  \n\n\t 12345 [INST]x[/INST]</s>", "[AVAILABLE_TOOLS][][/AVAILABLE_TOOLS]"]
    assert len(texts) > 10
    for text in texts:
        assert family.ids(text) == reference(text)
    assert family.tok("[INST]hi[/INST]").input_ids == [1, 3, *ref.encode("hi", bos=False, eos=False), 4]


def test_samples_are_what_apply_chat_template_renders(family, records):
    kept = 0
    for rec in records:
        outcome = family.outcomes[rec.unique_trajectory_id]
        for sample in outcome.samples:
            _expected(family, rec, sample, outcome)  # asserts text and ids
            kept += 1
    assert kept >= 6


def test_trained_tokens_are_exactly_the_assistant_turns(family, records):
    backend = family.tok.backend_tokenizer
    for rec in records:
        outcome = family.outcomes[rec.unique_trajectory_id]
        for sample in outcome.samples:
            text, spans = _expected(family, rec, sample, outcome)
            offsets = backend.encode(text, add_special_tokens=False).offsets
            # a token is trained iff it holds a character of an assistant turn's span
            expected = np.array([any(a < e and b > s for s, e in spans) for a, b in offsets])
            assert (sample.train_mask == expected).all(), sample.sample_id
            runs = _runs(sample.train_mask)
            assert len(runs) == len(spans), sample.sample_id
            k = int(sample.sample_id.rpartition("#")[2]) if sample.sample_id != rec.unique_trajectory_id else None
            turns = rec.conversation
            assistant = [turns[i] for i in _assistant_positions(turns)]
            trained = [t for t in assistant if t.train] if k is None else [assistant[k]]
            for (a, b), (s, e), turn in zip(runs, spans, trained, strict=True):
                run = _decode(family.tok, sample.input_ids[a:b])
                assert run == text[s:e] and run.endswith(family.eot), (sample.sample_id, run)
                for piece in _THINK.split(turn.content):
                    assert not piece.strip() or _contains(run, piece.strip()), (sample.sample_id, piece)
                for call in turn.tool_calls:
                    assert call.name in run
                    args = call.arguments if isinstance(call.arguments, dict) else {}
                    assert all(json.dumps(key) in run for key in args), (sample.sample_id, call)
            # user, tool and system text: found in order outside the trained spans, and carries no loss
            trained_chars = np.zeros(len(text), dtype=bool)
            for (a, b), on in zip(offsets, sample.train_mask, strict=True):
                trained_chars[a:b] |= on
            cursor = 0
            system = rec.task_instruction.strip()
            if system:
                at = text.find(system)
                assert at >= 0 and not trained_chars[at : at + len(system)].any()
            for t in turns[: len(turns) if k is None else _assistant_positions(turns)[k]]:
                content = t.content.strip()
                if t.role == "assistant" or not content:
                    continue
                at = text.find(content, cursor)
                if at < 0:  # tool results written through `tojson` (Llama 3.x)
                    content = json.dumps(content, ensure_ascii=False)[1:-1]
                    at = text.find(content, cursor)
                assert at >= 0, (sample.sample_id, t.role)
                assert not trained_chars[at : at + len(content)].any(), (sample.sample_id, t.role)
                cursor = at + len(content)


def test_every_record_is_kept_split_or_counted_as_rejected(family, records):
    allowed = re.compile(r"rejected_\w+|split_per_turn|spliced_reply|boundary_straddles")
    for rec in records:
        rid = rec.unique_trajectory_id
        o = family.outcomes[rid]
        assert all(allowed.fullmatch(k) for k in o.stats), o.stats
        rejected = sum(v for k, v in o.stats.items() if k.startswith("rejected_"))
        assert rejected == len(o.rejects)  # each counted reject comes with its id and reason
        if o.stats["split_per_turn"]:
            trained = [k for k, t in enumerate(t for t in rec.conversation if t.role == "assistant") if t.train]
            assert len(o.samples) + rejected == len(trained)
            assert {s.sample_id for s in o.samples} | {sid for sid, _ in o.rejects} == {f"{rid}#{k}" for k in trained}
        else:
            assert len(o.samples) + rejected == 1
            assert [s.sample_id for s in o.samples] + [sid for sid, _ in o.rejects] == [rid]
    totals = sum((o.stats for o in family.outcomes.values()), Counter())
    reasons = Counter({k: v for k, v in totals.items() if k.startswith("rejected_")})
    if family.name == "qwen2.5":  # writes text next to calls, parallel calls, system prompts: everything
        assert not reasons and not totals["split_per_turn"] and not totals["spliced_reply"]
    if family.name == "qwen3":  # the last turn gets an empty <think> block, earlier ones do not: per turn
        assert not reasons and totals["split_per_turn"] > 10


@pytest.mark.parametrize(
    ("family_name", "rid", "reason", "detail"),
    [
        ("llama-3.1", TEXT_AND_CALL, "drops_assistant_content", "assistant text is not rendered"),
        ("llama-3.1", PARALLEL, "template_error", "only supports single tool-calls"),
        ("llama-3.2", TEXT_AND_CALL, "drops_assistant_content", "assistant text is not rendered"),
        ("llama-3.2", PARALLEL, "template_error", "only supports single tool-calls"),
        ("hermes-3", TEXT_AND_CALL, "drops_assistant_content", "assistant text is not rendered"),
        ("mistral-nemo", CRITIC, "drops_assistant_content", "assistant text is not rendered"),
        ("mistral-nemo", TEXT_AND_CALL, "drops_system", "does not render the system prompt"),
    ],
)
def test_real_rejects_with_their_reasons(families, family_name, rid, reason, detail):
    o = families(family_name).outcomes[rid]
    assert o.stats[f"rejected_{reason}"] >= 1 and not o.samples
    assert any(d.startswith(f"{reason}: ") and detail in d for _, d in o.rejects), o.rejects


def test_mistral_nemo_rejects_any_system_prompt(families, records):
    """Nemo's template writes the system prompt only into a conversation that ends with a user turn, so no
    training sample can hold it: records with one are rejected (`drops_system`), never trained without it."""
    family = families("mistral-nemo")
    rec = next(r for r in records if r.unique_trajectory_id == SINGLE_TURN)
    assert not rec.task_instruction and [s.sample_id for s in family.outcomes[SINGLE_TURN].samples] == [SINGLE_TURN]
    with_system = msgspec.structs.replace(rec, task_instruction="You are a careful assistant.")
    (o,) = encode_each(SampleEncoder(family.tok, family.collate()), [with_system]).values()
    assert not o.samples
    # turn 1 follows a tool result: its prompt has no system prompt; turn 0's full rendering lost it (its
    # prompt ends with the user turn, so only the prompt has it): both are reported as what they are
    assert o.stats == Counter(split_per_turn=1, rejected_drops_system=2)
    with_system_records = [r for r in records if r.task_instruction.strip()]
    assert with_system_records and all(not family.outcomes[r.unique_trajectory_id].samples for r in with_system_records)


def test_truncation_drops_whole_leading_turn_groups(family, records):
    rec = next(r for r in records if r.unique_trajectory_id == MULTI_TURN)
    turns, users = rec.conversation, [i for i, t in enumerate(rec.conversation) if t.role == "user"]
    assert len(users) == 3
    full = family.outcomes[MULTI_TURN].samples
    assert full, "the multi-turn record is kept by every family"
    last = full[-1]  # the whole conversation, or its last turn (per-turn families)
    enc = SampleEncoder(family.tok, family.collate(seq_length=len(last) - 1))
    (o,) = encode_each(enc, [rec]).values()
    cut = {s.sample_id: s for s in o.samples}[last.sample_id]
    assert len(cut) < len(last) and o.stats["truncated"] >= 1 and o.stats["turns_truncated"] >= users[1]
    # the kept sample is the template's rendering of the conversation without its first turn group: the
    # system/tools prefix is written again in front of the second user turn
    kept = msgspec.structs.replace(rec, conversation=turns[users[1] :])
    kept_id = cut.sample_id
    if kept_id != MULTI_TURN:  # per turn: the turn's index within the kept conversation
        dropped = sum(t.role == "assistant" for t in turns[: users[1]])
        kept_id = f"{MULTI_TURN}#{int(kept_id.rpartition('#')[2]) - dropped}"
    kept_sample = Sample(kept_id, cut.input_ids, cut.train_mask)
    text, spans = _expected(family, kept, kept_sample, o)
    assert all(f.name in text for f in rec.tools) and turns[users[0]].content not in text
    assert turns[users[1]].content in text[: spans[0][0]]
    assert len(_runs(cut.train_mask)) == len(spans)


def test_mistral_nemo_needs_alnum9_call_ids_and_says_so(families, records):
    family = families("mistral-nemo")
    enc = SampleEncoder(family.tok, family.collate(tool_call_ids="keep"))
    outcomes = encode_each(enc, records)
    nine = re.compile(r"[0-9A-Za-z]{9}")  # the shape the template accepts (criticlam's ids happen to have it)
    for rec in records:
        ids = [c.id for t in rec.conversation for c in t.tool_calls]
        if not all(nine.fullmatch(i) for i in ids):
            assert not outcomes[rec.unique_trajectory_id].samples, rec.unique_trajectory_id
    assert enc.stats["rejected_template_error"] > len(records) // 2
    assert any("alphanumeric strings with length 9" in d for o in outcomes.values() for _, d in o.rejects)


def test_packing_and_exact_resume_with_a_family_tokenizer(families, records, tmp_path):
    """Qwen3: a family tokenizer, and records split into one sample per turn inside the loader."""
    family = families("qwen3")
    src = write_jsonl(tmp_path / "records.jsonl", [encode_record(r).decode() for r in records])
    write_shards(
        ShardConfig(inputs=[str(src)], output_dir=str(tmp_path / "shards"), samples_per_shard=5, progress=False)
    )
    stream = StreamConfig(shards=[str(tmp_path / "shards")], global_batch_size=4)
    collate = family.collate(seq_length=4096, packing=True)
    first = build_loader(stream, collate, family.tok, seed=3)
    done = [next(first) for _ in range(2)]
    state = json.loads(json.dumps(first.state_dict()))
    want = [next(first) for _ in range(3)]
    assert sum(b["num_loss_tokens"] for b in done + want) > 0
    assert any("#" in sid for b in done + want for sid in b["sample_ids"])  # per-turn samples, packed
    second = build_loader(stream, collate, family.tok, seed=3)
    second.load_state_dict(state)
    for w, got in zip(want, [next(second) for _ in range(3)], strict=True):
        assert got["drawn_ids"] == w["drawn_ids"]
        for key in ("input_ids", "labels", "position_ids"):
            assert (got[key] == w[key]).all(), key


def test_qwen3_reasoning_is_trained_in_its_turn_and_left_out_of_later_history(families):
    """Qwen3 keeps <think> reasoning only after the last user query; a turn's own reasoning is trained, earlier
    turns' reasoning is absent from later prompts, as at inference, and that is no reject."""
    fam = families("qwen3")
    turns = []
    for k in range(3):
        turns += [
            Turn(role="user", content=f"question {k}"),
            Turn(role="assistant", content=f"<think>\nreason {k}\n</think>\n\nanswer {k}"),
        ]
    rec = Trajectory(unique_trajectory_id="think", source="s", conversation=turns)
    enc = SampleEncoder(fam.tok, fam.collate())
    samples = enc.encode_sft([("think", rec)])
    assert [s.sample_id for s in samples] == ["think#0", "think#1", "think#2"]
    assert not any(k.startswith("rejected_") for k in enc.stats)
    for k, s in enumerate(samples):
        (run,) = _runs(s.train_mask)
        trained = _decode(fam.tok, s.input_ids[run[0] : run[1]])
        assert trained == f"<think>\nreason {k}\n</think>\n\nanswer {k}<|im_end|>"
        history = _decode(fam.tok, s.input_ids[: run[0]])
        assert all(f"reason {j}" not in history and f"answer {j}" in history for j in range(k))
