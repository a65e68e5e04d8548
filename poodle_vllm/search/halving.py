"""Successive halving over growing sample sizes.

Round r scores the surviving candidates on the first ``sizes[r]`` items of the sample and keeps
the best ``1/eta`` of them (never fewer than ``min_survivors``). Cheap early rounds on few items
remove the clearly unsuitable models; only promising ones pay for features of the full sample.
Because every round's sample is a prefix of the next, features computed in round r are cache
hits in round r+1.

Each round is scored with ONE call, ``score_round(alive, n_items)``, so the caller can first extract
the features of every surviving candidate (each model loaded once) and then score them all together
(batched LogME / kNN through ``poodle_vllm.ops``) instead of one model at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

RoundScoreFn = Callable[[list[str], int], dict[str, dict[str, float]]]
"""``score_round(model_ids, n_items) -> {model_id: {scorer_name: score}}`` for every id given."""


@dataclass
class HalvingRound:
    """What one round scored and kept."""

    size: int
    candidates: list[str]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    combined: dict[str, float] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)


def combine_scores(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over scorers of each scorer's z-score across the candidates (0 when all are equal).

    Scorers live on different scales (LogME evidence vs accuracy), so each is standardised
    across the candidates of the round before averaging.
    """
    models = list(scores)
    if not models:
        return {}
    names = sorted({s for m in models for s in scores[m]})
    total = dict.fromkeys(models, 0.0)
    for name in names:
        vals = np.array([scores[m].get(name, np.nan) for m in models], dtype=np.float64)
        ok = ~np.isnan(vals)
        mu = float(vals[ok].mean()) if ok.any() else 0.0
        sd = float(vals[ok].std()) if ok.sum() > 1 else 0.0
        for m, v in zip(models, vals, strict=False):
            total[m] += 0.0 if (np.isnan(v) or sd < 1e-12) else (v - mu) / sd
    return {m: total[m] / max(1, len(names)) for m in models}


def successive_halving(
    candidates: list[str],
    sizes: list[int],
    score_round: RoundScoreFn,
    eta: float = 2.0,
    min_survivors: int = 3,
    protected: Iterable[str] = (),
) -> tuple[list[str], list[HalvingRound]]:
    """Run the rounds; return the full ranking (best first) and the rounds.

    The ranking lists the last round's survivors by their final combined score, then the models
    eliminated in each earlier round (latest first), each group by that round's score.
    ``protected`` models (e.g. winners of similar past tasks) always survive the first round.
    """
    protected = set(protected)
    alive = list(candidates)
    rounds: list[HalvingRound] = []
    for r, size in enumerate(sizes):
        rnd = HalvingRound(size=size, candidates=list(alive))
        scored = score_round(list(alive), size)
        missing = [m for m in alive if m not in scored]
        if missing:
            raise ValueError(f"score_round returned no scores for {missing}")
        rnd.scores = {m: scored[m] for m in alive}
        rnd.combined = combine_scores(rnd.scores)
        order = sorted(alive, key=lambda m: -rnd.combined[m])
        last = r == len(sizes) - 1
        if last:
            rnd.kept = order
        else:
            keep_n = max(min_survivors, math.ceil(len(order) / eta))
            kept = order[:keep_n]
            if r == 0:
                kept += [m for m in order[keep_n:] if m in protected]
            rnd.kept = kept
        rounds.append(rnd)
        alive = rnd.kept
        if len(alive) <= 1 and not last:
            # One left: it is the winner; score it on the remaining sizes for a full record.
            continue
    ranking: list[str] = []
    for rnd in reversed(rounds):
        for m in sorted(rnd.candidates, key=lambda m: -rnd.combined[m]):
            if m not in ranking:
                ranking.append(m)
    return ranking, rounds
