"""Writing the vault: every note rendered from a snapshot, only changed files rewritten.

``write_vault`` first reads human edits back into the store (``sync_vault``), then renders:

    notebook/
      Master Experiment Log.md
      Experiment Log.md
      experiments/<name>/experiment.md
      experiments/<name>/variants/<variant>.md
      experiments/<name>/plots/*.png
      .labfolio/state.json, cache.json      (what was written; cached seed statistics)

Nothing in a note depends on the clock: dates come from the runs, so regenerating an unchanged
store gives byte-identical files, and no file is written at all.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import find_project_root
from .context import EXPERIMENT_LOG, MASTER_LOG, Context, build_context
from .experiment_log import ENTRY_LAYOUT, render_experiment_log
from .experiment_note import LAYOUT as EXPERIMENT_LAYOUT
from .experiment_note import render_experiment_note
from .master_log import LAYOUT as MASTER_LAYOUT
from .master_log import render_master_log, run_table_cells
from .mdtext import safe_name
from .plots import draw_plot, plan_plots
from .fingerprint import FRAGMENTS_FILE, FragmentCache
from .results import ResultsCache
from .experiment_log import FRONTMATTER_NOTE_FIELD as LOG_FRONT_FIELD
from .master_log import FRONTMATTER_NOTE_FIELD as MASTER_FRONT_FIELD
from .sections import FRONTMATTER_FIELD, Layout, Slot, normalize_human, render_note
from .snapshot import PROJECT_OWNER, read_snapshot
from .state import STATE_DIR, VaultState, field_key, file_info, text_hash, write_if_changed
from .variant_note import LAYOUT as VARIANT_LAYOUT
from .variant_note import render_variant_note
from .writer import NoteWriter

__all__ = ["VaultReport", "RenderedFile", "write_vault", "render_files", "experiment_notes", "default_vault_dir",
           "page_path", "PAGE_LAYOUT", "PAGE_PREFIX"]

PAGE_PREFIX = "page:"  # project field holding an imported free-form page ('page:Index' -> Index.md)
PAGE_LAYOUT = Layout((Slot("page", None),), level=1)
_BACKUP_SUFFIX = " (before labfolio)"


def default_vault_dir(root: str | os.PathLike | None = None) -> Path:
    """``notebook/`` at the project root."""
    return find_project_root(root) / "notebook"


def page_path(name: str) -> str:
    return f"{safe_name(name)}.md"


@dataclass
class RenderedFile:
    content: str | None  # None: kept as it is on disk (see `reuse` in render_files)
    fields: dict[str, str]  # field key -> the human text written (normalised)
    fingerprint: str | None = None  # of the inputs it was rendered from (experiment and variant notes)
    sha: str | None = None  # hash of the content (that of the file kept when content is None)

    def __post_init__(self) -> None:
        if self.sha is None and self.content is not None:
            self.sha = text_hash(self.content)


# reuse(relpath, fingerprint) -> the hash of the note on disk when it is exactly what was written
# last time from inputs with this fingerprint (so rendering it again would give the same text).
Reuse = Callable[[str, str], "str | None"]


@dataclass
class VaultReport:
    """What ``write_vault`` did."""

    out_dir: Path
    written: list[str] = field(default_factory=list)  # notes rewritten (vault-relative paths)
    unchanged: int = 0  # notes left alone because their content did not change
    removed: list[str] = field(default_factory=list)  # notes of experiments no longer in the store
    plots_drawn: list[str] = field(default_factory=list)
    plots_kept: int = 0
    backups: list[str] = field(default_factory=list)  # hand-written files moved aside before writing
    warnings: list[str] = field(default_factory=list)
    sync: object = None  # the SyncReport of the edits read back first (None without sync)
    seconds: float = 0.0

    @property
    def files_written(self) -> int:
        return len(self.written) + len(self.plots_drawn)

    def summary(self) -> str:
        parts = [f"{len(self.written)} note(s) written, {self.unchanged} unchanged"]
        if self.plots_drawn or self.plots_kept:
            parts.append(f"{len(self.plots_drawn)} plot(s) drawn, {self.plots_kept} kept")
        if self.removed:
            parts.append(f"{len(self.removed)} removed")
        return f"{', '.join(parts)} in {self.out_dir} ({self.seconds:.2f} s)"


def _human_fields(scope: str, owner: str, layout: Layout, values: dict[str, str]) -> dict[str, str]:
    return {field_key(scope, owner, slot.field): normalize_human(values.get(slot.field)) for slot in layout.slots}


def _front_field(scope: str, owner: str, name: str, notes: dict[str, str]) -> dict[str, str]:
    return {field_key(scope, owner, name): normalize_human(notes.get(name))}


def _master_cells(ctx: Context, content: str) -> dict[str, str]:
    """Status and Conclusion cells of the master log's run tables, keyed like note fields: taken
    from the runs the log was just rendered from, else read back from its text."""
    cells = run_table_cells(ctx, content)
    if cells is None:
        from .sync import master_table_cells

        cells = master_table_cells(content)
    return {field_key("run", run_id, name): text for (run_id, name), text in cells.items()}


def render_files(ctx: Context, reuse: Reuse | None = None) -> dict[str, RenderedFile]:
    """Every note of the vault: path -> content and the human fields it shows.

    With `reuse`, an experiment or variant note it vouches for is not rendered (content None)."""
    from ..analysis.diff import configs_unchanging

    # the snapshot's configs stay as read while the notes are rendered, and every note of an
    # experiment asks for the same flattened and shared configs
    with configs_unchanging():
        return dict(_logs_first(_iter_files(ctx, reuse)))


def _logs_first(items):
    """`items` ((path, ...) pairs) with the two logs moved to the front, the rest in order: the
    order notes were rendered in (and reported in) before the logs were rendered last."""
    return sorted(items, key=lambda item: item[0] not in (MASTER_LOG, EXPERIMENT_LOG))


def experiment_notes(ctx: Context, exp) -> list[tuple[str, str, str, Layout, dict[str, str], Callable[[], str]]]:
    """The notes of `exp`, its own first, then one per variant: (vault path, scope and owner of
    their human fields, layout, the human fields, what renders the note)."""
    notes = [(f"experiments/{exp.folder}/experiment.md", "experiment", exp.name, EXPERIMENT_LAYOUT, exp.notes,
              lambda: render_experiment_note(ctx, exp))]
    for variant in exp.variants:
        notes.append((f"{ctx.variant_note(exp, variant)}.md", "variant", f"{exp.name}/{variant}", VARIANT_LAYOUT,
                      exp.variant_notes.get(variant, {}), lambda variant=variant: render_variant_note(ctx, exp, variant)))
    return notes


def _iter_files(ctx: Context, reuse: Reuse | None) -> Iterator[tuple[str, RenderedFile]]:
    """render_files' notes one at a time, in its order, so the caller can write each while the
    next are rendered. The caller keeps the configs unchanging until it is exhausted."""
    snapshot = ctx.snapshot

    def note(relpath: str, exp, render) -> tuple[str | None, str | None, str | None]:
        if reuse is None:
            return ctx.note_text(exp, relpath, render), None, None
        fingerprint = ctx.fingerprint(exp)
        kept = reuse(relpath, fingerprint)
        return (None if kept else ctx.note_text(exp, relpath, render)), fingerprint, kept

    yielded = {MASTER_LOG, EXPERIMENT_LOG}  # paths taken, so a page never replaces a note
    # The experiments' notes come first, the two logs after them: the logs need every
    # experiment's results, which are most of a cold write's time, and computed while the notes
    # are rendered the files of a large write are created meanwhile (see writer.py). Every
    # result is memoised per experiment, so the order changes no byte.
    for exp in snapshot.experiments:
        for relpath, scope, owner, layout, notes, render in experiment_notes(ctx, exp):
            fields = _human_fields(scope, owner, layout, notes)
            fields.update(_front_field(scope, owner, FRONTMATTER_FIELD, notes))
            content, fingerprint, kept = note(relpath, exp, render)
            yielded.add(relpath)
            yield relpath, RenderedFile(content, fields, fingerprint, kept)
        if ctx.fragments is not None:
            ctx.keep_results(exp)
    master = render_master_log(ctx)
    fields = _human_fields("project", PROJECT_OWNER, MASTER_LAYOUT, snapshot.project_notes)
    fields.update(_master_cells(ctx, master))
    fields.update(_front_field("project", PROJECT_OWNER, MASTER_FRONT_FIELD, snapshot.project_notes))
    yield MASTER_LOG, RenderedFile(master, fields)
    log_fields = {field_key("project", PROJECT_OWNER, name): normalize_human(snapshot.project_notes.get(name))
                  for name in ("log_preamble", "log_trailer", LOG_FRONT_FIELD)}
    for exp in snapshot.experiments:
        log_fields.update(_human_fields("experiment", exp.name, ENTRY_LAYOUT, exp.notes))
    yield EXPERIMENT_LOG, RenderedFile(render_experiment_log(ctx), log_fields)
    for name, value in sorted(snapshot.project_notes.items()):
        if name.startswith(PAGE_PREFIX) and normalize_human(value):
            path = page_path(name[len(PAGE_PREFIX):])
            if path in yielded:
                continue
            yielded.add(path)
            content = render_note({"type": "page"}, None, PAGE_LAYOUT, {"page": value}, {})
            yield path, RenderedFile(content, {field_key("project", PROJECT_OWNER, name): normalize_human(value)})


def _file_hash(path: Path) -> str | None:
    try:
        return text_hash(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def _is_managed(path: Path, relpath: str, state: VaultState) -> bool:
    if relpath in state.files:
        return True
    try:
        head = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "labfolio:begin" in head or "written by `labfolio notes`" in head


def _backup(path: Path) -> Path:
    candidate = path.with_name(f"{path.stem}{_BACKUP_SUFFIX}{path.suffix}")
    counter = 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}{_BACKUP_SUFFIX} {counter}{path.suffix}")
        counter += 1
    path.rename(candidate)
    return candidate


def _load_rules(root: Path | None):
    from ..analysis import load_project_rules

    return load_project_rules(root or Path("."))


@contextmanager
def _collector_paused():
    """The cyclic garbage collector off while a vault is written: the snapshot, the results and
    the rendered notes are hundreds of thousands of live objects without cycles, and every full
    collection walks all of them again to free nothing (~0.5 s of a 10,000-run cold write)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _experiments_ahead(ctx: Context, state: VaultState, writer: NoteWriter):
    """An ExperimentsAhead (see ahead.py) set on `ctx` while the block runs, when so many
    experiments are to be rendered from scratch that the writer's process is started for them at
    once; else None. Those are the experiments with no cached results whose notes are not kept
    as written (a kept note and cached fragments need no results)."""
    from .ahead import MIN_EXPERIMENTS, ExperimentsAhead

    def needs_results(exp) -> bool:
        # a note recorded with this fingerprint is likely kept: its results are not needed (and
        # not even their key is computed, as in a regeneration with no change); with nothing
        # cached (a first write) every key misses, so none is computed here
        kept = (state.files.get(f"experiments/{exp.folder}/experiment.md") or {}).get("fp")
        if kept is not None and kept == ctx.fingerprint(exp):
            return False
        return ctx.cache.is_empty() or not ctx.cache.has(ctx.results_key(exp)[0])

    needed = [exp for exp in ctx.snapshot.experiments if needs_results(exp)]
    if len(needed) < MIN_EXPERIMENTS or not writer.forks:
        yield None
        return
    # the first one here, before the fork: the renderer needs it first, and the worker inherits
    # what computing it loads (scipy's t distribution, imported once no other thread runs)
    ctx.results(needed[0])
    if not writer.start_worker():
        yield None
        return
    ahead = ctx.ahead = ExperimentsAhead(ctx, writer, needed)
    try:
        ahead.top_up()
        yield ahead
    finally:
        ahead.close()
        ctx.ahead = None


