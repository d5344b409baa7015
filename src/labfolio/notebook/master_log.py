"""``Master Experiment Log.md``: the registry, one row per run (NOTEBOOK_FORMAT.md §3).

Tables of training runs and of evaluation-only runs (whose source checkpoint is a link to the
run they evaluate), baseline comparisons with a Delta column, and open items gathered from the
notes are written from the store. The Status and Conclusion cells of the run tables may be edited
in place: ``labfolio notes sync`` reads them back. Decision records and any other prose are kept.

Rows imported from a hand-written master log keep every cell: a column labfolio has no name for
("Aux losses", "Task loss") becomes a column of the table, and the link that was typed by hand is
kept as "Link (as written)" next to the generated one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from .context import Context
from .mdtext import clean_cell, format_date, format_number_text, match_heading, render_table
from .results import key_metrics
from .sections import FRONTMATTER_COMMENT, Layout, Slot, render_note, with_human_frontmatter
from .snapshot import (EPOCH_NAMES, config_lookup, data_label, epochs_short, imported_cells, is_imported, machine_label,
                       run_git, run_speed)
from .variant_note import key_scores

__all__ = [
    "LAYOUT",
    "TRAINING_COLUMNS",
    "EVAL_COLUMNS",
    "COLUMN_ALIASES",
    "FRONTMATTER_KEYS",
    "FRONTMATTER_NOTE_FIELD",
    "render_master_log",
    "column_key",
    "open_items",
    "run_table_cells",
    "experiment_fragments",
]

LAYOUT = Layout((
    Slot("master_preamble", None, block="header"),
    Slot("training_notes", "## Training runs", ("training runs", "training", "runs", "training run registry",
                                                "run registry", "registry"), "training"),
    Slot("eval_notes", "## Evaluation-only runs", ("evaluation only runs", "evaluation runs", "evaluations",
                                                   "eval runs", "eval only runs", "evaluation"), "evals"),
    Slot("baseline_notes", "## Baseline comparisons", ("baseline comparisons", "baseline comparison",
                                                       "baseline tables", "baselines", "baseline"), "baselines"),
    Slot("open_items_notes", "## Open items", ("open items", "open questions", "pending", "todo", "to do"),
         "open_items"),
    Slot("decisions", "## Decision records", ("decision records", "decisions", "decision log")),
))

FRONTMATTER_KEYS = ("type", "runs", "evaluation_runs", "experiments", "updated")
FRONTMATTER_NOTE_FIELD = "frontmatter.master"  # project field: keys a human added to this note's frontmatter

# Column key -> names a hand-written header may use for it (normalised).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "date": ("date", "datetime", "day", "started"),
    "run_id": ("run id", "run", "id", "run name", "runid"),
    "experiment": ("experiment", "exp", "experiment variant"),
    "architecture": ("architecture", "arch", "model"),
    "data": ("data", "dataset", "datasets"),
    "machine": ("machine", "host", "gpu", "node", "server"),
    "epochs": ("epochs", "epoch", "steps", "epochs steps", "epochs or steps"),
    "key_scores": ("key scores", "scores", "key results", "results", "metrics"),
    "eff_rank": ("eff rank", "effective rank", "erank", "eff rank dim"),
    "speed": ("speed", "speed steps s", "throughput", "steps s", "it s"),
    "link": ("link", "links", "url", "wandb", "run link"),
    "git": ("git tag", "git", "commit", "sha", "git sha", "tag"),
    "status": ("status", "validity", "run status", "valid"),
    "conclusion": ("conclusion", "conclusions", "notes", "comment", "comments", "verdict", "remarks"),
    "eval_type": ("eval type", "evaluation type", "type", "eval"),
    "source": ("source checkpoint", "checkpoint", "source", "source run", "evaluates", "ckpt"),
    "tasks": ("tasks", "task", "benchmarks", "benchmark"),
}
TRAINING_COLUMNS = ("date", "run_id", "experiment", "architecture", "data", "machine", "epochs", "key_scores",
                    "eff_rank", "speed", "link", "git", "status", "conclusion")
EVAL_COLUMNS = ("date", "run_id", "eval_type", "source", "machine", "tasks", "key_scores", "link", "status",
                "conclusion")
_TITLES = {"date": "Date", "run_id": "Run ID", "experiment": "Experiment", "architecture": "Architecture",
           "data": "Data", "machine": "Machine", "epochs": "Epochs/steps", "key_scores": "Key scores",
           "eff_rank": "Eff. rank", "speed": "Speed (steps/s)", "link": "Link", "git": "Git", "status": "Status",
           "conclusion": "Conclusion", "eval_type": "Eval type", "source": "Source checkpoint", "tasks": "Tasks"}
_PENDING = re.compile(r"\b(tbd|todo|to do|evaluate next|eval next|pending|pend\.|not evaluated|not yet evaluated)",
                      re.I)


@functools.lru_cache(maxsize=4096)  # a registry has few distinct headers and many rows
def column_key(header: str) -> str | None:
    """The labfolio column a hand-written header means ('Git tag' -> 'git'), or None."""
    return match_heading(header, COLUMN_ALIASES, cutoff=0.85)


def _architecture(run) -> str:
    arch = config_lookup(run.config, ("architecture", "arch", "model.name", "model", "model_type", "connection"))
    dims = [f"{label}{value}" for label, names in (("L", ("n_layer", "n_layers", "num_layers", "depth", "model.n_layer")),
                                                   ("H", ("d_model", "n_embd", "hidden_size", "width", "model.d_model")),
                                                   # a ViT's patch size sets its token count as much as width does
                                                   ("P", ("patch_size", "model.patch_size")),
                                                   ("S", ("streams", "n_streams", "num_streams")))
            if (value := config_lookup(run.config, names)) is not None]
    text = " ".join(str(part) for part in ([arch] if arch is not None else []) + dims)
    return text or "--"


def _epochs(run) -> str:
    epochs = config_lookup(run.config, EPOCH_NAMES)
    if epochs is not None:
        short = epochs_short(run)
        return f"{short:.3g} of {epochs} ep" if short is not None else f"{epochs} ep"
    return f"{run.last_step + 1} steps" if run.last_step is not None else "--"


def _eff_rank(run) -> str:
    for key, entry in run.summary.items():
        name = key.lower().rsplit("/", 1)[-1]
        if name in ("eff_rank", "effective_rank", "erank") and entry.value is not None:
            return format_number_text(entry.value)
    return "--"


def _experiment_cell(ctx: Context, run) -> str:
    exp = ctx.snapshot.by_name.get(run.experiment)
    if exp is None:
        return run.experiment or "--"
    return f"[[{ctx.experiment_note(exp)}|{run.experiment}]] / {run.variant or '--'}"


def _data_cell(run) -> str:
    value = data_label(run.config)
    return "--" if value is None else value


def _speed_cell(run) -> str:
    speed = run_speed(run)
    return "--" if speed is None else f"{speed:.4g}"


def _status_cell(ctx: Context, run) -> str:
    proposal = ctx.proposals[run.run_id]
    return proposal.label if proposal.overridden else f"{proposal.label} (proposed)"


def _eval_type_cell(run) -> str:
    value = config_lookup(run.config, ("eval_type", "evaluation", "eval"))
    return str(value) if value is not None else (run.name or run.variant or "--")


def _tasks_cell(run, metrics: Sequence[str]) -> str:
    value = config_lookup(run.config, ("tasks", "task", "benchmarks"))
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value) if value is not None else (", ".join(metrics) or "--")


# column key -> cell(ctx, run, key metrics): looked up once per cell of ~10,000 rows, where a chain
# of comparisons cost more than most of the cells
_CELLS = {
    "date": lambda ctx, run, metrics: format_date(run.started_at),
    "run_id": lambda ctx, run, metrics: f"`{run.run_id}`",
    "experiment": lambda ctx, run, metrics: _experiment_cell(ctx, run),
    "architecture": lambda ctx, run, metrics: _architecture(run),
    "data": lambda ctx, run, metrics: _data_cell(run),
    "machine": lambda ctx, run, metrics: machine_label(run),
    "epochs": lambda ctx, run, metrics: _epochs(run),
    "key_scores": lambda ctx, run, metrics: key_scores(run, metrics),
    "eff_rank": lambda ctx, run, metrics: _eff_rank(run),
    "speed": lambda ctx, run, metrics: _speed_cell(run),
    "link": lambda ctx, run, metrics: ctx.run_link(run),
    "git": lambda ctx, run, metrics: run_git(run),
    "status": lambda ctx, run, metrics: _status_cell(ctx, run),
    "conclusion": lambda ctx, run, metrics: ctx.snapshot.run_notes.get(run.run_id, {}).get("conclusion", "") or "",
    "eval_type": lambda ctx, run, metrics: _eval_type_cell(run),
    "source": lambda ctx, run, metrics: ctx.run_ref(run.evaluates),
    "tasks": lambda ctx, run, metrics: _tasks_cell(run, metrics),
}


def _derived(ctx: Context, run, key: str, metrics: Sequence[str]) -> str:
    return _CELLS[key](ctx, run, metrics)


# Cells an importer stores on the run itself: they are written back from the store.
_FROM_STORE = ("run_id", "experiment", "status", "conclusion", "source")


_EXTRA = "extra:"  # prefix of the cells an imported row carried in a column labfolio has no name for


def _imported_cells(run, columns: Sequence[str]) -> dict[str, str]:
    """The cells an imported row carried: column key -> text, and for columns labfolio has no
    name for ``"extra:<title>"`` -> text, in the order written ({} for a run not imported)."""
    cells: dict[str, str] = {}
    for header, cell in imported_cells(run) if is_imported(run) else []:
        key = column_key(header)
        as_written = header.endswith("(as written)")
        if key in _FROM_STORE and not as_written:
            continue  # the importer stored it on the run itself (id, experiment, status, notes)
        if key in columns and key != "link" and not as_written and key not in cells:
            cells[key] = cell
            continue
        title = "Link (as written)" if key == "link" and not as_written else (clean_cell(header) or header)
        if title in _TITLES.values():
            title = f"{title} (as written)"
        cells[f"{_EXTRA}{title}"] = cell
    return cells


def _rows_part(columns: Sequence[str]) -> str:
    return "rows:" + ",".join(columns)


def _experiment_rows(ctx: Context, exp, runs, columns: Sequence[str], mapped: dict[str, dict[str, str]]):
    """The fragment of one experiment's rows in a table: run id -> its cells in `columns`, for
    each of the experiment's runs in `mapped` (those of the table, with their imported cells)."""
    return {r.run_id: _row(ctx, exp, r, columns, mapped[r.run_id]) for r in runs if r.run_id in mapped}


