"""Hostile and mistaken input, one table: every case runs the real `xlam-hpc` command in-process on real files
and asserts a clear one-line message naming the file and the line or record at fault, never a traceback, and
(where records are involved) that the good records around the bad one are kept and the bad one is counted.

Two kinds of case:
- Reject: the command succeeds, the bad record is a row of the reject file (file, position, reason, message)
  and the good records are in the output.
- Error: the whole input is unusable (a directory, UTF-16, a raw file for `shard`, a typo in a recipe): the
  command exits 2 with `xlam-hpc CMD: error: FILE...: what is wrong` on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DATA, make_record
from xlam_hpc.cli import main

XLAM_FC = DATA / "xlam_fc" / "xlam_fc_sample.jsonl"
GLAIVE = DATA / "llamafactory_sharegpt_glaive_toolcall" / "glaive_toolcall_en_demo.head20.json"
RECIPE = Path(__file__).parents[2] / "configs" / "recipes" / "sft-tiny-local.yaml"
DEEP = "[" * 50_000 + "]" * 50_000


@dataclass
class Reject:
    """The command succeeds; `rows` are (position, reason, message part) of the reject file, in order."""

    argv: list[str]
    rejects: Path
    file: Path
    rows: list[tuple[str, str, str]]
    kept: tuple[Path, int]
    """(output JSONL, number of good records in it), or (shard dir, samples in its manifest)."""


@dataclass
class Error:
    """The command fails with one line `xlam-hpc CMD: error: ...` holding each of `parts` (the file first)."""

    argv: list[str]
    parts: list[str]
    rc: int = 2
    rejects: tuple[Path, str, str, str] | None = None
    """Also the first reject row (file, position, reason, message part) when the records were read."""


CASES: dict[str, Callable[[Path], Reject | Error]] = {}


def case(fn: Callable[[Path], Reject | Error]) -> Callable[[Path], Reject | Error]:
    CASES[fn.__name__] = fn
    return fn


# --- inputs ---------------------------------------------------------------------------------------------


def _xlam_lines() -> list[str]:
    return XLAM_FC.read_text(encoding="utf-8").splitlines()


def _raw_with(tmp: Path, bad: str | bytes, name: str = "raw.jsonl") -> Path:
    """The 4 real xLAM records with `bad` as line 2 (so the good ones are lines 1, 3, 4, 5)."""
    good = [line.encode() for line in _xlam_lines()]
    bad_b = bad if isinstance(bad, bytes) else bad.encode()
    p = tmp / name
    p.write_bytes(b"\n".join([good[0], bad_b, *good[1:]]) + b"\n")
    return p


def _xlam_record(text: str) -> str:
    """A real xLAM line with `text` put in as the raw value of its `query` (e.g. NaN, a deep array)."""
    obj = json.loads(_xlam_lines()[0])
    obj["id"] = 99
    obj["query"] = "@@"
    return json.dumps(obj).replace('"@@"', text)


def _glaive_array(tmp: Path, bad: str, *, close: bool = True, name: str = "glaive.json") -> Path:
    """Three real glaive records as a pretty JSON array, `bad` as record 1 (line 2); unclosed when close=False."""
    good = [json.dumps(r) for r in json.loads(GLAIVE.read_text(encoding="utf-8"))[:3]]
    body = "[" + ",\n".join([good[0], bad, *good[1:]]) if bad else "[" + ",\n".join(good)
    p = tmp / name
    p.write_text(body + ("]\n" if close else ""), encoding="utf-8")
    return p


def _convert(tmp: Path, inp: Path, *extra: str) -> tuple[list[str], Path, Path]:
    out = tmp / "out.jsonl"
    return ["convert", str(inp), "-o", str(out), "--no-progress", *extra], out, tmp / "out.rejects.jsonl"


def _unified(tmp: Path, bad: str | bytes | None, name: str = "unified.jsonl") -> Path:
    """4 valid unified records, `bad` as line 2 (good ones: lines 1, 3, 4, 5)."""
    good = [json.dumps(make_record(i, "src")).encode() for i in range(4)]
    lines = [good[0], *([bad if isinstance(bad, bytes) else bad.encode()] if bad is not None else []), *good[1:]]
    p = tmp / name
    p.write_bytes(b"\n".join(lines) + b"\n")
    return p


def _shard(tmp: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> tuple[list[str], Path]:
    out = tmp / "shards"
    return ["shard", *map(str, inputs), "-o", str(out), "--no-progress", *extra], out


def _shards_ok(tmp: Path) -> Path:
    from xlam_hpc.shard import ShardConfig, write_shards

    src = _unified(tmp, None, "good.jsonl")
    out = tmp / "good-shards"
    write_shards(ShardConfig(inputs=[str(src)], output_dir=str(out), progress=False))
    return out


def _recipe(tmp: Path, text: str | None = None, *, name: str = "recipe.yaml", **over: object) -> Path:
    """The tiny SFT recipe on real shards in `tmp` (or `text` as is), output under tmp."""
    import yaml

    if text is None:
        data = yaml.safe_load(RECIPE.read_text())
        data["data"]["shards"] = [str(_shards_ok(tmp))]
        data["output_dir"] = str(tmp / "run")
        for dotted, value in over.items():
            node = data
            *parents, last = dotted.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        text = yaml.safe_dump(data)
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


# --- convert: bad records are located rejects, the good ones are converted ---------------------------------


def _convert_reject(tmp: Path, bad: str | bytes, reason: str, message: str, *extra: str) -> Reject:
    inp = _raw_with(tmp, bad)
    argv, out, rej = _convert(tmp, inp, "--format", "xlam-fc", *extra)
    return Reject(argv, rej, inp, [("line 2", reason, message)], (out, 4))


@case
def convert_nan(tmp):
    return _convert_reject(tmp, _xlam_record("NaN"), "non_json_number", "non-JSON number NaN")


@case
def convert_infinity(tmp):
    return _convert_reject(tmp, _xlam_record("Infinity"), "non_json_number", "non-JSON number Infinity")


@case
def convert_negative_infinity(tmp):
    return _convert_reject(tmp, _xlam_record("-Infinity"), "non_json_number", "non-JSON number -Infinity")


@case
def convert_deeply_nested_line(tmp):
    return _convert_reject(tmp, _xlam_record(DEEP), "too_deeply_nested", "nested too deeply")


@case
def convert_truncated_line(tmp):
    return _convert_reject(tmp, _xlam_record("1")[:40], "invalid_json", "invalid JSON at column 41")


@case
def convert_invalid_utf8_line(tmp):
    return _convert_reject(tmp, b'{"id": 7, "query": "caf\xe9"}', "invalid_utf8", "not UTF-8 at byte 23")


@case
def convert_oversized_line(tmp):
    big = _xlam_record(json.dumps("x" * 20_000))
    return _convert_reject(tmp, big, "record_too_large", "larger than 10000 bytes", "--max-record-bytes", "10000")


@case
def convert_missing_key(tmp):
    return _convert_reject(tmp, '{"id": 7, "tools": "[]", "answers": "[]"}', "missing_key", "query")


@case
def convert_trailing_garbage_line(tmp):
    return _convert_reject(tmp, _xlam_record("1") + " }", "invalid_json", "Extra data")


@case
def convert_line_not_an_object(tmp):
    return _convert_reject(tmp, "[1, 2, 3]", "not_an_object", "expected a JSON object, got list")


def _array_reject(tmp: Path, bad: str, reason: str, message: str) -> Reject:
    inp = _glaive_array(tmp, bad)
    argv, out, rej = _convert(tmp, inp, "--format", "sharegpt")
    return Reject(argv, rej, inp, [("record 1", reason, message)], (out, 3))


@case
def convert_array_nan_element(tmp):
    return _array_reject(tmp, '{"conversations": NaN}', "non_json_number", "(record starts at line 2)")


@case
def convert_array_deep_element(tmp):
    return _array_reject(tmp, '{"conversations": ' + DEEP + "}", "too_deeply_nested", "(record starts at line 2)")


@case
def convert_array_syntax_error_element(tmp):
    message = "invalid JSON at line 2 column 18: Expecting ':' delimiter"
    return _array_reject(tmp, '{"conversations" []}', "invalid_json", message)


@case
def convert_array_truncated(tmp):
    inp = _glaive_array(tmp, "", close=False)
    text = inp.read_text(encoding="utf-8")
    inp.write_text(text[: text.rindex("{") + 30], encoding="utf-8")  # cut inside the third record
    argv, out, rej = _convert(tmp, inp, "--format", "sharegpt")
    return Reject(argv, rej, inp, [("record 2", "truncated_json", "truncated? the 2 complete record(s)")], (out, 2))


@case
def convert_array_unclosed(tmp):
    inp = _glaive_array(tmp, "", close=False)
    inp.write_text(inp.read_text(encoding="utf-8") + ",\n", encoding="utf-8")
    argv, out, rej = _convert(tmp, inp, "--format", "sharegpt")
    return Reject(argv, rej, inp, [("record 3", "truncated_json", "ends inside the JSON array")], (out, 3))


@case
def convert_truncated_pretty_document(tmp):
    doc = tmp / "doc.json"
    doc.write_text('{\n  "conversations": [\n    {"from": "human", "value": "hi"},\n', encoding="utf-8")
    argv, out, rej = _convert(tmp, _glaive_array(tmp, ""), "--format", "sharegpt")
    argv.insert(2, str(doc))  # two inputs: the cut document, then 3 good records
    return Reject(argv, rej, doc, [("line 4", "invalid_json", "the file ends too early: truncated?")], (out, 3))


def _convert_file_error(tmp: Path, data: bytes, parts: list[str]) -> Error:
    """A whole file that is not UTF-8 JSON text, with a fixed --format: the command stops naming it."""
    bad = tmp / "bad.jsonl"
    bad.write_bytes(data)
    argv, _, _ = _convert(tmp, bad, "--format", "xlam-fc")
    return Error(argv, [str(bad), *parts])


@case
def convert_utf16_with_bom(tmp):
    return _convert_file_error(tmp, "\n".join(_xlam_lines()).encode("utf-16"), ["file is UTF-16 text", "iconv"])


@case
def convert_utf16_without_bom(tmp):
    data = "\n".join(_xlam_lines()).encode("utf-16-le")
    return _convert_file_error(tmp, data, ["file is UTF-16LE text (NUL bytes between ASCII", "iconv -f UTF-16LE"])


@case
def convert_gzip(tmp):
    import gzip

    return _convert_file_error(tmp, gzip.compress(XLAM_FC.read_bytes()), ["gzip-compressed", "gunzip"])


@case
def convert_shard_tar_as_input(tmp):
    tar = next(_shards_ok(tmp).glob("*.tar"))
    return _convert_file_error(tmp, tar.read_bytes(), ["a tar archive (a shard?), not JSON/JSONL text"])


@case
def convert_utf16_auto_detect_keeps_other_files(tmp):
    bad = tmp / "bad.jsonl"
    bad.write_bytes("\n".join(_xlam_lines()).encode("utf-16"))
    argv, out, rej = _convert(tmp, bad)
    argv.insert(2, str(XLAM_FC))
    return Reject(argv, rej, bad, [("file", "undetected_format", "file is UTF-16 text")], (out, 4))


@case
def convert_missing_file(tmp):
    argv, _, _ = _convert(tmp, tmp / "nope.jsonl")
    return Error(argv, [str(tmp / "nope.jsonl"), "not found"])


@case
def convert_unknown_format(tmp):
    argv, _, _ = _convert(tmp, XLAM_FC, "--format", "xlam_fc")
    return Error(argv, ["unknown format 'xlam_fc'", "Valid formats: auto,", "xlam-fc"])


# --- shard ------------------------------------------------------------------------------------------------


def _shard_reject(tmp: Path, bad: str | bytes, reason: str, message: str) -> Reject:
    inp = _unified(tmp, bad)
    argv, out = _shard(tmp, inp)
    return Reject(argv, out / "rejects.jsonl", inp, [("line 2", reason, message)], (out, 4))


@case
def shard_nan(tmp):
    bad = json.dumps(make_record(9, "src")).replace('"score": 3.0', '"score": NaN')
    return _shard_reject(tmp, bad, "non_json_number", "non-JSON number NaN")


@case
def shard_infinity(tmp):
    bad = json.dumps(make_record(9, "src")).replace('"score": 3.0', '"score": Infinity')
    return _shard_reject(tmp, bad, "non_json_number", "non-JSON number Infinity")


@case
def shard_deeply_nested(tmp):
    rec = make_record(9, "src")
    rec["tools"][0]["parameters"]["properties"]["q"]["default"] = "@@"
    bad = json.dumps(rec).replace('"@@"', '{"x": ' * 20_000 + "1" + "}" * 20_000)
    return _shard_reject(tmp, bad, "too_deeply_nested", "nested too deeply")


@case
def shard_truncated_line(tmp):
    return _shard_reject(tmp, json.dumps(make_record(9, "src"))[:60], "invalid_json", "invalid JSON at column 61")


@case
def shard_invalid_utf8(tmp):
    bad = json.dumps(make_record(9, "src")).encode().replace(b"hello", b"h\xe9llo")
    at = bad.index(b"\xe9")
    return _shard_reject(tmp, bad, "invalid_utf8", f"not UTF-8 at byte {at}")


@case
def shard_duplicate_id(tmp):
    return _shard_reject(tmp, json.dumps(make_record(0, "src")), "duplicate_id", "id already sharded")


@case
def shard_raw_line_among_unified(tmp):
    return _shard_reject(tmp, _xlam_lines()[0], "schema", "run `xlam-hpc convert` on the raw file first")


@case
def shard_not_an_object(tmp):
    return _shard_reject(tmp, "[1, 2, 3]", "schema", "Expected `object`, got `array`")


@case
def shard_raw_file(tmp):
    argv, _ = _shard(tmp, XLAM_FC)
    return Error(
        argv,
        [str(XLAM_FC), "4 not unified records", "run `xlam-hpc convert` on the raw file first"],
        rejects=(XLAM_FC, "line 1", "schema", "run `xlam-hpc convert`"),
    )


@case
def shard_directory_input(tmp):
    d = tmp / "converted"
    d.mkdir()
    argv, _ = _shard(tmp, d)
    return Error(argv, [str(d), "is a directory, not a data file"])


@case
def shard_output_is_a_file(tmp):
    argv, out = _shard(tmp, _unified(tmp, None))
    out.write_text("not a directory")
    return Error(argv, [str(out), "is a file; the shard output (-o) is a directory"])


@case
def shard_rejects_is_a_directory(tmp):
    (tmp / "rejects").mkdir()
    argv, _ = _shard(tmp, _unified(tmp, None), extra=("--rejects", str(tmp / "rejects")))
    return Error(argv, [str(tmp / "rejects"), "is a directory; --rejects is a file"])


@case
def shard_utf16_input(tmp):
    p = tmp / "u16.jsonl"
    p.write_bytes(_unified(tmp, None).read_text().encode("utf-16"))
    argv, _ = _shard(tmp, p)
    return Error(argv, [str(p), "file is UTF-16 text", "iconv -f UTF-16"])


@case
def shard_tokenizer_is_a_file(tmp):
    tok = tmp / "tokenizer.json"
    tok.write_text("{}")
    argv, _ = _shard(tmp, _unified(tmp, None), extra=("--tokenizer", str(tok)))
    return Error(argv, [f"tokenizer '{tok}' is a file; give the folder that holds it ({tmp})", "tokenizer.model"])


@case
def shard_tokenizer_folder_without_files(tmp):
    tok = tmp / "model"
    tok.mkdir()
    (tok / "config.json").write_text("{}")
    argv, _ = _shard(tmp, _unified(tmp, None), extra=("--tokenizer", str(tok)))
    return Error(argv, [f"tokenizer folder {tok} holds no tokenizer files", "must hold tokenizer.json"])


@case
def shard_collate_enum_typo(tmp):
    argv, _ = _shard(tmp, _unified(tmp, None), extra=("--tokenizer", "mistral-v3", "--collate", "overflow=dorp"))
    return Error(argv, ["overflow: invalid value 'dorp'; valid values: 'truncate', 'drop'. Did you mean 'drop'?"])


# --- recipes: stream / train / submit ------------------------------------------------------------------------


def _stream(recipe: Path, *over: str) -> list[str]:
    return ["stream", str(recipe), *over, "--steps", "1"]


@case
def stream_recipe_is_a_directory(tmp):
    return Error(_stream(tmp), [str(tmp), "is a directory, not a YAML file"])


@case
def stream_recipe_utf16(tmp):
    p = tmp / "recipe.yaml"
    p.write_bytes(RECIPE.read_text().encode("utf-16"))
    return Error(_stream(p), [f"{p}:1", "the file is UTF-16 text, not UTF-8"])


@case
def stream_recipe_invalid_yaml(tmp):
    p = _recipe(tmp, "task: sft\ndata:\n  shards: [a\n  global_batch_size: 4\n")
    return Error(_stream(p), [f"{p}:", "invalid YAML"])


@case
def stream_enum_collate_mode(tmp):
    p = _recipe(tmp)
    return Error(
        _stream(p, "collate.mode=trajectroy"),
        [str(p), "collate.mode: invalid value 'trajectroy'; valid values: 'trajectory', 'prompt_answer'"],
    )


@case
def stream_enum_data_balance(tmp):
    p = _recipe(tmp, data__balance="token")
    return Error(_stream(p), [str(p), "data.balance: invalid value 'token'", "'tokens', 'samples'", "'tokens'?"])


@case
def stream_enum_wrong_type(tmp):
    p = _recipe(tmp, collate__loss_on=3)
    return Error(_stream(p), [str(p), "collate.loss_on: invalid value of type int; valid values: 'all', 'last'"])


@case
def stream_unknown_key(tmp):
    p = _recipe(tmp, collate__seq_lenght=512)
    return Error(_stream(p), ["unknown key 'collate.seq_lenght'", "Did you mean 'seq_length'?"])


@case
def stream_shards_is_a_jsonl_file(tmp):
    p = _recipe(tmp, data__shards=[str(_unified(tmp, None))])
    return Error(_stream(p), [str(tmp / "unified.jsonl"), "not a shard directory"])


@case
def stream_shards_missing(tmp):
    p = _recipe(tmp, data__shards=[str(tmp / "no-shards")])
    return Error(_stream(p), [str(tmp / "no-shards"), "not a shard directory"])


@case
def stream_resume_state_invalid_json(tmp):
    state = tmp / "state.json"
    state.write_text('{"version": 1, "seed"', encoding="utf-8")
    argv = [*_stream(_recipe(tmp)), "--resume", str(state)]
    return Error(argv, [str(state), "cannot read loader state", "line 1 column 22"])


@case
def stream_resume_state_is_a_directory(tmp):
    state = tmp / "state"
    state.mkdir()
    argv = [*_stream(_recipe(tmp)), "--resume", str(state)]
    return Error(argv, [str(state), "cannot read loader state", "Is a directory"])


@case
def train_enum_task(tmp):
    p = _recipe(tmp, task="sftt")
    return Error(["train", str(p)], [str(p), "task: invalid value 'sftt'; valid values: 'sft', 'dpo'"])


@case
def train_enum_precision(tmp):
    p = _recipe(tmp)
    return Error(["train", str(p), "train.precision=bf17"], [str(p), "'bf16'", "Did you mean 'bf16'?"])


@case
def train_tokenizer_is_a_file(tmp):
    tok = tmp / "tok" / "tokenizer.model"
    tok.parent.mkdir()
    tok.write_bytes(b"not a model")
    p = _recipe(tmp, tokenizer=str(tok))
    return Error(["train", str(p)], [f"tokenizer '{tok}' is a file; give the folder that holds it", "tokenizer.json"])


@case
def train_recipe_missing(tmp):
    return Error(["train", str(tmp / "nope.yaml")], [str(tmp / "nope.yaml"), "file not found"])


@case
def submit_enum_cluster(tmp):
    p = _recipe(tmp)
    return Error(
        ["submit", str(p), "launch.cluster=slrum", "--dry-run"],
        [str(p), "launch.cluster: invalid value 'slrum'; valid values: 'local', 'slurm'. Did you mean 'slurm'?"],
    )


@case
def submit_recipe_is_a_directory(tmp):
    return Error(["submit", str(tmp), "--dry-run"], [str(tmp), "is a directory, not a YAML file"])


@case
def submit_enum_schedule(tmp):
    p = _recipe(tmp, train__schedule="cosin")
    return Error(["submit", str(p), "--dry-run"], ["train.schedule: invalid value 'cosin'", "Did you mean 'cosine'?"])


# --- the runner -------------------------------------------------------------------------------------------------


def _rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _kept(path: Path) -> int:
    if path.is_dir():
        return sum(s["num_samples"] for s in json.loads((path / "manifest.json").read_text())["sources"].values())
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = CASES[name](tmp_path)
    rc = main(spec.argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    cmd = spec.argv[0]
    if isinstance(spec, Reject):
        assert rc == 0, err
        rows = [r for r in _rejects(spec.rejects) if r["file"] == str(spec.file)]
        assert [(r["position"], r["reason"]) for r in rows] == [(p, r) for p, r, _ in spec.rows]
        for row, (_, _, part) in zip(rows, spec.rows, strict=True):
            assert part in row["message"], row
        path, n = spec.kept
        assert _kept(path) == n  # the good records around the bad one are all kept
        return
    assert rc == spec.rc, err
    lines = [line for line in err.splitlines() if line.startswith(f"xlam-hpc {cmd}: error: ")]
    assert len(lines) == 1, err
    for part in spec.parts:
        assert part in lines[0], (part, lines[0])
    if spec.rejects is not None:
        file, position, reason, part = spec.rejects
        row = next(r for r in _rejects(Path(spec.argv[spec.argv.index("-o") + 1]) / "rejects.jsonl"))
        assert (row["file"], row["position"], row["reason"]) == (str(file), position, reason)
        assert part in row["message"]


def test_number_of_cases():
    assert len(CASES) >= 40


def test_inspect_piped_into_head_ends_quietly(tmp_path):
    """`xlam-hpc inspect DIR | head -1`: the reader goes away while output is still coming; no traceback."""
    from xlam_hpc.shard import ShardConfig, write_shards

    src = tmp_path / "many.jsonl"
    src.write_text("".join(json.dumps(make_record(i, "src", turns=3)) + "\n" for i in range(300)))
    shards = tmp_path / "shards"
    write_shards(ShardConfig(inputs=[str(src)], output_dir=str(shards), progress=False))
    cmd = [sys.executable, "-m", "xlam_hpc", "inspect", str(shards), "--samples", "300"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # ~600 KB follow: far more than a pipe buffer holds
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141  # 128 + SIGPIPE, as a shell reports a writer killed by the signal
    assert first.startswith(str(shards).encode())
    assert err == ""