def write_vault(store, out_dir: str | os.PathLike | None = None, *, sync: bool = True, plots: bool = True,
                base_url: str | None = None, root: str | os.PathLike | None = None) -> VaultReport:
    """Write or refresh the Obsidian vault for `store` in `out_dir` (default ``notebook/`` at the
    project root). Human edits are read back into the store first (``sync=False`` skips that)."""
    with _collector_paused():
        return _write_vault(store, out_dir, sync=sync, plots=plots, base_url=base_url, root=root,
                            started=time.perf_counter())


def _write_vault(store, out_dir, *, sync: bool, plots: bool, base_url: str | None, root,
                 started: float) -> VaultReport:
    project_root = find_project_root(root)
    vault = Path(out_dir) if out_dir is not None else default_vault_dir(project_root)
    vault.mkdir(parents=True, exist_ok=True)
    state = VaultState.load(vault)
    report = VaultReport(out_dir=vault)
    if sync:
        from .sync import sync_vault

        report.sync = sync_vault(store, vault, state=state)
        report.warnings += list(report.sync.warnings)
    snapshot = read_snapshot(store, root=project_root, base_url=base_url, with_artifacts=plots)
    cache = ResultsCache(vault / STATE_DIR / "cache.json")
    ctx = build_context(snapshot, cache, _load_rules(project_root))
    ctx.fragments = FragmentCache(vault / STATE_DIR / FRAGMENTS_FILE)
    on_disk = dict(report.sync.file_hashes) if report.sync is not None else {}
    plot_specs = {}
    if plots:
        for exp in snapshot.experiments:
            # the results' metrics, taken from their key: planning the plots computes no results
            # (a first write leaves them to the notes, and to the writer's process, see ahead.py)
            specs = plan_plots(exp, ctx.results_key(exp)[1], snapshot.artifacts, ctx.described_run_ids(exp))
            plot_specs[exp.name] = specs
            ctx.plots[exp.name] = [(spec.caption, spec.path) for spec in specs]

    def reuse(relpath: str, fingerprint: str) -> str | None:
        entry = state.files.get(relpath) or {}
        written = entry.get("written")
        if not written or entry.get("fp") != fingerprint:
            return None
        if relpath not in on_disk:  # not read by the sync: read it now
            on_disk[relpath] = _file_hash(vault / relpath)
        return written if on_disk[relpath] == written else None

    new_files: dict[str, dict] = {}
    # each note goes to the writer as soon as it is rendered: for a large write, the writer's
    # process creates the files while this one renders the next experiments
    from ..analysis.diff import configs_unchanging

    with configs_unchanging(), NoteWriter() as writer, _experiments_ahead(ctx, state, writer) as ahead:
        for relpath, rendered in _iter_files(ctx, reuse):
            if ahead is not None:
                ahead.top_up()
            entry = {"sha": rendered.sha,
                     "fields": {key: text_hash(value) for key, value in rendered.fields.items()}}
            if rendered.fingerprint is not None:
                entry.update(fp=rendered.fingerprint, written=rendered.sha)
            new_files[relpath] = entry
            if rendered.content is None:
                report.unchanged += 1
                continue
            path = vault / relpath
            info = file_info(path)
            if info is not None and not _is_managed(path, relpath, state):
                report.backups.append(str(_backup(path).relative_to(vault)))
                report.warnings.append(f"{relpath} was not written by labfolio: moved to {report.backups[-1]} "
                                       "(bring its content into the store with `labfolio import notes`)")
                info = None
            writer.add(relpath, path, rendered.content, info)
        for relpath, written in _logs_first(writer.finish()):
            if written:
                report.written.append(relpath)
            else:
                report.unchanged += 1
    for relpath, old in sorted(state.files.items()):
        if relpath in new_files:
            continue
        path = vault / relpath
        try:
            untouched = path.is_file() and text_hash(path.read_text(encoding="utf-8")) == old.get("sha")
        except OSError:
            untouched = False
        if untouched:
            path.unlink()
            report.removed.append(relpath)
        elif path.exists():
            report.warnings.append(f"{relpath}: its experiment is gone from the store, but the note was "
                                   "edited, so it is kept")
    new_plots: dict[str, str] = {}
    for exp in snapshot.experiments:
        for spec in plot_specs.get(exp.name, []):
            path = vault / spec.path
            new_plots[spec.path] = spec.fingerprint
            if state.plots.get(spec.path) == spec.fingerprint and path.is_file():
                report.plots_kept += 1
                continue
            try:
                png = draw_plot(spec, exp, store, snapshot.artifacts)
            except Exception as error:  # a plot must never cost the notes
                report.warnings.append(f"{spec.path}: could not draw ({type(error).__name__}: {error})")
                new_plots.pop(spec.path, None)
                continue
            if write_if_changed(path, png):
                report.plots_drawn.append(spec.path)
            else:
                report.plots_kept += 1
    if not plots:
        new_plots = {path: fp for path, fp in state.plots.items() if (vault / path).is_file()}
    state.files = new_files
    state.plots = new_plots
    state.folders = {exp.folder: exp.name for exp in snapshot.experiments}
    state.variants = {f"{exp.folder}/{safe_name(v)}": [exp.name, v] for exp in snapshot.experiments
                      for v in exp.variants}
    state.save(vault)
    cache.save()
    ctx.fragments.save()
    report.seconds = time.perf_counter() - started
    return report
