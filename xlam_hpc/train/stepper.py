"""The step loop: forward/backward/step, trace, logs, collective stop check, periodic saves, final export."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from xlam_hpc.stream.probe import trace_record
from xlam_hpc.train.export import RENDER_OPTIONS, export_final, render_options, save_tokenizer, training_template
from xlam_hpc.train.signals import REQUEUE_EXIT_CODE, StopFlag

__all__ = ["RENDER_OPTIONS", "export_final", "render_options", "save_tokenizer", "train_steps", "training_template"]

log = logging.getLogger("xlam_hpc.train")


def _tensorboard(out: Path, rank: int, step: int) -> Any:
    if rank != 0:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"), purge_step=step)  # purge: no duplicate points after a resume


def train_steps(run: Any, loader: Any, step: int, stop: StopFlag) -> int:
    """Run from `step` to max_steps; returns 0, or REQUEUE_EXIT_CODE after a signal-triggered save."""
    from xlam_hpc.train.runtime import all_reduce
    from xlam_hpc.train.tasks import train_step

    t = run.recipe.train
    rank, world, device = run.dist.rank, run.dist.world_size, run.coll.device
    trace = None
    if t.trace_samples:
        (run.out / "trace").mkdir(exist_ok=True)
        trace = (run.out / "trace" / f"rank{rank}.jsonl").open("a", encoding="utf-8")
    tb = _tensorboard(run.out, rank, step)
    run.engine.train()
    window_tokens, window_start = 0, time.monotonic()
    try:
        while step < t.max_steps:
            batch = next(loader)
            local_loss, metrics = train_step(
                run.engine,
                run.task,
                batch,
                step=step,
                micro_batch_tokens=t.micro_batch_tokens,
                reduce_max=lambda v: int(all_reduce(int(v), "max", device)),
            )
            step += 1
            if trace is not None:
                trace.write(json.dumps(trace_record(step, batch, loss=local_loss)) + "\n")
                trace.flush()
            window_tokens += batch["num_tokens"]
            if step % t.log_interval == 0 or step == t.max_steps:
                mean_loss = all_reduce(local_loss, "sum", device) / world
                run.history.append((step, mean_loss))
                tokens = all_reduce(int(window_tokens), "sum", device)
                rate = tokens / max(time.monotonic() - window_start, 1e-9)
                run.rates.append(rate)
                lr = run.engine.get_lr()[0]
                if rank == 0:
                    log.info(
                        "step %d/%d loss %.4f lr %.3g tokens/s %.0f pad %.3f %s",
                        step,
                        t.max_steps,
                        mean_loss,
                        lr,
                        rate,
                        batch["pad_fraction"],
                        {**metrics, **loader.stats} or "",
                    )
                    if tb is not None:
                        tb.add_scalar("train/loss", mean_loss, step)
                        tb.add_scalar("train/lr", lr, step)
                        tb.add_scalar("train/tokens_per_s", rate, step)
                window_tokens, window_start = 0, time.monotonic()
            halt = stop.should_stop(lambda v: all_reduce(int(v), "max", device))
            if halt or step % t.save_interval == 0 or step == t.max_steps:
                seconds = run.save(step, loader)
                if halt:
                    _report_stop(run, stop, step, seconds)
                    return REQUEUE_EXIT_CODE
        export_final(run)
        if rank == 0:
            _write_metrics(run, step)
        return 0
    finally:
        if trace is not None:
            trace.close()
        if tb is not None:
            tb.close()


def _report_stop(run: Any, stop: StopFlag, step: int, seconds: float) -> None:
    """Log the signal-to-checkpoint time on each signalled rank; rank 0 records why the job stopped."""
    from xlam_hpc.runenv.stops import record_stop

    t = run.recipe.train
    names = [n for n in run.coll.all_gather_object(stop.name) if n != "none"]
    if stop.signum is not None:
        waited = time.monotonic() - (stop.received_at or time.monotonic())
        log.warning(
            "%s: saved checkpoint-%d %.2f s after the signal (save %.2f s, grace budget %.0f s)%s",
            stop.name,
            step,
            waited,
            seconds,
            t.grace_period_s,
            "; OVER BUDGET" if waited > t.grace_period_s else "",
        )
    if run.dist.rank == 0:
        record_stop(run.out, names[0] if names else "unknown", step)


def _write_metrics(run: Any, step: int) -> None:
    """output_dir/metrics.json: what a sweep summary tabulates."""
    last = [loss for _, loss in run.history[-10:]]
    metrics = {
        "step": step,
        "final_loss": run.history[-1][1] if run.history else None,
        "loss_last10_mean": sum(last) / len(last) if last else None,
        "tokens_per_s_mean": sum(run.rates) / len(run.rates) if run.rates else None,
        "task": run.recipe.task,
        "fingerprint": run.recipe.fingerprint(),
    }
    (run.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
