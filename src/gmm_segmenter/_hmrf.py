"""Fitting the mixture under the spatial prior: HMRF-EM.

HMRF-EM (Zhang, Brady & Smith, IEEE TMI 2001, the model behind FSL FAST)
alternates mean-field sweeps over every image (:func:`._mrf.mean_field`)
with the weighted M-step of :mod:`._mixture`, using the spatial posteriors
as responsibilities for the means and covariances; the weights, the prior's
external field, stay those of the pixel-wise fit. ``beta`` can be estimated
by maximum pseudo-likelihood (Besag 1975) on a sample of pixels.

The M-step needs the posteriors of the training values: the rows of the
exact histogram, or the pixels of a seeded sample of grid positions
(:class:`ResponsibilityTable`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numba
import numpy as np
from scipy.optimize import minimize_scalar

from . import _image, _mixture, _mrf, _training
from ._progress import report

#: ``beta`` estimated by pseudo-likelihood is searched in ``[0, BETA_MAX]``
#: (per nearest neighbour; beyond it every configuration is frozen anyway).
BETA_MAX = 4.0

#: Mean-field sweeps per HMRF-EM iteration: enough for the posteriors to
#: follow the parameters; the iterations do the rest (generalised EM). One
#: sweep cost 0.06 ARI on the noisiest Shepp-Logan phantom of
#: benchmarks/quality.py, two cost up to 0.002 elsewhere.
SWEEPS_PER_ITERATION = 3

#: Pixels at which pseudo-likelihood is evaluated when estimating ``beta``.
PSEUDO_LIKELIHOOD_PIXELS = 50_000


def estimate_beta(posteriors: np.ndarray, fields: np.ndarray, log_weights: np.ndarray) -> float:
    """Maximum pseudo-likelihood ``beta`` in ``[0, BETA_MAX]``.

    The pseudo-likelihood of soft labels ``q_i`` given their neighbours'
    field ``f_i`` is ``Σ_i Σ_k q_ik log softmax_k(log w_k + beta f_ik)``,
    concave in ``beta``.
    """
    if len(posteriors) == 0:
        return 0.0

    def negative_pseudo_likelihood(beta):
        logits = log_weights + beta * fields
        return -float(np.sum(posteriors * logits) - np.sum(_mixture.log_sum_exp(logits)))

    result = minimize_scalar(
        negative_pseudo_likelihood, bounds=(0.0, BETA_MAX), method="bounded",
        options={"xatol": 1e-3},
    )
    return float(result.x)


@dataclass(frozen=True)
class Lattice:
    """What the prior's normalising constant needs to know about the grids.

    ``couplings`` are the neighbour weights ``c`` of each pair of opposite
    offsets (an edge type), ``pairs`` the number of neighbouring valid pixel
    pairs of each type over all grids, ``n_pixels`` the valid pixels.
    ``others`` are the lattices of grids with another neighbourhood (a batch
    of 2-D images and 3-D volumes), which the normalising constant adds up;
    this one is the neighbourhood with the most valid pixels (of those with
    neighbouring pairs).
    """

    couplings: np.ndarray
    pairs: np.ndarray
    n_pixels: int
    others: tuple = ()

    @property
    def total_pixels(self) -> int:
        return self.n_pixels + sum(other.n_pixels for other in self.others)

    @property
    def total_pairs(self) -> float:
        return float(self.pairs.sum()) + sum(float(other.pairs.sum()) for other in self.others)

    @classmethod
    def of(cls, grids) -> "Lattice":
        groups = {}
        for grid in grids:
            key = (grid.hood.offsets.tobytes(), grid.hood.weights.tobytes(), grid.hood.ndim)
            groups.setdefault(key, []).append(grid)
        lattices = sorted(
            (cls._of_one_neighbourhood(group) for group in groups.values()),
            # one with neighbours leads (a checkerboard mask leaves none)
            key=lambda lattice: (lattice.pairs.sum() == 0, -lattice.n_pixels),
        )
        return replace(lattices[0], others=tuple(lattices[1:]))

    @classmethod
    def _of_one_neighbourhood(cls, grids) -> "Lattice":
        couplings = np.array([weight for _, weight in grids[0].hood.half()], dtype=np.float64)
        pairs = np.zeros(len(couplings))
        n_pixels = 0
        for grid in grids:
            shape = grid.spatial_shape
            for t, (offset, _) in enumerate(grid.hood.half()):
                if grid.valid is None:
                    pairs[t] += math.prod(max(0, n - abs(o)) for o, n in zip(offset, shape))
                else:
                    first = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, shape))
                    second = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, shape))
                    pairs[t] += np.count_nonzero(grid.valid[first] & grid.valid[second])
            n_pixels += math.prod(shape) if grid.valid is None else int(grid.valid.sum())
        used = pairs > 0  # an axis of length 1 has no neighbours along it
        return cls(couplings[used], pairs[used], n_pixels)


#: The centre of ``beta='auto'``'s search where the prior has no transition (a chain).
CHAIN_BETA = 1.0

#: Belief-propagation iterations for :func:`bethe_log_partition`.
BP_ITERATIONS = 2000


def bethe_log_partition(beta: float, lattice: Lattice, log_weights: np.ndarray) -> float:
    """The Potts prior's log normalising constant per valid pixel (Bethe approximation).

    The prior is ``p(z) ∝ Π_i w_{z_i} Π_{i~j} exp(beta c_ij [z_i = z_j])``.
    On a regular grid every pixel sees the same neighbourhood, so loopy
    belief propagation has a solution with one message per edge type
    (each of the two neighbours along an offset, ``Σ_t 2`` in all); the
    Bethe free energy of those beliefs approximates ``log Z``, and counts
    border and mask pixels through the actual number of pairs of each type.
    Exact on trees, and far closer than the mean-field approximation near
    the critical strength, where mean field underestimates ``log Z`` most
    and would favour strengths near it. Above the critical strength the
    prior orders and several solutions exist: propagation starts from the
    uniform messages and from each component, and the largest value is kept.
    A batch of grids with different neighbourhoods (``lattice.others``) is
    independent grids: their ``log Z`` add up.
    """
    total = sum(
        _bethe_log_z(beta, part, log_weights) for part in (lattice, *lattice.others)
    )
    return total / lattice.total_pixels


def _bethe_log_z(beta: float, lattice: Lattice, log_weights: np.ndarray) -> float:
    """:func:`bethe_log_partition` of one neighbourhood's grids, not per pixel."""
    n_components = len(log_weights)
    weights = np.exp(log_weights - log_weights.max())
    couplings = beta * lattice.couplings
    agree = np.exp(-couplings)[np.newaxis, :, np.newaxis]  # exp(J [k = l] - J), no overflow
    # every start at once: (start, edge type, component)
    starts = np.vstack([
        np.full(n_components, 1.0 / n_components),
        0.9 * np.eye(n_components) + 0.1 / n_components,
    ])
    messages = np.repeat(starts[:, np.newaxis, :], len(couplings), axis=1)
    _propagate(np.log(weights), agree[0, :, 0], messages, BP_ITERATIONS)
    return max(
        _bethe_value(weights, log_weights, start, couplings, lattice) for start in messages
    )