def _table(ctx: Context, runs, columns: Sequence[str]) -> list[str]:
    if not runs:
        return ["None yet."]
    extras: dict[str, None] = {}
    mapped: dict[str, dict[str, str]] = {}
    for run in runs:
        cells = mapped[run.run_id] = _imported_cells(run, columns)
        for key in cells:
            if key.startswith(_EXTRA):
                extras.setdefault(key[len(_EXTRA):], None)
    header = [_TITLES[c] for c in columns] + list(extras)
    part = _rows_part(columns)
    by_experiment: dict[str, dict[str, list[str]]] = {}
    rows = []
    for run in runs:
        exp = ctx.snapshot.by_name.get(run.experiment)
        if exp is None:
            row = _row(ctx, None, run, columns, mapped[run.run_id])
        else:
            # One fragment per experiment holding the rows of all its runs in this table.
            cached = by_experiment.get(exp.name)
            if cached is None:
                cached = by_experiment[exp.name] = ctx.fragment(exp, part, lambda exp=exp: _experiment_rows(
                    ctx, exp, (*exp.runs, *exp.eval_runs), columns, mapped))
            row = list(cached[run.run_id])
        cells = mapped[run.run_id]
        row += [cells.get(f"{_EXTRA}{title}", "") for title in extras]
        rows.append(row)
    return render_table(header, rows)


