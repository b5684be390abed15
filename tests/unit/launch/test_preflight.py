"""`submit`, `sweep` and `--dry-run` run the trainer's preflight before anything is queued: each kind of
configuration error is a one-line error at the prompt, and nothing is submitted or written.

Every case goes through the real command line: `xlam-hpc submit --cluster slurm --dry-run`, `xlam-hpc sweep
--cluster slurm --dry-run`, and the real (non-dry-run) `submit`/`sweep --cluster local`, which would start jobs
if the preflight let them through. The data, tokenizer and model config are real (shards written by
`shard`, the mistral-v3 tokenizer, a model folder with config.json and tokenizer files but no weights).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import SOURCES, write_recipe
from xlam_hpc.cli import main
from xlam_hpc.recipe import load_recipe
from xlam_hpc.train.preflight import preflight


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def recipe(tmp_path, shard_dir):
    """A valid recipe on one real shard directory; output_dir inside tmp_path/runs (not created)."""
    return write_recipe(tmp_path / "r.yaml", shard_dir / "alpha", output_dir=str(tmp_path / "runs" / "out"))


def _other_config_checkpoint(out: Path) -> None:
    """output_dir holding a (manifest of a) checkpoint made by another configuration."""
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "manifest.json").write_text(json.dumps({"step": 4, "fingerprint": "0123456789abcdef"}))
    (out / "latest").write_text("checkpoint-4\n")


def _missing_shard_file(tmp_path: Path, shard_dir: Path) -> Path:
    copy = tmp_path / "alpha-copy"
    shutil.copytree(shard_dir / "alpha", copy)
    next(copy.rglob("*.tar")).unlink()
    return copy


def _bad_deepspeed(tmp_path: Path) -> Path:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": 6, "zero_optimization": {"stage": 2}}))
    return path


# (id, overrides or a function of (tmp_path, shard_dir) giving them, what the error says)
CASES = [
    ("recipe-unknown-key", ["train.lrr=1e-5"], "unknown key 'train.lrr'. Did you mean 'lr'?"),
    ("recipe-bad-value", ["train.schedule=cosin"], "cosin"),
    ("shards-missing", lambda t, s: [f"data.shards=[{t / 'nowhere'}]"], "no manifest.json, not a shard directory"),
    (
        "shard-file-missing",
        lambda t, s: [f"data.shards=[{_missing_shard_file(t, s)}]"],
        "shard file(s) listed in manifest.json are missing",
    ),
    ("task-vs-record-kind", ["task=dpo"], "task 'dpo' needs preference records"),
    (
        "weights-unlisted",
        lambda t, s: [f"data.shards=[{s / 'alpha'},{s / 'beta'}]", "data.weights={alpha: 1}"],
        "unlisted: beta",
    ),
    ("weights-unknown-source", ["data.weights={alpah: 1}"], "unknown source 'alpah'"),
    ("tokenizer-missing", lambda t, s: [f"tokenizer={t / 'no-tokenizer'}"], "no-tokenizer"),
    ("model-missing", lambda t, s: [f"model.name_or_path={t / 'no-model'}"], "is neither a preset"),
    ("chat-template-missing", lambda t, s: [f"collate.chat_template={t / 'x.jinja'}"], "x.jinja"),
    ("deepspeed-unknown", ["train.deepspeed=zero4"], "'zero4' is not zero2, zero3 or an existing JSON file"),
    (
        "deepspeed-inconsistent",
        lambda t, s: [f"train.deepspeed={_bad_deepspeed(t)}"],
        "train_batch_size=6 disagrees with the recipe",
    ),
    ("batch-vs-world-size", ["launch.nodes=3"], "global_batch_size 4 is not divisible by the world size 3"),
    (
        "batch-vs-tasks-per-node",
        ["launch.nodes=2", "launch.tasks_per_node=4"],
        "global_batch_size 4 is not divisible by the world size 8",
    ),
    ("output-dir-is-a-file", lambda t, s: [f"output_dir={t / 'r.yaml'}"], "exists and is not a directory"),
    (
        "output-dir-under-a-file",
        lambda t, s: [f"output_dir={t / 'r.yaml' / 'run'}"],
        "is not a directory, so it cannot be created",
    ),
    (
        "output-dir-other-configuration",
        lambda t, s: (_other_config_checkpoint(t / "used"), [f"output_dir={t / 'used'}"])[1],
        "holds a checkpoint of another configuration",
    ),
    ("container-missing", ['launch.container="apptainr exec --nv img.sif"'], "'apptainr' not found on PATH"),
    (
        "container-path-missing",
        lambda t, s: [f"launch.container={t / 'bin' / 'apptainer'} exec x.sif"],
        "not an executable",
    ),
]


def _overrides(case, tmp_path, shard_dir) -> list[str]:
    _, overrides, _ = case
    return list(overrides(tmp_path, shard_dir) if callable(overrides) else overrides)


def _expect_refused(capsys, argv, message, tmp_path, before) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err, err
    assert err.strip().splitlines()[-1].startswith(f"xlam-hpc {argv[0]}: error: "), err  # one line, no traceback
    assert "Traceback" not in err and "#SBATCH" not in out
    assert _tree(tmp_path) == before  # nothing written: no output_dir, no launch/, no sweep.json
    return err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_submit_dry_run_refuses(case, recipe, tmp_path, shard_dir, capsys):
    overrides = _overrides(case, tmp_path, shard_dir)
    before = _tree(tmp_path)
    argv = ["submit", str(recipe), *overrides, "--cluster", "slurm", "--dry-run"]
    _expect_refused(capsys, argv, case[2], tmp_path, before)


SWEEP_CASES = [
    # a sweep's tasks live in output_dir/task-000i
    ("output-dir-is-a-file", None, "is not a directory, so it cannot be created"),  # None: the same overrides
    (
        "output-dir-other-configuration",
        lambda t, s: (_other_config_checkpoint(t / "used" / "task-0001"), [f"output_dir={t / 'used'}"])[1],
        "sweep task-0001 (train.lr=0.0002, seed=7): ",
    ),
]


def _sweep_case(case):
    for name, overrides, message in SWEEP_CASES:
        if name == case[0]:
            return (name, case[1] if overrides is None else overrides, message)
    return case


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sweep_dry_run_refuses(case, recipe, tmp_path, shard_dir, capsys):
    case = _sweep_case(case)
    overrides = _overrides(case, tmp_path, shard_dir)
    before = _tree(tmp_path)
    argv = ["sweep", str(recipe), "--grid", "lr=1e-4,2e-4", "--cluster", "slurm", "--dry-run", *overrides]
    _expect_refused(capsys, argv, case[2], tmp_path, before)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c[0] in ("shards-missing", "deepspeed-unknown", "batch-vs-world-size")], ids=str
)
def test_real_submit_and_sweep_refuse_before_queueing(case, recipe, tmp_path, shard_dir, capsys):
    """Not dry runs: a local submit/sweep would start the job; the preflight stops it first."""
    overrides = _overrides(case, tmp_path, shard_dir)
    before = _tree(tmp_path)
    _expect_refused(capsys, ["submit", str(recipe), "--cluster", "local", *overrides], case[2], tmp_path, before)
    argv = ["sweep", str(recipe), "--grid", "lr=1e-4,2e-4", "--cluster", "local", *overrides]
    _expect_refused(capsys, argv, case[2], tmp_path, before)


def test_a_grid_value_that_breaks_one_task_names_it(recipe, tmp_path, capsys):
    before = _tree(tmp_path)
    argv = ["sweep", str(recipe), "--grid", "data.global_batch_size=4,3", "--dry-run", "launch.nodes=2"]
    err = _expect_refused(capsys, argv, "global_batch_size 3 is not divisible by the world size 2", tmp_path, before)
    assert "sweep task-0001 (data.global_batch_size=3, seed=7): " in err


def test_train_runs_the_same_checks(recipe, tmp_path, capsys):
    """The trainer's preflight is the same function: the same message from `train`."""
    assert main(["train", str(recipe), "train.deepspeed=zero4"]) == 2
    assert "'zero4' is not zero2, zero3 or an existing JSON file" in capsys.readouterr().err
    assert main(["train", str(recipe), "data.weights={alpah: 1}"]) == 2
    assert "unknown source 'alpah'" in capsys.readouterr().err