@numba.njit(cache=True, nogil=True)
def _propagate(log_weights, agree, messages, max_iter):  # pragma: no cover - compiled
    """Damped belief propagation on ``messages`` ``(start, type, K)``, in place.

    ``m_t(k) ∝ Σ_l exp(J_t [k = l]) cavity_t(l)``, scaled by
    ``agree_t = exp(-J_t)``, until no message moves by ``1e-10``. Compiled:
    the messages are a few dozen numbers, so numpy spent its time on the
    calls (7 ms of a 256² image's choice).
    """
    n_starts, n_types, n_components = messages.shape
    cavity = np.empty((n_types, n_components))
    for start in range(n_starts):
        m = messages[start]
        for _ in range(max_iter):
            _cavities(log_weights, m, cavity)
            largest = 0.0
            for t in range(n_types):
                # the cavity sums to 1: Σ_l exp(J [k = l]) cavity(l) e^-J
                norm = 0.0
                for k in range(n_components):
                    cavity[t, k] = agree[t] * 1.0 + (1.0 - agree[t]) * cavity[t, k]
                    norm += cavity[t, k]
                for k in range(n_components):
                    cavity[t, k] /= norm
                    largest = max(largest, abs(cavity[t, k] - m[t, k]))
            for t in range(n_types):
                for k in range(n_components):
                    m[t, k] = 0.5 * (m[t, k] + cavity[t, k])  # damped: undamped can cycle
            if largest < 1e-10:
                break


@numba.njit(cache=True, nogil=True)
def _cavities(log_weights, messages, out):  # pragma: no cover - compiled
    """Each type's cavity into ``out``: the node's field and every other
    incoming message, normalised. ``messages`` and ``out`` are ``(n_types, K)``."""
    n_types, n_components = messages.shape
    for t in range(n_types):
        top = -np.inf
        for k in range(n_components):
            log_total = log_weights[k]
            for s in range(n_types):
                log_total += 2.0 * np.log(max(messages[s, k], 1e-300))
            out[t, k] = log_total - np.log(max(messages[t, k], 1e-300))
            top = max(top, out[t, k])
        total = 0.0
        for k in range(n_components):
            out[t, k] = np.exp(out[t, k] - top)
            total += out[t, k]
        for k in range(n_components):
            out[t, k] /= total


def _bethe_value(weights, log_weights, messages, couplings, lattice) -> float:
    """``log Z`` of the Bethe free energy of the beliefs the messages give."""
    log_messages = np.log(np.maximum(messages, 1e-300))
    log_belief = np.log(weights) + 2.0 * log_messages.sum(axis=0)
    belief = np.exp(log_belief - log_belief.max())
    belief /= belief.sum()
    cavity = np.empty_like(messages)
    _cavities(np.log(weights), messages, cavity)
    value = lattice.n_pixels * float(belief @ log_weights)
    node_entropy = -float(np.sum(belief * np.log(np.maximum(belief, 1e-300))))
    degree_sum = 2.0 * lattice.pairs.sum()
    # each pixel's entropy counted once per neighbour minus once (Bethe)
    value -= (degree_sum - lattice.n_pixels) * node_entropy
    for t, coupling in enumerate(couplings):
        pair = np.outer(cavity[t], cavity[t])
        pair[np.diag_indices_from(pair)] *= np.exp(min(coupling, 700.0))
        pair /= pair.sum()
        energy = coupling * float(np.trace(pair))
        entropy = -float(np.sum(pair * np.log(np.maximum(pair, 1e-300))))
        value += lattice.pairs[t] * (energy + entropy)
    return value


