"""`xlam-hpc train`: the per-rank training process (SFT or DPO, full or LoRA, DeepSpeed ZeRO-2/3).

Why our own loop instead of HF Trainer/TRL trainers: they re-prepare the dataset (and replay skipped
batches on resume), save non-atomically without loader/RNG state, and TRL's SFTTrainer costs ~2.6x a
plain loop per step here (entropy/accuracy heads). We keep their models (transformers), adapters (peft)
and losses (TRL), and DeepSpeed's engine for ZeRO, and own only: data (our loader), the step, the
checkpoint protocol and signals.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.logs import setup_logging
from xlam_hpc.recipe import Recipe
from xlam_hpc.runenv.dist import detect
from xlam_hpc.runenv.lock import acquire_output_lock
from xlam_hpc.runenv.stops import clear_stop
from xlam_hpc.train.checkpoint import CheckpointManager
from xlam_hpc.train.signals import REQUEUE_EXIT_CODE, StopFlag

__all__ = ["FINISHED", "lr_lambda", "run_training"]

log = logging.getLogger("xlam_hpc.train")
FINISHED = "FINISHED"
"""Marker written when max_steps is reached: a spurious restart of the job exits at once."""


def lr_lambda(schedule: str, warmup: int, total: int):
    """Multiplier of the base learning rate at a step (linear warmup, then constant/linear/cosine decay)."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return f


def _write_config(recipe: Recipe, out: Path) -> None:
    from xlam_hpc.config import save_yaml

    data = recipe.to_dict()
    data["fingerprint"] = recipe.fingerprint()
    save_yaml(data, out / "config.yaml")


