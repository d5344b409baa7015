"""``Experiment Log.md``: the chronological log, newest entry first (NOTEBOOK_FORMAT.md §1).

Each entry sits between ``# --- Experiment Path ---`` and ``# -------------------------``. The
datetime, summary bullets, the computed difference from the previous experiment, the results per
variant (mean ± std (n) with a verdict against the baseline) and the proposed run status are
written from the store. Hypothesis, observations, conclusion and next steps are the human's, as
is any sentence added under a generated block.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .context import Context
from .mdtext import dump_frontmatter, format_date, format_datetime, format_duration, render_table, strip_blank_edges
from .results import experiment_status, previous_diff, status_label, variant_order
from .sections import (FRONTMATTER_COMMENT, Layout, ParsedNote, Slot, parse_note, render_sections,
                       with_human_frontmatter)
from .snapshot import (DATA_NAMES, EPOCH_NAMES, ExperimentInfo, config_lookup, data_label, epochs_short, is_imported,
                       machine_label, run_git, run_speed)

__all__ = [
    "ENTRY_LAYOUT",
    "HEAD_LAYOUT",
    "ENTRY_START",
    "ENTRY_END",
    "FRONTMATTER_KEYS",
    "FRONTMATTER_NOTE_FIELD",
    "LogEntry",
    "ParsedLog",
    "render_experiment_log",
    "render_entry",
    "parse_experiment_log",
    "variant_heading",
    "variant_from_heading",
    "summary_lines",
    "experiment_fragments",
]

FRONTMATTER_KEYS = ("type", "experiments", "updated")
FRONTMATTER_NOTE_FIELD = "frontmatter.log"  # project field: keys a human added to the log's frontmatter
ENTRY_START = "# --- Experiment Path ---"
ENTRY_END = "# -------------------------"
_START_RE = re.compile(r"^#{1,2}\s*-{2,}\s*[^-\s].*?-{2,}\s*$")
_END_RE = re.compile(r"^#{1,2}\s*-{3,}\s*$")
_PATH_RE = re.compile(r"\]\(\s*<?\.?/?experiments/([^/)>]+)")

ENTRY_LAYOUT = Layout((
    Slot("log_note", None, block="path"),
    Slot("summary", "## Experiment summary", ("experiment summary", "summary", "experiment"), "summary"),
    Slot("hypothesis", "## Hypothesis:", ("hypothesis", "hypotheses", "hypothesis and motivation")),
    Slot("difference", "## Difference between this and previous experiment:",
         ("difference between this and previous experiment", "difference between this and the previous experiment",
          "difference from previous experiment", "difference from the previous experiment", "differences",
          "difference", "diff", "changes", "what changed", "changes from previous experiment"), "diff"),
    Slot("results_notes", "## Results:", ("results", "result", "results and metrics"), "results"),
    Slot("observations", "## Observations / Interpretation",
         ("observations interpretation", "observations", "observation", "interpretation",
          "observations and interpretation")),
    Slot("conclusion", "## Conclusion:", ("conclusion", "conclusions")),
    Slot("next_steps", "## Next steps:", ("next steps", "next step", "todo", "to do", "next")),
    Slot("status_notes", "## Run status", ("run status", "status", "run statuses", "validity"), "status"),
))
HEAD_LAYOUT = Layout((Slot("log_preamble", None),), level=1)


def variant_heading(variant: str, is_baseline: bool) -> str:
    """'### Baseline', '### Baseline: regular' or '### Variant gated'."""
    if is_baseline:
        return "### Baseline" if variant.lower() == "baseline" else f"### Baseline: {variant}"
    return f"### Variant {variant}"


def variant_from_heading(text: str) -> tuple[str, bool]:
    """(variant name, is baseline) from a results sub-heading as people write it."""
    from .mdtext import clean_cell

    cleaned = clean_cell(text).strip().rstrip(":").strip()
    cleaned = re.sub(r"[\u2600-\u27bf\U0001f000-\U0001faff\ufe0f]", "", cleaned).strip()
    match = re.match(r"(?i)^(baseline|base line|baseline variant)\b[\s:\-–—]*(.*)$", cleaned)
    if match:
        rest = match.group(2).strip().strip("()").strip()
        return (rest or "baseline"), True
    match = re.match(r"(?i)^(variant|varient|varaint|variante|var)\b[\s:\-–—]*(.*)$", cleaned)
    if match and match.group(2).strip():
        return match.group(2).strip(), False
    return cleaned, False


def _join_counts(names: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} ×{count}" for name, count in counts.items())


def _epochs_reached(runs) -> str:
    """" (reached 1.03, 2)" when some runs stopped short of their planned epochs (`epochs_short`)."""
    short = sorted({value for run in runs if (value := epochs_short(run)) is not None})
    return f" (reached {', '.join(f'{value:.3g}' for value in short)})" if short else ""


def _runner_time(runs) -> str | None:
    """"- Runner: 15m19s wall per run, 27s of it outside the run (mean of 4)" from what
    `labfolio run` recorded (runner/wall_s, runner/outside_run_s); None for runs it did not start."""
    def mean_of(key: str) -> tuple[float, int] | None:
        values = [v for r in runs if key in r.summary and isinstance(v := r.summary[key].value, (int, float))]
        return (sum(values) / len(values), len(values)) if values else None

    wall, outside = mean_of("runner/wall_s"), mean_of("runner/outside_run_s")
    if wall is None:
        return None
    text = f"- Runner: {format_duration(wall[0])} wall per run"
    if outside is not None:
        text += f", {format_duration(outside[0])} of it outside the run (process start, imports, data, model build)"
    return text + f" (mean of {wall[1]})"


def _shared_speed(runs) -> str | None:
    """"- Shared device: 4 runs at once made 358.2 steps/s in all" from what `labfolio run` measured
    while runs shared a device (runner/runs_at_once, runner/steps_per_s_in_all); None if none did."""
    measured = []
    for run in runs:
        count, total = run.summary.get("runner/runs_at_once"), run.summary.get("runner/steps_per_s_in_all")
        if count is not None and total is not None and isinstance(count.value, (int, float)) \
                and isinstance(total.value, (int, float)):
            measured.append((int(count.value), float(total.value)))
    if not measured:
        return None
    shown = "; ".join(f"{count} runs at once made {total:.4g} steps/s in all"
                      for count, total in sorted(set(measured), reverse=True))
    return f"- Shared device: {shown} (while they all trained, as `labfolio run` measured)"


def summary_lines(ctx: Context, exp: ExperimentInfo) -> list[str]:
    """The generated summary: datetime, runs, seeds, data, epochs, git, machine, speed."""
    runs = [*exp.runs, *exp.eval_runs]
    if not runs:
        return [f"**Datetime** {format_datetime(exp.started_at)}", "", "- Runs: none yet"]
    described_ids = ctx.described_run_ids(exp)
    # the experiment's date is that of the runs that answer it: a rerun of every seed a week after
    # a killed first attempt happened on the rerun's date
    counted_start = min((r.started_at for r in exp.runs if r.run_id in described_ids and r.started_at is not None),
                        default=exp.started_at)
    first = (f" (the counted runs; the first attempt started {format_datetime(exp.started_at)})"
             if format_datetime(counted_start) != format_datetime(exp.started_at) else "")
    lines = [f"**Datetime** {format_datetime(counted_start)}{first}", ""]
    imported = sum(1 for r in runs if is_imported(r))
    states: dict[str, int] = {}
    for run in runs:
        states[run.state] = states.get(run.state, 0) + 1
    state_text = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    kind = f"; {imported} imported from notes" if imported else ""
    # The rest describes the runs the results count (a variant's newest attempt of a seed where
    # none counts): after a rerun of every seed at a new length, the older attempts' epochs, steps
    # and speed would otherwise be averaged in with the runs that answer the question.
    described = [r for r in exp.runs if r.run_id in described_ids]
    older = len(exp.runs) - len(described)
    older_text = (f"; described below: {len(described)}; the other {older} are earlier or unfinished attempts "
                  "of the same seeds (listed in the variant notes)") if older and described else ""
    lines.append(f"- Runs: {len(exp.runs)} training ({_join_counts([r.variant for r in exp.runs]) or 'none'})"
                 + (f", {len(exp.eval_runs)} evaluation-only" if exp.eval_runs else "")
                 + f"; {state_text}{kind}{older_text}")
    described = described or list(exp.runs)  # runs without a seed or config: all of them
    runs = [*described, *exp.eval_runs]
    seeds = sorted({r.seed for r in described if r.seed is not None})
    lines.append(f"- Seeds: {', '.join(str(s) for s in seeds) if seeds else '--'}")
    data = sorted({v for r in described if (v := data_label(r.config, (*DATA_NAMES, "task"))) is not None})
    epochs = sorted({str(v) for r in described if (v := config_lookup(r.config, EPOCH_NAMES)) is not None})
    steps = sorted({r.last_step + 1 for r in described if r.last_step is not None})
    lines.append(f"- Data: {', '.join(data) if data else '--'}")
    if epochs:
        lines.append(f"- Epochs: {', '.join(epochs)}{_epochs_reached(described)}")
    lines.append(f"- Steps: {', '.join(str(s) for s in steps) if steps else '--'}")
    gits = list(dict.fromkeys(run_git(r) for r in runs))
    machines = list(dict.fromkeys(machine_label(r) for r in runs))
    speeds = [s for r in described if (s := run_speed(r)) is not None]
    speed = f"{sum(speeds) / len(speeds):.4g} steps/s (mean of {len(speeds)})" if speeds else "--"
    lines.append(f"- Git: {', '.join(g for g in gits if g != '--') or '--'}")
    lines.append(f"- Machine: {', '.join(m for m in machines if m != '--') or '--'}")
    lines.append(f"- Speed: {speed}")
    runner_line = _runner_time(described)
    shared = _shared_speed(described)
    if shared:
        lines.append(shared)
    if runner_line:
        lines.append(runner_line)
    return lines


def _results_lines(ctx: Context, exp: ExperimentInfo) -> list[str]:
    result = ctx.results(exp)
    metrics = result["metrics"]
    if not result["variants"]:
        return ["No runs yet."]
    lines: list[str] = []
    baseline = result["baseline"]
    for variant in variant_order(result, exp):
        info = result["variants"][variant]
        lines += [variant_heading(variant, variant == baseline), ""]
        if metrics:
            lines += render_table(metrics, [[info["cells"].get(m, "--") for m in metrics]])
        else:
            lines.append(f"No metrics logged ({info['n']} runs).")
        verdicts = [c for c in result["verdict_lines"] if c["variant"] == variant]
        if verdicts:
            lines.append("")
            lines += [f"- {c['text']}" for c in verdicts]
        lines.append("")
    extra = [f"- ⚠️ {message}" for message in result["lucky"]]
    if result["excluded"]:
        extra.append(f"- {result['excluded']}")
    extra += [f"- {note}" for note in result["notes"]]
    lines += extra
    return strip_blank_edges(lines)


def _status_lines(ctx: Context, exp: ExperimentInfo) -> list[str]:
    runs = [*exp.runs, *exp.eval_runs]
    if not runs:
        return ["- Proposed: -- (no runs yet)"]
    status, reason = experiment_status(runs, ctx.proposals)
    label = status_label(status, reason)
    if status == "invalid" and reason:
        label += f": {reason}"  # the invalid label has no room for the reason
    overridden = sum(1 for r in runs if ctx.proposals[r.run_id].overridden)
    if overridden:
        return [f"- Status: {label} (set by a human on {overridden} of {len(runs)} runs)"]
    return [f"- Proposed: {label}"]


def render_entry(ctx: Context, exp: ExperimentInfo) -> list[str]:
    """One entry's lines, from its start delimiter to its end delimiter."""
    previous = ctx.snapshot.by_name.get(exp.previous) if exp.previous else None
    diff_lines, warning = previous_diff(exp, previous, views=ctx.config_views)
    diff_block = []
    if exp.previous:
        diff_block += [f"Previous: {ctx.experiment_link(exp.previous)}", ""]
    diff_block += diff_lines
    if warning:
        diff_block += ["", f"> ⚠️ {warning}"]
    blocks = {
        "path": [f"[Experiment path](./{ctx.experiment_note(exp)}.md)"],
        "summary": summary_lines(ctx, exp),
        "diff": diff_block,
        "results": _results_lines(ctx, exp),
        "status": _status_lines(ctx, exp),
    }
    return [ENTRY_START, "", *render_sections(ENTRY_LAYOUT, exp.notes, blocks), ENTRY_END]