def critical_beta(lattice: Lattice, n_components: int) -> float:
    """Where the Bethe Potts prior with equal weights starts to order.

    Linearising belief propagation about the uniform messages, a perturbation
    of type ``s`` feeds type ``t`` with gain
    ``λ(J_t) (2 - [s = t])``, ``λ(J) = (e^J - 1) / (e^J - 1 + K)``; the
    uniform solution is unstable once that matrix's spectral radius reaches
    1 (for ``z`` equal neighbours, ``e^beta = 1 + K / (z - 2)``). Found by
    bisection; a chain, which never orders, gets :data:`CHAIN_BETA`. For a
    batch of grids with different neighbourhoods, that of the neighbourhood
    with the most valid pixels.
    """
    couplings = lattice.couplings
    n_types = len(couplings)
    fan_out = 2.0 - np.eye(n_types)

    def radius(beta):
        grow = np.expm1(beta * couplings)
        gain = grow / (grow + n_components)
        return float(np.max(np.abs(np.linalg.eigvals(gain[:, None] * fan_out))))

    if radius(BETA_MAX) < 1.0:
        return CHAIN_BETA
    low, high = 0.0, BETA_MAX
    for _ in range(50):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if radius(middle) < 1.0 else (low, middle)
    return 0.5 * (low + high)


@dataclass
class Grid:
    """One image's grid: which pixels are used, and its neighbourhood."""

    spatial_shape: tuple
    valid: np.ndarray | None
    hood: _mrf.Neighbourhood
    positions: np.ndarray  # sampled valid flat positions (pseudo-likelihood)


class ResponsibilityTable:
    """Weighted pixel values for the M-step, filled from posterior maps.

    Either every valid pixel is summarised through ``rows`` (a map from
    pixel to row of ``values``, -1 where not used: the exact histogram), or
    the rows are the pixels at ``positions`` of each image (a sample).
    ``fixed``, when given, is ``(values, weighted_resp)``: rows with fixed
    responsibilities added to every M-step (guidance's scribbles).
    """

    def __init__(self, values: np.ndarray, *, rows=None, positions=None, fixed=None):
        self.values = values
        self.rows = rows
        self.positions = positions
        self.fixed = fixed
        self._indices = {}  # (image, map shape) -> where its positions are in the map

    def weighted_resp(self, posteriors: Sequence[np.ndarray], shapes) -> np.ndarray:
        """Responsibilities of the rows from the maps of images of ``shapes``."""
        n_components = posteriors[0].shape[0]
        if self.positions is not None:
            parts = []
            for i, (padded, shape, positions) in enumerate(zip(posteriors, shapes, self.positions)):
                key = (i, padded.shape)
                if key not in self._indices:
                    self._indices[key] = _mrf.map_positions(padded, shape, positions)
                parts.append(_mrf.posteriors_at(padded, shape, positions, self._indices[key]))
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        resp = np.zeros((len(self.values), n_components))
        for padded, rows_map in zip(posteriors, self.rows):
            _mrf.add_posteriors_by_row(padded, rows_map, resp)
        return resp


@dataclass(frozen=True)
class HMRFResult:
    mixture: _mixture.Mixture
    beta: float
    n_iter: int
    converged: bool
    objectives: tuple
    masses: tuple = ()  # each component's share of the posteriors at the end
    # the bound's change over the last run's last iteration (None after one
    # iteration): objectives may join runs at two strengths, which do not compare
    last_change: float | None = None
    # the iterations the last run was allowed (set by the caller, for its warning)
    max_iter: int | None = None


#: A component whose share under the prior falls below this fraction of its
#: pixel-wise weight has been swallowed by its neighbours' classes.
SWALLOWED = 0.05