class _Run:
    """State of one training process (built in order by run_training)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.out = Path(recipe.output_dir)
        self.dist = detect(port_base=recipe.launch.master_port_base)
        setup_logging(self.dist.rank)
        self.history: list[tuple[int, float]] = []  # (step, global mean loss) at each log step with loss tokens
        self.eval_history: list[tuple[int, float]] = []  # (step, validation loss)
        self.rates: list[float] = []
        self.empty_steps = 0  # steps without a single loss token (all samples dropped)
        self.evaluator: Any = None

    # -- setup ------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Checks that need no process group: configuration errors surface in seconds, on every rank. The
        configuration checks are train.preflight's, the same `submit` runs before queueing; here come the lock
        and the device checks around them."""
        from xlam_hpc.train import runtime
        from xlam_hpc.train.preflight import preflight

        r, t = self.recipe, self.recipe.train
        if self.dist.rank == 0:  # a second job on the same output_dir is refused here
            self.lock = acquire_output_lock(self.out)
        runtime.configure_determinism(t.deterministic)  # before the probe initializes CUDA
        cuda = runtime.probe_cuda()
        gpus_per_task = os.environ.get("SLURM_GPUS_PER_TASK", "")
        runtime.check_devices(
            gpus_per_node=r.launch.gpus_per_node,
            precision=t.precision,
            local_ranks=runtime.local_world_size(self.dist, r.launch.tasks_per_node),
            cuda=cuda,
            gpus_per_task=int(gpus_per_task) if gpus_per_task.isdigit() else None,
        )
        self.precision = runtime.resolve_precision(t.precision, cuda)
        self.model_cfg = self._attention(cuda)
        checked = preflight(r, self.dist.world_size, precision=self.precision)
        self.ds_config = checked.ds_config
        self.tokenizer = checked.tokenizer
        self.chat_template = checked.chat_template

    def _attention(self, cuda: Any) -> Any:
        """The model section with `auto` attention resolved for this device (train.attention)."""
        import torch

        from xlam_hpc.train.attention import resolve_attention

        r = self.recipe
        capability = torch.cuda.get_device_capability() if cuda.usable else None
        impl = resolve_attention(r.model.attn_implementation, packing=r.collate.packing, cuda_capability=capability)
        if self.dist.rank == 0:
            log.info("attention: %s%s", impl, " (auto)" if r.model.attn_implementation == "auto" else "")
        return dataclasses.replace(r.model, attn_implementation=impl)

    def setup(self) -> None:
        import torch

        from xlam_hpc.stream.seeding import seed_rank
        from xlam_hpc.train.export import peak_rss_mib
        from xlam_hpc.train.model import train_dtype
        from xlam_hpc.train.runtime import device_for, init_process_group

        r = self.recipe
        self.preflight()
        # the process group first: ZeRO-3 builds the model partitioned across the ranks from the start
        self.device = device_for(self.dist)
        self.coll = init_process_group(self.dist, timeout_s=max(600.0, r.train.grace_period_s * 4))
        self.build_kwargs = {
            "dtype": train_dtype(self.precision),
            "ds_config": self.ds_config,
            "seq_length": r.collate.seq_length,
            "seed": r.seed,  # identical initial weights on every rank, and for every build (DPO reference)
        }
        torch.manual_seed(r.seed)
        self.model = self._model()
        self.memory = {"model": peak_rss_mib()}  # ZeRO-3 vs ZeRO-2: bench/zero_init_memory.py
        self.reference = self._reference()
        seed_rank(r.seed, self.dist.rank)  # from here on each rank draws its own dropout masks
        self.ckpt = CheckpointManager(self.out, self.coll, keep_last=r.train.keep_last, fingerprint=r.fingerprint())
        self.engine = self._engine()
        self.task = self._task()

    def _model(self) -> Any:
        from xlam_hpc.train.model import add_lora, build_model

        r = self.recipe
        model = build_model(self.model_cfg, self.tokenizer, **self.build_kwargs)
        self._kernels(model, "policy")
        if r.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if r.train.lora is not None:
            model = add_lora(model, r.train.lora)
        return model

    def _kernels(self, model: Any, what: str) -> None:
        """torch.compile / Liger as train.compile and train.fused_kernels choose for this device (the policy and
        a DPO reference alike: at step 0 their log-probs must come from the same kernels)."""
        from xlam_hpc.train.kernels import apply_kernels

        t = self.recipe.train
        choice = apply_kernels(model, t.compile, t.fused_kernels, self.device)
        self.liger = choice.liger  # the loss then uses Liger's fused linear cross-entropy too
        if self.dist.rank == 0:
            log.info("%s kernels: %s", what, choice.why)

    def _reference(self) -> Any:
        """The DPO reference model for `train.dpo.reference: model` with full fine-tuning: the initial policy
        rebuilt (same seed, dtype and ZeRO-3 partitioning as the policy; never a deep copy). None for SFT,
        LoRA (the base with adapters disabled) and `precomputed` (no second model during training)."""
        import torch

        from xlam_hpc.train.model import build_model

        r = self.recipe
        if r.task != "dpo" or r.train.lora is not None or r.train.dpo.reference != "model":
            return None
        torch.manual_seed(r.seed)
        reference = build_model(self.model_cfg, self.tokenizer, **self.build_kwargs)
        self._kernels(reference, "reference")
        return reference.eval().requires_grad_(False)

    def _engine(self) -> Any:
        import deepspeed
        import torch

        from xlam_hpc.train.export import peak_rss_mib

        t = self.recipe.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.schedule, t.warmup_steps, t.max_steps))
        engine, *_ = deepspeed.initialize(
            model=self.model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=self.ds_config,
            model_parameters=params,
        )
        m = self.memory
        m["setup"] = peak_rss_mib()
        log.info("peak RSS: %.0f MiB after the model, %.0f MiB after the engine", m["model"], m["setup"])
        return engine

    def _task(self) -> Any:
        from xlam_hpc.train.attention import VARLEN
        from xlam_hpc.train.reference import reference_engine
        from xlam_hpc.train.runtime import all_reduce
        from xlam_hpc.train.tasks import DpoTask, SftTask

        t = self.recipe.train

        def reduce_sum(v: int) -> int:
            return int(all_reduce(int(v), "sum", self.coll.device))

        if self.recipe.task == "dpo":
            if self.reference is not None:  # precomputed: the table is attached by prepare_reference
                self.reference = reference_engine(self.reference, self.engine, self.ds_config)
            return DpoTask(t.dpo, self.reference, reduce_sum, self.dist.world_size, chunk_tokens=t.loss_chunk_tokens)
        return SftTask(
            reduce_sum,
            self.dist.world_size,
            chunk_tokens=t.loss_chunk_tokens,
            liger=self.liger,
            varlen=self.model_cfg.attn_implementation in VARLEN,
        )

    def loader(self) -> Any:
        from xlam_hpc.stream import build_loader

        r = self.recipe
        return build_loader(
            r.data,
            r.collate,
            self.tokenizer,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            seed=r.seed,
            task=r.task,
        )

    # -- checkpoints ------------------------------------------------------------------------------
    def resume(self, loader: Any) -> int:
        """Restore the newest valid checkpoint (if any and allowed); the step to continue from."""
        import torch

        from xlam_hpc.stream import set_rng_state

        r = self.recipe
        self.ckpt.clean_stale()
        self.coll.barrier()
        found = self.ckpt.find_resumable() if r.resume != "never" else None
        if found is None:
            if r.resume == "never" and self.ckpt.checkpoints():
                raise ConfigError(f"{self.out} already holds checkpoints and resume is 'never'")
            return 0
        path, manifest = found
        self.ckpt.check_fingerprint(manifest, force=r.resume == "force")
        if manifest["world_size"] != self.dist.world_size:  # ZeRO partitions differ: via a universal checkpoint
            from xlam_hpc.train.elastic import resume_elastic

            return resume_elastic(
                self.engine, path, manifest, self.coll, loader, seed=r.seed, force=r.resume == "force"
            )
        started = time.monotonic()
        self.engine.load_checkpoint(
            str(path),
            tag="ds",
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
            load_module_strict=r.train.lora is None,
        )
        rank = self.dist.rank
        loader.load_state_dict(
            json.loads((path / f"loader-rank{rank}.json").read_text()), allow_fingerprint_mismatch=r.resume == "force"
        )
        set_rng_state(torch.load(path / f"rng-rank{rank}.pt", weights_only=True))
        log.info("resumed from %s (step %d) in %.2f s", path.name, manifest["step"], time.monotonic() - started)
        return int(manifest["step"])

    def save(self, step: int, loader: Any) -> float:
        import torch

        from xlam_hpc.stream import rng_state

        rank = self.dist.rank
        lora = self.recipe.train.lora is not None

        def write(tmp: Path) -> None:
            rng = rng_state()  # before DeepSpeed runs: saving must not change what the next step draws
            self.engine.save_checkpoint(
                str(tmp), tag="ds", client_state={"step": step}, save_latest=False, exclude_frozen_parameters=lora
            )
            (tmp / f"loader-rank{rank}.json").write_text(json.dumps(loader.state_dict()))
            torch.save(rng, tmp / f"rng-rank{rank}.pt")

        started = time.monotonic()
        self.ckpt.save(step, write, extra={"task": self.recipe.task, "lora": lora})
        return time.monotonic() - started


