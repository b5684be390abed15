"""Device and precision checks, deterministic mode and the DeepSpeed precision sections.

The checks are pure functions of a CudaProbe, so their messages are tested here without a GPU; only
probe_cuda's view of a GPU (torch.cuda.*) is monkeypatched, since no GPU exists on this machine.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from xlam_hpc.errors import ConfigError
from xlam_hpc.recipe import load_recipe
from xlam_hpc.runenv.dist import DistEnv
from xlam_hpc.train.loop import _Run
from xlam_hpc.train.runtime import (
    CudaProbe,
    check_devices,
    configure_determinism,
    deepspeed_config,
    local_world_size,
    probe_cuda,
    resolve_precision,
)

CPU_WHEEL = CudaProbe(error="this torch build has no CUDA support")
NO_DRIVER = CudaProbe(torch_cuda="12.4", error="Found no NVIDIA driver on your system.", visible_devices="")
A100 = CudaProbe(device_count=4, torch_cuda="12.4", bf16=True, visible_devices="0,1,2,3")
V100 = CudaProbe(device_count=4, torch_cuda="12.4", bf16=False, visible_devices="0,1,2,3")


def _dist(world: int = 1, local_rank: int = 0) -> DistEnv:
    return DistEnv(0, world, local_rank, "127.0.0.1", 29500, "env")


# --- devices ----------------------------------------------------------------------------------------


def test_gpus_requested_on_a_cpu_only_torch_fail_with_what_was_found_and_why():
    with pytest.raises(ConfigError) as exc:
        check_devices(gpus_per_node=4, precision="auto", local_ranks=4, cuda=CPU_WHEEL)
    msg = str(exc.value)
    assert msg.startswith("launch.gpus_per_node=4 asks for GPUs, one per rank, 4 on this node: expected at least 4")
    assert "found 0 CUDA device(s), torch.version.cuda=None, CUDA_VISIBLE_DEVICES=unset" in msg
    assert "CUDA init failed: this torch build has no CUDA support" in msg
    assert "Refusing to train on CPU" in msg
    for cause in ("without --nv", "driver is older than the CUDA", "CUDA_VISIBLE_DEVICES is empty", "CPU-only wheel"):
        assert cause in msg


def test_the_driver_error_and_an_empty_device_list_are_quoted():
    with pytest.raises(ConfigError) as exc:
        check_devices(gpus_per_node=1, precision="bf16", local_ranks=1, cuda=NO_DRIVER)
    msg = str(exc.value)
    assert "expected at least 1 CUDA device(s), found 0 CUDA device(s), torch.version.cuda=12.4" in msg
    assert "CUDA_VISIBLE_DEVICES=''" in msg and "CUDA init failed: Found no NVIDIA driver on your system." in msg


def test_fewer_devices_than_local_ranks_fail():
    two = CudaProbe(device_count=2, torch_cuda="12.1", bf16=True, visible_devices="0,1")
    with pytest.raises(ConfigError, match=r"expected at least 4 CUDA device\(s\), found 2 CUDA device\(s\)"):
        check_devices(gpus_per_node=4, precision="auto", local_ranks=4, cuda=two)


def test_enough_devices_pass():
    check_devices(gpus_per_node=4, precision="auto", local_ranks=4, cuda=A100)
    # srun --gpus-per-task=1: each rank sees only its own device
    own = CudaProbe(device_count=1, torch_cuda="12.4", bf16=True, visible_devices="3")
    check_devices(gpus_per_node=4, precision="auto", local_ranks=4, cuda=own, gpus_per_task=1)
    with pytest.raises(ConfigError, match=r"2 per rank \(--gpus-per-task\): expected at least 2"):
        check_devices(gpus_per_node=4, precision="auto", local_ranks=2, cuda=own, gpus_per_task=2)


def test_no_gpu_asked_for_means_no_device_check():
    for precision in ("auto", "fp32", "bf16"):
        check_devices(gpus_per_node=0, precision=precision, local_ranks=8, cuda=CPU_WHEEL)


def test_fp16_asks_for_a_gpu_even_without_gpus_per_node():
    with pytest.raises(ConfigError, match=r"^train.precision=fp16 asks for GPUs"):
        check_devices(gpus_per_node=0, precision="fp16", local_ranks=1, cuda=CPU_WHEEL)


# --- precision --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cuda", "expected"),
    [(A100, "bf16"), (V100, "fp16"), (CPU_WHEEL, "fp32"), (NO_DRIVER, "fp32")],
)
def test_auto_precision(cuda, expected):
    assert resolve_precision("auto", cuda) == expected


def test_explicit_precision_the_hardware_cannot_run_is_refused():
    with pytest.raises(ConfigError, match=r"this GPU has no native bf16 .* use fp16"):
        resolve_precision("bf16", V100)
    with pytest.raises(ConfigError, match=r"train\.precision=fp16 needs a GPU; found 0 CUDA device"):
        resolve_precision("fp16", CPU_WHEEL)
    assert resolve_precision("bf16", CPU_WHEEL) == "bf16"  # slow on CPU, but it runs
    assert resolve_precision("fp16", V100) == "fp16"
    assert resolve_precision("fp32", A100) == "fp32"


def test_probe_matches_torch_on_this_machine():
    found = probe_cuda()
    assert found.usable == torch.cuda.is_available()
    assert found.torch_cuda == torch.version.cuda
    if torch.version.cuda is None:
        assert (found.device_count, found.error) == (0, "this torch build has no CUDA support")


def test_probe_reports_the_driver_error(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    message = "The NVIDIA driver on your system is too old (found version 11040)."

    def init() -> None:
        raise RuntimeError(message)

    monkeypatch.setattr(torch.cuda, "init", init)
    found = probe_cuda({"CUDA_VISIBLE_DEVICES": "0"})
    assert found == CudaProbe(torch_cuda="12.4", error=message, visible_devices="0")
    assert not found.usable


def test_probe_does_not_count_emulated_bf16(monkeypatch):
    """V100/T4: torch.cuda.is_bf16_supported() is True by default (emulation); we ask for native support."""
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    found = probe_cuda({})
    assert (found.device_count, found.bf16, found.usable, found.visible_devices) == (2, False, True, None)


# --- local ranks ------------------------------------------------------------------------------------


def test_local_world_size_sources():
    assert local_world_size(_dist(8), 4, {"LOCAL_WORLD_SIZE": "2", "SLURM_STEP_TASKS_PER_NODE": "4"}) == 2
    uneven = {"SLURM_STEP_TASKS_PER_NODE": "2(x3),1"}
    assert local_world_size(_dist(7), 4, {**uneven, "SLURM_NODEID": "1"}) == 2
    assert local_world_size(_dist(7), 4, {**uneven, "SLURM_NODEID": "3"}) == 1
    assert local_world_size(_dist(8), 4, {"SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_NODEID": "0"}) == 4
    assert local_world_size(_dist(8), 4, {"SLURM_STEP_TASKS_PER_NODE": "garbled"}) == 4  # the recipe's value
    assert local_world_size(_dist(8), 4, {}) == 4
    assert local_world_size(_dist(1), 4, {}) == 1  # a single process
    assert local_world_size(_dist(8, local_rank=5), 4, {"LOCAL_WORLD_SIZE": "2"}) == 6  # never below its own rank


# --- determinism ------------------------------------------------------------------------------------


@pytest.fixture
def restore_determinism():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]


def test_deterministic_mode(restore_determinism):
    env: dict[str, str] = {}
    configure_determinism(False, env)
    assert env == {} and not torch.are_deterministic_algorithms_enabled()
    configure_determinism(True, env)
    assert env == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    own = {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    configure_determinism(True, own)
    assert own == {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}


# --- DeepSpeed precision sections ---------------------------------------------------------------------


def _ds(name: str, precision: str) -> dict:
    return deepspeed_config(name, per_rank_batch=2, world_size=2, grad_clip=1.0, precision=precision)


def test_fp16_gets_dynamic_loss_scaling():
    cfg = _ds("zero2", "fp16")
    assert cfg["fp16"] == {
        "enabled": True,
        "loss_scale": 0,
        "initial_scale_power": 16,
        "loss_scale_window": 1000,
        "hysteresis": 2,
        "min_loss_scale": 1,
    }
    assert cfg["bf16"] == {"enabled": False}
    assert _ds("zero3", "bf16")["bf16"] == {"enabled": True} and _ds("zero3", "bf16")["fp16"] == {"enabled": False}
    assert _ds("zero2", "fp32")["bf16"]["enabled"] is False and _ds("zero2", "fp32")["fp16"]["enabled"] is False


def test_user_precision_sections_are_filled_or_refused(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"fp16": {"enabled": "auto", "loss_scale": 128, "hysteresis": "auto"}}))
    assert _ds(str(path), "fp16")["fp16"] == {
        "enabled": True,
        "loss_scale": 128,  # a static scale the user chose is kept
        "hysteresis": 2,
        "initial_scale_power": 16,
        "loss_scale_window": 1000,
        "min_loss_scale": 1,
    }
    assert _ds(str(path), "bf16")["fp16"]["enabled"] is False
    path.write_text(json.dumps({"fp16": {"enabled": True}}))
    with pytest.raises(
        ConfigError, match=r'fp16.enabled=true disagrees with train.precision resolved to bf16; set it to "auto"'
    ):
        _ds(str(path), "bf16")
    path.write_text(json.dumps({"bf16": {"enabled": True}}))
    with pytest.raises(ConfigError, match=r"bf16\.enabled=true disagrees with train\.precision resolved to fp32"):
        _ds(str(path), "fp32")
    path.write_text(json.dumps({"bf16": {"enabled": False}}))
    assert _ds(str(path), "fp32")["bf16"]["enabled"] is False  # explicit and in agreement


# --- preflight ----------------------------------------------------------------------------------------


def test_preflight_fails_at_once_when_the_gpus_asked_for_are_not_there(tmp_path, monkeypatch):
    """One more local rank than this machine has GPUs (none here): refused before the model is read."""
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_GPUS_PER_TASK"):
        monkeypatch.delenv(name, raising=False)
    ranks = torch.cuda.device_count() + 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
    recipe = load_recipe(
        None,
        base={
            "output_dir": str(tmp_path / "out"),
            "data": {"shards": [str(tmp_path / "no-shards")]},
            "model": {"name_or_path": str(tmp_path / "no-model")},
            "launch": {"gpus_per_node": ranks, "tasks_per_node": ranks},
        },
    )
    with pytest.raises(ConfigError, match=f"launch.gpus_per_node={ranks} asks for GPUs.*expected at least {ranks}"):
        _Run(recipe).preflight()


def test_preflight_turns_on_deterministic_kernels(tmp_path, monkeypatch, restore_determinism):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # restored (removed) after the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    recipe = load_recipe(
        None,
        base={
            "output_dir": str(tmp_path / "out"),
            "data": {"shards": [str(tmp_path / "no-shards")]},
            "model": {"name_or_path": str(tmp_path / "no-model")},
            "train": {"deterministic": True},
        },
    )
    with pytest.raises(ConfigError, match="neither a preset"):  # the model check comes after
        _Run(recipe).preflight()
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
