"""A search sweep's views: which hyperparameters mattered, every configuration's value, and the
best configurations by their mean over seeds.

    space = search.read_search(sweep.identity)       # None for an ablation or an old sweep
    trials = search.trial_table(sweep.results, space)
    trials, kept, notes = search.cast_to_domains(trials, space)
    configs = search.configuration_table(trials, kept, space)
    search.importance(configs, kept, space, seed=0)  # fANOVA, normalised to sum to 1

A configuration is an arm; its value is the mean over its trials (seeds, folds) of the searched
validation metric, each trial's last report: what Ray's Repeater handed the sampler, pruned
seeds included. The search is read from tunelab.json's "search" (method, metric, mode, space).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from analysis.errors import AnalysisError
from tunelab.metric_names import ALL_METRICS, TEST_PREFIX, VAL_PREFIX
from tunelab.results import SCORED_STATUSES
from tunelab.summary import primary_rows

TOP_K = 5
DIRECTIONS = {"max": "maximize", "min": "minimize"}


@dataclass(frozen=True)
class SearchSpace:
    """What tunelab.json records of a search: how it sampled, what it optimised, over what."""

    method: str  # tpe, random or grid
    metric: str  # the reported name, "val_iou"; its results column drops the prefix
    mode: str  # max or min
    domains: dict[str, BaseDistribution]  # dotted config key -> its domain, in the space's order

    @property
    def column(self) -> str:
        """The metric's validation column in results.parquet ("iou")."""
        return self.metric.removeprefix(VAL_PREFIX)

    @property
    def test_column(self) -> str:
        return f"{TEST_PREFIX}{self.column}"

    @property
    def mean(self) -> str:
        """A configuration's value: the column of its mean over trials ("val_iou_mean")."""
        return f"{VAL_PREFIX}{self.column}_mean"

    @property
    def std(self) -> str:
        return f"{VAL_PREFIX}{self.column}_std"

    @property
    def label(self) -> str:
        metric = ALL_METRICS.get(self.column)
        return f"validation {metric.label if metric else self.column}"


def read_search(identity: Mapping[str, Any]) -> SearchSpace | None:
    """The sweep's search, or None where it was no search (an ablation, an older sweep folder,
    or a search with an empty space)."""
    recorded = identity.get("search") or {}
    if not recorded.get("space"):
        return None
    mode, metric = recorded.get("mode", "max"), recorded.get("metric")
    if not metric:
        raise AnalysisError("tunelab.json: the search records no metric")
    if mode not in DIRECTIONS:
        raise AnalysisError(f"tunelab.json: search mode {mode!r}; expected one of {[*DIRECTIONS]}")
    domains = {key: distribution(key, spec) for key, spec in recorded["space"].items()}
    return SearchSpace(str(recorded.get("method", "")), str(metric), mode, domains)


def distribution(key: str, spec: Mapping[str, Any]) -> BaseDistribution:
    """One recorded domain as Optuna's distribution ("int" bounds are inclusive, as Optuna's)."""
    kind = spec.get("type")
    try:
        if kind == "float":
            return FloatDistribution(spec["low"], spec["high"], log=bool(spec.get("log")))
        if kind == "int":
            return IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        if kind == "categorical":
            return CategoricalDistribution(list(spec["choices"]))
    except (KeyError, TypeError, ValueError) as error:  # no bound, or one Optuna refuses
        raise AnalysisError(f"tunelab.json: search space {key}: {spec} ({error})") from None
    raise AnalysisError(
        f"tunelab.json: search space {key}: type {kind!r}; expected float, int or categorical"
    )


def describe(domain: BaseDistribution) -> str:
    """A domain in one phrase, for messages and captions."""
    if isinstance(domain, CategoricalDistribution):
        return f"one of {list(domain.choices)}"
    kind = "int" if isinstance(domain, IntDistribution) else "float"
    scale = ", log" if domain.log else ""
    return f"{kind} in [{domain.low:g}, {domain.high:g}]{scale}"


def cast_value(key: str, value: Any, domain: BaseDistribution) -> Any:
    """`value` as the domain's own type (a categorical's choice itself: 16, not 16.0 or
    numpy's 16), so Optuna accepts it; AnalysisError naming the key and value if outside."""
    if isinstance(domain, CategoricalDistribution):
        for choice in domain.choices:
            if _same_choice(choice, value):
                return choice
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        cast = float(value) if isinstance(domain, FloatDistribution) else int(value)
        # an int domain takes 3.0 from a float column, never 3.5
        if cast == value and domain.low <= cast <= domain.high:
            return cast
    shown = value.item() if isinstance(value, np.generic) else value  # 64, not np.int64(64)
    raise AnalysisError(f"{key} = {shown!r} is outside its search domain ({describe(domain)})")


def _same_choice(choice: Any, value: Any) -> bool:
    if isinstance(choice, bool) or isinstance(value, (bool, np.bool_)):  # True is not 1
        return isinstance(value, (bool, np.bool_)) and bool(value) is choice
    if isinstance(choice, numbers.Real) and isinstance(value, numbers.Real):
        return float(choice) == float(value)
    if isinstance(choice, str) or isinstance(value, str):  # "16" is not 16
        return isinstance(choice, str) and isinstance(value, str) and choice == value
    return choice == value  # None


