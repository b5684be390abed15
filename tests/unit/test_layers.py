"""The package follows the data flow convert → shard → stream/collate → train → launch: no layer imports a
later one (training runs the same under any launcher). Checked on the source, every import statement."""

from __future__ import annotations

import ast
from pathlib import Path

import xlam_hpc

ROOT = Path(xlam_hpc.__file__).parent
ORDER = {
    "schema": 0,
    "runenv": 0,
    "convert": 1,
    "synth": 1,
    "shard": 2,
    "stream": 3,
    "collate": 3,
    "train": 4,
    "evaluate": 5,
    "launch": 5,
    "report": 6,
}
"""Layer of each subpackage; a module may import its own layer and earlier ones."""


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "xlam_hpc" and parts[1] in ORDER else None


def test_no_layer_imports_a_later_one():
    backwards = []
    for package, rank in ORDER.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in _imports(path):
                target = _layer(module)
                if target is not None and ORDER[target] > rank:
                    backwards.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module}")
    assert not backwards, "\n".join(backwards)


def test_train_imports_nothing_from_launch():
    found = [
        f"{p.relative_to(ROOT.parent)}:{line}"
        for p in sorted((ROOT / "train").rglob("*.py"))
        for line, module in _imports(p)
        if module.startswith("xlam_hpc.launch")
    ]
    assert found == []
    assert any(m.startswith("xlam_hpc.runenv") for p in (ROOT / "train").rglob("*.py") for _, m in _imports(p))
