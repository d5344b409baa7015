import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from labfolio.kit.averaging import (  # noqa: E402
    EMA,
    LastKAverage,
    average_checkpoint_files,
    average_state_dicts,
)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    return model


def set_all(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(value)


def test_ema_follows_the_closed_form_of_repeated_updates():
    model = tiny_model()
    set_all(model, 0.0)
    ema = EMA(model, decay=0.9)
    set_all(model, 1.0)
    for _ in range(5):
        ema.update(model)
    expected = 1.0 - 0.9**5
    for key, _ in model.named_parameters():
        assert torch.allclose(ema.shadow[key], torch.full_like(ema.shadow[key], expected))


def test_ema_with_warmup_tracks_early_weights_more_closely():
    model = tiny_model()
    set_all(model, 0.0)
    plain, warm = EMA(model, decay=0.999), EMA(model, decay=0.999, warmup=True)
    set_all(model, 1.0)
    plain.update(model)
    warm.update(model)
    weight = "0.weight"
    assert warm.shadow[weight].mean() == pytest.approx(0.9)  # first update uses decay 1/10
    assert plain.shadow[weight].mean() == pytest.approx(0.001)


def test_ema_copies_integer_buffers_instead_of_averaging_them():
    model = tiny_model()
    ema = EMA(model, decay=0.5)
    model.train()
    model(torch.randn(8, 3))
    model(torch.randn(8, 3))
    ema.update(model)
    assert ema.shadow["1.num_batches_tracked"].item() == 2


def test_ema_applied_to_swaps_weights_in_and_restores_the_live_ones():
    model = tiny_model()
    set_all(model, 0.0)
    ema = EMA(model, decay=0.0)
    set_all(model, 2.0)
    ema.update(model)  # decay 0: the average is the current weights
    set_all(model, 5.0)
    with ema.applied_to(model):
        assert all(torch.all(p == 2.0) for p in model.parameters())
    assert all(torch.all(p == 5.0) for p in model.parameters())


def test_ema_state_dict_round_trips():
    model = tiny_model()
    ema = EMA(model, decay=0.9, warmup=True)
    ema.update(model)
    restored = EMA(tiny_model(1), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.num_updates == 1 and restored.decay == 0.9 and restored.warmup
    assert all(torch.equal(restored.shadow[k], v) for k, v in ema.shadow.items())


def test_ema_rejects_a_decay_outside_zero_one():
    with pytest.raises(ValueError, match="decay"):
        EMA(tiny_model(), decay=1.0)


def test_average_of_state_dicts_is_the_elementwise_mean_and_keeps_dtype():
    states = [{"w": torch.full((2, 2), float(i), dtype=torch.bfloat16), "n": torch.tensor(i)} for i in range(4)]
    averaged = average_state_dicts(states)
    assert averaged["w"].dtype == torch.bfloat16
    assert torch.equal(averaged["w"], torch.full((2, 2), 1.5, dtype=torch.bfloat16))
    assert averaged["n"].item() == 3  # integer entries come from the newest state


def test_weighted_average_uses_normalised_weights():
    states = [{"w": torch.zeros(3)}, {"w": torch.ones(3)}]
    assert torch.allclose(average_state_dicts(states, weights=[1.0, 3.0])["w"], torch.full((3,), 0.75))


def test_averaging_mismatched_state_dicts_names_the_problem():
    with pytest.raises(ValueError, match="different keys"):
        average_state_dicts([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])
    with pytest.raises(ValueError, match="shape"):
        average_state_dicts([{"a": torch.zeros(1)}, {"a": torch.zeros(2)}])
    with pytest.raises(ValueError, match="at least one"):
        average_state_dicts([])


def test_last_k_average_keeps_only_the_newest_k_snapshots():
    model = tiny_model()
    averager = LastKAverage(k=3, every=10)
    for step in range(0, 60):
        set_all(model, float(step))
        averager.maybe_add(step, model)
    assert list(averager.steps) == [30, 40, 50]
    averaged = averager.average()
    assert torch.allclose(averaged["0.weight"], torch.full((4, 3), 40.0))


def test_last_k_average_loads_back_into_the_model():
    model = tiny_model()
    averager = LastKAverage(k=2)
    for value in (1.0, 3.0):
        set_all(model, value)
        averager.add(model)
    model.load_state_dict(averager.average())
    assert all(torch.all(p == 2.0) for p in model.parameters())


def test_last_k_average_without_snapshots_says_what_to_do():
    with pytest.raises(ValueError, match="add"):
        LastKAverage(k=2).average()


def test_average_checkpoint_files_reads_saved_state_dicts(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"ckpt{i}.pt"
        torch.save({"model": {"w": torch.full((2,), float(i))}, "step": i}, path)
        paths.append(path)
    averaged = average_checkpoint_files(paths, key="model")
    assert torch.allclose(averaged["w"], torch.ones(2))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        average_checkpoint_files([tmp_path / "missing.pt"])