def trial_table(results: pd.DataFrame, space: SearchSpace) -> pd.DataFrame:
    """One row per trial (its primary threshold): arm, replicate, status, the searched keys and
    the metric on validation (and test, where the results have it)."""
    if space.column not in results:
        raise AnalysisError(
            f"the search optimised {space.metric}, but results.parquet has no {space.column!r} "
            "column to read it from"
        )
    identity = [c for c in ("arm", "seed", "fold", "trial_id", "status") if c in results]
    keys = [key for key in space.domains if key in results]
    scores = [c for c in (space.column, space.test_column) if c in results]
    return primary_rows(results)[identity + keys + scores].reset_index(drop=True)


def cast_to_domains(
    trials: pd.DataFrame, space: SearchSpace
) -> tuple[pd.DataFrame, dict[str, BaseDistribution], list[str]]:
    """The trials with each searched key cast to its domain, the domains kept, and a note for
    each key left out: missing from the results, or a value outside its recorded domain (a
    --set override, say). One bad value leaves the key out everywhere: Optuna's study needs
    every configuration to have every parameter."""
    trials = trials.copy()
    kept: dict[str, BaseDistribution] = {}
    notes = []
    for key, domain in space.domains.items():
        if key not in trials:
            notes.append(f"{key} is not a column of the results; left out")
            continue
        try:
            trials[key] = [cast_value(key, value, domain) for value in trials[key]]
        except AnalysisError as error:
            notes.append(f"{error}; left out of the search views")
            continue
        kept[key] = domain
    return trials, kept, notes


def configuration_table(
    trials: pd.DataFrame, domains: Mapping[str, BaseDistribution], space: SearchSpace
) -> pd.DataFrame:
    """One row per configuration (arm), in the sweep's order: its hyperparameters, n trials,
    whether every one was scored, and the metric's mean ± std over them (validation, test)."""
    rows = []
    for arm, members in trials.groupby("arm", sort=False):
        row: dict[str, Any] = {"arm": arm, **{key: members[key].iloc[0] for key in domains}}
        row["n"] = len(members)
        row["all_scored"] = bool(members["status"].isin(SCORED_STATUSES).all())
        row[space.mean] = members[space.column].mean()
        row[space.std] = members[space.column].std()  # NaN for a single trial
        tested = members.get(space.test_column)
        if tested is not None and tested.notna().any():
            row[f"{space.test_column}_mean"] = tested.mean()
            row[f"{space.test_column}_std"] = tested.std()
        rows.append(row)
    return pd.DataFrame(rows)


def top_configurations(configs: pd.DataFrame, space: SearchSpace, k: int = TOP_K) -> pd.DataFrame:
    """The k best configurations by their mean over trials. Only configurations whose every
    trial completed or converged qualify, so the best is never a pruned or lone lucky seed."""
    eligible = configs[configs["all_scored"] & configs[space.mean].notna()]
    ranked = eligible.sort_values(space.mean, ascending=space.mode == "min", kind="stable").head(k)
    ranked = ranked.drop(columns="all_scored").reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked


def rebuild_study(
    configs: pd.DataFrame, domains: Mapping[str, BaseDistribution], space: SearchSpace
) -> optuna.Study:
    """An in-memory Optuna study with one complete trial per configuration of finite value, for
    Optuna's importance evaluators and plots."""
    with quiet_optuna():
        study = optuna.create_study(direction=DIRECTIONS[space.mode])
        for row in configs.to_dict("records"):
            value = row[space.mean]
            if not math.isfinite(value):
                continue
            # again: a table's column turns the choice 16 into numpy's int64
            params = {key: cast_value(key, row[key], domain) for key, domain in domains.items()}
            trial = optuna.trial.create_trial(
                params=params, distributions=dict(domains), value=value
            )
            study.add_trial(trial)
    return study


def importance(
    configs: pd.DataFrame, domains: Mapping[str, BaseDistribution], space: SearchSpace, seed: int
) -> pd.DataFrame:
    """Each hyperparameter's share of the value's variance by fANOVA (Optuna's evaluator, its
    forest seeded by `seed`), most important first; the shares sum to 1."""
    study = rebuild_study(configs, domains, space)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    with quiet_optuna():
        shares = optuna.importance.get_param_importances(study, evaluator=evaluator)
    rows = [{"hyperparameter": key, "importance": float(share)} for key, share in shares.items()]
    return pd.DataFrame(rows, columns=["hyperparameter", "importance"])


def why_no_importance(
    configs: pd.DataFrame, domains: Mapping[str, BaseDistribution], space: SearchSpace
) -> str | None:
    """Why fANOVA cannot run on these configurations, or None where it can."""
    valued = configs[configs[space.mean].notna()]
    if len(valued) < 2:
        return f"{len(valued)} configuration(s) with a value: too few to compare"
    # either way fANOVA's forest has no variance to share out (Optuna raises)
    if valued[space.mean].nunique() == 1:
        return "every configuration has the same value"
    if not domains or valued[list(domains)].nunique().max() < 2:
        return "no hyperparameter (in its domain) differs between the configurations"
    return None


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines (one per study and trial) and ExperimentalWarning off, here only."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
