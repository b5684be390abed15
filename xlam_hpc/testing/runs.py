"""Test support for real multi-process runs: launch ranks, signal one of them, read traces and weights.

Used by the test suite and handy when debugging resume behaviour by hand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = ["effective_trace", "final_weights", "rank_pids", "torchrun_train", "wait_for_step"]


def torchrun_train(
    recipe: str | Path,
    output_dir: str | Path,
    *overrides: str,
    nproc: int = 2,
    log: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """`torchrun --nproc_per_node N -m xlam_hpc train RECIPE output_dir=... OVERRIDES` in the background."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(_free_port()),
        "-m",
        "xlam_hpc",
        "train",
        str(recipe),
        f"output_dir={output_dir}",
        *overrides,
    ]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_pids(launcher: subprocess.Popen, nproc: int, timeout: float = 120.0) -> dict[int, int]:
    """PIDs of the rank processes under a launcher, keyed by RANK (read from their environment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                env = child.environ()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if "RANK" in env and "xlam_hpc" in " ".join(child.cmdline()):
                found[int(env["RANK"])] = child.pid
        if len(found) == nproc:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"ranks of launcher {launcher.pid} did not appear")


def wait_for_step(
    output_dir: str | Path, step: int, rank: int = 0, timeout: float = 300.0, launcher: subprocess.Popen | None = None
) -> None:
    """Block until rank `rank` has traced optimizer step `step`."""
    path = Path(output_dir) / "trace" / f"rank{rank}.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and any(json.loads(x)["step"] >= step for x in path.read_text().splitlines() if x.strip()):
            return
        if launcher is not None and launcher.poll() is not None:
            raise RuntimeError(f"launcher exited with {launcher.returncode} before step {step}")
        time.sleep(0.1)
    raise TimeoutError(f"step {step} not reached in {timeout} s ({path})")


def send(pid: int, sig: int = signal.SIGTERM) -> None:
    os.kill(pid, sig)


def effective_trace(output_dir: str | Path) -> dict[int, dict[int, dict[str, Any]]]:
    """rank → step → the *last* trace record of that step (steps redone after a resume replace earlier ones)."""
    out: dict[int, dict[int, dict[str, Any]]] = {}
    for path in sorted((Path(output_dir) / "trace").glob("rank*.jsonl")):
        rank = int(path.stem[4:])
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out.setdefault(rank, {})[rec["step"]] = rec
    return out


def final_weights(output_dir: str | Path) -> dict[str, Any]:
    """Tensors of output_dir/final (model.safetensors or adapter_model.safetensors)."""
    from safetensors.torch import load_file

    final = Path(output_dir) / "final"
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if (final / name).exists():
            return load_file(final / name)
    raise FileNotFoundError(f"no weights in {final}")


__all__ += ["send"]
