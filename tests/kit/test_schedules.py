import math

import pytest

pytest.importorskip("torch")

from labfolio.kit.schedules import (  # noqa: E402
    DECAY_SHAPES,
    SCHEDULES,
    Constant,
    Cosine,
    CosineWarmup,
    Linear,
    WarmupStableDecay,
    make_schedule,
    schedule_param_names,
)

TOTAL = 200
PEAK = 3e-3
FLOOR = 1e-5


def decaying_schedules():
    yield "linear", Linear(lr=PEAK, total_steps=TOTAL, final_lr=FLOOR)
    yield "linear+warmup", Linear(lr=PEAK, total_steps=TOTAL, final_lr=FLOOR, warmup_steps=20)
    yield "cosine", Cosine(lr=PEAK, total_steps=TOTAL, final_lr=FLOOR)
    yield "cosine_warmup", CosineWarmup(lr=PEAK, total_steps=TOTAL, warmup_steps=20, final_lr=FLOOR)
    for shape in DECAY_SHAPES:
        yield f"wsd-{shape}", WarmupStableDecay(
            lr=PEAK, total_steps=TOTAL, warmup_steps=20, decay_fraction=0.2, final_lr=FLOOR, shape=shape
        )
        yield f"wsd-{shape}-no-warmup", WarmupStableDecay(
            lr=PEAK, total_steps=TOTAL, decay_steps=1, final_lr=FLOOR, shape=shape
        )


DECAYING = list(decaying_schedules())
IDS = [name for name, _ in DECAYING]


@pytest.mark.parametrize("schedule", [s for _, s in DECAYING], ids=IDS)
def test_every_decaying_schedule_reaches_its_floor_on_the_last_step_and_stays(schedule):
    assert schedule(TOTAL - 1) == FLOOR
    assert all(schedule(step) == FLOOR for step in range(TOTAL, TOTAL + 50))
    assert max(schedule(step) for step in range(TOTAL)) == pytest.approx(PEAK)


@pytest.mark.parametrize("schedule", [s for _, s in DECAYING], ids=IDS)
def test_after_the_peak_the_lr_never_rises_again(schedule):
    values = [schedule(step) for step in range(TOTAL + 5)]
    peak_step = values.index(max(values))
    after = values[peak_step:]
    assert all(b <= a for a, b in zip(after, after[1:])), "LR rose after the peak"
    assert after[-1] < after[0], "LR never decreased"


@pytest.mark.parametrize("schedule", [s for _, s in DECAYING], ids=IDS)
def test_values_stay_between_zero_and_the_peak(schedule):
    for step in range(TOTAL + 5):
        assert 0.0 <= schedule(step) <= PEAK * (1 + 1e-12)


@pytest.mark.parametrize(
    "schedule",
    [
        CosineWarmup(lr=PEAK, total_steps=TOTAL, warmup_steps=20),
        Linear(lr=PEAK, total_steps=TOTAL, warmup_steps=20),
        WarmupStableDecay(lr=PEAK, total_steps=TOTAL, warmup_steps=20),
    ],
    ids=["cosine_warmup", "linear", "wsd"],
)
def test_warmup_rises_strictly_from_above_zero_to_the_peak(schedule):
    warm = [schedule(step) for step in range(20)]
    assert warm[0] == pytest.approx(PEAK / 20)
    assert all(b > a for a, b in zip(warm, warm[1:]))
    assert warm[-1] == pytest.approx(PEAK)


def test_wsd_holds_the_peak_until_the_cooldown_then_every_cooldown_step_is_below_it():
    wsd = WarmupStableDecay(lr=1.0, total_steps=100, warmup_steps=10, decay_steps=25, shape="linear")
    assert wsd.decay_start == 75
    assert all(wsd(step) == 1.0 for step in range(9, 75))
    cooldown = [wsd(step) for step in range(75, 100)]
    assert all(value < 1.0 for value in cooldown)
    assert cooldown == pytest.approx([1.0 - (i + 1) / 25 for i in range(25)])


