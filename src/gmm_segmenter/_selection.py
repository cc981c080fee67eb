"""``n_components='auto'``: the number of components where more stop paying off.

BIC alone keeps falling on photographs: with 100 000 pixels, a component
that models a little more shading always gains more likelihood than its
parameters cost, so its minimum sits at the end of any range. Here the
candidates are fitted in increasing order, and the search stops at the first
one whose drop in BIC is less than :data:`MIN_RELATIVE_GAIN` of the largest
drop so far (the elbow of the BIC curve); the number before it is chosen.
On data that really are a mixture of K classes the drop after K is
negative, which stops the search at K as the BIC minimum would.

The candidates are fitted on a seeded subsample of at most
:data:`SELECTION_SAMPLES` pixels, from the deterministic multi-Otsu start
when ``init_params='auto'``, which is enough to tell a component that pays
off from one that does not; the chosen number is then fitted on the full
training data exactly as a fixed ``n_components`` would be.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import logsumexp

from . import _mixture

__all__ = [
    "MIN_RELATIVE_GAIN", "SELECTION_SAMPLES", "selection_data", "selection_init",
    "selection_n_init", "bic",
    "pays_off", "search",
]

#: A further component must lower the BIC by at least this fraction of the
#: largest drop from one candidate to the next seen so far.
MIN_RELATIVE_GAIN = 0.15

#: Pixels (rows of unit weight) the candidates are compared on.
SELECTION_SAMPLES = 20_000


def selection_data(X, weights, random_state):
    """The rows to compare candidates on, and a random state of their own.

    A histogram (weighted rows) is used whole. The random state is a copy,
    so the final fit draws the same numbers as a fit with a fixed
    ``n_components`` and gives the same model.
    """
    random_state = copy.deepcopy(random_state)
    if len(X) <= SELECTION_SAMPLES or np.any(weights != 1):
        return X, weights, random_state
    rows = np.sort(random_state.choice(len(X), SELECTION_SAMPLES, replace=False))
    return X[rows], weights[rows], random_state


def selection_init(init_params: str) -> str:
    """How to start EM for the candidates: the user's choice, or for 'auto'
    the multi-Otsu start, which costs a fraction of screening several."""
    return "otsu" if init_params == "auto" else init_params


def selection_n_init(n_init) -> int:
    """Starts per candidate: the user's number, or one for 'auto' (the chosen
    number is then fitted from screened starts, as a fixed one would be)."""
    return 1 if n_init == "auto" else n_init


def bic(X, weights, mixture, log_jacobian=0.0) -> float:
    """Bayesian information criterion of ``mixture`` on weighted rows.

    ``log_jacobian`` (the sum of the logs of the standardisation's scales)
    puts the likelihood of standardised rows back in input units.
    """
    log_likelihood = weights @ logsumexp(_mixture.weighted_log_prob(X, mixture), axis=1)
    log_likelihood -= weights.sum() * log_jacobian
    n_parameters = _mixture.n_parameters(
        mixture.n_components, mixture.n_features, mixture.covariance_type
    )
    return float(-2.0 * log_likelihood + n_parameters * np.log(weights.sum()))


def pays_off(bics: Sequence[float], min_relative_gain: float = MIN_RELATIVE_GAIN) -> bool:
    """Whether the last candidate lowered the BIC enough to keep it.

    It must lower the BIC at all, and by at least ``min_relative_gain`` times
    the largest drop between neighbouring candidates so far.
    """
    if len(bics) < 2:
        return True
    drops = -np.diff(np.asarray(bics, dtype=float))
    return bool(drops[-1] > 0 and drops[-1] >= min_relative_gain * drops.max())


def search(
    candidates: Sequence[int], bic_of: Callable[[int], float],
    min_relative_gain: float = MIN_RELATIVE_GAIN,
) -> tuple[list[int], list[float], int]:
    """Fit candidates in increasing order until one stops paying off.

    ``bic_of(k)`` fits ``k`` components and returns their BIC. The curve
    starts at one component whatever the smallest candidate: the numbers
    below it are fitted too, for the scale of the largest drop, but not
    chosen. (Started at the smallest candidate, the search missed the large
    drops before it and went on further: ``camera`` got 3 components in
    ``(1, 8)`` and 4 in ``(2, 8)``, ``coins`` 3 and 6 in ``(3, 8)``. A range
    narrowed from below now only removes choices.) Returns the numbers
    fitted, their BICs, and the chosen number: the one before the number that
    did not pay off, or the smallest candidate if that is larger; the last
    candidate if all did. A single candidate is fitted alone.
    """
    lowest = candidates[0]
    below = range(1, lowest) if len(candidates) > 1 else ()  # one candidate: no choice
    fitted, bics = [], []
    for n_components in [*below, *candidates]:
        fitted.append(n_components)
        bics.append(bic_of(n_components))
        if not pays_off(bics, min_relative_gain):
            return fitted, bics, max(fitted[-2], lowest)
    return fitted, bics, fitted[-1]
