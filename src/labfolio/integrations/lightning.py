"""labfolio for Lightning: ``Trainer(logger=LabfolioLogger(experiment="..."))``.

- ``log_hyperparams`` (what ``self.save_hyperparameters()`` records) becomes the run's config;
- ``log_metrics`` logs at the Trainer's global step under the names given to ``self.log``;
- ``finalize`` ends the run: "success" → finished, "failed" → failed, anything else → killed.
  A later ``trainer.test()`` / ``validate()`` with the same logger reopens the run and finishes
  it again;
- only global rank 0 logs (Lightning's ``rank_zero_only``); the other ranks never start a run.

The seed is ``seed=`` or, when ``seed_everything`` ran, the seed it set (``PL_GLOBAL_SEED``).
Works with ``lightning`` and with the older ``pytorch_lightning`` package.
"""

from __future__ import annotations

import os
from argparse import Namespace
from typing import Any, Mapping

from ..errors import ConfigError

__all__ = ["LabfolioLogger"]

_INSTALL_HINT = "LabfolioLogger needs Lightning: pip install 'labfolio[lightning]'"

try:  # the logger must subclass Lightning's Logger, so this module is where Lightning loads
    from lightning.pytorch.loggers import Logger as _Logger
    from lightning.pytorch.utilities import rank_zero_only
except ModuleNotFoundError:
    try:
        from pytorch_lightning.loggers import Logger as _Logger
        from pytorch_lightning.utilities import rank_zero_only
    except ModuleNotFoundError:  # keeps the module importable; __init__ names the extra
        _Logger = None

        def rank_zero_only(fn):
            return fn

_FINAL_STATES = {"success": "finished", "failed": "failed"}


def _plain_params(params: Any) -> dict:
    if params is None:
        return {}
    if isinstance(params, Namespace):
        return dict(vars(params))
    if isinstance(params, Mapping):
        return dict(params)
    raise ConfigError(f"log_hyperparams takes a dict or argparse.Namespace, not {type(params).__name__}")


class LabfolioLogger(_Logger or object):
    """A Lightning ``Logger`` that records the fit as a labfolio run.

    ``project``, ``experiment``, ``variant``, ``seed`` and ``config`` are those of
    ``labfolio.init``; other keywords (``tags``, ``hypothesis``, ``store``, ``batch_size``...)
    are passed to it too. The run starts on the first call that needs it.
    """

    def __init__(self, project: str | None = None, experiment: str | None = None,
                 variant: str | None = None, seed: int | None = None, config: dict | None = None,
                 **init_kwargs: Any):
        if _Logger is None:
            raise ConfigError(_INSTALL_HINT)
        super().__init__()
        self._project, self._experiment_name, self._variant = project, experiment, variant
        self._seed = seed
        self._config = dict(config or {})
        self._init_kwargs = init_kwargs
        self._run = None

    # -- identity Lightning asks for --------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self._experiment_name or os.environ.get("LABFOLIO_EXPERIMENT") or "labfolio"

    @property
    def version(self) -> str | None:
        return self._run.id if self._run is not None else None

    @property
    def experiment(self):
        """The labfolio run (started on first use); ``None`` on ranks other than 0."""
        if rank_zero_only.rank != 0:
            return None
        return self._open()

    def _open(self):
        import labfolio

        if self._run is None:
            seed = self._seed
            if seed is None and os.environ.get("PL_GLOBAL_SEED", "").lstrip("-").isdigit():
                seed = int(os.environ["PL_GLOBAL_SEED"])
            self._run = labfolio.init(project=self._project, experiment=self._experiment_name,
                                      variant=self._variant, seed=seed, config=self._config,
                                      **self._init_kwargs)
        elif getattr(self._run, "state", "running") not in ("running", "disabled"):
            # test()/validate() after fit() finalized the run: continue the same run
            kwargs = {k: v for k, v in self._init_kwargs.items() if k in ("store", "dir", "mode")}
            self._run = labfolio.init(project=self._project, experiment=self._experiment_name,
                                      variant=self._variant, run_id=self._run.id, resume=True, **kwargs)
        return self._run

    # -- what the Trainer calls --------------------------------------------------------------------
    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        values = _plain_params(params)
        if not values:
            return
        run = self._open()
        run.config.update(values)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {key: value for key, value in metrics.items() if value is not None}
        if values:
            self._open().log(values, step=step)

    @rank_zero_only
    def save(self) -> None:
        if self._run is not None and getattr(self._run, "state", "") == "running":
            self._run.flush(timeout=5.0)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run is not None and getattr(self._run, "state", "") == "running":
            state = _FINAL_STATES.get(status, "killed")
            reason = None if state == "finished" else f"Lightning finished with status {status!r}"
            self._run.finish(state, exit_reason=reason)

    @property
    def save_dir(self) -> str | None:
        return None  # checkpoints stay where the Trainer puts them (default_root_dir)
