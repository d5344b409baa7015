"""``labfolio run SPEC.yaml`` and ``labfolio demo``: thin commands over ``labfolio.runner``."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Optional

import typer

__all__ = ["register", "run_command", "demo_command", "DEMO_SPEC"]

DEMO_SPEC = "demo_digits.yaml"  # shipped in labfolio/specs/


def _parse_gpus(text: Optional[str]) -> Optional[list[str]]:
    from .errors import ConfigError

    if text is None:
        return None
    if text.strip().lower() in ("none", "cpu", ""):
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in gpus if not g.isdigit()]
    if bad:
        raise ConfigError(f"--gpus {text!r}: expected GPU indices like 0,1,2 (or none), got {', '.join(bad)}")
    return gpus


def _parse_seeds(text: str) -> list[int]:
    from .errors import ConfigError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected integers like 0,1,2") from None


def run_command(
    specs: list[Path] = typer.Argument(..., metavar="SPEC", help="Experiment spec(s) (YAML): experiment, "
                                       "previous, recipe or command, base, variants, seeds. Several share one "
                                       "pool of GPUs or cores and run in lineage order."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU indices to spread runs over, one GPU per run "
                                       "(e.g. 0,1); 'none' for CPU only. Default: every visible GPU."),
    parallel: Optional[int] = typer.Option(None, "--parallel", "-j", min=1, help="Runs at once (default: one per "
                                           "GPU, else one per CPU core; never more than the cores on CPU)."),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE: set a base config key for "
                                                 "this invocation (repeatable; variants keep their own values), "
                                                 "e.g. --set epochs=40."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds to run instead of the "
                                        "spec's, e.g. 0,1."),
    runs_per_gpu: int = typer.Option(1, "--runs-per-gpu", min=1, help="Runs sharing each GPU at once (small "
                                     "models leave a GPU mostly idle; measure before raising it)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the spec and print the plan (commands, "
                                 "configs, what is skipped) without starting anything."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Rerun variants × seeds whose last run crashed "
                                      "or failed (finished runs are always skipped)."),
    rerun: bool = typer.Option(False, "--rerun", help="Run everything again, finished runs included."),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny runs on CPU to check the whole pipeline: the recipe's "
                               "--smoke preset, the spec's smoke: values, the first seed only."),
    executor: str = typer.Option("local", "--executor", help="local (subprocesses on this machine) or ray "
                                 "(one Ray task per run, num_gpus=1, at $RAY_ADDRESS)."),
    store: Optional[str] = typer.Option(None, "--store", "-s", help="Store folder, .db file or database URL the "
                                        "runs log to (default: $LABFOLIO_STORE, else .labfolio/)."),
    notebook: Optional[Path] = typer.Option(None, "--notebook", help="Vault folder to refresh at the end "
                                            "(default: notebook/ at the project root)."),
    no_notebook: bool = typer.Option(False, "--no-notebook", help="Do not refresh the notebook at the end."),
    kill_after: float = typer.Option(10.0, "--kill-after", min=0.1, help="On Ctrl-C, seconds to wait after "
                                     "SIGINT (then SIGTERM) before the next, harder signal."),
):
    """Run every variant × seed of one or more experiment specs, resuming what is unfinished.

    Shows each run's state, step, key metric and ETA while it trains and streams alerts; at the end
    prints each experiment's comparison table and refreshes the notebook. Several specs share one
    pool, a spec after the one its `previous` names. Ctrl-C stops all runs cleanly: they are marked
    killed and what they logged is kept.
    """
    from .runner import RunOptions
    from .runner_pool import run_specs
    from .spec import load_spec

    if executor not in ("local", "ray"):
        from .errors import ConfigError

        raise ConfigError(f"--executor {executor!r}: use local or ray")
    loaded = [load_spec(path) for path in specs]
    if settings or seeds is not None:
        from .spec import parse_setting, with_settings

        values = dict(parse_setting(text) for text in settings or ())
        loaded = [with_settings(spec, values, _parse_seeds(seeds) if seeds is not None else None) for spec in loaded]
    options = RunOptions(gpus=_parse_gpus(gpus), parallel=parallel, runs_per_gpu=runs_per_gpu, dry_run=dry_run,
                         retry_failed=retry_failed,
                         rerun=rerun, smoke=smoke, executor=executor, store=store, notebook=not no_notebook,
                         notebook_dir=notebook, kill_after=kill_after)
    reports = run_specs(loaded, options)
    if dry_run:
        return
    if any(report.interrupted for report in reports):
        raise typer.Exit(130)
    if not all(report.ok for report in reports):
        raise typer.Exit(1)


def demo_spec_path() -> Path:
    """The demo spec inside the installed package."""
    return Path(str(resources.files("labfolio") / "specs" / DEMO_SPEC))


def demo_command(
    parallel: Optional[int] = typer.Option(None, "--parallel", "-j", min=1, help="Runs at once (default: one per "
                                           "CPU core)."),
    store: Optional[str] = typer.Option(None, "--store", "-s", help="Store folder, .db file or database URL "
                                        "(default: the embedded SQLite store in .labfolio/)."),
    notebook: Optional[Path] = typer.Option(None, "--notebook", help="Vault folder (default: notebook/ at the "
                                            "project root)."),
    rerun: bool = typer.Option(False, "--rerun", help="Train again even if the demo's runs already finished."),
):
    """The main job: regular vs mhc tiny ViTs on scikit-learn's digits, 2 seeds each, on CPU in minutes.

    Logs to the embedded SQLite store, writes the notebook, prints the comparison table and where
    the notebook is. Running it again skips the finished runs (--rerun trains them again).
    """
    from .errors import ConfigError
    from .runner import RunOptions, run_spec
    from .spec import load_spec

    import importlib.util

    # Only look for torch: the core never imports it; the demo's child processes do.
    if importlib.util.find_spec("torch") is None:
        raise ConfigError("labfolio demo trains real models and needs the research kit: "
                          "pip install 'labfolio[kit]' (CPU torch is enough)")
    started = time.perf_counter()
    options = RunOptions(gpus=[], parallel=parallel, store=store, notebook_dir=notebook, rerun=rerun)
    report = run_spec(load_spec(demo_spec_path()), options)
    typer.echo(f"demo: {time.perf_counter() - started:.0f} s; the notebook opens in Obsidian (open the vault "
               f"folder{f' {report.vault.out_dir}' if report.vault is not None else ''}).")
    if report.interrupted:
        raise typer.Exit(130)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``demo`` to the main app."""
    from .cli_common import friendly_errors

    app.command("run")(friendly_errors(run_command))
    app.command("demo")(friendly_errors(demo_command))
