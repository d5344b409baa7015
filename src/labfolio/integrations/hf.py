"""labfolio for Hugging Face ``Trainer``: ``Trainer(..., callbacks=[LabfolioCallback()])``.

The callback turns a training into a labfolio run:

- ``on_train_begin`` starts the run. Its config is ``{"training_args": TrainingArguments.to_dict(),
  "model": model.config.to_dict()}`` plus any ``config=`` given to the callback; the seed is
  ``args.seed`` and the batch size the global one, so samples/s lands in the summary.
- ``on_log`` logs the training metrics at ``state.global_step`` under the names the Trainer
  prints (``loss``, ``grad_norm``, ``learning_rate``, ``epoch``); the end-of-training figures
  (``train_runtime``, ``train_samples_per_second``, ``train_loss``, ``total_flos``...) go to the
  summary.
- ``on_evaluate`` (and ``on_predict``) log the metrics under their own names (``eval_loss``)
  and under an ``eval/`` view (``eval/loss``; ``test/`` for predictions).
- ``on_train_end`` finishes the run. An ``evaluate()`` after training reopens the run for its
  metrics and closes it again.

Under DDP (or any multi-process launch) only the world's main process logs. Pass
``report_to="none"`` to the ``TrainingArguments`` so the Trainer's own reporters stay off.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

__all__ = ["LabfolioCallback", "TRAIN_SUMMARY_KEYS"]

_INSTALL_HINT = "LabfolioCallback needs transformers: pip install 'labfolio[hf]'"

try:  # the callback must subclass TrainerCallback, so this module is where transformers loads
    from transformers import TrainerCallback as _TrainerCallback
except ModuleNotFoundError:  # keeps `import labfolio.integrations.hf` working; __init__ explains
    _TrainerCallback = None

# What the Trainer reports once, at the end of training: summary values, not a series.
TRAIN_SUMMARY_KEYS = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second",
                                "total_flos", "train_loss"})
_VIEW_PREFIXES = {"eval_": "eval/", "test_": "test/"}


def _number(value: Any) -> float | None:
    """A logged value as a float (numpy scalars and 0-d tensors included), else None."""
    if isinstance(value, (str, bytes)) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several numbers
        return None


def _to_dict(obj) -> dict:
    """``obj.to_dict()`` when it has one (TrainingArguments, PretrainedConfig), else {}."""
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is None:
        return {}
    try:
        return dict(to_dict())
    except Exception as exc:  # a broken config must not stop training; it is shown instead
        return {"error": f"{type(obj).__name__}.to_dict() failed: {exc}"}


class LabfolioCallback(_TrainerCallback or object):
    """Log a ``transformers.Trainer`` run to labfolio.

    ``project``, ``experiment``, ``variant``, ``seed`` and ``config`` are those of
    ``labfolio.init``; any other keyword (``tags``, ``hypothesis``, ``store``, ``mode`` ...) is
    passed to it as well. ``seed`` defaults to ``TrainingArguments.seed``.
    """

    def __init__(self, project: str | None = None, experiment: str | None = None,
                 variant: str | None = None, seed: int | None = None, config: dict | None = None,
                 **init_kwargs: Any):
        if _TrainerCallback is None:
            raise ConfigError(_INSTALL_HINT)
        super().__init__()
        self.project, self.experiment, self.variant, self.seed = project, experiment, variant, seed
        self.extra_config = dict(config or {})
        self.init_kwargs = init_kwargs
        self.run = None  # the labfolio run, once training began on the main process
        self._reopened = False

    # -- run lifecycle ---------------------------------------------------------------------------
    def _start(self, args, state, model) -> None:
        import labfolio

        model_config = getattr(model, "config", None)
        config = {"training_args": _to_dict(args), **({"model": _to_dict(model_config)} if model_config else {}),
                  **self.extra_config}
        world = max(int(getattr(args, "world_size", 1) or 1), 1)
        batch_size = (int(getattr(args, "per_device_train_batch_size", 0) or 0)
                      * int(getattr(args, "gradient_accumulation_steps", 1) or 1) * world) or None
        kwargs = {"name": getattr(args, "run_name", None), "batch_size": batch_size, **self.init_kwargs}
        self.run = labfolio.init(
            project=self.project, experiment=self.experiment, variant=self.variant,
            seed=self.seed if self.seed is not None else getattr(args, "seed", None),
            config=config, **kwargs)
        self._reopened = False

    def _ensure_open(self, args, state, model) -> bool:
        """A run to log into: the training's, reopened after training ended, or a new one."""
        if not state.is_world_process_zero:
            return False
        if self.run is None:
            self._start(args, state, model)
            self._reopened = True  # started outside training (evaluate() alone): close after it
        elif getattr(self.run, "state", "running") not in ("running", "disabled"):
            import labfolio

            kwargs = {k: v for k, v in self.init_kwargs.items() if k in ("store", "dir", "mode")}
            self.run = labfolio.init(project=self.project, experiment=self.experiment,
                                     variant=self.variant, run_id=self.run.id, resume=True, **kwargs)
            self._reopened = True
        return True

    # -- events ----------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            if self.run is not None and getattr(self.run, "state", "") == "running":
                self.run.finish()  # a second train() on the same callback is a new run
            self._start(args, state, model)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not logs or not state.is_world_process_zero or self.run is None:
            return
        if any(key.startswith(tuple(_VIEW_PREFIXES)) for key in logs):
            return  # an evaluation's log: on_evaluate / on_predict record it, with the eval/ view
        end_of_training = any(key in TRAIN_SUMMARY_KEYS for key in logs)
        metrics, summary = {}, {}
        for key, value in logs.items():
            number = _number(value)
            if key in TRAIN_SUMMARY_KEYS:
                summary[key] = number if number is not None else value
            elif number is not None and not end_of_training:  # its epoch repeats the last one
                metrics[key] = number
            elif isinstance(value, str):
                summary[key] = value
        if getattr(self.run, "state", "running") != "running":
            return  # training already ended; nothing left that on_log alone should reopen
        if metrics:
            self.run.log(metrics, step=state.global_step)
        if summary:
            self.run.summary.update(summary)

    def _log_prefixed(self, args, state, model, metrics) -> None:
        if not metrics or not self._ensure_open(args, state, model):
            return
        values = {}
        for key, value in metrics.items():
            prefix = next((p for p in _VIEW_PREFIXES if key.startswith(p)), None)
            number = _number(value)
            if prefix is None or number is None:
                continue  # e.g. the epoch the Trainer adds, already logged with the training loss
            values[key] = number
            values[_VIEW_PREFIXES[prefix] + key[len(prefix):]] = number
        if values:
            self.run.log(values, step=state.global_step)
        if self._reopened:
            self.run.finish()
            self._reopened = False

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        self._log_prefixed(args, state, model, metrics)

    def on_predict(self, args, state, control, metrics=None, model=None, **kwargs):
        self._log_prefixed(args, state, model, metrics)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.run is not None:
            self.run.finish()
