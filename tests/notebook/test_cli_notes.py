"""`labfolio notes`, `labfolio notes sync` and `labfolio import notes`, mounted as the main CLI mounts them."""

from __future__ import annotations

import typer
from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from labfolio.cli_notes import notes_app, register_import_notes

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.add_typer(notes_app, name="notes")
    import_app = typer.Typer(help="Import runs and notes from elsewhere.")
    register_import_notes(import_app)
    app.add_typer(import_app, name="import")
    return app


def test_import_then_notes_then_sync_work_end_to_end(fixtures_copy, tmp_path, monkeypatch):
    monkeypatch.delenv("LABFOLIO_UI_BASE_URL", raising=False)
    app = _app()
    result = runner.invoke(app, ["import", "notes", "notes/log_basic.md"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:5] == [
        "Imported 1 file(s): notes/log_basic.md (log)",
        "- experiments: 2 (gated_tinyimg_002, gated_tinyimg_003)",
        "- variants: 4",
        "- runs: 4 new, 0 already imported (updated), 0 tracked runs left unchanged",
        "- note fields: 15; statuses: 4; rules: 0",
    ]
    result = runner.invoke(app, ["notes", "--out", "vault", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("8 note(s) written, 0 unchanged in vault")
    note = tmp_path / "vault" / "experiments" / "gated_tinyimg_003" / "experiment.md"
    note.write_text(note.read_text(encoding="utf-8").replace("## Observations & Conclusions\n",
                                                             "## Observations & Conclusions\n\nIt works.\n"))
    result = runner.invoke(app, ["notes", "sync", "--out", "vault"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "vault: read back 1 field(s), 0 status override(s), 0 new experiment(s) from 1 note(s)",
        "  experiment gated_tinyimg_003: findings"]
    result = runner.invoke(app, ["notes", "--out", "vault", "--no-plots"])
    assert result.output.startswith("0 note(s) written, 8 unchanged in vault")


def test_errors_are_one_line_without_a_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(_app(), ["import", "notes", "missing.md"])
    assert result.exit_code == 1
    assert "Error: missing.md does not exist" in result.output and "Traceback" not in result.output


def test_every_notes_command_and_option_has_help():
    group = get_command(_app())
    assert isinstance(group, TyperGroup)
    commands = [group.commands["notes"], *group.commands["notes"].commands.values(),
                *group.commands["import"].commands.values()]
    assert [c.name for c in commands] == ["notes", "sync", "check", "notes"]  # notes, its two subcommands, import notes
    for command in commands:
        assert command.help and command.help.strip(), command.name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{command.name} {param.name} has no help"
            else:
                assert getattr(param, "help", None), f"{command.name} argument {param.name} has no help"