def experiment_fragments(ctx: Context, exp) -> dict:
    """The pieces of this log one experiment contributes, as ``render_master_log`` asks
    ``ctx.fragment`` for them: its rows in each run table it has runs in, its baseline table."""
    found = {}
    for columns, runs in ((TRAINING_COLUMNS, exp.runs), (EVAL_COLUMNS, exp.eval_runs)):
        if runs:
            mapped = {run.run_id: _imported_cells(run, columns) for run in runs}
            found[_rows_part(columns)] = _experiment_rows(ctx, exp, runs, columns, mapped)
    found[_BASELINES_PART] = _baseline_block(ctx, exp)
    return found


def _row(ctx: Context, exp, run, columns: Sequence[str], cells: dict[str, str]) -> list[str]:
    """A run's cells in `columns`: what an imported row carried, else derived from the store."""
    if exp is not None and not run.is_evaluation:
        metrics = ctx.results(exp)["metrics"]
    else:
        metrics = key_metrics([run])
    if not cells:  # every run that was not imported
        return [_CELLS[c](ctx, run, metrics) for c in columns]
    return [cells.get(c) or _CELLS[c](ctx, run, metrics) for c in columns]


def _plain(text: str) -> bool:
    return "|" not in text and "\n" not in text


def run_table_cells(ctx: Context, content: str) -> dict[tuple[str, str], str] | None:
    """What ``sync.master_table_cells(content)`` reads from the master log `content` just rendered
    from `ctx`, without parsing it again: (run id, 'status_cell' | 'conclusion') -> cell text.

    None when a shortcut could differ from reading the file: a marker line in human text (it
    would open or close a table block), imported rows with cells of their own (extra columns),
    or a cell that escaping changes (a bar or a line break). The caller then parses `content`."""
    snapshot = ctx.snapshot
    blocks = sum(1 for slot in LAYOUT.slots if slot.block)  # the generated regions render_master_log writes
    for word in ("labfolio:begin", "labfolio:end"):
        if content.count(word) != blocks + FRONTMATTER_COMMENT.count(word):
            return None
    cells: dict[tuple[str, str], str] = {}
    for table in ([r for r in snapshot.runs if not r.is_evaluation], [r for r in snapshot.runs if r.is_evaluation]):
        for run in table:
            if is_imported(run) and imported_cells(run):
                return None
            id_cell = f"`{run.run_id}`"
            status = _derived(ctx, run, "status", ())
            conclusion = _derived(ctx, run, "conclusion", ())
            if not (_plain(id_cell) and _plain(status) and _plain(conclusion)):
                return None
            # a row's cells as reading the table gives them back: stripped, the id without backticks
            run_id = id_cell.strip().strip("`").strip()
            if run_id:
                cells[(run_id, "status_cell")] = status.strip()
                cells[(run_id, "conclusion")] = conclusion.strip()
    return cells


