"""Under CI=true a skip for anything but a missing GPU fails the pytest run (a real pytest subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys


def _pytest(tmp_path, body: str, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_x.py").write_text("import pytest\n\n" + body)
    env = {**os.environ, "CI": "true" if ci else "false"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "xlam_hpc.testing.skips", "test_x.py"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)


def test_a_non_gpu_skip_fails_under_ci(tmp_path):
    body = "def test_a():\n    pytest.skip('shellcheck not installed')\n\ndef test_b():\n    pass\n"
    res = _pytest(tmp_path, body, ci=True)
    assert res.returncode == 1 and "test_x.py::test_a" in res.stdout and "shellcheck not installed" in res.stdout
    assert _pytest(tmp_path, body, ci=False).returncode == 0  # outside CI a skip stays a skip


def test_a_gpu_skip_is_allowed_under_ci(tmp_path):
    body = "@pytest.mark.skipif(True, reason='needs a CUDA GPU')\ndef test_a():\n    pass\n"
    assert _pytest(tmp_path, body, ci=True).returncode == 0