def hmrf_em(
    mixture: _mixture.Mixture,
    grids: Sequence[Grid],
    log_potential: Callable[[int, _mixture.Mixture], np.ndarray],
    table: ResponsibilityTable,
    *,
    beta,
    max_iter: int,
    tol: float,
    reg_covar: float,
    update_data: Callable | None = None,
    shares: np.ndarray | None = None,
    start: Sequence[np.ndarray] | None = None,
    warn_swallowed: bool = True,
) -> HMRFResult:
    """Re-estimate ``mixture`` under the spatial prior, and choose ``beta`` when asked.

    ``beta`` is a number, ``'auto'`` (the free-energy choice of
    :func:`_free_energy_search`) or ``'pseudo-likelihood'`` (re-estimated at
    every iteration, :func:`estimate_beta`). ``log_potential(i, mixture)``
    returns ``log w_k + log p(x | k)`` for every pixel of image ``i`` as
    ``(K, *spatial_shape)`` float32 (any finite value where not valid). The
    objective per valid pixel is the mean-field bound (see
    :func:`._mrf.objective`); iterations stop when it changes by less than
    ``tol``.

    ``update_data(resp, mixture)``, when given, is called before every
    M-step with the table's responsibilities; it may change what
    ``log_potential`` and ``table.values`` give from then on (a bias field
    refitted from the spatial posteriors). It needs a numeric ``beta``: the
    runs ``'auto'`` compares would each move the data.

    A warning says when the prior all but empties a component (see
    :func:`swallowed`), unless ``warn_swallowed`` is false: the caller then
    judges the result itself.

    ``start``, when given, are posterior maps to start from (one per grid,
    laid out as :func:`._mrf.padded_posteriors` gives them, and updated in
    place) instead of the pixel-wise posteriors of ``mixture``.
    """
    if update_data is not None and isinstance(beta, str):
        raise ValueError(f"update_data needs a numeric beta, not {beta!r}")
    posteriors = list(start) if start is not None else [
        _mrf.padded_posteriors(log_potential(i, mixture), grid.valid)
        for i, grid in enumerate(grids)
    ]
    n_valid = sum(
        math.prod(grid.spatial_shape) if grid.valid is None else int(grid.valid.sum())
        for grid in grids
    )
    run = functools.partial(
        _iterate, grids=grids, n_valid=n_valid, log_potential=log_potential,
        table=table, max_iter=max_iter, tol=tol, reg_covar=reg_covar, update_data=update_data,
    )
    if beta == "auto":
        result = _free_energy_search(
            mixture, grids, Lattice.of(grids), posteriors, log_potential, run
        )
    else:
        result = run(mixture, posteriors, beta)
    if warn_swallowed:
        _warn_if_swallowed(result, mixture.weights if shares is None else shares,
                           chosen=beta == "auto")
    return result


def swallowed(result: HMRFResult, weights: np.ndarray) -> list[int]:
    """The components the prior all but emptied: their share of the posteriors
    fell below :data:`SWALLOWED` times their pixel-wise share, ``weights``."""
    return [k for k, share in enumerate(result.masses) if share < SWALLOWED * weights[k]]


#: At most this many of the emptied components' shares are listed in the warning.
LISTED_SHARES = 3


def _warn_if_swallowed(result: HMRFResult, weights: np.ndarray, chosen: bool = False) -> None:
    """Warn when the prior all but empties components; ``chosen``: its strength was
    chosen by ``beta='auto'``, not given."""
    emptied = swallowed(result, weights)
    if emptied:
        shares = sorted((weights[k] for k in emptied), reverse=True)
        listed = ", ".join(f"{share:.2g}" for share in shares[:LISTED_SHARES])
        if len(shares) > LISTED_SHARES:
            listed = f"up to {listed}, …"
        strength = (
            f", at the strength {result.beta:.3g} that beta='auto' chose," if chosen
            else f" (beta={result.beta:.3g})"
        )
        one = len(emptied) == 1
        warnings.warn(
            f"Under the spatial prior{strength} {len(emptied)} of the "
            f"{len(weights)} components "
            + ("keeps almost none of its pixels (pixel-wise it had " if one else
               "keep almost none of their pixels (pixel-wise they had ")
            + f"{listed} of them), so "
            + ("a label is" if one else "some labels are")
            + " (nearly) empty: at this smoothing the image holds fewer classes "
            "than components. Use fewer components (or n_components='auto'), or a "
            "smaller beta.",
            UserWarning,
            stacklevel=_training.caller_stacklevel(),
        )


#: ``beta='auto'`` compares these multiples of the critical strength:
#: weaker, critical, stronger.
BETA_FACTORS = (2 / 3, 1.0, 4 / 3)

#: With fewer valid pixels than this, ``beta='auto'`` uses :data:`BETA_FALLBACK`.
MIN_PIXELS_FOR_BETA = 256
BETA_FALLBACK = 0.5


#: Mean-field sweeps with which ``beta='auto'`` scores each candidate strength
#: at the mixture fitted at the critical one (from its posteriors).
CANDIDATE_SWEEPS = 3
#: Candidates scored within this many nats per pixel of the best are refitted
#: and compared again: scoring at one mixture favours the strength it was
#: fitted at by what refitting would gain the others (0.0024 for 4/3 of the
#: critical strength on the 2-D blobs of benchmarks/quality.py at noise 0.5,
#: which changed the winner).
REFIT_MARGIN = 0.005


