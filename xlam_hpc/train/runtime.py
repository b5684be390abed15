"""Process-group setup and the few collectives the trainer uses (gloo on CPU, NCCL on GPU).

Every run uses a process group, also with one rank, so single-process and multi-rank runs take the
same code path. The timeout is explicit: a dead peer fails the job in minutes, not in hours.
Before that, preflight checks the devices and the precision (pure functions of a CudaProbe, so their
messages are tested without a GPU) and turns on deterministic kernels when asked for.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.runenv.dist import DistEnv, export
from xlam_hpc.train.checkpoint import Collectives

__all__ = [
    "CudaProbe",
    "all_reduce",
    "check_devices",
    "configure_determinism",
    "deepspeed_config",
    "device_for",
    "init_process_group",
    "local_world_size",
    "probe_cuda",
    "resolve_precision",
]


def device_for(dist: DistEnv) -> Any:
    import torch

    if torch.cuda.is_available():
        # all of the node's GPUs visible: one per local rank; one visible (--gpus-per-task): that one
        index = dist.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def init_process_group(dist: DistEnv, timeout_s: float) -> Collectives:
    """Initialize torch.distributed through DeepSpeed (env:// rendezvous) and return the collectives."""
    import deepspeed
    import torch
    import torch.distributed as td

    export(dist)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo":
        # On CPU, DeepSpeed compiles a shared-memory all-reduce op at start-up (~45 s cold, needs g++, which
        # slim runtime images lack). Only inference_all_reduce uses it, training never does, and that falls
        # back to torch.distributed anyway: mark it unavailable (results are identical; measured).
        with contextlib.suppress(AttributeError, TypeError):  # another DeepSpeed layout: let it build as usual
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend=backend, timeout=datetime.timedelta(seconds=timeout_s), verbose=False)
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def all_gather_object(obj: Any) -> list[Any]:
        out: list[Any] = [None] * dist.world_size
        td.all_gather_object(out, obj)
        return out

    def broadcast_object(obj: Any) -> Any:
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    coll = Collectives(dist.rank, dist.world_size, td.barrier, all_gather_object, broadcast_object)
    coll.device = device  # type: ignore[attr-defined]
    return coll


def all_reduce(value: float, op: str, device: Any) -> float:
    """Sum or max of one number over all ranks (stop flag, loss-token count, logged loss). Integers travel
    as int64, so counts are exact."""
    import torch
    import torch.distributed as td

    dtype = torch.int64 if isinstance(value, int) else torch.float64
    t = torch.tensor([value], dtype=dtype, device=device)
    td.all_reduce(t, op=td.ReduceOp.MAX if op == "max" else td.ReduceOp.SUM)
    return t.item()


