"""The step profiler: timed and profiled windows summarised into the run, changing nothing else."""

import pytest

torch = pytest.importorskip("torch")

import labfolio  # noqa: E402
from labfolio.kit.recipes import classify, lm, parse_config  # noqa: E402
from labfolio.kit.recipes.profiling import StepProfiler, device_time_and_ops  # noqa: E402

from .conftest import stored_run  # noqa: E402

PROFILE_KEYS = {"profile/wall_ms_per_step", "profile/device_ms_per_step", "profile/device_busy",
                "profile/device_ops_per_step"}


def stored(store_dir, run_id):
    _, history, artifacts = stored_run(store_dir, run_id)
    return history, artifacts


def smoke_classify(*flags):
    return parse_config(classify.ClassifyConfig, ["--smoke", "--threads=1", "--epochs=1", *flags],
                        classify.SMOKE, prog="t")


def smoke_lm(*flags):
    preset = {**lm.SMOKE, "text": str(lm.smoke_text_path())}
    return parse_config(lm.LMConfig, ["--smoke", "--threads=1", *flags], preset, prog="t")


@pytest.mark.parametrize("recipe", ["classify", "lm"])
def test_a_profiled_run_logs_the_step_anatomy_once_and_a_table_and_trains_exactly_as_without(
        store_dir, capsys, recipe):
    make, module = (smoke_classify, classify) if recipe == "classify" else (smoke_lm, lm)
    plain = module.train(make())
    profiled = module.train(make("--profile-steps=2", "--profile-start=1"))
    history, artifacts = stored(store_dir, profiled.run_id)
    assert PROFILE_KEYS <= set(history)
    for key in PROFILE_KEYS:
        assert history[key].steps.tolist() == [4]  # the last profiled step: 1 + 2 x 2 - 1
    assert history["profile/wall_ms_per_step"].values[0] > 0
    # on CPU there is no device to wait on
    assert history["profile/device_ms_per_step"].values[0] == 0 == history["profile/device_ops_per_step"].values[0]
    (table,) = [a for a in artifacts if a.name == f"step_profile_{profiled.run_id}.txt"]
    assert table.kind == "text"
    assert "profile:" in capsys.readouterr().out
    assert plain.train_loss == profiled.train_loss  # timing and profiling change nothing computed


def test_the_profile_table_names_the_top_host_operators(tmp_path):
    profiler = StepProfiler(steps=2, start=0, device=torch.device("cpu"))
    weights = torch.randn(32, 32)
    result = None
    for step in range(4):
        profiler.before_step(step)
        (weights @ weights).relu().sum()
        result = profiler.after_step(step) or result
    assert result is not None and result.metrics["profile/wall_ms_per_step"] > 0
    text = result.write(tmp_path, "r1").read_text()
    assert "Top operators by host time (2 steps)" in text and "aten::mm" in text
    assert text.startswith("profile/wall_ms_per_step: ")


def test_a_window_past_the_last_step_says_so_at_once_and_profiles_nothing(store_dir, capsys):
    result = classify.train(smoke_classify("--profile-steps=500"))
    assert "nothing will be profiled; lower profile_start or profile_steps" in capsys.readouterr().err
    history, _ = stored(store_dir, result.run_id)
    assert not PROFILE_KEYS & set(history)


def test_negative_profile_settings_are_refused_with_their_names():
    with pytest.raises(labfolio.ConfigError, match="profile_steps must be >= 0"):
        smoke_classify("--profile-steps=-1")
    with pytest.raises(labfolio.ConfigError, match="profile_start must be >= 0"):
        smoke_lm("--profile-start=-5")


def test_device_time_counts_each_kernel_once_not_again_through_the_operator_that_launched_it():
    from types import SimpleNamespace

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    averages = [
        # aten::mm on the host, carrying its kernel's 300 us, and the kernel itself
        SimpleNamespace(device_type=cpu, self_device_time_total=300.0, count=10, is_user_annotation=False),
        SimpleNamespace(device_type=cuda, self_device_time_total=300.0, count=10, is_user_annotation=False),
        SimpleNamespace(device_type=cuda, self_device_time_total=50.0, count=5, is_user_annotation=False),
        # a record_function range shown on the device timeline
        SimpleNamespace(device_type=cuda, self_device_time_total=350.0, count=1, is_user_annotation=True),
    ]
    assert device_time_and_ops(averages) == (0.35, 15)