def _free_energy_search(mixture, grids, lattice, posteriors, log_potential, run) -> HMRFResult:
    """HMRF-EM at the strength of largest free energy among a few.

    The free energy per pixel, ``F(beta) = bound(beta) - log Z(beta)``, is
    the objective of HMRF-EM (the mean-field bound) with the prior's
    normalising constant (:func:`bethe_log_partition`) put back, so fits at
    different ``beta`` can be compared: it approximates the log evidence of
    the image under each strength. Candidates are :data:`BETA_FACTORS`
    times :func:`critical_beta`.

    HMRF-EM runs at the critical strength from the pixel-wise start. Each
    candidate is then scored by mean field (:data:`CANDIDATE_SWEEPS` sweeps
    from those posteriors) at the mixture it fitted; the weaker one only
    when the stronger one scores no higher than the critical one (in the
    40 searches of benchmarks/quality.py, default_cost.py and anatomy.py
    the free energy never rose to both sides of the critical strength; where
    the stronger one won, the weaker one trailed the critical one by 0.06
    nats per pixel or more). When another candidate wins, HMRF-EM goes on at
    its strength from its scored posteriors (the scoring's sweeps are the
    E-step of its first iteration). When candidates score
    within :data:`REFIT_MARGIN` of the best, each is refitted so and the
    refitted free energies decide (the weaker strength on a tie). See
    ``docs/spatial.md`` for how this compares with refitting every
    candidate.
    """
    n_valid = lattice.total_pixels
    if n_valid < MIN_PIXELS_FOR_BETA or lattice.total_pairs == 0:
        if mixture.n_components == 1:  # nothing to smooth: no strength to choose
            return run(mixture, posteriors, BETA_FALLBACK)
        warnings.warn(
            f"beta='auto' needs at least {MIN_PIXELS_FOR_BETA} valid pixels with "
            f"neighbours to choose the smoothing strength; the image (within its mask) "
            f"has {n_valid}. beta={BETA_FALLBACK} is used instead; pass a number to "
            "choose it yourself.",
            UserWarning,
            stacklevel=_training.caller_stacklevel(),
        )
        return run(mixture, posteriors, BETA_FALLBACK)
    log_weights = np.log(mixture.weights)
    centre = critical_beta(lattice, mixture.n_components)
    first = run(mixture, posteriors, centre)
    potentials = [log_potential(i, first.mixture) for i in range(len(grids))]
    weaker, critical, stronger = (min(f * centre, BETA_MAX) for f in BETA_FACTORS)
    start = [np.copy(padded) for padded in posteriors]  # the weaker one's, if scored
    scored = []  # (free energy, beta, log Z, bound, maps)

    def score(beta, maps):
        log_z = bethe_log_partition(beta, lattice, log_weights)
        bound = _candidate_energy(beta, potentials, maps, grids, lattice)
        scored.append((bound - log_z, beta, log_z, bound, maps))
        report("choosing the smoothing", len(scored), len(BETA_FACTORS))

    score(stronger, [np.copy(padded) for padded in posteriors])
    score(critical, posteriors)  # in place
    if scored[0][0] <= scored[1][0]:  # the stronger one did not win
        score(weaker, start)
    del potentials, start
    top = max(item[0] for item in scored)
    contenders = [item for item in scored if item[0] >= top - REFIT_MARGIN]
    del scored

    def go_on(beta, bound, maps):
        """HMRF-EM at ``beta`` from ``maps`` scored at ``bound``, counted with the run before it."""
        if beta == critical:
            return first
        result = run(first.mixture, maps, beta, scored=bound)
        return replace(
            result, n_iter=first.n_iter + result.n_iter,
            objectives=first.objectives + result.objectives,
        )

    if len(contenders) == 1:
        _, beta, _, bound, maps = contenders[0]
        return go_on(beta, bound, maps)
    # a near tie: each contender refitted at its strength, compared refitted
    refitted = []
    for _, beta, log_z, bound, maps in contenders:
        result = go_on(beta, bound, maps)
        refitted.append((result.objectives[-1] - log_z, -beta, result))
    return max(refitted, key=lambda item: item[:2])[2]


def _candidate_energy(beta, potentials, maps, grids, lattice) -> float:
    """Mean-field bound per pixel at ``beta`` after mean field on ``maps`` (updated in place)."""
    total = 0.0
    for potential, padded, grid in zip(potentials, maps, grids):
        _mrf.mean_field(potential, padded, grid.valid, beta, grid.hood, max_sweeps=CANDIDATE_SWEEPS)
        total += _mrf.objective(potential, padded, beta, grid.hood)
    return total / lattice.total_pixels


#: Guided ``beta='auto'``: multiples of the critical strength tried, weakest first.
HELD_OUT_FACTORS = (1.0, 4 / 3, 5 / 3, 2.0, 7 / 3, 8 / 3)

#: ... until the held-out strokes' mean posterior of their own class reaches this,
HELD_OUT_CONFIDENCE = 0.995
#: ... or a step removes less than this share of what they miss of it. Noise
#: is removed geometrically (about 70 % a step on the phantoms of
#: benchmarks/guided.py, and 20-40 % with strokes that spill 3 pixels over
#: their class's edge); what is left is strokes that stray over an edge,
#: or pixels the model does not tell apart (on a photograph, a class of
#: several shades), which stronger smoothing would only hide by flattening
#: the rest of the image.
HELD_OUT_MIN_GAIN = 0.15
#: Mean-field sweeps per strength (each starts from the previous strength's
#: posteriors): on the phantoms of benchmarks/guided.py 10 chose as 30 did.
HELD_OUT_SWEEPS = 10
#: ... or until a sweep moves the held-out pixels' summed posterior of their
#: class by less than this share of what they still miss of it: the
#: choice reads only that sum (on benchmarks/guided.py it chose as running
#: every strength to SWEEP_TOL did, with about 40 % fewer sweeps in 3-D).
HELD_OUT_SETTLED = 0.02


