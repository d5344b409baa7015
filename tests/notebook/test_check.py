"""`labfolio notes check`: a vault against a fresh render of its store, read-only."""

from __future__ import annotations

from typer.testing import CliRunner

from labfolio.notebook import check_vault, write_vault
from labfolio.store import open_store

from .conftest import T0, add_run
from .test_cli_notes import _app

runner = CliRunner()


def _study(tmp_path):
    store = open_store()
    for seed in range(2):
        for offset, variant in enumerate(("regular", "mhc")):
            add_run(store, f"{variant}_s{seed}", experiment="e", variant=variant, seed=seed,
                    config={"lr": 0.1, "connection": variant, "seed": seed}, start=T0 + 10 * offset + seed,
                    acc=0.7 + 0.01 * offset + 0.001 * seed)
    vault = tmp_path / "vault"
    write_vault(store, vault, root=tmp_path)
    return store, vault


def _snapshot(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_vault_just_written_matches_its_store_plots_included_and_the_check_changes_nothing(tmp_path):
    store, vault = _study(tmp_path)
    before = _snapshot(vault)
    report = check_vault(store, vault, root=tmp_path)
    assert report.ok, report.format()
    assert report.matched == len([p for p in before if not p.startswith(".labfolio/")])
    assert any(p.endswith(".png") for p in before)  # the plots were compared too
    assert _snapshot(vault) == before
    assert report.format().startswith(f"{vault} matches a fresh render of the store (")


def test_a_stale_or_hand_edited_note_and_a_deleted_plot_fail_the_check_with_a_diff(tmp_path):
    store, vault = _study(tmp_path)
    note = vault / "experiments" / "e" / "experiment.md"
    note.write_text(note.read_text(encoding="utf-8").replace("0.7105", "0.9105"), encoding="utf-8")
    plot = next((vault / "experiments" / "e" / "plots").glob("*.png"))
    plot.unlink()
    (vault / "my own page.md").write_text("a page labfolio does not write\n", encoding="utf-8")
    report = check_vault(store, vault, root=tmp_path)
    assert not report.ok
    assert report.differing == ["experiments/e/experiment.md"]
    assert report.missing == [plot.relative_to(vault).as_posix()]
    assert report.extra == ["my own page.md"]  # reported, but files of one's own do not fail the check
    diff = report.diffs["experiments/e/experiment.md"]
    assert "-" in diff and "0.9105" in diff and "+" in diff and "0.7105" in diff
    text = report.format()
    assert "1 file(s) differ, 1 missing" in text and "labfolio notes" in text


def test_the_cli_check_exits_1_on_a_difference_and_0_once_labfolio_notes_rewrote_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LABFOLIO_UI_BASE_URL", raising=False)
    store, vault = _study(tmp_path)
    note = vault / "experiments" / "e" / "variants" / "mhc.md"
    note.write_text(note.read_text(encoding="utf-8") + "\nstray line\n", encoding="utf-8")
    app = _app()
    result = runner.invoke(app, ["notes", "check", "--out", str(vault)])
    assert result.exit_code == 1, result.output
    assert "differs: experiments/e/variants/mhc.md" in result.output
    assert runner.invoke(app, ["notes", "--out", str(vault)]).exit_code == 0
    result = runner.invoke(app, ["notes", "check", "--out", str(vault)])
    assert result.exit_code == 0, result.output
    assert "matches a fresh render of the store" in result.output


def test_checking_a_folder_that_is_not_there_says_what_to_give(tmp_path):
    result = runner.invoke(_app(), ["notes", "check", "--out", str(tmp_path / "nowhere")])
    assert result.exit_code != 0
    assert "no vault at" in result.output and "--out" in result.output
