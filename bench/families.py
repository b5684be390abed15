"""What each model family's own chat template makes of every tool-call record in tests/data.

For every family of tests/families.py (real tokenizer + real chat template, assembled offline), the records
with tool calls converted from the sample files in TOOL_CALL_FILES are encoded one by one with
`SampleEncoder` (collate.chat_template: tokenizer, the family's collate options, seq_length large enough that
nothing is truncated), and the outcome of each is counted:
  - records_in: records with at least one tool call;
  - samples: whole (the template's rendering of the whole conversation), per_turn (one sample per trained
    turn of a record split because the template rewrites earlier turns once later ones follow), spliced
    (a turn's inference prompt + its reply, for templates whose history changes once a reply follows);
  - records: whole (one sample), split (one or more per-turn samples), no_sample (all rejected);
  - rejected: samples (records, or turns of split records) the template cannot express exactly, by reason;
  - boundary_straddles: trained spans whose first or last token reaches into the prompt;
  - tokens / trained_tokens of the samples, seconds (model folder + encoding).
Prints one JSON object per family, one line each.

    python bench/families.py [--families llama-3.1,qwen3] [--seq-length N] [--examples]

--examples adds the first reject of each reason (sample id and detail) to each family's object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.families import FAMILIES, collate_options, model_folder  # noqa: E402
from xlam_hpc.collate import CollateConfig, SampleEncoder, load_tokenizer  # noqa: E402
from xlam_hpc.convert import ConvertConfig, convert_files  # noqa: E402
from xlam_hpc.schema import Trajectory, decode_record  # noqa: E402

DATA = ROOT / "tests" / "data"
TOOL_CALL_FILES = [
    "api_bank/lv1-lv2-samples/level-1-given-desc/AddAgenda-AddAlarm-GetUserToken-level-2-1.jsonl",
    "api_bank/lv1-lv2-samples/level-1-given-desc/QueryStock-OpenBankAccount-level-2-1.jsonl",
    "api_bank/lv1-lv2-samples/level-2-toolsearcher/BookHotel-level-3-1.jsonl",
    "api_bank/test-data/level-1-api.sel.json",
    "api_bank/test-data/level-2-response.sel.json",
    "api_bank/test-data/level-3.head3.json",
    "api_bank/training-data/lv3-api-train.sel.json",
    "fireact_hotpotqa_react/alpaca_format_hotpotqa.head10.json",
    "fireact_hotpotqa_react/gpt_format_hotpotqa.head20.jsonl",
    "fireact_hotpotqa_react/gpt_format_multitask_multimethod.head20.jsonl",
    "glaive_v2/glaive_v2_sample.jsonl",
    "hermes_function_calling_v1/hermes_fc_v1_card_examples.json",
    "llamafactory_sharegpt_glaive_toolcall/glaive_toolcall_en_demo.head20.json",
    "llamafactory_v1_messages_reason_tool_use/reason_tool_use_demo_50.head13.jsonl",
    "openai_messages/openai_sample.jsonl",
    "react_prompts_hotpotqa_alfworld_webshop/alfworld.json",
    "react_prompts_hotpotqa_alfworld_webshop/fever.json",
    "react_prompts_hotpotqa_alfworld_webshop/prompts_naive.json",
    "react_prompts_hotpotqa_alfworld_webshop/webshop_prompts_from_notebook.json",
    "react_prompts_hotpotqa_alfworld_webshop/webshop_react_run_log_episodes.head6.jsonl",
    "toolalpaca/toolalpaca-7b-sim.toolsets0-3.json",
    "toolbench/answer/G1_answer/11_ChatGPT_DFS_woFilter_w2.json",
    "toolbench/answer/G2_answer/127_ChatGPT_DFS_woFilter_w2.json",
    "toolbench/raw_answer_v1/82217_ChatGPT_CoT@1.json",
    "toolbench/toolllama_processed/G1_demo_DFS_woFilter_w2.json",
    "xlam_actionstudio_unified_v2/criticlam_example_trajectories.json",
    "xlam_fc/xlam_fc_sample.jsonl",
]
"""Every sample file in tests/data whose converted records hold tool calls (others are skipped)."""


def tool_call_records(work: Path) -> list[Trajectory]:
    out = work / "records.jsonl"
    inputs = [str(DATA / f) for f in TOOL_CALL_FILES]
    convert_files(ConvertConfig(inputs=inputs, output=str(out), progress=False), log=lambda m: None)
    records = [decode_record(line) for line in out.read_bytes().splitlines()]
    return [r for r in records if isinstance(r, Trajectory) and any(t.tool_calls for t in r.conversation)]


def family_report(family: str, records: list[Trajectory], work: Path, seq_length: int, examples: bool) -> dict:
    start = time.perf_counter()
    tok = load_tokenizer(str(model_folder(family, work / "models")))
    options = collate_options(family)
    enc = SampleEncoder(tok, CollateConfig(seq_length=seq_length, **options))
    samples: Counter[str] = Counter()
    outcome: Counter[str] = Counter()
    tokens = trained = 0
    first_reject: dict[str, tuple[str, str]] = {}
    for rec in records:
        before = Counter(enc.stats)
        enc.reject_examples.clear()  # per record: the encoder keeps only the first few
        out = enc.encode_sft([(rec.unique_trajectory_id, rec)])
        delta = Counter(enc.stats)
        delta.subtract(before)
        spliced = delta["spliced_reply"]
        split = delta["split_per_turn"] > 0
        samples["spliced"] += spliced
        samples["per_turn" if split else "whole"] += len(out) - spliced
        outcome["split" if split else "whole"] += bool(out)
        outcome["no_sample"] += not out
        tokens += sum(len(s) for s in out)
        trained += sum(int(s.train_mask.sum()) for s in out)
        for sid, detail in enc.reject_examples:
            first_reject.setdefault(detail.split(":", 1)[0], (sid, detail))
    stats = dict(enc.stats)
    report: dict[str, Any] = {
        "family": family,
        "template": FAMILIES[family]["template"],
        "collate_options": options,
        "records_in": len(records),
        "samples_out": sum(samples.values()),
        "samples": {k: samples[k] for k in ("whole", "per_turn", "spliced")},
        "records": {k: outcome[k] for k in ("whole", "split", "no_sample")},
        "rejected": {k.removeprefix("rejected_"): v for k, v in sorted(stats.items()) if k.startswith("rejected_")},
        "boundary_straddles": stats.get("boundary_straddles", 0),
        "truncated": stats.get("truncated", 0),
        "dropped": {k.removeprefix("dropped_"): v for k, v in sorted(stats.items()) if k.startswith("dropped_")},
        "tokens": tokens,
        "trained_tokens": trained,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if examples:
        report["reject_examples"] = {reason: f"{sid}: {detail}" for reason, (sid, detail) in first_reject.items()}
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, from tests/families.py")
    ap.add_argument("--seq-length", type=int, default=65536, help="large: nothing is truncated")
    ap.add_argument("--examples", action="store_true", help="first reject of each reason, with its detail")
    args = ap.parse_args()
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        sys.exit(f"unknown families {unknown}; known: {sorted(FAMILIES)}")
    logging.disable(logging.WARNING)  # the encoder logs the first reject of each reason; counted below
    with tempfile.TemporaryDirectory(prefix="bench-families-") as tmp:
        work = Path(tmp)
        records = tool_call_records(work)
        for family in families:
            print(json.dumps(family_report(family, records, work, args.seq_length, args.examples)), flush=True)


if __name__ == "__main__":
    main()