def held_out_beta(mixture, grids, log_potential, held_out):
    """The weakest smoothing under which the held-out strokes come out as painted.

    ``log_potential(i, mixture)`` clamps the kept strokes only;
    ``held_out`` is, per grid, ``(positions, classes)`` of the other
    strokes' pixels. At each of :data:`HELD_OUT_FACTORS` times
    :func:`critical_beta` in turn, mean field (at the pixel-wise
    ``mixture``, from the previous strength's posteriors, until
    :data:`HELD_OUT_SWEEPS`, ``SWEEP_TOL`` or :data:`HELD_OUT_SETTLED`)
    gives the held-out pixels' posteriors; the first strength at which their mean
    probability of the painted class reaches :data:`HELD_OUT_CONFIDENCE`
    is returned; if a step removed less than :data:`HELD_OUT_MIN_GAIN` of
    the probability they miss, the strength before it; else the strongest
    tried. See ``docs/guided.md``.

    Returns ``(beta, posteriors)``: the posterior maps of the last strength
    tried (``beta`` or the next one), a warm start for HMRF-EM at ``beta``
    (on benchmarks/guided.py it chose the same strengths as the pixel-wise
    start, with ARI equal or up to 0.004 higher and fewer sweeps).
    ``None`` when the grids are too small to choose on (``'auto'``'s fallback).
    """
    lattice = Lattice.of(grids)
    if lattice.total_pixels < MIN_PIXELS_FOR_BETA or lattice.total_pairs == 0:
        return None
    potentials = [log_potential(i, mixture) for i in range(len(grids))]
    posteriors = [
        _mrf.padded_posteriors(potential, grid.valid) for potential, grid in zip(potentials, grids)
    ]
    centre = critical_beta(lattice, mixture.n_components)
    n_held = sum(len(positions) for positions, _ in held_out)
    beta, previous = centre, (centre, -np.inf)
    for step, factor in enumerate(HELD_OUT_FACTORS, 1):
        beta = min(factor * centre, BETA_MAX)
        painted = 0.0
        for potential, padded, grid, (positions, classes) in zip(
            potentials, posteriors, grids, held_out
        ):
            if not len(positions):
                _mrf.mean_field(
                    potential, padded, grid.valid, beta, grid.hood, max_sweeps=HELD_OUT_SWEEPS
                )
                continue
            last = _painted(padded, grid, positions, classes)

            def settled():
                nonlocal last
                now = _painted(padded, grid, positions, classes)
                moved, last = abs(now - last), now
                return moved < HELD_OUT_SETTLED * max(len(positions) - now, 1e-3 * len(positions))

            _mrf.mean_field(
                potential, padded, grid.valid, beta, grid.hood, max_sweeps=HELD_OUT_SWEEPS,
                settled=settled,
            )
            painted += _painted(padded, grid, positions, classes)
        report("choosing the smoothing", step, len(HELD_OUT_FACTORS))
        painted /= n_held
        if 1.0 - painted > (1.0 - HELD_OUT_MIN_GAIN) * (1.0 - previous[1]):
            # what is left is not noise that smoothing removes
            return previous[0], posteriors
        if painted >= HELD_OUT_CONFIDENCE or beta >= BETA_MAX:
            break
        previous = (beta, painted)
    return beta, posteriors


def _painted(padded, grid, positions, classes) -> float:
    """The summed posterior of ``positions`` (held-out pixels) of their painted ``classes``."""
    at = _mrf.posteriors_at(padded, grid.spatial_shape, positions)
    return float(at[np.arange(len(positions)), classes].sum())


def _iterate(mixture, posteriors, beta, *, grids, n_valid, log_potential, table, max_iter,
             tol, reg_covar, update_data=None, scored=None) -> HMRFResult:
    """HMRF-EM from ``posteriors`` (updated in place) at ``beta``, a number or
    ``'pseudo-likelihood'``; ``n_valid`` pixels over all ``grids``.

    ``scored``, when given, is the objective per pixel of ``posteriors``
    already swept at ``mixture`` and ``beta``: the first iteration takes them
    as its E-step and goes straight to the M-step.
    """
    estimate = beta == "pseudo-likelihood"
    if estimate:
        beta = _pseudo_likelihood_beta(posteriors, grids, mixture)
    beta = float(beta)
    objectives = []
    converged = False
    n_iter = 0
    previous = -np.inf
    said = set()  # the M-steps' warnings, each said once
    for n_iter in range(1, max_iter + 1):
        # a histogram's responsibilities are summed in the pass of the bound
        if n_iter == 1 and scored is not None:
            resp, current = None, scored
        else:
            resp = None if table.rows is None else np.zeros((len(table.values), mixture.n_components))
            current = _sweep(grids, posteriors, log_potential, mixture, beta, table.rows, resp) / n_valid
        objectives.append(current)
        if resp is None:
            resp = table.weighted_resp(posteriors, [grid.spatial_shape for grid in grids])
        if update_data is not None:
            update_data(resp, mixture)
        values, weighted = table.values, resp
        if table.fixed is not None:
            values, weighted = np.vstack([values, table.fixed[0]]), np.vstack([resp, table.fixed[1]])
        updated = _mixture.regularised_fit(values, weighted, reg_covar, mixture.covariance_type,
                                           said=said)
        # The weights are the prior's external field and stay those of the
        # pixel-wise fit: re-estimating them as the mean posterior feeds back
        # through the coupling (the majority grows, then grows the field that
        # made it grow) and drove whole components extinct in our phantoms.
        mixture = replace(updated, weights=mixture.weights)
        if estimate:
            beta = _pseudo_likelihood_beta(posteriors, grids, mixture)
        report("spatial EM", n_iter, max_iter)
        change = abs(current - previous)
        if change < tol:
            converged = True
            break
        previous = current
    masses = _mixture.column_sums(resp) / max(float(resp.sum()), 1e-300)
    return HMRFResult(mixture, beta, n_iter, converged, tuple(objectives), tuple(masses),
                      last_change=float(change) if np.isfinite(change) else None)


