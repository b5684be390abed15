"""Integration tests share the root conftest's training fixtures (train_data, write_recipe)."""

from __future__ import annotations

from tests.conftest import write_recipe

__all__ = ["write_recipe"]