_ENTRY_PART = "log_entry"


def experiment_fragments(ctx: Context, exp: ExperimentInfo) -> dict:
    """The pieces of this log one experiment contributes, as ``render_experiment_log`` asks
    ``ctx.fragment`` for them: its entry."""
    return {_ENTRY_PART: render_entry(ctx, exp)}


def render_experiment_log(ctx: Context) -> str:
    """The whole chronological log, newest experiment first."""
    snapshot = ctx.snapshot
    ordered = sorted(snapshot.experiments, key=lambda e: (e.sort_time, e.created_at, e.name), reverse=True)
    front = {"type": "experiment-log", "experiments": len(ordered), "updated": format_date(snapshot.newest_time)}
    front = with_human_frontmatter(front, snapshot.project_notes.get(FRONTMATTER_NOTE_FIELD))
    lines = dump_frontmatter(front, FRONTMATTER_COMMENT).rstrip("\n").split("\n")
    lines += ["# Experiment Log", ""]
    preamble = (snapshot.project_notes.get("log_preamble") or "").strip("\n")
    if preamble.strip():
        lines += [*preamble.split("\n"), ""]
    for exp in ordered:
        lines += [*ctx.fragment(exp, _ENTRY_PART, lambda exp=exp: render_entry(ctx, exp)), ""]
    trailer = (snapshot.project_notes.get("log_trailer") or "").strip("\n")
    if trailer.strip():
        lines += [*trailer.split("\n"), ""]
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n"


