"""The step loop: forward/backward/step, trace, logs, collective stop check, periodic saves, final export."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from xlam_hpc.stream.probe import trace_record
from xlam_hpc.train.export import RENDER_OPTIONS, export_final, render_options, save_tokenizer, training_template
from xlam_hpc.train.signals import REQUEUE_EXIT_CODE, StopFlag

__all__ = ["RENDER_OPTIONS", "export_final", "render_options", "save_tokenizer", "train_steps", "training_template"]

log = logging.getLogger("xlam_hpc.train")


def _no_loss_tokens(metrics: dict[str, Any]) -> bool:
    """The step trained nothing: all its samples (pairs) were dropped, e.g. every one longer than seq_length."""
    count = metrics.get("loss_tokens", metrics.get("pairs"))
    return count is not None and int(count) == 0


def train_steps(run: Any, loader: Any, step: int, stop: StopFlag) -> int:
    """Run from `step` to max_steps; returns 0, or REQUEUE_EXIT_CODE after a signal-triggered save."""
    from xlam_hpc.logs import restart_count
    from xlam_hpc.train.history import History
    from xlam_hpc.train.runtime import all_reduce
    from xlam_hpc.train.tasks import train_step

    t = run.recipe.train
    rank, world, device = run.dist.rank, run.dist.world_size, run.coll.device
    trace = None
    if t.trace_samples:
        (run.out / "trace").mkdir(exist_ok=True)
        trace = (run.out / "trace" / f"rank{rank}.jsonl").open("a", encoding="utf-8")
    history = History(
        run.out,
        enabled=rank == 0,
        step=step,
        restart=restart_count(),
        report_to=tuple(t.report_to),
        run_id=run.recipe.fingerprint()[:16],
    )
    run.engine.train()
    window = {"tokens": 0, "capacity": 0}
    window_start = time.monotonic()
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
            empty = _no_loss_tokens(metrics)
            if empty:
                run.empty_steps += 1
            if trace is not None:
                trace.write(json.dumps(trace_record(step, batch, loss=None if empty else local_loss)) + "\n")
                trace.flush()
            window["tokens"] += batch["num_tokens"]
            window["capacity"] += int(batch["input_ids"].numel())
            if step % t.log_interval == 0 or step == t.max_steps:
                mean_loss = None if empty else all_reduce(local_loss, "sum", device) / world
                if mean_loss is not None:
                    run.history.append((step, mean_loss))
                tokens = all_reduce(int(window["tokens"]), "sum", device)
                capacity = all_reduce(int(window["capacity"]), "sum", device)
                rate = tokens / max(time.monotonic() - window_start, 1e-9)
                run.rates.append(rate)
                lr = run.engine.get_lr()[0]
                grad_norm = run.engine.get_global_grad_norm()
                if rank == 0:
                    log.info(
                        "step %d/%d loss %s lr %.3g tokens/s %.0f pad %.3f %s",
                        step,
                        t.max_steps,
                        "n/a (no loss tokens: every sample dropped)" if mean_loss is None else f"{mean_loss:.4f}",
                        lr,
                        rate,
                        batch["pad_fraction"],
                        {**metrics, **loader.stats} or "",
                    )
                    history.train(
                        step,
                        {
                            "loss": mean_loss,
                            "lr": lr,
                            "grad_norm": None if grad_norm is None else float(grad_norm),
                            "tokens_per_s": rate,
                            "tokens": tokens,
                            "loss_tokens": int(metrics.get("loss_tokens", metrics.get("pairs", 0))),
                            "non_pad_fraction": tokens / capacity if capacity else 0.0,
                            "samples_by_source": loader.samples_by_source(),
                        },
                    )
                window = {"tokens": 0, "capacity": 0}
                window_start = time.monotonic()
            if run.evaluator is not None and (step == t.max_steps or (t.eval_interval and step % t.eval_interval == 0)):
                result = run.evaluator.run(run, step)
                if result["loss"] is not None:
                    run.eval_history.append((step, result["loss"]))
                history.eval(step, result)
            halt = stop.should_stop(lambda v: all_reduce(int(v), "max", device))
            if halt or step % t.save_interval == 0 or step == t.max_steps:
                seconds = run.save(step, loader)
                if halt:
                    name = _report_stop(run, stop, step, seconds)
                    history.stop(step, name)
                    return REQUEUE_EXIT_CODE
        export_final(run)
        if rank == 0:
            _write_metrics(run, step, loader)
        return 0
    finally:
        if trace is not None:
            trace.close()
        history.close()


def _report_stop(run: Any, stop: StopFlag, step: int, seconds: float) -> str:
    """Log the signal-to-checkpoint time on each signalled rank; rank 0 records why the job stopped.
    Returns the signal's name."""
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
    name = names[0] if names else "unknown"
    if run.dist.rank == 0:
        record_stop(run.out, name, step)
    return name


def _write_metrics(run: Any, step: int, loader: Any) -> None:
    """output_dir/metrics.json: what a sweep summary tabulates. The final loss is the last step that had
    loss tokens; steps that had none are counted (and warned about), never reported as loss 0."""
    from xlam_hpc.train.history import read_history

    last = [loss for _, loss in run.history[-10:]]
    # over the whole run (every process since step 0), as history.jsonl stands
    rates = [r["tokens_per_s"] for r in read_history(run.out) if r["kind"] == "train"] or run.rates
    # overlong or untrainable (dropped_*) and refused by the chat template (rejected_*): never trained on
    dropped = {k: v for k, v in loader.stats.items() if k.startswith(("dropped", "rejected"))}
    if run.empty_steps:
        log.warning(
            "%d step(s) had no loss tokens (every sample dropped: %s): they trained nothing; raise "
            "collate.seq_length or filter the data",
            run.empty_steps,
            dropped,
        )
    metrics = {
        "step": step,
        "final_loss": run.history[-1][1] if run.history else None,
        "final_loss_step": run.history[-1][0] if run.history else None,
        "loss_last10_mean": sum(last) / len(last) if last else None,
        "eval_loss": run.eval_history[-1][1] if run.eval_history else None,
        "tokens_per_s_mean": sum(rates) / len(rates) if rates else None,
        "steps_without_loss_tokens": run.empty_steps,
        "samples_dropped": dropped,
        "samples_by_source": loader.samples_by_source(),
        "task": run.recipe.task,
        "fingerprint": run.recipe.fingerprint(),
    }
    (run.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
