"""Run code written for the common ``wandb`` calls unchanged: ``import labfolio.compat.wandb as wandb``.

The mapping: ``project`` → project, ``group`` → experiment, ``job_type`` → variant, ``name`` →
run name, ``config["seed"]`` (if present) → seed, ``dir`` → the labfolio folder, ``mode`` as is
(``dryrun`` means offline). Everything lands in labfolio's store and notebook.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from .. import _CurrentRunAttribute
from .. import run as _run_module
from ..config import to_config_dict

__all__ = ["init", "log", "finish", "config", "summary", "run", "Run"]

config = _CurrentRunAttribute("config")
summary = _CurrentRunAttribute("summary")

_MODE_ALIASES = {"dryrun": "offline", "online": "online", "offline": "offline", "disabled": "disabled",
                 "run": "online", "shared": "online"}


class Run:
    """The handle ``wandb.init`` returns: ``id``, ``name``, ``config``, ``summary``, ``log``, ``finish``."""

    def __init__(self, inner):
        self._inner = inner

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def config(self):
        return self._inner.config

    @property
    def summary(self):
        return self._inner.summary

    @property
    def project(self) -> str:
        return getattr(self._inner, "project", "")

    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        self._inner.log(data, step=step, commit=commit)

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        self._inner.finish("finished" if not exit_code else "failed",
                           **({"exit_reason": f"exit code {exit_code}"} if exit_code else {}))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._inner.__exit__(exc_type, exc, tb)


_active: Run | None = None


def init(project: str | None = None, name: str | None = None, config: Any = None,
         group: str | None = None, job_type: str | None = None, tags=None, notes: str | None = None,
         dir: str | os.PathLike | None = None, mode: str | None = None, id: str | None = None,
         resume: bool | str | None = None, reinit: bool | None = None, entity: str | None = None,
         **ignored: Any) -> Run:
    """``wandb.init`` with labfolio underneath. Unknown wandb arguments are accepted and ignored."""
    global _active
    config_dict = to_config_dict(config)
    seed = config_dict.get("seed")
    labfolio_dir = None
    if dir is not None:
        labfolio_dir = os.path.join(os.fspath(dir), ".labfolio")
    inner = _run_module.init(
        project=project, experiment=group, variant=job_type, seed=seed if isinstance(seed, int) else None,
        config=config_dict, name=name, tags=tags, notes=notes, dir=labfolio_dir,
        mode=_MODE_ALIASES.get((mode or os.environ.get("WANDB_MODE") or "online").lower(), "online"),
        run_id=id, resume=resume,
    )
    _active = Run(inner)
    return _active


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    _run_module.current_run().log(data, step=step, commit=commit)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    global _active
    if _active is not None:
        _active.finish(exit_code, quiet)
        _active = None


def __getattr__(name: str):
    if name == "run":  # wandb.run is None until init()
        return _active
    raise AttributeError(f"labfolio.compat.wandb has no attribute {name!r} (labfolio covers the common calls)")
