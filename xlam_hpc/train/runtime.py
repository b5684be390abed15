"""Process-group setup and the few collectives the trainer uses (gloo on CPU, NCCL on GPU).

Every run uses a process group, also with one rank, so single-process and multi-rank runs take the
same code path. The timeout is explicit: a dead peer fails the job in minutes, not in hours.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from importlib import resources
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.runenv.dist import DistEnv, export
from xlam_hpc.train.checkpoint import Collectives

__all__ = ["all_reduce", "deepspeed_config", "device_for", "init_process_group", "resolve_precision"]


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


def resolve_precision(precision: str) -> str:
    """'auto' → bf16 on GPU, fp32 on CPU (bf16 matmuls are ~3x slower than fp32 on these CPUs)."""
    import torch

    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


def deepspeed_config(
    name_or_path: str, *, per_rank_batch: int, world_size: int, grad_clip: float, precision: str
) -> dict[str, Any]:
    """Load 'zero2'/'zero3' (shipped) or a JSON file and fill its "auto" values from the recipe.
    Values the file sets explicitly must agree with the recipe's batch sizes."""
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
    bf16 = cfg.setdefault("bf16", {})
    if bf16.get("enabled", "auto") == "auto":
        bf16["enabled"] = precision == "bf16"
    for section in ("optimizer", "scheduler"):
        if section in cfg:
            raise ConfigError(f"{where}: remove the '{section}' section; the recipe's train: section defines it")
    return cfg