def _sweep(grids, posteriors, log_potential, mixture, beta, rows=None, resp=None) -> float:
    """A few mean-field sweeps over every image; the mean-field objective summed.

    With ``rows`` (one map per image from pixel to row of ``resp``, -1 where
    not used), each pixel's posteriors are added to its row of ``resp``.
    """
    total = 0.0
    for i, grid in enumerate(grids):
        potential = log_potential(i, mixture)
        _mrf.mean_field(
            potential, posteriors[i], grid.valid, beta, grid.hood,
            max_sweeps=SWEEPS_PER_ITERATION,
        )
        total += _mrf.objective(
            potential, posteriors[i], beta, grid.hood,
            rows_map=None if rows is None else rows[i], resp=resp,
            progress_at=("smoothing", SWEEPS_PER_ITERATION, SWEEPS_PER_ITERATION),
        )
        del potential
    return total


def _pseudo_likelihood_beta(posteriors, grids, mixture) -> float:
    q_parts, field_parts = [], []
    for padded, grid in zip(posteriors, grids):
        q_parts.append(_mrf.posteriors_at(padded, grid.spatial_shape, grid.positions))
        field_parts.append(_mrf.local_fields(padded, grid.spatial_shape, grid.positions, grid.hood))
    return estimate_beta(
        np.concatenate(q_parts), np.concatenate(field_parts), np.log(mixture.weights)
    )


def sample_positions(
    grids_valid: Sequence[np.ndarray | None],
    shapes: Sequence[tuple],
    n_samples: int,
    random_state: np.random.Generator,
) -> list[np.ndarray]:
    """A uniform sample (without replacement) of valid flat positions per image."""
    counts = [
        math.prod(shape) if valid is None else int(np.count_nonzero(valid))
        for valid, shape in zip(grids_valid, shapes)
    ]
    drawn = _image.draw_ranks(counts, n_samples, random_state)
    return [
        local if valid is None else _nth_true(valid.reshape(-1), local)
        for valid, local in zip(grids_valid, drawn)
    ]


