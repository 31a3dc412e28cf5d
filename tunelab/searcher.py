"""How a study's SPACE is sampled: Ray's grid and random generator, or Optuna's TPE.

TPE goes through Ray Tune's own OptunaSearch, wrapped twice:
- `ConcurrencyLimiter`: TPE learns only from finished configurations, so Ray advises keeping few
  in flight (MAX_CONCURRENT). Optuna's constant liar covers the ones that are.
- `Replicates` (Ray's Repeater): every sampled configuration runs each replicate (seed, and fold
  with FOLDS) as its own trial, and the sampler is told the replicates' mean. The limiter sits
  inside it, so its count is configurations, not trials.
Why all seeds per configuration rather than one seed per trial: the sampler then learns from a
mean, not from one lucky seed; every configuration in the tables rests on the same seeds, paired
as in a grid; and results, analysis and resume see the same trials as for any other sweep.

Ray saves each wrapper's state with the experiment (`SearchGenerator.save_to_dir`), so
`--resume` restores the sampler's history and never draws a configuration twice.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Repeater, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.repeater import TRIAL_INDEX

from tunelab.space import Study, is_grid, is_sampled

# Optuna logs a line per configuration told; Ray's own progress says enough (a restored sweep
# builds no new searcher, so this is set on import)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class Replicates(Repeater):
    """Ray's Repeater, with each repeat's index turned into the replicate it runs."""

    def __init__(self, searcher: Searcher, replicates: list[dict[str, int]]) -> None:
        super().__init__(searcher, repeat=len(replicates), set_index=True)
        self.replicates = replicates

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        config = super().suggest(trial_id)
        if not isinstance(config, dict):  # None (wait) or Searcher.FINISHED
            return config
        index = config.pop(TRIAL_INDEX)
        return {**config, **self.replicates[index]}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """A replicate that failed or diverged (no score, or NaN) counts as the worst score:
        Ray's Repeater would leave it out of the mean, scoring an unstable configuration by its
        lucky seeds (and Optuna refuses a mean that is NaN)."""
        score = (result or {}).get(self.metric, math.nan)
        if not isinstance(score, (int, float)) or math.isnan(score):
            worst = -math.inf if self.mode == "max" else math.inf
            result = {**(result or {}), self.metric: worst}
        super().on_trial_complete(trial_id, result, **kwargs)


def search_algorithm(study: Study, trial_slots: int) -> Searcher | BasicVariantGenerator:
    """The study's search algorithm; `trial_slots` is how many trials fit on the machine at
    once, which sets TPE's default concurrency."""
    if study.search != "tpe":
        # constant_grid_search: a random configuration stays the same across the seed grid
        return BasicVariantGenerator(constant_grid_search=True, random_state=study.search_seed)
    replicates = study.replicates()
    limit = study.max_concurrent or default_concurrency(trial_slots, len(replicates))
    sampler = optuna.samplers.TPESampler(seed=study.search_seed, constant_liar=True)
    # metric and mode given here, not only through TuneConfig: Ray's wrappers copy them from the
    # searcher they wrap when built, and Repeater scores each trial by its own copy
    optuna_search = OptunaSearch(metric=study.metric, mode=study.mode, sampler=sampler)
    limited = ConcurrencyLimiter(optuna_search, max_concurrent=limit)
    return Replicates(limited, replicates)


def default_concurrency(trial_slots: int, replicates: int) -> int:
    """Configurations in flight that keep every trial slot busy: a configuration is as many
    trials as it has replicates."""
    return max(1, math.ceil(trial_slots / replicates))


def total_trials(study: Study) -> int:
    """Ray's num_samples: TPE counts trials (configurations x replicates); the grid and random
    generator count samples, each crossed with the grids."""
    if study.search == "tpe":
        return study.num_samples * len(study.replicates())
    return study.num_samples


def describe(study: Study) -> dict[str, Any]:
    """The search as tunelab.json records it, for analysis to rebuild the sampled domains without
    Ray: method, seed, budget, objective and each SPACE key's distribution."""
    space = {}
    for key, value in study.space.items():
        if is_grid(value):
            space[key] = {"type": "categorical", "choices": list(value["grid_search"])}
        elif is_sampled(value):
            distribution = OptunaSearch.convert_search_space({key: value})[key]
            space[key] = _distribution_fields(distribution)
    return {
        "method": study.search,
        "seed": study.search_seed,
        "num_samples": study.num_samples,
        "metric": study.metric,
        "mode": study.mode,
        "space": space,
    }


def _distribution_fields(distribution: optuna.distributions.BaseDistribution) -> dict[str, Any]:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return {"type": "categorical", "choices": list(distribution.choices)}
    kind = "int" if isinstance(distribution, optuna.distributions.IntDistribution) else "float"
    return {
        "type": kind,
        "low": distribution.low,
        "high": distribution.high,  # inclusive
        "log": distribution.log,
    }
