"""Which runs describe an experiment: one attempt per seed, the one the results count."""

from __future__ import annotations

from labfolio.analysis import RunView, described_runs


def test_described_runs_keep_one_attempt_per_seed_preferring_the_one_that_counts():
    def view(run_id, seed, state="finished", started=0.0, variant="v"):
        return RunView(run_id=run_id, experiment="e", variant=variant, seed=seed, state=state, started_at=started)

    runs = [
        view("old_ok", 0, started=1.0), view("new_crashed", 0, state="crashed", started=2.0),  # the finished one counts
        view("short", 1, started=1.0), view("long", 1, started=2.0),  # the newer finished rerun
        view("killed_a", 2, state="killed", started=1.0), view("killed_b", 2, state="killed", started=2.0),
        view("no_seed_1", None), view("no_seed_2", None, state="killed"),
    ]
    assert [r.run_id for r in described_runs(runs)] == ["old_ok", "long", "killed_b", "no_seed_1", "no_seed_2"]
