"""Dashboard pages and their JSON twins, through httpx (FastAPI's TestClient)."""

from __future__ import annotations

import numpy as np
import pytest

from seed import append_points, finish_run, start_run

PAGES = ["/runs", "/experiments", "/experiments/exp_a", "/runs/exp_a_mhc_s0",
         "/compare?run=exp_a_mhc_s0&run=exp_a_baseline_s1"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_a_json_twin(client, page):
    path, _, query = page.partition("?")
    html = client.get(page, headers={"accept": "text/html"})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    twin = client.get(f"{path}.json" + (f"?{query}" if query else ""))
    assert twin.status_code == 200 and twin.headers["content-type"].startswith("application/json")
    assert twin.json()  # not empty
    assert f'href="{path}.json' in html.text  # the page links its twin


def test_runs_table_sorts_by_a_summary_metric_with_runs_lacking_it_last(client, seeded_store):
    start_run(seeded_store, "no_metric_run", experiment="exp_c")
    data = client.get("/runs.json", params={"sort": "-summary.test/acc", "per_page": 500}).json()
    values = [r["summary"]["test/acc"] for r in data["runs"]]
    present = [v for v in values if v is not None]
    assert present == sorted(present, reverse=True)
    assert values[-2:] == [None, None]  # exp_b's run and the new one have no test/acc
    ascending = client.get("/runs.json", params={"sort": "summary.test/acc", "per_page": 500}).json()
    assert [r["summary"]["test/acc"] for r in ascending["runs"]][:len(present)] == sorted(present)


def test_runs_table_filters_on_config_keys_and_summary_metrics(client):
    by_config = client.get("/runs.json", params={"f": "config.lr>0.005"}).json()
    assert [r["run_id"] for r in by_config["runs"]] == ["exp_b_baseline_s0"]
    nested = client.get("/runs.json", params={"f": ["config.model.width=64", "config.mhc=true"]}).json()
    assert nested["total"] == 3 and {r["variant"] for r in nested["runs"]} == {"mhc"}
    by_metric = client.get("/runs.json", params={"f": "summary.test/acc>0.8", "cols": "summary.test/acc"}).json()
    assert by_metric["total"] == 3
    assert all(r["summary"]["test/acc"] > 0.8 for r in by_metric["runs"])


def test_runs_table_filters_by_experiment_variant_state_and_search(client):
    assert client.get("/runs.json", params={"experiment": "exp_a", "variant": "mhc"}).json()["total"] == 3
    assert client.get("/runs.json", params={"state": "running"}).json()["total"] == 1
    assert client.get("/runs.json", params={"q": "gpu-a"}).json()["total"] == 7  # machine column
    assert client.get("/runs.json", params={"q": "exp_b"}).json()["total"] == 1


def test_runs_table_pages_cover_every_run_exactly_once(tmp_path):
    from fastapi.testclient import TestClient

    from labfolio.store import open_store
    from labfolio.web.app import create_app

    store = open_store(tmp_path / "many")
    for i in range(123):
        start_run(store, f"run_{i:03d}", experiment=f"e{i % 4}", seed=i, state="finished")
    client = TestClient(create_app(store))
    seen = []
    first = client.get("/runs.json", params={"per_page": 25, "sort": "seed"}).json()
    assert first["total"] == 123 and first["pages"] == 5
    for page in range(1, first["pages"] + 1):
        seen += [r["run_id"] for r in client.get("/runs.json", params={"per_page": 25, "page": page,
                                                                       "sort": "seed"}).json()["runs"]]
    assert seen == [f"run_{i:03d}" for i in range(123)]


def test_bad_filter_is_a_400_that_says_how_to_write_one(client):
    response = client.get("/runs.json", params={"f": "nonsense"})
    assert response.status_code == 400 and "config.lr>=0.001" in response.json()["detail"]
    response = client.get("/runs.json", params={"sort": "no_such_column"})
    assert response.status_code == 400 and "config.<key>" in response.json()["detail"]


def test_downsampled_series_keeps_spikes_ends_and_the_point_budget(seeded_store, client):
    start_run(seeded_store, "long_run", experiment="exp_long")
    steps = np.arange(100_000)
    values = np.sin(steps / 1000.0)
    values[43_210] = 50.0  # one-step spike
    values[77_777] = -40.0
    append_points(seeded_store, "long_run", "loss", steps, values)
    data = client.get("/data/series", params={"run": "long_run", "key": "loss", "points": 2000}).json()
    series = data["series"][0]
    assert len(series["x"]) <= 2000 and series["total"] == 100_000
    assert max(series["y"]) == 50.0 and min(series["y"]) == -40.0
    assert series["x"][0] == 0 and series["x"][-1] == 99_999  # the curve ends where the run is
    assert series["x"] == sorted(series["x"])


def test_zoom_rebuckets_inside_the_view(seeded_store, client):
    start_run(seeded_store, "zoom_run", experiment="exp_long")
    steps = np.arange(100_000)
    append_points(seeded_store, "zoom_run", "loss", steps, np.cos(steps / 10.0))
    full = client.get("/data/series", params={"run": "zoom_run", "key": "loss", "points": 500}).json()["series"][0]
    zoom = client.get("/data/series", params={"run": "zoom_run", "key": "loss", "points": 500,
                                              "xmin": 10_000, "xmax": 11_000}).json()["series"][0]
    inside = [x for x in zoom["x"] if 10_000 <= x <= 11_000]
    assert all(9_999 <= x <= 11_001 for x in zoom["x"])  # one point either side of the view at most
    assert len(inside) > 200  # full resolution for the view, not the ~5 points of the full curve
    assert len([x for x in full["x"] if 10_000 <= x <= 11_000]) < 20


def test_nan_points_are_sent_as_gaps(seeded_store, client):
    start_run(seeded_store, "nan_run", experiment="exp_nan")
    append_points(seeded_store, "nan_run", "loss", [0, 1, 2, 3], [1.0, float("nan"), 0.5, float("inf")])
    series = client.get("/data/series", params={"run": "nan_run", "key": "loss"}).json()["series"][0]
    assert series["y"] == [1.0, None, 0.5, None]


def test_time_and_epoch_axes(seeded_store, client):
    start_run(seeded_store, "epoch_run", experiment="exp_epoch")
    append_points(seeded_store, "epoch_run", "loss", np.arange(100), np.linspace(1, 0, 100))
    append_points(seeded_store, "epoch_run", "epoch", [0, 50, 99], [0, 1, 2])
    by_epoch = client.get("/data/series", params={"run": "epoch_run", "key": "loss", "x": "epoch"}).json()
    xs = by_epoch["series"][0]["x"]
    assert xs[0] == 0 and xs[-1] == 2 and abs(xs[50] - 1.0) < 1e-9
    by_time = client.get("/data/series", params={"run": "epoch_run", "key": "loss", "x": "time"}).json()
    assert by_time["series"][0]["x"][0] == 0.0 and by_time["series"][0]["x"][-1] > 0


def test_experiment_bands_have_one_mean_line_per_variant(client):
    data = client.get("/data/bands", params={"experiment": "exp_a", "key": "train/loss"}).json()
    assert [(v["variant"], v["n"]) for v in data["variants"]] == [("baseline", 3), ("mhc", 3)]
    for v in data["variants"]:
        assert all(lo <= m <= hi for lo, m, hi in zip(v["lower"], v["mean"], v["upper"]))
    baseline, mhc = data["variants"]
    assert np.mean(mhc["mean"]) < np.mean(baseline["mean"])  # the seeded study: mHC is 0.1 lower


def test_experiment_page_has_comparison_rules_alerts_status_and_lineage(client):
    data = client.get("/experiments/exp_a.json").json()
    acc = next(c for c in data["comparisons"] if c["metric"] == "test/acc")
    assert acc["variant"] == "mhc" and acc["verdict"] == "better" and acc["p_value"] < 0.05
    assert "(n=3)" in acc["candidate"]
    assert data["next"] == ["exp_b"] and data["status"] == "valid"
    assert "Metrics to watch" in data["note_markdown"] and data["rules_html"]
    assert data["fields"]["hypothesis"] == "mHC lowers the loss"
    assert client.get("/experiments/exp_b.json").json()["previous"] == "exp_a"


def test_run_page_overrides_are_the_keys_that_differ_from_the_rest_of_the_experiment(client):
    data = client.get("/runs/exp_a_mhc_s0.json").json()
    assert set(data["overrides"]) == {"mhc", "seed"}
    assert data["config_flat"]["model.width"] == 64
    assert data["series_keys"] == ["test/acc", "train/loss"]


def test_compare_config_diff_shows_only_differences(client):
    data = client.get("/compare.json", params={"run": ["exp_a_mhc_s0", "exp_a_baseline_s1", "missing_run"]}).json()
    assert [d["key"] for d in data["config_diff"]] == ["mhc", "seed"]
    assert data["missing"] == ["missing_run"]
    assert data["common_keys"] == ["test/acc", "train/loss"]


def test_live_endpoint_reports_points_as_they_arrive(seeded_store, client):
    before = client.get("/data/live", params={"run": "exp_b_baseline_s0"}).json()["runs"]["exp_b_baseline_s0"]
    append_points(seeded_store, "exp_b_baseline_s0", "train/loss", np.arange(50, 80), np.linspace(1, 0.9, 30))
    after = client.get("/data/live", params={"run": "exp_b_baseline_s0"}).json()["runs"]["exp_b_baseline_s0"]
    assert after["point_count"] == before["point_count"] + 30 and after["last_step"] == 79
    finish_run(seeded_store, "exp_b_baseline_s0")
    assert client.get("/data/live", params={"run": "exp_b_baseline_s0"}).json()["runs"]["exp_b_baseline_s0"][
        "state"] == "finished"


def test_page_edits_show_in_the_notebook_after_labfolio_notes(seeded_store, client, tmp_path):
    from labfolio.notebook import write_vault

    edits = {"hypothesis": "Streams > 1 help **deep** models", "conclusion": "conclusion:: keep mHC",
             "next_steps": "- run 5 seeds"}
    for field, value in edits.items():
        response = client.post("/experiments/exp_a/fields", json={"field": field, "value": value})
        assert response.status_code == 200 and response.json()["value"] == value
    assert seeded_store.note_fields("experiment", "exp_a")["dv.conclusion"] == "keep mHC"  # Dataview, as sync does
    response = client.post("/experiments/exp_a/status", json={"status": "partially_invalid", "reason": "eval on EMA"})
    assert response.json()["runs"] == 6
    write_vault(seeded_store, tmp_path / "vault", plots=False, root=tmp_path)
    log = (tmp_path / "vault" / "Experiment Log.md").read_text()
    for value in edits.values():
        assert value in log
    assert "Partially invalid (eval on EMA)" in log
    assert client.get("/experiments/exp_a.json").json()["fields"]["hypothesis"] == edits["hypothesis"]


def test_notebook_edits_show_on_the_page(seeded_store, client, tmp_path):
    from labfolio.notebook import write_vault

    vault = tmp_path / "vault"
    write_vault(seeded_store, vault, plots=False, root=tmp_path)
    log = vault / "Experiment Log.md"
    text = log.read_text()
    marker = "## Conclusion:\n"
    assert marker in text
    start = text.index(marker, text.index("exp_a")) if "exp_a" in text else text.index(marker)
    log.write_text(text[:start + len(marker)] + "\nWritten in Obsidian\n" + text[start + len(marker):])
    write_vault(seeded_store, vault, plots=False, root=tmp_path)
    fields = [client.get(f"/experiments/{e}.json").json()["fields"]["conclusion"] for e in ("exp_a", "exp_b")]
    assert any("Written in Obsidian" in f for f in fields)


def test_run_status_override_and_clear(seeded_store, client):
    assert client.post("/runs/exp_a_mhc_s1/status", json={"status": "invalid", "reason": "wrong split"}).status_code == 200
    assert seeded_store.get_run("exp_a_mhc_s1").status == "invalid"
    data = client.get("/runs/exp_a_mhc_s1.json").json()
    assert data["status_overridden"] and data["proposed_status"] == "invalid"
    assert client.post("/runs/exp_a_mhc_s1/status", json={"status": None}).status_code == 200
    assert seeded_store.get_run("exp_a_mhc_s1").status is None
    bad = client.post("/runs/exp_a_mhc_s1/status", json={"status": "great"})
    assert bad.status_code == 400 and "valid, partially_invalid, invalid" in bad.json()["detail"]


def test_unknown_run_and_experiment_are_404_with_a_hint(client):
    response = client.get("/runs/nope.json")
    assert response.status_code == 404 and "labfolio runs" in response.json()["detail"]
    response = client.get("/experiments/nope", headers={"accept": "text/html"})
    assert response.status_code == 404 and "/experiments" in response.text


def test_plotly_is_served_from_the_installed_package(client):
    import plotly

    from labfolio.web.app import plotly_js_path

    response = client.get("/vendor/plotly.min.js")
    assert response.status_code == 200
    assert plotly_js_path().is_relative_to(__import__("pathlib").Path(plotly.__file__).parent)
    assert len(response.content) == plotly_js_path().stat().st_size


def test_runs_table_shows_the_proposed_status_where_no_human_judged(client, seeded_store):
    from labfolio.store import Batch

    start_run(seeded_store, "nan_run", experiment="exp_d", state="finished")
    seeded_store.write_batch(Batch(run_id="nan_run", events=[
        {"type": "alert", "kind": "nan", "metric": "train/loss", "step": 3, "severity": "critical",
         "message": "train/loss is nan at step 3", "value": float("nan")}]))
    start_run(seeded_store, "judged_run", experiment="exp_d", state="finished")
    seeded_store.write_batch(Batch(run_id="judged_run", events=[
        {"type": "status", "status": "partially_invalid", "reason": "eval bug"}]))
    rows = {r["run_id"]: r for r in client.get("/runs.json", params={"experiment": "exp_d"}).json()["runs"]}
    assert rows["nan_run"]["status"] is None and rows["nan_run"]["proposed_status"] == "invalid"
    assert "nan" in rows["nan_run"]["proposed_reason"].lower()
    assert rows["judged_run"]["status"] == "partially_invalid" and rows["judged_run"]["proposed_status"] is None
    html = client.get("/runs", params={"experiment": "exp_d"}, headers={"accept": "text/html"}).text
    assert "invalid (proposed)" in html and "partially invalid" in html


def test_runs_table_puts_result_metrics_before_training_bookkeeping(client):
    columns = client.get("/runs.json", params={"experiment": "exp_a"}).json()["metric_columns"]
    results = [c for c in columns if c.startswith(("test/", "val/"))]
    assert results and columns[:len(results)] == results
