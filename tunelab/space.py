"""Search-space files: load a plain Python module into a validated `Study`.

A space file sets module-level names (all optional but one of SPACE / ARMS):

    NAME        sweep name (default: the file's stem)
    BASE        dotted-key overrides of TrialConfig applied to every trial
    SPACE       a search: dotted keys -> values or Ray Tune domains (grid_search, choice, ...)
    ARMS        an ablation: arm name -> dotted-key overrides of BASE (plain dicts; compose them
                with `{**ARMS_A, ...}` to build an arm on another arm)
    BASELINE    the reference arm of an ablation (default: the first arm)
    SEEDS       seeds every arm / configuration runs with (default [0, 1, 2])
    FOLDS       k >= 2: every arm and seed also runs on each of k cross-validation folds of the
                non-test data (replicates paired across arms, like seeds; default: no folds)
    NUM_SAMPLES configurations drawn from SPACE's random domains (default 1): the budget of a
                random or TPE search (each configuration runs every seed)
    SEARCH      how SPACE is sampled: "grid" (every value of every tune.grid_search), "random"
                (Ray's random sampling, a grid part crossed with it), or "tpe" (Optuna's TPE
                through Ray Tune, learning from finished configurations); default: "random" where
                SPACE has a random domain, else "grid"
    SEARCH_SEED seed of the random or TPE sampler (default 0): a random search draws the same
                configurations again, TPE the same start-up ones
    MAX_CONCURRENT  TPE only: configurations in flight at once (default: as many as keep this
                machine's trial slots busy, at least 1)
    THRESHOLDS  evaluation thresholds, all scored on the same predictions (eval.thresholds)
    SCHEDULER   "asha" or "none" (default: asha for a search, none for an ablation)
    ASHA        ASHA settings: grace_period, reduction_factor
    METRIC, MODE  what ASHA prunes on (default "val_iou", "max"); analysis picks its best arm
                by mean validation IoU whatever they are
    RESOURCES   per trial, e.g. {"cpu": 1, "gpu": 0.25} (default cpu 1; gpu: 1 where the
                machine has GPUs, else 0; a "gpu" given here, 0 included, is kept)

Everything is validated through TrialConfig before Ray starts: each key, each value a domain can
produce, and every combination of the discrete values, so a bad file fails in seconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import itertools
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from tunelab.config import VALID_KEYS, TrialConfig

SETTINGS = (
    "NAME",
    "BASE",
    "SPACE",
    "ARMS",
    "BASELINE",
    "SEEDS",
    "FOLDS",
    "NUM_SAMPLES",
    "SEARCH",
    "SEARCH_SEED",
    "MAX_CONCURRENT",
    "THRESHOLDS",
    "SCHEDULER",
    "ASHA",
    "METRIC",
    "MODE",
    "RESOURCES",
)
SearchName = Literal["grid", "random", "tpe"]
SEARCHES: tuple[SearchName, ...] = get_args(SearchName)
ASHA_DEFAULTS = {"grace_period": 3, "reduction_factor": 2}
FOLD_KEY = "data.fold"  # set per trial by FOLDS, like the seed by SEEDS
MAX_CHECKED_COMBINATIONS = 5000


class SpaceError(ValueError):
    """A search-space file that cannot run; the message names the file and the key."""


@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    kind: Literal["search", "ablation"]
    base: dict[str, Any]
    space: dict[str, Any] = field(default_factory=dict)
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    folds: int = 0  # 0: one validation split per seed; k: k folds per seed
    num_samples: int = 1
    search: SearchName = "grid"
    search_seed: int = 0
    max_concurrent: int | None = None  # TPE: configurations in flight; None: fit the machine
    scheduler: Literal["asha", "none"] = "asha"
    asha: dict[str, int] = field(default_factory=lambda: dict(ASHA_DEFAULTS))
    metric: str = "val_iou"
    mode: Literal["max", "min"] = "max"
    # no "gpu" key: the file did not say, and the runner picks the machine's default
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0})

    def param_space(self) -> dict[str, Any]:
        """Ray's param_space: the arm or the SPACE domains, times a grid over the replicates
        (seeds, and folds with FOLDS). TPE gets the domains alone: its searcher adds each
        configuration's replicates (`tunelab.searcher.Replicates`)."""
        from ray import tune

        if self.search == "tpe":
            return dict(self.space)
        replicates = {"seed": tune.grid_search(list(self.seeds))}
        if self.folds:
            replicates[FOLD_KEY] = tune.grid_search(list(range(self.folds)))
        if self.kind == "ablation":
            return {"arm": tune.grid_search(list(self.arms)), **replicates}
        return {**self.space, **replicates}

    def replicates(self) -> list[dict[str, int]]:
        """The replicates every arm or configuration runs, seed-major: seeds x folds."""
        folds: list[dict[str, int]] = [{FOLD_KEY: f} for f in range(self.folds)] or [{}]
        return [{"seed": seed, **fold} for seed in self.seeds for fold in folds]

    def trial_config(self, params: dict[str, Any]) -> TrialConfig:
        """The TrialConfig of one trial from the params Ray sampled for it."""
        overrides = dict(params)
        arm = overrides.pop("arm", None)
        if arm is not None:
            overrides = {**self.arms[arm], **overrides}
        return TrialConfig.from_dict({**self.base, **overrides})

    def first_params(self) -> dict[str, Any]:
        """The params of the study's first trial: its first arm, or each key's first value."""
        replicate = {"seed": self.seeds[0]} | ({FOLD_KEY: 0} if self.folds else {})
        if self.kind == "ablation":
            return {"arm": next(iter(self.arms)), **replicate}
        return {key: _candidates(value)[0] for key, value in self.space.items()} | replicate

    def arm_label(self, params: dict[str, Any]) -> str:
        """What tables and MLflow call a trial's arm: the arm name, or the sampled values."""
        if "arm" in params:
            return str(params["arm"])
        sampled = self.search != "grid"  # grid labels stay as written (`dropout=0.0`)
        values = [
            f"{key.rpartition('.')[2]}={_label_value(params[key]) if sampled else params[key]}"
            for key in self.space
            if key in params
        ]
        return ",".join(values) or "base"

    def largest(self, key: str, base_value: float) -> float:
        """The largest value `key` takes in any arm or in SPACE (bounds of continuous domains),
        or base_value where none sets it."""
        values = [base_value]
        for _, overrides in _override_sets(self):
            if key in overrides:
                values += _candidates(overrides[key])
        return max(values)

    def prune_epochs(self, max_epochs: int) -> frozenset[int]:
        """The epochs at which ASHA may stop a trial of `max_epochs`: its rungs, grace period x
        reduction factor^k (Ray's ASHAScheduler milestones); none without ASHA."""
        if self.scheduler != "asha":
            return frozenset()
        epoch, factor = min(self.asha["grace_period"], max_epochs), self.asha["reduction_factor"]
        epochs = set()
        while epoch <= max_epochs:
            epochs.add(epoch)
            epoch *= factor
        return frozenset(epochs)

    def with_base(self, overrides: dict[str, Any]) -> Study:
        """The same study with extra base overrides (from the CLI), validated again."""
        study = dataclasses.replace(self, base={**self.base, **overrides})
        validate(study)
        return study