@dataclass(frozen=True)
class CudaProbe:
    """What this process finds of CUDA (probe_cuda); the checks below are pure functions of it."""

    device_count: int = 0
    torch_cuda: str | None = None
    """torch.version.cuda: None for a CPU-only torch build."""
    error: str | None = None
    """Why CUDA could not be initialized (the driver's message), if it could not."""
    bf16: bool = False
    """Native bf16 (compute capability >= 8.0: A100, H100); V100 and T4 only emulate it, slowly."""
    visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES as this process saw it (None: unset)."""

    @property
    def usable(self) -> bool:
        return self.error is None and self.device_count > 0


def probe_cuda(environ: Mapping[str, str] | None = None) -> CudaProbe:
    """Initialize CUDA once and report what was found (never raises)."""
    import torch

    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if torch.version.cuda is None:
        return CudaProbe(error="this torch build has no CUDA support", visible_devices=visible)
    try:
        # is_available() only answers False; init() raises with the driver's reason
        torch.cuda.init()
        count = torch.cuda.device_count()
        bf16 = count > 0 and torch.cuda.is_bf16_supported(including_emulation=False)
    except (RuntimeError, AssertionError) as exc:
        return CudaProbe(torch_cuda=torch.version.cuda, error=str(exc).strip(), visible_devices=visible)
    return CudaProbe(count, torch.version.cuda, None, bf16, visible)


def _tasks_on_node(spec: str, node_id: int) -> int | None:
    """SLURM_STEP_TASKS_PER_NODE ('4', '2(x3),1') → the task count of node `node_id`."""
    counts: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node_id] if 0 <= node_id < len(counts) else None


def local_world_size(dist: DistEnv, tasks_per_node: int, environ: Mapping[str, str] | None = None) -> int:
    """Ranks on this node, from what the launcher actually started, not from what the recipe asked for.

    torchrun sets LOCAL_WORLD_SIZE exactly. srun sets SLURM_STEP_TASKS_PER_NODE for every step, also for
    uneven layouts ('2(x3),1'); SLURM_NTASKS_PER_NODE is only the --ntasks-per-node request, absent without it.
    launch.tasks_per_node is the fallback (a single process: 1)."""
    env = os.environ if environ is None else environ
    found: int | None = None
    if env.get("LOCAL_WORLD_SIZE", "").isdigit():
        found = int(env["LOCAL_WORLD_SIZE"])
    else:
        spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
        node = env.get("SLURM_NODEID", "0")
        if spec and node.isdigit():
            found = _tasks_on_node(spec, int(node))
    if found is None:
        found = tasks_per_node if dist.world_size > 1 else 1
    return max(found, dist.local_rank + 1, 1)


_CAUSES = (
    "usual causes: the container was started without --nv (apptainer exec --nv ...); the node's NVIDIA driver "
    "is older than the CUDA this torch was built for (see torch.version.cuda; `nvidia-smi` shows the driver's); "
    "CUDA_VISIBLE_DEVICES is empty or names too few devices (--gpus-per-node / --gres=gpu:N missing from the job); "
    "torch is a CPU-only wheel (torch.version.cuda is None)"
)


def _found(cuda: CudaProbe) -> str:
    visible = "unset" if cuda.visible_devices is None else repr(cuda.visible_devices)
    text = f"{cuda.device_count} CUDA device(s), torch.version.cuda={cuda.torch_cuda}, CUDA_VISIBLE_DEVICES={visible}"
    return text + (f", CUDA init failed: {cuda.error}" if cuda.error else "")


def check_devices(
    *, gpus_per_node: int, precision: str, local_ranks: int, cuda: CudaProbe, gpus_per_task: int | None = None
) -> None:
    """ConfigError, before any work, when GPUs were asked for (launch.gpus_per_node > 0, or train.precision
    fp16, which exists only on GPU) and this process cannot use enough of them: never fall back to CPU.

    Each local rank needs its own device: all of the node's GPUs visible to every rank (--gpus-per-node), or
    `gpus_per_task` each (srun --gpus-per-task sets SLURM_GPUS_PER_TASK; then each rank sees only its own)."""
    wanted_by = (
        f"launch.gpus_per_node={gpus_per_node}"
        if gpus_per_node > 0
        else "train.precision=fp16"
        if precision == "fp16"
        else ""
    )
    if not wanted_by:
        return
    need = gpus_per_task or local_ranks
    if cuda.usable and cuda.device_count >= need:
        return
    per = (
        f"{gpus_per_task} per rank (--gpus-per-task)" if gpus_per_task else f"one per rank, {local_ranks} on this node"
    )
    raise ConfigError(
        f"{wanted_by} asks for GPUs, {per}: expected at least {need} CUDA device(s), found {_found(cuda)}. "
        f"Refusing to train on CPU; {_CAUSES}"
    )


def resolve_precision(precision: str, cuda: CudaProbe) -> str:
    """auto → bf16 on a GPU with native bf16, fp16 (dynamic loss scaling) on older GPUs, fp32 on CPU (bf16
    matmuls are ~3x slower than fp32 on these CPUs). Explicit choices the hardware cannot run: ConfigError."""
    if precision == "auto":
        if not cuda.usable:
            return "fp32"
        return "bf16" if cuda.bf16 else "fp16"
    if precision == "fp16" and not cuda.usable:
        raise ConfigError(f"train.precision=fp16 needs a GPU; found {_found(cuda)}. Use fp32 or bf16 on CPU")
    if precision == "bf16" and cuda.usable and not cuda.bf16:
        raise ConfigError(
            "train.precision=bf16: this GPU has no native bf16 (compute capability < 8.0, e.g. V100, T4); "
            "use fp16 (dynamic loss scaling) or auto"
        )
    return precision


def configure_determinism(deterministic: bool, environ: MutableMapping[str, str] | None = None) -> None:
    """train.deterministic: deterministic kernels (an op without one raises instead of running).
    Call before CUDA is initialized: cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it creates its handle."""
    if not deterministic:
        return
    import torch

    env = os.environ if environ is None else environ
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # a user's ':16:8' (less memory) is kept
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


_FP16_DEFAULTS = {
    "loss_scale": 0,
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1,
}
"""loss_scale 0: dynamic (start at 2**16, halve on overflow, double after 1000 clean steps)."""


def deepspeed_config(
    name_or_path: str, *, per_rank_batch: int, world_size: int, grad_clip: float, precision: str
) -> dict[str, Any]:
    """Load 'zero2'/'zero3' (shipped) or a JSON file and fill its "auto" values from the recipe.
    Values the file sets explicitly must agree with the recipe's batch sizes and resolved precision."""
    if name_or_path in ("zero2", "zero3"):
        text = resources.files("xlam_hpc.train").joinpath(f"deepspeed/{name_or_path}.json").read_text()
        where = f"built-in {name_or_path}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"train.deepspeed: '{name_or_path}' is not zero2, zero3 or an existing JSON file")
        text, where = path.read_text(), str(path)
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    want = {
        "train_micro_batch_size_per_gpu": per_rank_batch,
        "gradient_accumulation_steps": 1,
        "train_batch_size": per_rank_batch * world_size,
    }
    for key, value in want.items():
        given = cfg.get(key, "auto")
        if given not in ("auto", value):
            raise ConfigError(
                f"{where}: {key}={given} disagrees with the recipe (data.global_batch_size / world size {world_size} "
                f'gives {key}={value}); set it to "auto"'
            )
        cfg[key] = value
    if cfg.get("gradient_clipping", "auto") == "auto":
        cfg["gradient_clipping"] = grad_clip
    for name in ("bf16", "fp16"):
        section = cfg.setdefault(name, {})
        enabled = section.get("enabled", "auto")
        if enabled not in ("auto", precision == name):
            raise ConfigError(
                f"{where}: {name}.enabled={json.dumps(enabled)} disagrees with train.precision resolved to "
                f'{precision}; set it to "auto"'
            )
        section["enabled"] = precision == name
    if precision == "fp16":  # dynamic loss scaling: "auto" or missing values get DeepSpeed's usual ones
        for key, value in _FP16_DEFAULTS.items():
            if cfg["fp16"].get(key, "auto") == "auto":
                cfg["fp16"][key] = value
    for section in ("optimizer", "scheduler"):
        if section in cfg:
            raise ConfigError(f"{where}: remove the '{section}' section; the recipe's train: section defines it")
    return cfg