def run_training(recipe: Recipe) -> int:
    """Train until max_steps (exit 0) or a stop signal (save, exit REQUEUE_EXIT_CODE)."""
    from xlam_hpc.train.stepper import train_steps

    run = _Run(recipe)
    out = run.out
    marker = out / FINISHED
    done = json.loads(marker.read_text()) if marker.exists() else {}
    if done.get("fingerprint") == recipe.fingerprint() and done.get("step", 0) >= recipe.train.max_steps:
        log.info("%s is finished (step %s); nothing to do", out, done.get("step"))
        return 0
    marker.unlink(missing_ok=True)  # e.g. max_steps was raised: train on from the last checkpoint
    stop = StopFlag().install()  # before the slow setup: a signal during start-up still leads to a clean exit
    out.mkdir(parents=True, exist_ok=True)
    if run.dist.rank == 0:  # a stop record nobody consumed (the batch shell was killed first) is stale now
        clear_stop(out)
    run.setup()
    if run.dist.rank == 0:
        _write_config(recipe, out)
    loader = run.loader()
    if recipe.data.eval is not None:
        from xlam_hpc.train.validation import Validator

        run.evaluator = Validator(run, loader)
    step = run.resume(loader)
    # Model, optimizer and library objects live as long as the run: keep them out of every full garbage
    # collection (each walked ~200k objects, ~0.1 s, every few loader steps; bench/loader.py: +20% tokens/s).
    gc.collect()
    gc.freeze()
    if recipe.task == "dpo" and recipe.train.dpo.reference == "precomputed":
        from xlam_hpc.train.reference import prepare_reference

        run.task.reference = prepare_reference(run, step)
    try:
        code = train_steps(run, loader, step, stop)
    finally:
        loader.close()
        if run.evaluator is not None:
            run.evaluator.close()
        stop.uninstall()
    if code == 0 and run.dist.rank == 0:
        marker.write_text(json.dumps({"step": recipe.train.max_steps, "fingerprint": recipe.fingerprint()}) + "\n")
    run.coll.barrier()
    return code


__all__ += ["REQUEUE_EXIT_CODE"]