def test_a_good_recipe_passes_without_reading_weights_or_writing(tmp_path, shard_dir, capsys):
    """A local model folder with config.json and tokenizer files but no weights: preflight passes (weights
    are never read), the dry run prints the script, CUDA is not initialized and nothing is written."""
    import torch
    from transformers import AutoConfig

    from tests.families import TINY, model_folder
    from xlam_hpc.collate import load_tokenizer

    folder = model_folder("qwen2.5", tmp_path / "models")
    AutoConfig.for_model("qwen2", vocab_size=len(load_tokenizer(str(folder))), **TINY).save_pretrained(folder)
    assert not list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))
    recipe = write_recipe(
        tmp_path / "r.yaml",
        shard_dir / "alpha",
        output_dir=str(tmp_path / "runs" / "out"),
        model={"name_or_path": str(folder)},
        collate={"chat_template": "tokenizer"},
        launch={"nodes": 2, "tasks_per_node": 2},
    )
    before = _tree(tmp_path)
    assert main(["submit", str(recipe), "--cluster", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in out and "#SBATCH --ntasks-per-node=2" in out
    assert main(["sweep", str(recipe), "--grid", "lr=1e-4,2e-4", "--seeds", "2", "--dry-run"]) == 0
    assert "preflight ok: 4 tasks, nothing submitted" in capsys.readouterr().err
    assert _tree(tmp_path) == before and not torch.cuda.is_initialized()
    checked = preflight(load_recipe(recipe), 4)
    assert checked.model_config.vocab_size == len(checked.tokenizer) and checked.sources == {"alpha": 1.0}
    assert checked.ds_config["train_micro_batch_size_per_gpu"] == 1 and checked.ds_config["train_batch_size"] == 4


def test_weights_default_zero_passes_the_preflight(tmp_path, shard_dir, capsys):
    shards = ",".join(str(shard_dir / n) for n in SOURCES)
    recipe = write_recipe(tmp_path / "r.yaml", shard_dir / "alpha", output_dir=str(tmp_path / "runs" / "out"))
    argv = ["submit", str(recipe), f"data.shards=[{shards}]", "data.weights={alpha: 1, beta: 1}"]
    assert main([*argv, "--cluster", "slurm", "--dry-run"]) == 2
    assert "unlisted: gamma" in capsys.readouterr().err
    assert main([*argv, "data.weights_default=0", "--cluster", "slurm", "--dry-run"]) == 0
    checked = preflight(load_recipe(recipe, [*argv[2:], "data.weights_default=0"]), 1)
    assert checked.sources == {"alpha": 0.5, "beta": 0.5}


def test_a_container_command_loaded_by_launch_setup_is_accepted(recipe, tmp_path, capsys):
    """`module load apptainer` in launch.setup puts the command on PATH on the node only: not an error here."""
    argv = ["submit", str(recipe), 'launch.container="apptainr exec img.sif"', "--cluster", "slurm", "--dry-run"]
    assert main(argv) == 2
    assert "'apptainr' not found on PATH" in capsys.readouterr().err
    assert main([*argv, 'launch.setup=["module load apptainr"]']) == 0
    assert "module load apptainr" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_preflight_imports_no_deepspeed_and_leaves_cuda_alone(recipe, tmp_path):
    """In a fresh process (other tests may have imported DeepSpeed here): the checks never import DeepSpeed
    (whose accelerator detection probes the devices) and never initialize CUDA."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from xlam_hpc.recipe import load_recipe\n"
        "from xlam_hpc.train.preflight import preflight\n"
        f"preflight(load_recipe({str(recipe)!r}), 4)\n"
        "print('deepspeed' in sys.modules, torch.cuda.is_initialized())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "False"]
    assert not (tmp_path / "runs").exists()
