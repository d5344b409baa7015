"""Tests of labfolio's integrations with the real tools (transformers, Lightning, TensorBoard, wandb)."""

import importlib
import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str):
    """The module, or a skip when it is not installed; CI installs every extra, so there a
    missing tool fails the test instead of hiding it."""
    if IN_CI:
        return importlib.import_module(module)
    return pytest.importorskip(module)