def load_study(path: str | Path) -> Study:
    """Import a space file and validate it; raises SpaceError naming the file and the key."""
    path = Path(path)
    module = _import(path)
    names = {n: v for n, v in vars(module).items() if n.isupper() and not n.startswith("_")}
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        lines = []
        for n in unknown:
            close = difflib.get_close_matches(n, SETTINGS, n=1)
            lines.append(f"unknown setting {n}" + (f"; did you mean {close[0]}?" if close else ""))
        _raise(path, [*lines, f"valid settings: {', '.join(SETTINGS)}"])
    study = _study_from(path, names)
    validate(study)
    return study


def _import(path: Path) -> Any:
    if not path.is_file():
        raise SpaceError(f"{path}: no such search-space file")
    spec = importlib.util.spec_from_file_location(f"tunelab_space_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SpaceError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise SpaceError(f"{path}:{error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:  # the user's module raised while importing
        frames = traceback.extract_tb(error.__traceback__)
        line = next((f.lineno for f in reversed(frames) if Path(f.filename) == path), "?")
        raise SpaceError(
            f"{path}:{line}: the file raised {type(error).__name__}: {error}"
        ) from None
    return module


def _study_from(path: Path, names: dict[str, Any]) -> Study:
    problems: list[str] = []
    space, arms = names.get("SPACE"), names.get("ARMS")
    if (space is None) == (arms is None):
        _raise(path, ["set exactly one of SPACE (a search) or ARMS (an ablation)"])
    kind: Literal["search", "ablation"] = "ablation" if arms is not None else "search"
    for name, expected in (("BASE", dict), ("SPACE", dict), ("ARMS", dict), ("ASHA", dict)):
        if name in names and not isinstance(names[name], expected):
            problems.append(f"{name} must be a dict, got {type(names[name]).__name__}")
    folds = names.get("FOLDS", 0)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds == 1 or folds < 0:
        problems.append(f"FOLDS = {folds!r}: expected an integer k >= 2 (or no FOLDS)")
    seeds = names.get("SEEDS", [0, 1, 2])
    if (
        not isinstance(seeds, (list, tuple))
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        problems.append(f"SEEDS = {seeds!r}: expected a non-empty list of integers")
    scheduler = names.get("SCHEDULER", "none" if kind == "ablation" else "asha")
    if scheduler not in ("asha", "none"):
        problems.append(f"SCHEDULER = {scheduler!r}: choose 'asha' or 'none'")
    metric = str(names.get("METRIC", "val_iou"))
    if metric.startswith("test_") or metric in ("checkpoint_epoch", "test_seconds"):
        problems.append(
            f"METRIC = {metric!r}: decisions are made on validation metrics (val_*), never on "
            "the test set"
        )
    mode = names.get("MODE", "max")
    if mode not in ("max", "min"):
        problems.append(f"MODE = {mode!r}: choose 'max' or 'min'")
    asha = {**ASHA_DEFAULTS, **names.get("ASHA", {})}
    if set(asha) != set(ASHA_DEFAULTS):
        problems.append(f"ASHA keys {sorted(asha)}: expected {sorted(ASHA_DEFAULTS)}")
    elif not all(isinstance(v, int) and not isinstance(v, bool) for v in asha.values()) or (
        asha["grace_period"] < 1 or asha["reduction_factor"] < 2
    ):
        problems.append(
            f"ASHA = {asha!r}: expected integers, grace_period >= 1 and reduction_factor >= 2"
        )
    resources = {"cpu": 1.0, **names.get("RESOURCES", {})}  # "gpu" stays absent unless given
    if not set(resources) <= {"cpu", "gpu"} or any(v < 0 for v in resources.values()):
        problems.append(f"RESOURCES = {resources!r}: expected {{'cpu': >= 0, 'gpu': >= 0}}")
    if arms is not None and not arms:
        problems.append("ARMS is empty: name at least one arm")
    baseline = names.get("BASELINE", next(iter(arms), None) if arms else None)
    if arms and baseline not in arms:
        problems.append(f"BASELINE = {baseline!r} is not an arm; arms: {', '.join(arms)}")
    if problems:
        _raise(path, problems)
    base = dict(names.get("BASE", {}))
    if "THRESHOLDS" in names:
        base["eval.thresholds"] = names["THRESHOLDS"]
    if folds:
        base["data.folds"] = folds
    return Study(
        path=path,
        name=str(names.get("NAME", path.stem)),
        kind=kind,
        base=base,
        space=dict(space or {}),
        arms={str(k): dict(v) for k, v in (arms or {}).items()},
        baseline=baseline,
        seeds=tuple(seeds),
        folds=folds,
        num_samples=names.get("NUM_SAMPLES", 1),
        search=names.get("SEARCH", _default_search(space or {})),
        search_seed=names.get("SEARCH_SEED", 0),
        max_concurrent=names.get("MAX_CONCURRENT"),
        scheduler=scheduler,
        asha=asha,
        metric=metric,
        mode=mode,
        resources={k: float(v) for k, v in resources.items()},
    )


def _default_search(space: dict[str, Any]) -> str:
    return "random" if any(is_sampled(value) for value in space.values()) else "grid"


def _search_problems(study: Study) -> list[str]:
    """What is wrong with SEARCH, SEARCH_SEED, MAX_CONCURRENT and NUM_SAMPLES together."""
    search, samples, seed = study.search, study.num_samples, study.search_seed
    if search not in SEARCHES:
        return [f"SEARCH = {search!r}: choose one of {', '.join(map(repr, SEARCHES))}"]
    problems = []
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        problems.append(f"NUM_SAMPLES = {samples!r}: expected an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(f"SEARCH_SEED = {seed!r}: expected an integer >= 0")
    if study.kind == "ablation" and search != "grid":
        problems.append(
            f"SEARCH = {search!r} with ARMS: an ablation runs every arm as listed; "
            "sample a SPACE instead"
        )
    limit = study.max_concurrent
    if limit is not None and search != "tpe":
        problems.append(
            "MAX_CONCURRENT applies to SEARCH = 'tpe' (a grid or random search has no "
            "sampler to wait for)"
        )
    elif limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        problems.append(f"MAX_CONCURRENT = {limit!r}: expected an integer >= 1")
    grids = [key for key, value in study.space.items() if is_grid(value)]
    randoms = [key for key, value in study.space.items() if is_sampled(value)]
    if search == "grid" and randoms:
        problems.append(
            f"SEARCH = 'grid', but SPACE samples {', '.join(randoms)}: a grid lists its values "
            "with tune.grid_search; or set SEARCH = 'random' or 'tpe'"
        )
    if search == "grid" and samples != 1:
        problems.append(
            f"NUM_SAMPLES = {samples!r} with SEARCH = 'grid' would run the same grid again"
        )
    ranges = [key for key, value in study.space.items() if _is_range(value)]
    if search != "grid" and isinstance(samples, int) and samples > 1 and not ranges:
        problems.append(
            f"NUM_SAMPLES = {samples} with SEARCH = {search!r} over choices only would draw "
            "some configuration twice (its seeds merged into one arm): sample a range "
            "(tune.uniform, tune.loguniform, tune.randint, ...), or list the choices with "
            "tune.grid_search and SEARCH = 'grid'"
        )
    if search == "tpe" and study.kind == "search":
        if grids:
            problems.append(
                f"SEARCH = 'tpe' cannot sample tune.grid_search ({', '.join(grids)}): TPE "
                "draws every value; list them with tune.choice([...]) instead"
            )
        if not randoms and not grids:
            problems.append(
                "SEARCH = 'tpe', but SPACE has no domain to sample (tune.uniform, "
                "tune.loguniform, tune.choice, ...)"
            )
        problems += _tpe_domain_problems(study.space, randoms)
    return problems


def _tpe_domain_problems(space: dict[str, Any], keys: list[str]) -> list[str]:
    """Domains Optuna cannot sample, found now rather than when Ray starts."""
    if not keys:
        return []
    from ray.tune.search.optuna import OptunaSearch

    problems = []
    for key in keys:
        try:
            OptunaSearch.convert_search_space({key: space[key]})
        except ValueError as error:
            problems.append(f"SPACE[{key!r}]: TPE cannot sample it ({error})")
    return problems


def is_grid(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def is_sampled(value: Any) -> bool:
    """A Ray Tune domain Ray samples from (tune.uniform, tune.choice, ...); plain values and
    tune.grid_search are not."""
    if not type(value).__module__.startswith("ray."):
        return False
    from ray.tune.search.sample import Domain

    return isinstance(value, Domain)


def _is_range(value: Any) -> bool:
    """A numeric Ray Tune domain (tune.uniform, tune.randint, ...), not a list of choices."""
    if not is_sampled(value):
        return False
    from ray.tune.search.sample import Float, Integer

    return isinstance(value, (Float, Integer))


def _label_value(value: Any) -> str:
    # six significant digits: a sampled 0.000123456789 reads as 0.000123457
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def validate(study: Study) -> None:
    """Check the search settings, every key, every value a domain can produce and every
    discrete combination."""
    problems = _search_problems(study)
    for where, overrides in _override_sets(study):
        for key in overrides:
            if key == "seed":
                problems.append(f"{where}: 'seed' is set by SEEDS, not here")
            elif key in ("data.test_fraction", "data.test_seed", "data.test_root"):
                problems.append(
                    f"{where}: {key!r} here would test arms on different images; set it in "
                    "BASE (or --set / --test-data), so every trial has the same test set"
                )
            elif key in ("data.fold", "data.folds"):
                problems.append(
                    f"{where}: {key!r} here would turn folds into arms; set FOLDS = k instead "
                    "(every arm then runs on every fold, paired like seeds)"
                )
            elif key not in VALID_KEYS:
                problems.append(_config_problem(where, {key: None}))
        try:
            candidates = {key: _candidates(value) for key, value in overrides.items()}
        except SpaceError as error:
            problems.append(f"{where}: {error}")
            continue
        for combination in _combinations(candidates):
            problem = _config_problem(where, {**study.base, **combination})
            if problem and problem not in problems:
                problems.append(problem)
    if problems:
        _raise(study.path, problems)


def _override_sets(study: Study) -> list[tuple[str, dict[str, Any]]]:
    if study.kind == "ablation":
        return [(f"ARMS[{name!r}]", overrides) for name, overrides in study.arms.items()]
    return [("SPACE", study.space)]


def _candidates(value: Any) -> list[Any]:
    """Every value a Ray domain can produce (discrete), or its bounds (continuous)."""
    if is_grid(value):
        values = list(value["grid_search"])
        if not values:
            raise SpaceError("tune.grid_search([]) is empty: list at least one value")
        return values
    if not type(value).__module__.startswith("ray."):
        return [value]  # a plain value: no need for Ray (ablations validate without it)
    from ray.tune.search.sample import Categorical, Float, Function, Integer

    if isinstance(value, Categorical):
        if not value.categories:
            raise SpaceError("tune.choice([]) is empty: list at least one value")
        return list(value.categories)
    if isinstance(value, Integer):
        return [value.lower, value.upper - 1]  # Ray's randint excludes the upper bound
    if isinstance(value, Float):
        return [value.lower, value.upper]
    if isinstance(value, Function):
        raise SpaceError("tune.sample_from cannot be validated before the run; use a value list")
    return [value]


def _combinations(candidates: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = [k for k in candidates if k in VALID_KEYS]
    product = itertools.product(*(candidates[k] for k in keys))
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.islice(product, MAX_CHECKED_COMBINATIONS)
    ]


def _config_problem(where: str, values: dict[str, Any]) -> str | None:
    try:
        TrialConfig.from_dict(values)
    except ValueError as error:
        detail = str(error).removeprefix("invalid trial config:\n  ").replace("\n  ", "; ")
        return f"{where}: {detail}"
    return None


def _raise(path: Path, problems: list[str]) -> None:
    raise SpaceError(f"invalid search space {path}:\n  " + "\n  ".join(problems))
