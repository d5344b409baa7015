"""Experiment specs: one YAML file names an experiment, its lineage, a base config, variants and seeds.

    experiment: vit_digits_002
    previous: vit_digits_001          # lineage; the notebook diffs against it
    hypothesis: mHC around each branch beats mHC around the whole block
    recipe: classify                  # a kit recipe, or: command: "python train.py"
    base: {dataset: digits, epochs: 30, schedule: cosine_warmup}
    variants:
      regular: {}                     # the first variant is the baseline unless `baseline:` says otherwise
      mhc: {connection: mhc, streams: 4}
    seeds: [0, 1]
    rules: [{metric: grad_norm, good: "< 5", bad: "> 50"}]   # optional extra health rules
    smoke: {text: ""}                 # optional: values used only with `labfolio run --smoke`

``load_spec`` reads and validates a file. Every error names the file and the YAML line and says
how to fix it: unknown keys come with a did-you-mean, values of the wrong type name the field,
and a variant whose resolved config equals the baseline's is refused (it would compare a thing
with itself). For a ``recipe:`` spec the keys and types are checked against the recipe's config
dataclass (this imports the recipe, hence torch: ``pip install 'labfolio[kit]'``); a ``command:``
spec's config is free-form and reaches the script as JSON (``$LABFOLIO_CONFIG``) and as
``--key=value`` flags.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "SpecError",
    "Spec",
    "PlannedRun",
    "RecipeInfo",
    "RECIPES",
    "SPEC_KEYS",
    "load_spec",
    "parse_spec",
    "previous_warnings",
    "smoke_warnings",
    "recipe_config_class",
    "parse_setting",
    "with_settings",
]


class SpecError(ConfigError):
    """An experiment spec that cannot be run as written (the message says where and why)."""


@dataclass(frozen=True)
class RecipeInfo:
    """What the runner needs to know about a kit recipe."""

    module: str  # runnable with `python -m`
    config_class: str  # the recipe's config dataclass, in `module`
    metrics: tuple[str, ...]  # headline metrics for the comparison table, key metric first
    progress_total: str  # config key holding the run's length ("epochs" or "steps")


RECIPES: dict[str, RecipeInfo] = {
    "classify": RecipeInfo("labfolio.kit.recipes.classify", "ClassifyConfig",
                           ("test/acc", "test/knn_acc", "test/loss"), "epochs"),
    "lm": RecipeInfo("labfolio.kit.recipes.lm", "LMConfig", ("val/bpb", "val/loss"), "steps"),
}

# key -> (accepted types, what the error message calls them)
SPEC_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "experiment": ((str,), "a string"),
    "previous": ((str,), "a string (the name of the experiment this one follows)"),
    "hypothesis": ((str,), "a string"),
    "project": ((str,), "a string"),
    "recipe": ((str,), f"one of {', '.join(RECIPES)}"),
    "command": ((str, list), "a string or a list of strings"),
    "base": ((dict,), "a mapping of config keys"),
    "variants": ((dict,), "a mapping of variant name -> config overrides"),
    "baseline": ((str,), "a variant name"),
    "seeds": ((list, int), "a list of integers (or one integer)"),
    "rules": ((list, dict), "a list of rule tables ({metric, good, bad, ...})"),
    "tags": ((list,), "a list of strings"),
    "metrics": ((list,), "a list of metric names"),
    "smoke": ((dict,), "a mapping of config keys used only with --smoke"),
}
# Keys the runner sets itself: a spec that sets them in a config would contradict its own labels.
_RESERVED_CONFIG_KEYS = ("experiment", "variant", "seed")


@dataclass(frozen=True)
class PlannedRun:
    """One variant × seed, with everything needed to start it."""

    experiment: str
    variant: str
    seed: int
    overrides: dict[str, Any]  # base + variant (+ smoke values): what the spec sets for this run
    config: dict[str, Any]  # the config this run will record, as far as the runner can tell

    @property
    def label(self) -> str:
        return f"{self.variant}/s{self.seed}"


@dataclass
class Spec:
    """A validated experiment spec (see the module docstring for the file format)."""

    experiment: str
    variants: dict[str, dict[str, Any]]  # name -> overrides on top of base, in file order
    baseline: str
    seeds: list[int]
    base: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    command: list[str] | None = None
    previous: str | None = None
    hypothesis: str | None = None
    project: str | None = None
    tags: list[str] = field(default_factory=list)
    rules: list[Any] = field(default_factory=list)  # analysis Rule objects (the spec's own only)
    metrics: list[str] = field(default_factory=list)  # headline metrics (default: the recipe's)
    smoke: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def recipe_info(self) -> RecipeInfo | None:
        return RECIPES.get(self.recipe) if self.recipe else None

    @property
    def headline_metrics(self) -> list[str]:
        if self.metrics:
            return list(self.metrics)
        return list(self.recipe_info.metrics) if self.recipe_info else []

    def overrides(self, variant: str, *, smoke: bool = False) -> dict[str, Any]:
        merged = _deep_merge(self.base, self.variants[variant])
        return _deep_merge(merged, self.smoke) if smoke else merged

    def resolved(self, variant: str, *, smoke: bool = False) -> dict[str, Any]:
        """The config a run of `variant` records: recipe defaults filled in (command specs: as written)."""
        values = self.overrides(variant, smoke=smoke)
        if not self.recipe:
            return values
        cls = recipe_config_class(self.recipe)
        from labfolio.kit.recipes import config_from_mapping

        cfg = config_from_mapping(cls, values, f"{self.path or 'spec'}: variant {variant}")
        if smoke:
            cfg = config_from_mapping(cls, dict(self.smoke_preset()), "the recipe's --smoke preset", base=cfg)
            cfg = config_from_mapping(cls, self.smoke_over_preset(), f"{self.path or 'spec'}: smoke", base=cfg)
        return dataclasses.asdict(cfg)

    def smoke_preset(self) -> dict[str, Any]:
        """The recipe's ``--smoke`` preset (``SMOKE`` in its module); {} for a command spec."""
        if not self.recipe:
            return {}
        return getattr(importlib.import_module(RECIPES[self.recipe].module), "SMOKE", {})

    def smoke_over_preset(self) -> dict[str, Any]:
        """The spec's ``smoke:`` values for keys the recipe's smoke preset also sets: they win over
        the preset (the child gets them as flags after ``--smoke``). The others reach the child in
        its config file, under the preset, so that a preset that reads them (the lm recipe takes
        its own text file when ``text`` is "") still can."""
        preset = self.smoke_preset()
        return {key: value for key, value in self.smoke.items() if key in preset}

    def plan(self, *, smoke: bool = False) -> list[PlannedRun]:
        """Variants × seeds, variant-major (so the first seeds of every variant finish first)."""
        seeds = self.seeds[:1] if smoke else self.seeds
        planned = []
        for seed in seeds:
            for variant in self.variants:
                config = self.resolved(variant, smoke=smoke)
                if self.recipe:  # the recipe records the seed it read from $LABFOLIO_SEED
                    config = {**config, "seed": seed}
                planned.append(PlannedRun(self.experiment, variant, seed,
                                          self.overrides(variant, smoke=smoke), config))
        return planned