def test_wsd_cooldown_shapes_follow_their_formulas():
    steps = range(80, 100)  # last 20 steps of 100
    for shape, factor in (
        ("linear", lambda p: 1 - p),
        ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p))),
        ("1-sqrt", lambda p: 1 - math.sqrt(p)),
    ):
        wsd = WarmupStableDecay(lr=2.0, total_steps=100, decay_steps=20, final_lr=0.5, shape=shape)
        for step in steps:
            progress = (step - 79) / 20
            assert wsd(step) == pytest.approx(0.5 + 1.5 * factor(progress)), (shape, step)


def test_cosine_starts_at_the_peak_and_is_half_way_at_the_midpoint():
    cosine = Cosine(lr=1.0, total_steps=101, final_lr=0.0)
    assert cosine(0) == 1.0
    assert cosine(50) == pytest.approx(0.5)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_are_pure_same_step_same_value_in_any_order(name):
    params = {"lr": 0.1, "total_steps": 50, "warmup_steps": 5}
    params = {k: v for k, v in params.items() if k in schedule_param_names(name)}
    schedule = make_schedule(name, **params)
    forward = [schedule(step) for step in range(60)]
    backward = [schedule(step) for step in reversed(range(60))][::-1]
    again = make_schedule(name, **params)
    assert forward == backward == [again(step) for step in range(60)]
    assert hash(schedule) == hash(again) and schedule == again  # frozen value objects


def test_constant_is_constant():
    assert {Constant(lr=0.01)(step) for step in range(1000)} == {0.01}


def test_make_schedule_builds_each_config_name():
    assert isinstance(make_schedule("constant", lr=1.0), Constant)
    assert isinstance(make_schedule("linear", lr=1.0, total_steps=10), Linear)
    assert isinstance(make_schedule("cosine", lr=1.0, total_steps=10), Cosine)
    assert isinstance(make_schedule("cosine_warmup", lr=1.0, total_steps=10, warmup_steps=2), CosineWarmup)
    assert isinstance(make_schedule("wsd", lr=1.0, total_steps=10, shape="cosine"), WarmupStableDecay)


def test_make_schedule_suggests_the_closest_name_for_a_typo():
    with pytest.raises(ValueError, match=r"unknown LR schedule 'cosine-warmup' \(did you mean 'cosine_warmup'\?\)"):
        make_schedule("cosine-warmup", lr=1.0, total_steps=10, warmup_steps=2)


def test_make_schedule_rejects_unknown_and_missing_parameters_by_name():
    with pytest.raises(ValueError, match=r"no parameter 'warmup' \(did you mean 'warmup_steps'\?\)"):
        make_schedule("wsd", lr=1.0, total_steps=10, warmup=2)
    with pytest.raises(ValueError, match="needs total_steps"):
        make_schedule("cosine", lr=1.0)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Cosine(lr=1e-3, total_steps=10, final_lr=1e-2), "above the peak"),
        (lambda: CosineWarmup(lr=1.0, total_steps=10, warmup_steps=10), "never decays"),
        (lambda: WarmupStableDecay(lr=1.0, total_steps=10, warmup_steps=5, decay_steps=6), "exceed"),
        (lambda: WarmupStableDecay(lr=1.0, total_steps=10, shape="sqrt"), "did you mean '1-sqrt'"),
        (lambda: WarmupStableDecay(lr=1.0, total_steps=10, decay_fraction=0.0), "decay_fraction"),
        (lambda: Linear(lr=-1.0, total_steps=10), "lr must be"),
        (lambda: Linear(lr=1.0, total_steps=0), "total_steps must be"),
    ],
)
def test_bad_parameters_fail_at_construction_with_a_reason(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_negative_or_fractional_steps_are_rejected():
    schedule = Cosine(lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match=">= 0"):
        schedule(-1)
    with pytest.raises(TypeError, match="int"):
        schedule(1.5)
