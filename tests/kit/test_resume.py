"""A killed recipe run resumes from its checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import labfolio  # noqa: E402
from labfolio.kit.recipes import classify, parse_config  # noqa: E402
from labfolio.kit.recipes import checkpoint as checkpoints  # noqa: E402

# MixUp/CutMix, RandAugment, erasing, drop path and an EMA: every random stream and every piece
# of state the loop carries has to come back for the resumed run to match
FLAGS = ["--smoke", "--threads=1", "--epochs=4", "--eval-every=1", "--randaugment-ops=2",
         "--mixup-alpha=0.8", "--cutmix-alpha=1.0", "--erase-prob=0.25", "--drop-path=0.1",
         "--ema-decay=0.9", "--average-last=2", "--average-every=5", "--projection=pca"]


def _config(*flags):
    return parse_config(classify.ClassifyConfig, [*FLAGS, *flags], classify.SMOKE, prog="t")


@pytest.fixture()
def store_dir(tmp_path, monkeypatch):
    for name in ("LABFOLIO_STORE", "LABFOLIO_CONFIG", "LABFOLIO_SEED", "LABFOLIO_MODE",
                 "LABFOLIO_EXPERIMENT", "LABFOLIO_VARIANT", checkpoints.RESUME_ENV, "LABFOLIO_CHECKPOINT_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _history(store_dir, run_id):
    store = labfolio.open_store(str(store_dir))
    try:
        return store.get_run(run_id), store.history(run_id)
    finally:
        store.close()


@pytest.mark.parametrize(("killed_mid_epoch", "augment_chunk"), [(False, 0), (True, 0), (True, 256)])
def test_a_killed_run_resumed_from_its_checkpoint_matches_an_uninterrupted_run(store_dir, monkeypatch,
                                                                               killed_mid_epoch, augment_chunk):
    # augment_chunk=256: 4 batches augmented at once, and the kill lands inside a chunk
    flags = ("--checkpoint-every=1", f"--augment-chunk={augment_chunk}")
    monkeypatch.setenv("LABFOLIO_DIR", str(store_dir / "whole"))
    whole = classify.train(_config(*flags))

    monkeypatch.setenv("LABFOLIO_DIR", str(store_dir / "killed"))
    save, batch = checkpoints.save_checkpoint, classify._with_targets
    saved, batches = [], []

    def save_then_die_after_the_second(path, state):
        save(path, state)
        saved.append(state["epoch"])
        if len(saved) == 2 and not killed_mid_epoch:
            raise KeyboardInterrupt  # as Ctrl-C or the runner's SIGINT would, right after epoch 2

    def batch_then_die_in_epoch_three(*args, **kwargs):
        batches.append(1)
        if killed_mid_epoch and len(saved) == 2 and len(batches) == 2 * 22 + 10:
            raise KeyboardInterrupt  # 10 steps past the checkpoint: the resumed run replays them
        return batch(*args, **kwargs)

    monkeypatch.setattr(classify, "save_checkpoint", save_then_die_after_the_second)
    monkeypatch.setattr(classify, "_with_targets", batch_then_die_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        classify.train(_config(*flags))
    store = labfolio.open_store(str(store_dir / "killed"))
    (killed,) = store.list_runs()
    store.close()
    assert killed.state == "killed"
    assert killed.last_step == (2 * 22 + 8 if killed_mid_epoch else 2 * 22 - 1)
    path = store_dir / "killed" / "checkpoints" / f"{killed.run_id}.pt"
    assert path.is_file()

    monkeypatch.setattr(classify, "save_checkpoint", save)
    monkeypatch.setattr(classify, "_with_targets", batch)
    monkeypatch.setenv(checkpoints.RESUME_ENV, killed.run_id)
    resumed = classify.train(_config(*flags))
    assert resumed.run_id == killed.run_id  # the same labfolio run goes on
    assert not path.exists()  # a finished run keeps no checkpoint
    assert resumed.final == whole.final

    record, history = _history(store_dir / "killed", killed.run_id)
    _, expected = _history(store_dir / "whole", whole.run_id)
    assert record.state == "finished"
    for key in ("train/loss", "lr", "test/acc", "test/loss", "epoch"):
        assert history[key].steps.tolist() == expected[key].steps.tolist(), key  # nothing logged twice
        assert history[key].values.tolist() == expected[key].values.tolist(), key


def test_resuming_a_run_without_a_checkpoint_says_how_to_start_over(store_dir, monkeypatch):
    monkeypatch.setenv("LABFOLIO_DIR", str(store_dir / "plain"))
    plain = classify.train(_config("--epochs=1"))
    with pytest.raises(labfolio.ConfigError, match="checkpoint_every > 0.*without resume"):
        classify.train(_config("--epochs=1", f"--resume={plain.run_id}"))
    record, history = _history(store_dir / "plain", plain.run_id)
    assert record.state == "finished"  # refused before the run's record was touched
    assert len(history["test/acc"].steps) == 1


def test_a_runner_resume_whose_checkpoint_this_machine_cannot_see_starts_a_new_run_with_a_warning(
        store_dir, monkeypatch):
    # what a Ray node meets when the runner saw the checkpoint on its own disk
    monkeypatch.setenv("LABFOLIO_DIR", str(store_dir / "node"))
    earlier = classify.train(_config("--epochs=1"))
    monkeypatch.setenv(checkpoints.RESUME_ENV, earlier.run_id)
    with pytest.warns(RuntimeWarning, match="LABFOLIO_CHECKPOINT_DIR"):
        again = classify.train(_config("--epochs=1"))
    assert again.run_id != earlier.run_id
    record, history = _history(store_dir / "node", earlier.run_id)
    assert record.state == "finished" and len(history["test/acc"].steps) == 1  # left as it was


def test_checkpoints_go_to_the_shared_folder_and_a_run_resumes_from_it(store_dir, monkeypatch):
    shared = store_dir / "nfs" / "checkpoints"
    monkeypatch.setenv("LABFOLIO_CHECKPOINT_DIR", str(shared))
    monkeypatch.setenv("LABFOLIO_DIR", str(store_dir / "home"))
    save = checkpoints.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(classify, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        classify.train(_config("--epochs=2", "--checkpoint-every=1"))
    monkeypatch.setattr(classify, "save_checkpoint", save)
    (saved,) = shared.glob("*.pt")
    assert not (store_dir / "home" / "checkpoints").exists()
    monkeypatch.setenv(checkpoints.RESUME_ENV, saved.stem)
    resumed = classify.train(_config("--epochs=2", "--checkpoint-every=1"))
    assert resumed.run_id == saved.stem and not saved.exists()


def test_a_killed_lm_run_resumed_from_its_checkpoint_matches_an_uninterrupted_run(store_dir, monkeypatch):
    from labfolio.kit.recipes import lm

    flags = ["--smoke", "--threads=1", "--steps=24", "--eval-every=6", "--checkpoint-every=8", "--dropout=0.1",
             "--ema-decay=0.9"]

    def config():
        return parse_config(lm.LMConfig, flags, {**lm.SMOKE, "text": str(lm.smoke_text_path())}, prog="t")

    monkeypatch.setenv("LABFOLIO_DIR", str(store_dir / "whole"))
    whole = lm.train(config())
    monkeypatch.setenv("LABFOLIO_DIR", str(store_dir / "killed"))
    validate = lm._validate
    calls = []

    def validate_then_die_at_step_12(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the validation at step 12, 4 steps past the checkpoint at step 8
            raise KeyboardInterrupt
        return validate(*args, **kwargs)

    monkeypatch.setattr(lm, "_validate", validate_then_die_at_step_12)
    with pytest.raises(KeyboardInterrupt):
        lm.train(config())
    monkeypatch.setattr(lm, "_validate", validate)
    store = labfolio.open_store(str(store_dir / "killed"))
    (killed,) = store.list_runs()
    store.close()
    monkeypatch.setenv(checkpoints.RESUME_ENV, killed.run_id)
    resumed = lm.train(config())
    assert resumed.run_id == killed.run_id
    final = {k: v for k, v in resumed.final.items() if k != "tokens_per_s"}
    assert final == {k: v for k, v in whole.final.items() if k != "tokens_per_s"}
    _, history = _history(store_dir / "killed", killed.run_id)
    _, expected = _history(store_dir / "whole", whole.run_id)
    for key in ("train/loss", "val/loss", "lr"):
        assert history[key].steps.tolist() == expected[key].steps.tolist(), key
        assert history[key].values.tolist() == expected[key].values.tolist(), key
