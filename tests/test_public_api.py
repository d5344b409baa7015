"""The public surface is small, pinned, and complete; the core never imports torch."""

from __future__ import annotations

import subprocess
import sys

import labfolio

PINNED = {
    "__version__", "init", "log", "finish", "log_artifact", "config", "summary", "current_run",
    "Run", "DisabledRun", "open_store", "RunRecord", "SummaryEntry", "MetricHistory", "Batch",
    "LabfolioError", "NoActiveRunError", "MetricValueError", "MetricKeyError", "ConfigError",
    "StoreError", "StoreUnavailableError", "SchemaTooNewError", "RunNotFoundError", "JournalError",
}


def test_all_is_pinned():
    assert set(labfolio.__all__) == PINNED
    assert len(labfolio.__all__) == len(set(labfolio.__all__))


def test_every_name_in_all_exists():
    for name in labfolio.__all__:
        assert hasattr(labfolio, name), name


def test_every_public_module_defines_all():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(labfolio.__path__, "labfolio."):
        if ".kit" in info.name or "migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), f"{info.name} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.__all__ names missing {name}"


def test_importing_labfolio_and_logging_never_imports_torch(tmp_path):
    code = ("import sys, labfolio; r = labfolio.init(experiment='x'); r.log({'a': 1.0}); r.finish(); "
            "import labfolio.cli, labfolio.compat.wandb, labfolio.metrics; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**__import__("os").environ, "LABFOLIO_DIR": str(tmp_path / "lf")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
