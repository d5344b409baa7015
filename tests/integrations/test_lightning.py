"""LabfolioLogger inside a real Lightning Trainer, a few CPU steps of a tiny regression model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from . import require

torch = require("torch")
require("lightning")
import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402

import labfolio  # noqa: E402
from labfolio.integrations.lightning import LabfolioLogger  # noqa: E402


class TinyRegressor(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 4, fail_at_step: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at_step is not None and self.global_step == self.hparams.fail_at_step:
            raise RuntimeError("boom")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _loader(n: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def _trainer(tmp_path, logger, **overrides):
    torch.set_num_threads(1)
    options = dict(max_steps=6, log_every_n_steps=2, val_check_interval=3, limit_val_batches=2,
                   logger=logger, accelerator="cpu", devices=1, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    options.update(overrides)
    return pl.Trainer(**options)


def test_a_fit_becomes_a_finished_run_with_hyperparams_metrics_and_seed(tmp_path):
    pl.seed_everything(5, verbose=False)
    logger = LabfolioLogger(experiment="lit_tiny", variant="mlp", config={"data": "sum-of-3"})
    _trainer(tmp_path, logger).fit(TinyRegressor(hidden=4), _loader(), _loader(8, seed=1))
    store = labfolio.open_store()
    record = store.get_run(logger.version)
    assert (record.experiment, record.variant, record.seed, record.state) == ("lit_tiny", "mlp", 5, "finished")
    assert record.config == {"data": "sum-of-3", "lr": 0.05, "hidden": 4, "fail_at_step": None}
    history = store.history(record.run_id)
    # Lightning's logging step is the 0-based index of the batch just trained: training logs
    # every 2nd batch (1, 3, 5), validation runs after the 3rd and 6th batch (2, 5)
    assert history["train/loss"].steps.tolist() == [1, 3, 5]
    assert history["val/loss"].steps.tolist() == [2, 5]
    assert record.summary["train/loss"].count == 3


def test_testing_after_fit_continues_the_same_run(tmp_path):
    logger = LabfolioLogger(experiment="lit_tiny")
    trainer = _trainer(tmp_path, logger)
    model = TinyRegressor()
    trainer.fit(model, _loader(), _loader(8, seed=1))
    results = trainer.test(model, _loader(8, seed=2), verbose=False)
    store = labfolio.open_store()
    assert [r.run_id for r in store.list_runs()] == [logger.version]
    record = store.get_run(logger.version)
    assert record.state == "finished"
    assert record.summary["test/loss"].last == pytest.approx(results[0]["test/loss"])


def test_a_fit_that_raises_is_recorded_as_failed(tmp_path):
    logger = LabfolioLogger(experiment="lit_tiny")
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, logger).fit(TinyRegressor(fail_at_step=4), _loader(), _loader(8, seed=1))
    record = labfolio.open_store().get_run(logger.version)
    assert record.state == "failed" and "failed" in record.exit_reason
    assert record.summary["train/loss"].last_step == 3  # what was logged before the crash is kept


def test_ranks_other_than_zero_never_start_a_run(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = LabfolioLogger(experiment="lit_ddp")
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.finalize("success")
    assert logger.experiment is None and logger.version is None
    assert labfolio.open_store().list_runs() == []


def test_without_lightning_the_logger_names_the_extra_to_install(tmp_path):
    code = ("import sys; sys.modules['lightning'] = sys.modules['pytorch_lightning'] = None\n"
            "from labfolio.integrations.lightning import LabfolioLogger\n"
            "try:\n    LabfolioLogger()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ConfigError LabfolioLogger needs Lightning: pip install 'labfolio[lightning]'"
