"""Static checks of apptainer.def and the Dockerfile (no apptainer or Docker engine exists here)."""

from __future__ import annotations

import re
from pathlib import Path

import xlam_hpc

ROOT = Path(__file__).resolve().parents[3]


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^%(\w+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_apptainer_def_bootstraps_from_the_same_version_and_runs_xlam_hpc():
    text = (ROOT / "apptainer.def").read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)", text, flags=re.M))
    assert header["Bootstrap"] in ("docker-daemon", "docker", "docker-archive")
    assert header["From"].rsplit(":", 1)[1] == xlam_hpc.__version__
    sections = _sections(text)
    assert {"labels", "environment", "runscript", "test", "help"} <= set(sections)
    assert 'exec xlam-hpc "$@"' in sections["runscript"]
    assert "xlam-hpc --version" in sections["test"] and "xlam-hpc demo" in sections["test"]
    assert re.search(r"--steps 2\b", sections["test"])
    env = sections["environment"]
    for var in ("PYTHONNOUSERSITE=1", "PYTHONUNBUFFERED=1", "HF_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert var in env
    assert f"org.opencontainers.image.version {xlam_hpc.__version__}" in sections["labels"]


def test_dockerfile_pins_the_base_torch_and_keeps_it():
    text = (ROOT / "Dockerfile").read_text()
    pin = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), flags=re.M).group(1)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, flags=re.M).group(1)
    assert f":{pin}-cuda" in base and "@sha256:" in base  # an exact tag (and digest) matching the pin
    assert "--system-site-packages" in text and "constraints.txt" in text
    assert 'ENTRYPOINT ["xlam-hpc"]' in text and re.search(r"^USER \$\{APP_UID\}", text, flags=re.M)
    for var in (
        "PYTHONNOUSERSITE=1",
        "PYTHONUNBUFFERED=1",
        "HF_HOME=",
        "TRITON_CACHE_DIR=",
        "TORCHINDUCTOR_CACHE_DIR=",
    ):
        assert var in text
    assert "org.opencontainers.image.version" in text and "org.opencontainers.image.revision" in text