# -- reading -----------------------------------------------------------------------------------

@dataclass
class LogEntry:
    """One entry as read: the experiment it names (if any), its sections, where it starts."""

    folder: str | None  # the experiments/<folder> its path link names
    note: ParsedNote
    line: int  # 1-based line of its start delimiter
    text: str  # the entry verbatim, delimiters included
    after: str = ""  # text between its end delimiter and the next entry: it belongs to this entry


@dataclass
class ParsedLog:
    preamble: str  # human text before the first entry (after the title)
    entries: list[LogEntry] = field(default_factory=list)
    trailer: str = ""  # human text after the last entry
    title: str | None = None
    frontmatter: dict = field(default_factory=dict)


def parse_experiment_log(text: str) -> ParsedLog:
    """Split a chronological log into entries (tolerant of typos in the delimiters)."""
    from .mdtext import fenced_lines, split_frontmatter

    front, body, front_lines = split_frontmatter(text)
    lines = body.split("\n")
    fenced = fenced_lines(lines)
    head: list[str] = []
    tail: list[str] = []
    entries: list[LogEntry] = []
    current: list[str] | None = None
    start_line = 0
    title = None

    def close(end: int) -> None:
        entry_text = "\n".join(current)
        inner = current[1:-1] if current and _END_RE.match(current[-1].strip()) else current[1:]
        note = parse_note("\n".join(inner), ENTRY_LAYOUT, line_offset=start_line, expect_title=False)
        block = note.blocks.get("path", "") + "\n" + note.human.get("log_note", "")
        match = _PATH_RE.search(block)
        folder = match.group(1).strip() if match else None
        if folder and folder.endswith(".md"):
            folder = None
        entries.append(LogEntry(folder, note, start_line, entry_text))

    for index, line in enumerate(lines):
        stripped = line.strip()
        is_fenced = fenced[index]
        if not is_fenced and _START_RE.match(stripped) and not _END_RE.match(stripped):
            if current is not None:
                close(index)
            if entries and tail:
                entries[-1].after = "\n".join(strip_blank_edges([*entries[-1].after.split("\n"), *tail]))
                tail = []
            current = [line]
            start_line = index + 1 + front_lines
            continue
        if current is not None:
            current.append(line)
            if not is_fenced and _END_RE.match(stripped):
                close(index)
                current = None
            continue
        if entries:
            tail.append(line)
        else:
            if title is None and stripped.startswith("# ") and not any(h.strip() for h in head):
                title = stripped[2:].strip()
                continue
            head.append(line)
    if current is not None:
        close(len(lines))
    return ParsedLog("\n".join(strip_blank_edges(head)), entries, "\n".join(strip_blank_edges(tail)), title, front)
