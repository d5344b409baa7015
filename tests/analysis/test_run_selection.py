"""Which runs a comparison counts: finished runs, one per seed.

- A killed run is left out by default (its last values are not final results); a human who marks
  it valid brings it back.
- Two runs of one seed count once: the newest. A newer run that is itself excluded (crashed) does
  not push out the older finished run of that seed.
"""

from __future__ import annotations

from labfolio.analysis import RunView, seed_statistics


def _run(run_id, variant, seed, acc, state="finished", started_at=None, status_override=None):
    return RunView(run_id=run_id, experiment="e", variant=variant, seed=seed, state=state,
                   summary={"test/acc": acc}, started_at=started_at, status_override=status_override)


def test_killed_runs_are_left_out_of_comparisons_unless_marked_valid():
    runs = [_run("a0", "base", 0, 0.90), _run("a1", "base", 1, 0.91),
            _run("b0", "cand", 0, 0.50, state="killed"), _run("b1", "cand", 1, 0.93)]
    report = seed_statistics(runs, ["test/acc"], baselines="base")
    assert report.group("e", "cand").run_ids == ("b1",)
    assert [(x.run_id, x.reason) for x in report.excluded] == [("b0", "killed")]

    runs[2] = _run("b0", "cand", 0, 0.50, state="killed", status_override="valid")
    report = seed_statistics(runs, ["test/acc"], baselines="base")
    assert report.group("e", "cand").run_ids == ("b0", "b1")


def test_a_seed_run_twice_counts_once_and_the_newest_run_counts():
    runs = [_run("new0", "base", 0, 0.92, started_at=200.0), _run("old0", "base", 0, 0.80, started_at=100.0),
            _run("s1", "base", 1, 0.91, started_at=150.0)]
    report = seed_statistics(runs, ["test/acc"])
    group = report.group("e", "base")
    assert sorted(group.run_ids) == ["new0", "s1"]
    assert group.metrics["test/acc"].n == 2
    (excluded,) = report.excluded
    assert excluded.run_id == "old0" and "run new0 counts instead" in excluded.reason


def test_older_attempts_of_seeds_count_under_one_reason_in_the_excluded_summary():
    # each older attempt names its own newer run, so counting by the full reason gave "1 ..." per run
    runs = [_run("new0", "base", 0, 0.92, started_at=200.0), _run("old0", "base", 0, 0.80, started_at=100.0),
            _run("new1", "base", 1, 0.91, started_at=210.0), _run("old1", "base", 1, 0.81, started_at=110.0),
            _run("crash2", "base", 2, 0.10, state="crashed", started_at=120.0)]
    report = seed_statistics(runs, ["test/acc"])
    assert report.excluded_summary == "3 runs excluded: 2 superseded by a newer run of the same seed, 1 crashed"


def test_a_newer_crashed_retry_does_not_push_out_the_finished_run_of_its_seed():
    runs = [_run("done0", "base", 0, 0.90, started_at=100.0),
            _run("retry0", "base", 0, 0.10, state="crashed", started_at=200.0)]
    report = seed_statistics(runs, ["test/acc"])
    assert report.group("e", "base").run_ids == ("done0",)
    assert [x.run_id for x in report.excluded] == ["retry0"]


def test_runs_without_a_seed_are_never_treated_as_repeats():
    runs = [_run("x", "base", None, 0.9), _run("y", "base", None, 0.8)]
    assert seed_statistics(runs, ["test/acc"]).group("e", "base").run_ids == ("x", "y")