def recipe_config_class(recipe: str) -> type:
    """The config dataclass of a kit recipe (imports torch)."""
    info = RECIPES[recipe]
    try:
        module = importlib.import_module(info.module)
    except ImportError as exc:
        raise SpecError(f"recipe {recipe!r} needs the research kit ({exc}); install it with "
                        "pip install 'labfolio[kit]'") from None
    return getattr(module, info.config_class)


# --------------------------------------------------------------------------- YAML with line numbers


def _load_yaml(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """The document and, for every key path (and list index), its 1-based line."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {exc}") from None
    if node is None:
        raise SpecError(f"{source}: the file is empty; a spec needs at least experiment, recipe "
                        "(or command) and variants")
    lines: dict[tuple, int] = {(): node.start_mark.line + 1}
    constructor = yaml.SafeLoader(text)  # only its constructor is used, on nodes composed above

    def walk(current, path: tuple) -> Any:
        if isinstance(current, yaml.MappingNode):
            constructor.flatten_mapping(current)
            result: dict[Any, Any] = {}
            for key_node, value_node in current.value:
                key = constructor.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, (dict, list)):
                    raise SpecError(f"{source}:{line}: a key must be a plain name, got {key!r} "
                                    "(a stray '{' or '[' in a flow mapping?)")
                if key in result:
                    raise SpecError(f"{source}:{line}: duplicate key {key!r} (at {_dotted(path) or 'top level'}); "
                                    "YAML would silently keep only the last one")
                lines[(*path, key)] = line
                result[key] = walk(value_node, (*path, key))
            return result
        if isinstance(current, yaml.SequenceNode):
            items = []
            for index, item in enumerate(current.value):
                lines[(*path, index)] = item.start_mark.line + 1
                items.append(walk(item, (*path, index)))
            return items
        return constructor.construct_object(current, deep=True)

    try:
        return walk(node, ()), lines
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {exc}") from None


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


class _Where:
    """Formats `file:line: dotted.path` prefixes for error messages."""

    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source, self.lines = source, lines

    def __call__(self, *path: Any) -> str:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        else:  # pragma: no cover - the root always has a line
            line = 1
        return f"{self.source}:{line}: {_dotted(path)}" if path else f"{self.source}:{line}"


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _did_you_mean(word: str, choices) -> str:
    hint = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


# --------------------------------------------------------------------------- parsing and validation


def load_spec(path: str | Path) -> Spec:
    """Read and validate the spec at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read the spec {path}: {exc.strerror or exc}") from None
    return parse_spec(text, source=str(path), path=path)


def parse_spec(text: str, source: str = "spec", path: Path | None = None) -> Spec:
    """Validate a spec document; `source` names it in error messages."""
    data, lines = _load_yaml(text, source)
    where = _Where(source, lines)
    if not isinstance(data, dict):
        raise SpecError(f"{where()}: a spec is a mapping (experiment:, recipe:, variants: ...), "
                        f"got {_type_name(data)}")
    for key, value in data.items():
        if key not in SPEC_KEYS:
            raise SpecError(f"{where(key)}: unknown spec key {key!r}{_did_you_mean(key, SPEC_KEYS)}; "
                            f"spec keys are {', '.join(SPEC_KEYS)}")
        types, described = SPEC_KEYS[key]
        if value is None and key in ("base", "variants", "smoke", "rules", "tags", "metrics"):
            data[key] = value = [] if key in ("rules", "tags", "metrics") else {}
        if not isinstance(value, types) or isinstance(value, bool):
            raise SpecError(f"{where(key)}: {key} must be {described}, got {_type_name(value)} {value!r}")
    for required in ("experiment", "variants"):
        if required not in data:
            raise SpecError(f"{where()}: the spec has no {required!r}; add e.g. "
                            + ("experiment: my_experiment_001" if required == "experiment"
                               else "variants: {baseline: {}, new_idea: {some_key: value}}"))
    if ("recipe" in data) == ("command" in data):
        raise SpecError(f"{where()}: a spec needs exactly one of recipe: ({', '.join(RECIPES)}) or "
                        "command: (any script that calls labfolio.init)")
    recipe = data.get("recipe")
    if recipe is not None and recipe not in RECIPES:
        raise SpecError(f"{where('recipe')}: unknown recipe {recipe!r}{_did_you_mean(recipe, RECIPES)}; "
                        f"recipes are {', '.join(RECIPES)} (or use command: to run your own script)")
    command = _command(data.get("command"), where) if "command" in data else None
    name = data["experiment"].strip()
    if not name or "/" in name:
        raise SpecError(f"{where('experiment')}: experiment must be a non-empty name without '/', got {name!r}")

    variants = data["variants"]
    if not variants:
        raise SpecError(f"{where('variants')}: variants is empty; name at least one, e.g. baseline: {{}}")
    for variant, overrides in list(variants.items()):
        if not isinstance(variant, str) or not variant.strip() or "/" in variant:
            raise SpecError(f"{where('variants', variant)}: variant names are non-empty strings without '/', "
                            f"got {variant!r}")
        if overrides is None:
            variants[variant] = overrides = {}
        if not isinstance(overrides, dict):
            raise SpecError(f"{where('variants', variant)}: variant {variant!r} must be a mapping of config "
                            f"overrides (use {{}} for none), got {_type_name(overrides)} {overrides!r}")
    baseline = data.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise SpecError(f"{where('baseline')}: baseline {baseline!r} is not a variant"
                        f"{_did_you_mean(baseline, variants)}; variants are {', '.join(variants)}")

    seeds = data.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    for index, seed in enumerate(seeds):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise SpecError(f"{where('seeds', index)}: seeds must be integers, got {_type_name(seed)} {seed!r}")
    if not seeds:
        raise SpecError(f"{where('seeds')}: seeds is empty; list at least one, e.g. seeds: [0]")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{where('seeds')}: seeds repeat ({seeds}); each seed is one run per variant")

    for key in ("tags", "metrics"):
        for index, item in enumerate(data.get(key, [])):
            if not isinstance(item, str):
                raise SpecError(f"{where(key, index)}: {key} must be strings, got {_type_name(item)} {item!r}")
    rules = _rules(data.get("rules", []), where)

    spec = Spec(
        experiment=name, variants=variants, baseline=baseline, seeds=list(seeds),
        base=data.get("base", {}), recipe=recipe, command=command, previous=data.get("previous"),
        hypothesis=data.get("hypothesis"), project=data.get("project"), tags=list(data.get("tags", [])),
        rules=rules, metrics=list(data.get("metrics", [])), smoke=data.get("smoke", {}), path=path,
    )
    _check_configs(spec, where)
    return spec


def _command(value: Any, where: _Where) -> list[str]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise SpecError(f"{where('command')}: cannot split the command into arguments: {exc}") from None
    else:
        argv = value
        for index, item in enumerate(argv):
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                raise SpecError(f"{where('command', index)}: command arguments must be strings, got {item!r}")
        argv = [str(item) for item in argv]
    if not argv:
        raise SpecError(f"{where('command')}: command is empty; e.g. command: python train.py")
    return argv


def _rules(value: Any, where: _Where) -> list[Any]:
    from .analysis import RulesFileError, extra_rules

    try:
        return extra_rules(value, where("rules"))
    except RulesFileError as exc:
        raise SpecError(str(exc)) from None


class _SettingsWhere(_Where):
    """Error prefixes for values given on the command line rather than in the file."""

    def __call__(self, *path: Any) -> str:
        key = path[1] if len(path) > 1 and path[0] == "base" else _dotted(path)
        return f"{self.source} --set {key}" if path else self.source


def parse_setting(text: str) -> tuple[str, Any]:
    """``key=value`` from ``labfolio run --set``; the value is read as JSON, else YAML (40, 1e-3, cosine)."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {text!r}: expected key=value, e.g. --set epochs=40")
    try:
        # JSON first: YAML 1.1 reads 3e-3 as a string; JSON reads numbers, true/false and lists
        value = json.loads(raw)
    except ValueError:
        pass
    else:
        return key, value
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {text!r}: the value is not valid YAML ({exc})") from None
    return key, value


def with_settings(spec: Spec, settings: Mapping[str, Any], seeds: list[int] | None = None) -> Spec:
    """`spec` with base keys set from the command line (``--set epochs=40``) and other seeds.

    The settings go into ``base``, so a variant that sets the same key keeps its value: the
    variants are what the experiment compares. The result is validated like a spec file (keys,
    types, no variant equal to another); each run records the config it actually ran with.
    """
    changed = dataclasses.replace(spec, base=_deep_merge(spec.base, settings))
    if seeds is not None:
        if not seeds or len(set(seeds)) != len(seeds):
            raise SpecError(f"--seeds {seeds}: give distinct integers, e.g. --seeds 0,1")
        changed.seeds = list(seeds)
    _check_configs(changed, _SettingsWhere(str(spec.path or "spec"), {}))
    return changed


def _check_configs(spec: Spec, where: _Where) -> None:
    """Keys, types and reserved names of base, variants and smoke; then no variant may equal another."""
    sections = [(("base",), spec.base), (("smoke",), spec.smoke)]
    sections += [(("variants", name), overrides) for name, overrides in spec.variants.items()]
    for path, values in sections:
        for key in values:
            if not isinstance(key, str):
                raise SpecError(f"{where(*path, key)}: config keys are strings, got {key!r}")
            if key in _RESERVED_CONFIG_KEYS:
                raise SpecError(f"{where(*path, key)}: {key!r} is set by the runner from the spec "
                                f"(experiment:, the variant's name, seeds:); remove it here")
    resolved: dict[str, dict[str, Any]] = {}
    if spec.recipe:
        cls = recipe_config_class(spec.recipe)
        names = [f.name for f in dataclasses.fields(cls)]
        for path, values in sections:
            for key, value in values.items():
                if key not in names:
                    raise SpecError(
                        f"{where(*path, key)}: {spec.recipe} has no config key {key!r}{_did_you_mean(key, names)}; "
                        f"see python -m {RECIPES[spec.recipe].module} --help for the keys")
                _check_recipe_value(cls, key, value, where(*path, key))
        for variant in spec.variants:
            try:
                resolved[variant] = spec.resolved(variant)
            except ConfigError as exc:
                raise SpecError(f"{where('variants', variant)}: {exc}") from None
    else:
        for variant in spec.variants:
            resolved[variant] = spec.overrides(variant)
        for path, values in sections:
            _check_json_values(values, path, where)
    seen: dict[str, str] = {}
    for variant, config in resolved.items():
        fingerprint = json.dumps(config, sort_keys=True, default=str)
        if fingerprint in seen:
            other = seen[fingerprint]
            what = "the baseline " if other == spec.baseline else ""
            raise SpecError(
                f"{where('variants', variant)}: variant {variant!r} changes nothing against {what}{other!r}: "
                f"its config resolves to the same values{_unchanged_detail(spec, variant)}; change a key "
                "or remove the variant")
        seen[fingerprint] = variant


def _unchanged_detail(spec: Spec, variant: str) -> str:
    overrides = spec.variants[variant]
    if not overrides:
        return " (it overrides nothing)"
    keys = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    return f" ({keys} is already the value in base or the defaults)"


def _check_recipe_value(cls: type, key: str, value: Any, source: str) -> None:
    from labfolio.kit.recipes import config_from_mapping

    try:
        config_from_mapping(cls, {key: value}, source)
    except ConfigError as exc:
        message = str(exc)
        # the recipe's own message starts with `source: `; a spec error keeps it and adds the fix
        raise SpecError(message if message.startswith(source) else f"{source}: {message}") from None


def _check_json_values(values: Mapping[str, Any], path: tuple, where: _Where) -> None:
    """A command spec's config travels as JSON: only JSON-representable values are accepted."""
    for key, value in values.items():
        if isinstance(value, dict):
            _check_json_values(value, (*path, key), where)
        elif not isinstance(value, (str, int, float, bool, list, type(None))):
            raise SpecError(f"{where(*path, key)}: {_type_name(value)} {value!r} cannot be passed to a "
                            "command as JSON; quote it as a string")


def _deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def previous_warnings(spec: Spec, known_experiments: set[str]) -> list[str]:
    """A warning when `previous` names an experiment the store does not have (with the fix)."""
    if not spec.previous or spec.previous in known_experiments:
        return []
    message = (f"previous experiment {spec.previous!r} is not in the store, so the notebook cannot diff "
               f"{spec.experiment} against it")
    if spec.path is not None:
        for suffix in (".yaml", ".yml"):
            sibling = spec.path.with_name(spec.previous + suffix)
            if sibling.is_file():
                return [f"{message}; run it first: labfolio run {sibling}"]
    close = difflib.get_close_matches(spec.previous, sorted(known_experiments), n=1)
    return [message + (f" (did you mean {close[0]!r}?)" if close else "; check the name")]


def smoke_warnings(spec: Spec) -> list[str]:
    """A warning for each set of variants whose --smoke runs coincide: the recipe's smoke preset
    replaced every key that tells them apart, so their smoke runs check the pipeline but not
    those variants' own settings (e.g. a head count that does not divide the real width)."""
    if not spec.recipe:
        return []
    preset = spec.smoke_preset()
    kept = spec.smoke_over_preset()  # the spec's own smoke values, which win over the preset
    twins: dict[str, list[str]] = {}
    for planned in spec.plan(smoke=True):
        twins.setdefault(json.dumps(planned.config, sort_keys=True, default=str), []).append(planned.variant)
    warnings = []
    for variants in (group for group in twins.values() if len(group) > 1):
        replaced = sorted({key for variant in variants for key in spec.variants[variant]
                           if key in preset and key not in kept})
        warnings.append(f"with --smoke, variants {', '.join(variants)} run the same config: the recipe's "
                        f"smoke preset replaces {', '.join(replaced) or 'what sets them apart'}, so their "
                        "smoke runs do not exercise those settings")
    return warnings
