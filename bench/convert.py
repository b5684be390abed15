"""Throughput of `xlam-hpc convert` and `xlam-hpc shard` against a bare `json.loads` baseline.

Generates a synthetic ShareGPT function-calling corpus (default 100k records) in a temp dir by perturbing
the 20 LLaMA-Factory glaive_toolcall records in tests/data (words swapped, numbers and argument values
changed, so no two records have the same text; tool definitions are shared as in the real dataset), then
measures in one run:
  (a) baseline: `json.loads` of every line, nothing else;
  (b) convert: `convert_files(format="sharegpt", progress=False)` (read, convert, validate, write);
  (c) shard: `write_shards` on the converted output (decode + validate, tar shards, member index, sha256).
Prints ONE JSON object (records/s, seconds, ratios to the baseline, python/platform info) to stdout.

    python bench/convert.py [--records N] [--samples-per-shard K] [--profile]

--profile re-runs the shard stage under cProfile after the timed runs and adds the top functions to the JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xlam_hpc.convert import ConvertConfig, convert_files  # noqa: E402
from xlam_hpc.shard import ShardConfig, write_shards  # noqa: E402

GLAIVE = ROOT / "tests" / "data" / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json"
# words swapped into the texts
_VOCAB = (
    "please quickly also maybe exactly really today tomorrow again first next other some many "
    "few new old large small local remote simple detailed recent current weekly monthly additional different"
)
_WORDS = _VOCAB.split()


def _perturb_text(text: str, rng: random.Random, i: int) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 12)):  # ~8% of the words replaced
        words[rng.randrange(len(words))] = rng.choice(_WORDS)
    return " ".join(words) + f" (ref {i})"


def _perturb_value(value: Any, rng: random.Random, i: int) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value + rng.randrange(100)
    if isinstance(value, float):
        return round(value * rng.uniform(0.5, 1.5), 2)
    if isinstance(value, str):
        return f"{value} {rng.choice(_WORDS)} {i}" if value else value
    if isinstance(value, list):
        return [_perturb_value(v, rng, i) for v in value]
    if isinstance(value, dict):
        return {k: _perturb_value(v, rng, i) for k, v in value.items()}
    return value


def _perturb_json_text(text: str, rng: random.Random, i: int) -> str:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _perturb_text(text, rng, i)
    return json.dumps(_perturb_value(data, rng, i), ensure_ascii=False)


def _variant(base: dict[str, Any], rng: random.Random, i: int) -> dict[str, Any]:
    convs = []
    for turn in base["conversations"]:
        role, value = turn["from"], turn["value"]
        if role == "function_call":
            call = json.loads(value)
            call["arguments"] = _perturb_value(call.get("arguments", {}), rng, i)
            value = json.dumps(call, ensure_ascii=False)
        elif role == "observation":
            value = _perturb_json_text(value, rng, i)
        else:
            value = _perturb_text(value, rng, i)
        convs.append({"from": role, "value": value})
    return {"conversations": convs, "tools": base["tools"]}


def generate(path: Path, n: int, seed: int) -> dict[str, Any]:
    bases = json.loads(GLAIVE.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    with_calls = 0
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            base = bases[i % len(bases)]
            with_calls += any(t["from"] == "function_call" for t in base["conversations"])
            f.write(json.dumps(_variant(base, rng, i), ensure_ascii=False) + "\n")
    return {"records_with_calls": with_calls, "bytes": path.stat().st_size}


def baseline(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        for line in f:
            json.loads(line)
            n += 1
    return n


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process): CPU time is less sensitive to a busy machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _stage(n: int, wall: float, cpu: float) -> dict[str, float]:
    return {
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "records_per_s": round(n / wall, 1),
        "records_per_cpu_s": round(n / cpu, 1),
    }


def _ratio(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {
        "wall": round(a["records_per_s"] / b["records_per_s"], 4),
        "cpu": round(a["records_per_cpu_s"] / b["records_per_cpu_s"], 4),
    }


# Stages of write_shards: (label, file name, function name) whose cumulative time is reported by --profile.
_SHARD_STAGES = [
    ("read: iter_raw (readline + json.loads to dict)", "reader.py", "iter_raw"),
    ("decode_record(dict): msgspec.convert + validate_trajectory", "validate.py", "decode_record"),
    ("encode_record (msgspec encode)", "__init__.py", "encode_record"),
    ("tar write: webdataset TarWriter.write -> tarfile.addfile", "writer.py", "write"),
    ("member index fallback scan (0 unless an offset prediction missed)", "writer.py", "build_member_index"),
    ("sha256_file of each member index (shards are hashed while written)", "files.py", "sha256_file"),
    ("np.save of the member index", "_npyio_impl.py", "save"),
]


def _profile_shards(converted: Path, out: Path, per_shard: int, top: int = 12) -> dict[str, Any]:
    prof = cProfile.Profile()
    prof.enable()
    write_shards(ShardConfig(inputs=[str(converted)], output_dir=str(out), samples_per_shard=per_shard, progress=False))
    prof.disable()
    raw = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = max(ct for (_cc, _nc, _tt, ct, _callers) in raw.values())
    stages = {}
    for label, file, fn in _SHARD_STAGES:
        cum = sum(v[3] for (f, _line, name), v in raw.items() if name == fn and Path(f).name == file)
        stages[label] = {"cumtime_s": round(cum, 3), "share": round(cum / total, 3)}
    rows = [
        {"function": f"{Path(f).name}:{line}:{name}", "calls": nc, "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)}
        for (f, line, name), (_cc, nc, tt, ct, _callers) in raw.items()
    ]
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return {"total_s_under_profiler": round(total, 3), "stages": stages, "top_tottime": rows[:top]}


def _versions() -> dict[str, str]:
    out = {}
    for name in ("xlam-hpc", "msgspec", "webdataset", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="add a cProfile of the shard stage")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="xlam-bench-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "glaive_synthetic.jsonl"
        info, gen_s, _ = _timed(lambda: generate(corpus, args.records, args.seed))

        n_base, base_s, base_cpu = _timed(lambda: baseline(corpus))

        converted = tmp / "unified.jsonl"
        cfg = ConvertConfig(inputs=[str(corpus)], output=str(converted), format="sharegpt", progress=False)
        conv, conv_s, conv_cpu = _timed(lambda: convert_files(cfg, log=lambda _msg: None))

        shard_cfg = ShardConfig(
            inputs=[str(converted)],
            output_dir=str(tmp / "shards"),
            samples_per_shard=args.samples_per_shard,
            progress=False,
        )
        shard, shard_s, shard_cpu = _timed(lambda: write_shards(shard_cfg))
        n_unified, unified_s, unified_cpu = _timed(lambda: baseline(converted))

        base = _stage(n_base, base_s, base_cpu)
        conv_stage = _stage(conv.read, conv_s, conv_cpu)
        shard_stage = _stage(shard.written, shard_s, shard_cpu)
        result: dict[str, Any] = {
            "bench": "convert",
            "corpus": {
                "records": args.records,
                "records_with_function_calls": info["records_with_calls"],
                "bytes": info["bytes"],
                "source": str(GLAIVE.relative_to(ROOT)) + " (perturbed)",
                "generate_seconds": round(gen_s, 3),
            },
            "baseline_json_loads": {
                "records": n_base,
                **base,
                "mb_per_s": round(info["bytes"] / base_s / 1e6, 1),
            },
            "convert": {
                "read": conv.read,
                "converted": conv.converted,
                "rejected": conv.num_rejected,
                **conv_stage,
                "output_bytes": converted.stat().st_size,
            },
            "shard": {
                "written": shard.written,
                "rejected": sum(shard.rejected.values()),
                "shards": shard.shards,
                "samples_per_shard": args.samples_per_shard,
                "bytes": shard.bytes,
                **shard_stage,
                "baseline_json_loads_of_its_input": _stage(n_unified, unified_s, unified_cpu),
            },
            "ratios": {
                "convert_over_baseline": _ratio(conv_stage, base),
                "shard_over_baseline": _ratio(shard_stage, base),
                "shard_over_convert": _ratio(shard_stage, conv_stage),
            },
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "versions": _versions(),
        }
        if args.profile:
            result["shard_profile"] = _profile_shards(converted, tmp / "shards-prof", args.samples_per_shard)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
