"""LabfolioCallback inside a real transformers.Trainer: a tiny GPT-2 built from a config, on CPU."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from . import require

transformers = require("transformers")
require("accelerate")
torch = require("torch")

import labfolio  # noqa: E402
from labfolio.integrations.hf import LabfolioCallback  # noqa: E402

VOCAB = 32


class _Tokens(torch.utils.data.Dataset):
    """Deterministic random token sequences; labels are the inputs (causal LM)."""

    def __init__(self, n: int, offset: int = 0):
        self.n, self.offset = n, offset

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        ids = torch.randint(0, VOCAB, (8,), generator=torch.Generator().manual_seed(self.offset + i))
        return {"input_ids": ids, "labels": ids}


def _trainer(tmp_path, callback, **overrides):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    args = dict(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4,
                logging_steps=2, eval_strategy="steps", eval_steps=3, report_to="none", use_cpu=True,
                save_strategy="no", disable_tqdm=True, seed=11, learning_rate=1e-3, run_name="tiny-gpt2")
    args.update(overrides)
    return transformers.Trainer(model=transformers.GPT2LMHeadModel(config),
                                args=transformers.TrainingArguments(**args),
                                train_dataset=_Tokens(32), eval_dataset=_Tokens(8, offset=1000),
                                callbacks=[callback])


def _logged(trainer, key, *, kind="loss"):
    """(step, value) of ``key`` in the Trainer's training logs (kind="loss") or evaluations."""
    return [(entry["step"], entry[key]) for entry in trainer.state.log_history
            if key in entry and kind in entry]


def test_a_trained_model_becomes_a_finished_run_with_args_model_config_and_seed(tmp_path):
    callback = LabfolioCallback(experiment="hf_tiny", variant="gpt2", config={"note": "smoke"})
    _trainer(tmp_path, callback).train()
    record = labfolio.open_store().get_run(callback.run.id)
    assert (record.experiment, record.variant, record.name, record.state) == ("hf_tiny", "gpt2", "tiny-gpt2", "finished")
    assert record.seed == 11 and record.batch_size == 4
    args = record.config["training_args"]
    assert (args["max_steps"], args["learning_rate"], args["logging_steps"]) == (6, 1e-3, 2)
    assert record.config["model"]["model_type"] == "gpt2" and record.config["model"]["n_layer"] == 1
    assert record.config["note"] == "smoke"


def test_training_metrics_match_the_trainers_own_log_history(tmp_path):
    callback = LabfolioCallback(experiment="hf_tiny")
    trainer = _trainer(tmp_path, callback)
    trainer.train()
    store = labfolio.open_store()
    history = store.history(callback.run.id)
    for key in ("loss", "grad_norm", "learning_rate", "epoch"):
        steps, values = zip(*_logged(trainer, key))
        assert history[key].steps.tolist() == list(steps) == [2, 4, 6], key
        assert np.allclose(history[key].values, values), key
    summary = store.get_run(callback.run.id).summary
    final = trainer.state.log_history[-1]
    assert summary["train_runtime"].value == pytest.approx(final["train_runtime"])
    assert summary["train_loss"].value == pytest.approx(final["train_loss"])
    assert "train_runtime" not in history  # an end-of-training figure, not a series


def test_eval_metrics_keep_their_eval_names_and_get_an_eval_view(tmp_path):
    callback = LabfolioCallback(experiment="hf_tiny")
    trainer = _trainer(tmp_path, callback)
    trainer.train()
    history = labfolio.open_store().history(callback.run.id)
    steps, values = zip(*_logged(trainer, "eval_loss", kind="eval_loss"))
    assert list(steps) == [3, 6]
    for key in ("eval_loss", "eval/loss"):
        assert history[key].steps.tolist() == [3, 6], key  # each evaluation logged once
        assert np.allclose(history[key].values, values), key
    assert history["eval/runtime"].steps.tolist() == [3, 6]


def test_evaluate_after_training_reopens_the_run_and_closes_it_again(tmp_path):
    callback = LabfolioCallback(experiment="hf_tiny")
    trainer = _trainer(tmp_path, callback, eval_strategy="no")
    trainer.train()
    metrics = trainer.evaluate()
    store = labfolio.open_store()
    record = store.get_run(callback.run.id)
    assert record.state == "finished" and len(store.list_runs()) == 1
    history = store.history(record.run_id)
    assert history["eval_loss"].steps.tolist() == [6]
    assert history["eval/loss"].values[0] == pytest.approx(metrics["eval_loss"])


def test_only_the_world_main_process_starts_a_run(tmp_path):
    callback = LabfolioCallback(experiment="hf_ddp")
    trainer = _trainer(tmp_path, callback)
    state = transformers.TrainerState(is_world_process_zero=False, is_local_process_zero=True)
    control = transformers.TrainerControl()
    callback.on_train_begin(trainer.args, state, control, model=trainer.model)
    callback.on_log(trainer.args, state, control, logs={"loss": 1.0})
    callback.on_evaluate(trainer.args, state, control, metrics={"eval_loss": 1.0}, model=trainer.model)
    callback.on_train_end(trainer.args, state, control)
    assert callback.run is None
    assert labfolio.open_store().list_runs() == []


def test_without_transformers_the_callback_names_the_extra_to_install(tmp_path):
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from labfolio.integrations.hf import LabfolioCallback\n"
            "try:\n    LabfolioCallback()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ConfigError LabfolioCallback needs transformers: pip install 'labfolio[hf]'"


DDP_SCRIPT = '''
import os
import torch
import transformers
from labfolio.integrations.hf import LabfolioCallback

torch.set_num_threads(1)


class Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        ids = torch.randint(0, 32, (8,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": ids, "labels": ids}


config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                 bos_token_id=0, eos_token_id=0)
args = transformers.TrainingArguments(output_dir="out", max_steps=4, per_device_train_batch_size=4,
                                      logging_steps=2, report_to="none", use_cpu=True,
                                      save_strategy="no", disable_tqdm=True, ddp_backend="gloo")
callback = LabfolioCallback(experiment="hf_ddp")
transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args, train_dataset=Tokens(),
                     callbacks=[callback]).train()
with open(f"rank{os.environ['RANK']}.txt", "w") as fh:  # a file each: the ranks share one stdout
    fh.write(f"rank {os.environ['RANK']} of {args.world_size} run {callback.run and callback.run.id}")
# A process group still alive at interpreter exit can abort in gloo's teardown ("terminate called
# without an active exception"); a well-behaved DDP script tears it down, and so does this one.
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
'''


def test_under_ddp_only_rank_zero_records_a_run(tmp_path):
    (tmp_path / "train.py").write_text(DDP_SCRIPT)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train.py"], capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    [run] = labfolio.open_store().list_runs()
    assert lines == [f"rank 0 of 2 run {run.run_id}", "rank 1 of 2 run None"]
    assert run.state == "finished" and run.batch_size == 8  # 4 per device x 2 processes
    assert run.summary["loss"].count == 2
