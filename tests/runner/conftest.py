from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

TOY = Path(__file__).with_name("toy_train.py")


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec file (dedented YAML) and return its path; {toy} and {python} are filled in."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).replace("{toy}", str(TOY)).replace("{python}", sys.executable))
        return path

    return write