_BASELINES_PART = "baselines"


def _baseline_lines(ctx: Context) -> list[str]:
    lines: list[str] = []
    for exp in sorted(ctx.snapshot.experiments, key=lambda e: (e.sort_time, e.name), reverse=True):
        lines += ctx.fragment(exp, _BASELINES_PART, lambda exp=exp: _baseline_block(ctx, exp))
    return lines[:-1] if lines else ["No experiment has a baseline and another variant with runs yet."]


def _baseline_block(ctx: Context, exp) -> list[str]:
    """One experiment's baseline table, with a blank line after it; nothing without comparisons."""
    result = ctx.results(exp)
    if not result["comparisons"]:
        return []
    baseline = result["baseline"]
    rows = []
    for comparison in result["comparisons"]:
        metric, variant = comparison["metric"], comparison["variant"]
        rows.append([metric, variant, result["variants"][baseline]["cells"].get(metric, "--"),
                     result["variants"][variant]["cells"].get(metric, "--"), comparison["delta"],
                     comparison["verdict"]])
    return [f"### {ctx.experiment_link(exp.name)}", "",
            *render_table(["Metric", "Variant", f"Baseline ({baseline})", "Variant value", "Delta", "Verdict"],
                          rows), ""]


def open_items(ctx: Context) -> list[str]:
    """Pending work: TBD / evaluate-next lines in notes, TBD cells of imported rows, runs still running."""
    snapshot = ctx.snapshot
    items: list[str] = []

    def from_text(text: str, where: str) -> None:
        for line in (text or "").split("\n"):
            if _PENDING.search(line):
                cleaned = re.sub(r"^\s*(?:[-*+]\s+(?:\[[ xX]\]\s+)?|\d+[.)]\s+)", "", line).strip()
                if cleaned:
                    items.append(f"- {cleaned} — {where}")

    from_text(snapshot.project_notes.get("decisions", ""), "decision records")
    for exp in sorted(snapshot.experiments, key=lambda e: (e.sort_time, e.name), reverse=True):
        link = ctx.experiment_link(exp.name)
        for field_name in sorted(exp.notes):
            if field_name != "rules":
                from_text(exp.notes[field_name], f"{link} ({field_name.replace('_', ' ')})")
        for variant, notes in exp.variant_notes.items():
            for field_name in sorted(notes):
                from_text(notes[field_name], f"[[{ctx.variant_note(exp, variant)}|{exp.name}/{variant}]]")
    for run in snapshot.runs:
        for field_name, value in sorted(snapshot.run_notes.get(run.run_id, {}).items()):
            from_text(value, f"run `{run.run_id}` ({field_name})")
        for header, cell in imported_cells(run) if is_imported(run) else []:
            if _PENDING.search(cell) and column_key(header) != "conclusion":
                items.append(f"- run `{run.run_id}`: {clean_cell(header)} is {clean_cell(cell)}")
        if run.state == "running":
            items.append(f"- run `{run.run_id}` is still running (last heartbeat {format_date(run.heartbeat_at)})")
    return list(dict.fromkeys(items)) or ["Nothing pending."]


def render_master_log(ctx: Context) -> str:
    snapshot = ctx.snapshot
    training = [r for r in snapshot.runs if not r.is_evaluation]
    evals = [r for r in snapshot.runs if r.is_evaluation]
    front = {"type": "master-log", "runs": len(training), "evaluation_runs": len(evals),
             "experiments": len(snapshot.experiments), "updated": format_date(snapshot.newest_time)}
    header = [f"{len(training)} training runs and {len(evals)} evaluation-only runs in "
              f"{len(snapshot.experiments)} experiments; newest {format_date(snapshot.newest_time)}. "
              "Status and Conclusion cells can be edited here: `labfolio notes sync` reads them back."]
    blocks = {
        "header": header,
        "training": _table(ctx, training, TRAINING_COLUMNS),
        "evals": _table(ctx, evals, EVAL_COLUMNS),
        "baselines": _baseline_lines(ctx),
        "open_items": open_items(ctx),
    }
    front = with_human_frontmatter(front, snapshot.project_notes.get(FRONTMATTER_NOTE_FIELD))
    return render_note(front, "Master Experiment Log", LAYOUT, snapshot.project_notes, blocks)

