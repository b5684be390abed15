"""evaluate stage: function-calling evaluation of a model or run (`xlam-hpc eval`, docs/evaluation.md).

items (what is asked) → generate (the model, rendered with training's chat template) → parse/score (E) →
runner (resumable results file, results.json, results.md).
"""

from __future__ import annotations

from xlam_hpc.evaluate.items import EvalItem, items_from_unified
from xlam_hpc.evaluate.runner import EvalConfig, run_eval

__all__ = ["EvalConfig", "EvalItem", "items_from_unified", "run_eval"]
