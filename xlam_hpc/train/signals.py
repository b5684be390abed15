"""Stop-and-save on SIGTERM / SIGUSR1 / SIGUSR2, decided collectively.

The handler only sets a flag (nothing unsafe runs inside a signal handler). Every step the flag is
all-reduced with MAX, so if any rank was signalled, all ranks stop after the same step, save the same
checkpoint collectively and exit with REQUEUE_EXIT_CODE ("checkpointed, requeue me"). Slurm signals
only some processes in some modes (srun tasks vs the batch shell), hence the collective decision.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

from xlam_hpc.runenv.stops import REQUEUE_EXIT_CODE

__all__ = ["REQUEUE_EXIT_CODE", "STOP_SIGNALS", "StopFlag"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class StopFlag:
    """Installs the handlers; `should_stop()` is the collective check (call it on every rank every step)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.received_at: float | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopFlag:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        # A file-size limit (RLIMIT_FSIZE) must surface as an OSError we can report, not a silent kill.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum, self.received_at = signum, time.monotonic()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "none"

    def should_stop(self, group_reduce: object | None = None) -> bool:
        """True on every rank if any rank got a stop signal. `group_reduce(flag: int) -> int` is the
        MAX all-reduce (None in single-process runs)."""
        local = 1 if self.signum is not None else 0
        if group_reduce is None:
            return bool(local)
        return bool(group_reduce(local))  # type: ignore[operator]
