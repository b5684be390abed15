"""pytest plugin: under CI=true a test may skip only for a missing GPU; any other skip fails the run.

A fresh machine must have everything the tests need (`make test` installs it), so a skip for anything else
hides a test that did not run. A skip counts as a GPU skip when its reason says GPU or CUDA.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["non_gpu_skips"]

_GPU_WORDS = ("gpu", "cuda")


def _reason(report: Any) -> str:
    longrepr = report.longrepr  # (path, line, "Skipped: reason") for skips
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


def non_gpu_skips(reports: list[Any]) -> list[Any]:
    return [r for r in reports if not any(w in _reason(r).lower() for w in _GPU_WORDS)]


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    bad = non_gpu_skips(reporter.stats.get("skipped", []) if reporter else [])
    if not bad:
        return
    if reporter is not None:
        reporter.section("skipped for something other than a missing GPU (fails under CI=true)", red=True)
        for r in bad:
            reporter.write_line(f"{r.nodeid}: {_reason(r)}")
    if session.exitstatus == 0:
        session.exitstatus = 1