def _nth_true(flags: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Positions of the ``ranks``-th True values of ``flags`` (ranks sorted)."""
    out = []
    seen = 0
    step = 1 << 20
    for start in range(0, flags.size, step):
        block = flags[start : start + step]
        count = int(np.count_nonzero(block))
        lo, hi = np.searchsorted(ranks, [seen, seen + count])
        if hi > lo:
            out.append(start + np.flatnonzero(block)[ranks[lo:hi] - seen])
        seen += count
    return np.concatenate(out) if out else np.empty(0, dtype=np.intp)


# --------------------------------------------------------------------------
# from images to grids


#: Images holding more valid pixels than this are fitted (HMRF-EM and the
#: choice of ``beta``) on tiles spread over them that total about as many;
#: prediction then runs the mean field once over the whole image.
FIT_PIXELS = 1 << 20

#: A tile covers about this many pixels: the last axis (the rows the
#: mean-field kernel walks) up to :data:`TILE_ROW` long, the others cut
#: alike, none below :data:`TILE_MIN_SIDE`; axes up to twice their side
#: long stay whole.
TILE_PIXELS = 1 << 14
TILE_ROW = 128
TILE_MIN_SIDE = 16


@dataclass(frozen=True)
class Tile:
    """A box of image ``image``: ``key`` slices its spatial axes."""

    image: int
    key: tuple


def representative_tiles(
    shapes: Sequence[tuple], valid_maps: Sequence[np.ndarray | None],
    max_pixels: int | None = None,
) -> list[Tile] | None:
    """Tiles spread over the images with about ``max_pixels`` valid pixels in all.

    ``None`` when the images hold no more than that: they are fitted whole.
    ``max_pixels`` defaults to :data:`FIT_PIXELS`.
    Each image gets a share of ``max_pixels`` in proportion to its valid
    pixels. The image is cut into cells of a tile each and the cells are
    visited in the order of an ``R_d`` low-discrepancy sequence (Roberts
    2018), so any number of tiles covers the image evenly and falls on no
    period of its content (a lattice of every n-th cell would, on a tiled
    or periodic image). Tiles without a valid pixel are passed over.
    """
    counts = [
        math.prod(shape) if valid is None else int(np.count_nonzero(valid))
        for shape, valid in zip(shapes, valid_maps)
    ]
    total = sum(counts)
    max_pixels = FIT_PIXELS if max_pixels is None else max_pixels
    if total <= max_pixels:
        return None
    tiles, kept = [], 0
    for image, (shape, valid, count) in enumerate(zip(shapes, valid_maps, counts)):
        wanted = max_pixels * count / total
        sizes = _tile_sizes(shape)
        cells = [n // size for n, size in zip(shape, sizes)]
        got = 0
        for cell in _spread_cells(cells):
            # cells' tiles spread to both ends of each axis
            starts = [
                (c * (n - size)) // max(1, m - 1)
                for c, n, size, m in zip(cell, shape, sizes, cells)
            ]
            key = tuple(slice(a, a + size) for a, size in zip(starts, sizes))
            inside = math.prod(sizes) if valid is None else int(np.count_nonzero(valid[key]))
            if inside == 0:
                continue
            tiles.append(Tile(image, key))
            got += inside
            if got >= wanted:
                break
        kept += got
    return tiles if kept < total else None  # a batch of small images stays whole


def _tile_sizes(shape) -> list[int]:
    row = shape[-1] if shape[-1] <= 2 * TILE_ROW else TILE_ROW
    lead = shape[:-1]
    side = max(TILE_MIN_SIDE, round((TILE_PIXELS / row) ** (1.0 / max(1, len(lead)))))
    return [n if n <= 2 * side else side for n in lead] + [row]


def _spread_cells(cells: Sequence[int]):
    """Every cell of a grid of ``cells`` cells once, in ``R_d`` order first."""
    ndim = len(cells)
    phi = 2.0
    for _ in range(50):  # the root of x**(ndim + 1) = x + 1
        phi = (1.0 + phi) ** (1.0 / (ndim + 1))
    alpha = phi ** -np.arange(1.0, ndim + 1)
    n_cells = math.prod(cells)
    points = np.modf(0.5 + np.arange(2 * n_cells)[:, np.newaxis] * alpha)[0]
    flat = np.ravel_multi_index(
        tuple((points * np.asarray(cells)).astype(np.intp).T), cells
    )
    _, first = np.unique(flat, return_index=True)
    order = flat[np.sort(first)]
    missing = np.setdiff1d(np.arange(n_cells), order, assume_unique=True)
    for index in np.concatenate([order, missing]):
        yield np.unravel_index(index, cells)


def tile_views(
    views: Sequence[_image.ImageView], hoods: Sequence[_mrf.Neighbourhood],
    tiles: Sequence[Tile],
) -> tuple[list[_image.ImageView], list[_mrf.Neighbourhood]]:
    """Each image's tiles stacked along a new first axis, and its neighbourhood there.

    The tiles of an image all have one shape, so they make one grid (and
    one call of the compiled kernels per pass, not one per tile); the
    neighbourhood has no offset along the new axis, so no tile sees
    another. Images without tiles are left out.
    """
    out_views, out_hoods = [], []
    for image, (view, hood) in enumerate(zip(views, hoods)):
        keys = [tile.key for tile in tiles if tile.image == image]
        if not keys:
            continue
        mask = None if view.mask is None else stack_tiles(view.mask, keys)
        # (a dask image's tiles are read here, and nothing else of it)
        out_views.append(_image.computed(_image.ImageView(stack_tiles(view.pixels, keys), mask)))
        lead = np.zeros((len(hood.offsets), 1), dtype=hood.offsets.dtype)
        out_hoods.append(_mrf.Neighbourhood(np.hstack([lead, hood.offsets]), hood.weights))
    return out_views, out_hoods


def stack_tiles(array: np.ndarray, keys: Sequence[tuple]) -> np.ndarray:
    """The boxes ``keys`` of ``array`` (spatial axes first), stacked along a new first
    axis (lazily for a dask array)."""
    if _image.is_dask_array(array):
        import dask.array as da

        return da.stack([array[key] for key in keys])
    return np.stack([array[key] for key in keys])


def histogram_rows(
    view: _image.ImageView, valid: np.ndarray | None, distinct: np.ndarray
) -> np.ndarray:
    """The row of ``distinct`` each pixel's value is in (-1 where not valid).

    Integer images go through their lookup table (one row per possible
    value): a table index per pixel instead of a binary search.
    """
    rows = np.empty(view.spatial_shape, dtype=np.int32)
    flat = rows.reshape(-1)
    plan = _image.lookup_plan(view)
    if plan is not None:
        table_values, index_of = plan
        row_of = np.searchsorted(distinct, table_values[:, 0])
        row_of = np.minimum(row_of, len(distinct) - 1).astype(np.int32)
        for start, stop, values, _ in _image.iter_chunks(view):
            np.take(row_of, index_of(values), out=flat[start:stop])
    else:
        for start, stop, values, _ in _image.iter_chunks(view):
            index = np.searchsorted(distinct, values[:, 0].astype(np.float64))
            flat[start:stop] = np.minimum(index, len(distinct) - 1)
    if valid is not None:
        rows[~valid] = -1
    return rows


def values_at(views: Sequence[_image.ImageView], positions: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel values at flat positions of each image, ``(n, n_channels)`` float64."""
    parts = [
        np.asarray(view.pixels[np.unravel_index(where, view.spatial_shape)], dtype=np.float64)
        for view, where in zip(views, positions)
    ]
    return np.concatenate(parts)
