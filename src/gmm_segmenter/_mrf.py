"""Spatial prior: a hidden Markov random field over the pixel grid.

The labels ``z`` of an image follow a Potts model whose external field is the
log mixing weights,

    p(z) ∝ exp( Σ_i log w[z_i] + beta Σ_{i~j} c_ij [z_i = z_j] ),

and each pixel value is drawn from its component's Gaussian. ``c_ij`` weighs
a neighbour by the inverse of its physical distance; the weights of a
neighbourhood sum to ``2 * ndim`` (see :func:`neighbourhood`). With
``beta = 0`` this is the pixel-wise mixture.

The posterior is approximated by mean field (Zhang, Brady & Smith, IEEE TMI
2001, the model behind FSL FAST):

    q_i(k) ∝ w_k p(x_i | k) exp( beta Σ_j c_ij q_j(k) ),

updated one colour of the grid at a time. Pixels of one colour (the parity
of each coordinate) have no neighbour of the same colour, so updating a
colour at once is exact coordinate ascent on the mean-field free energy: it
never increases it and cannot oscillate, unlike a synchronous ICM sweep.
A sweep is one compiled pass (numba) per colour that fuses the neighbour
sums, the softmax and the change, in segments of 256 pixels of a row that
the compiler vectorises (array positions unsigned, see :func:`_sweep_rows`);
after the first sweep it skips the segments none of whose neighbours moved
by more than :data:`SKIP_BELOW`. Its cost is
linear in pixels x components x neighbours, its extra memory one byte per
segment.

Fitting the mixture under this prior (HMRF-EM) is :mod:`._hmrf`.

Maps are kept component-first: log-potentials are ``(K, *spatial_shape)``
float32, so that each component is one contiguous plane and the softmax
across components is a few elementwise operations on ``K`` planes (numpy
reduces along a short last axis several times slower). Posterior maps have
a zero border one pixel wide, whose pixels (like masked-out ones) hold
zeros and never vote, and store the last axis split by parity: padded
column ``x`` of a row is at ``[x % 2, x // 2]``, so a map of an
``(n_0, ..., n_d)`` grid is ``(K, n_0 + 2, ..., 2, (n_d + 3) // 2)``. The
pixels of one colour, and each of their neighbours, are then contiguous
along the rows: numpy works on them about ten times faster than on
every-other-element views. A 1-D signal is laid out as a grid of one row.
:func:`channel_last` and :func:`most_probable` read maps back.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from ._progress import report

#: Prediction sweeps until the posteriors change by less than this on
#: average (the largest change lingers at a few undecided pixels while the
#: labels no longer move), or until PREDICT_MAX_SWEEPS.
SWEEP_TOL = 1e-4
PREDICT_MAX_SWEEPS = 30

# Pixels per slab when a whole map is reduced, to bound temporaries.
_SLAB_PIXELS = 1 << 17

#: A pixel whose posteriors move by at most this much in a sweep does not
#: wake its neighbours: they are updated again only if another neighbour
#: moved more. Far below float32 resolution near 1 (6e-8 is one step), so
#: the posteriors agree with updating every pixel every sweep to 1e-6.
SKIP_BELOW = 1e-7

# Pixels per call of a compiled kernel: each call is a few milliseconds, so
# progress reports (and Cancel) get through several times a second.
_CALL_PIXELS = 1 << 20
_REPORT_SECONDS = 0.25


# --------------------------------------------------------------------------
# neighbourhoods


@dataclass(frozen=True)
class Neighbourhood:
    """Offsets to the neighbours of a pixel and the weight of each."""

    offsets: np.ndarray  # (n_neighbours, ndim) int
    weights: np.ndarray  # (n_neighbours,) float

    @property
    def ndim(self) -> int:
        return self.offsets.shape[1]

    def half(self):
        """One offset of each opposite pair (each unordered pair of pixels once)."""
        for offset, weight in zip(self.offsets, self.weights):
            nonzero = offset[offset != 0]
            if nonzero[0] > 0:
                yield offset, weight


#: Largest ratio between the voxel sizes of ``spacing`` (far beyond any image).
MAX_SPACING_RATIO = 1e12


def check_neighbourhood(ndim: int, connectivity, spacing, name: str = "X") -> None:
    """Raise ``ValueError`` when ``connectivity`` or ``spacing`` do not fit ``ndim``."""
    if not 1 <= connectivity <= ndim:
        kinds = ["faces", "edges", "corners"] + [f"{d}-cubes" for d in range(3, ndim)]
        options = ", ".join(f"{c} ({kinds[c - 1]})" for c in range(1, ndim + 1))
        raise ValueError(
            f"connectivity={connectivity} is out of range for {name} with {ndim} "
            f"spatial dimension(s); use one of {options}, as "
            "scipy.ndimage.generate_binary_structure counts them."
        )
    if spacing is None:
        return
    values = np.asarray(spacing, dtype=float) if _is_numeric_sequence(spacing) else None
    if values is None or values.ndim != 1 or values.size != ndim:
        raise ValueError(
            f"spacing must be None or a sequence of {ndim} positive numbers, one "
            f"per spatial axis of {name} (which has {ndim} spatial dimension(s)); "
            f"got spacing={spacing!r}."
        )
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(
            f"spacing must hold positive, finite voxel sizes; got spacing={spacing!r}."
        )
    spread = float(np.log10(values.max()) - np.log10(values.min()))
    if spread > np.log10(MAX_SPACING_RATIO):
        # the neighbour weights (1 / distance, normalised) would under- or overflow
        raise ValueError(
            f"spacing={spacing!r} has voxel sizes 10**{spread:.0f} times apart; they "
            f"must be within {MAX_SPACING_RATIO:g} of each other. Give the sizes in one "
            "unit (for example all in micrometres)."
        )


def _is_numeric_sequence(spacing) -> bool:
    try:
        np.asarray(spacing, dtype=float)
    except (TypeError, ValueError):
        return False
    return not isinstance(spacing, (str, bytes))


#: The most neighbours a pixel may have: every sweep reads each of them, so
#: beyond this a fit would take hours per sweep. Full connectivity in up to
#: 8 dimensions (3**8 - 1 offsets) stays within it.
MAX_NEIGHBOURS = 3**8 - 1


def n_neighbours(ndim: int, connectivity: int) -> int:
    """How many offsets have between 1 and ``connectivity`` non-zero coordinates."""
    return sum(math.comb(ndim, m) * 2**m for m in range(1, connectivity + 1))


def neighbourhood(ndim: int, connectivity: int = 1, spacing=None) -> Neighbourhood:
    """Neighbours within ``connectivity`` (as ``generate_binary_structure``).

    A neighbour's weight is proportional to ``1 / d``, its physical
    distance, and the weights sum to ``2 * ndim``, the number of face
    neighbours. With isotropic spacing and ``connectivity=1`` every weight
    is 1; a neighbour twice as far away votes half as much as a near one;
    and whatever the connectivity or spacing, the whole neighbourhood casts
    the same vote, so one ``beta`` means the same smoothing strength for
    all of them (a 26-neighbourhood at unit weights would vote four times
    as hard as the 6 faces, and collapse images a 6-neighbourhood keeps).

    Only the offsets with at most ``connectivity`` non-zero coordinates are
    generated (never all ``3**ndim``), in lexicographic order; more than
    :data:`MAX_NEIGHBOURS` of them are refused.

    >>> hood = neighbourhood(2, 1)
    >>> hood.offsets.tolist(), hood.weights.tolist()
    ([[-1, 0], [0, -1], [0, 1], [1, 0]], [1.0, 1.0, 1.0, 1.0])
    >>> neighbourhood(2, 1, spacing=(3.0, 1.0)).weights.tolist()
    [0.5, 1.5, 1.5, 0.5]
    >>> neighbourhood(3, 3).weights.sum().round(6)
    np.float64(6.0)
    """
    check_neighbourhood(ndim, connectivity, spacing)
    count = n_neighbours(ndim, connectivity)
    if count > MAX_NEIGHBOURS:
        fitting = [c for c in range(1, connectivity) if n_neighbours(ndim, c) <= MAX_NEIGHBOURS]
        advice = (
            f"use connectivity <= {fitting[-1]} for {ndim} dimensions (connectivity=1, the "
            f"faces, gives {2 * ndim})" if fitting else "no connectivity fits; squeeze axes of length 1"
        )
        raise ValueError(
            f"connectivity={connectivity} in {ndim} spatial dimensions gives {count} "
            f"neighbours per pixel, more than the {MAX_NEIGHBOURS} the spatial prior "
            f"handles; {advice}."
        )
    spacing = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=float)
    offsets = np.zeros((count, ndim), dtype=np.intp)
    row = 0
    for n_nonzero in range(1, connectivity + 1):
        for axes in itertools.combinations(range(ndim), n_nonzero):
            signs = np.array(list(itertools.product((-1, 1), repeat=n_nonzero)), dtype=np.intp)
            offsets[row : row + len(signs), list(axes)] = signs
            row += len(signs)
    # the order of itertools.product((-1, 0, 1), repeat=ndim): the first axis varies slowest
    offsets = offsets[np.lexsort(offsets.T[::-1])]
    closeness = 1.0 / np.sqrt(((offsets * spacing) ** 2).sum(axis=1))
    return Neighbourhood(offsets=offsets, weights=closeness * (2 * ndim / closeness.sum()))


# --------------------------------------------------------------------------
# posterior maps inside a zero border


def padded_posteriors(log_potential: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Pixel-wise posteriors ``softmax(log_potential)`` as a map with a zero border.

    ``log_potential`` is ``(K, *spatial_shape)``: ``log w_k + log p(x | k)``.
    """
    n_components = log_potential.shape[0]
    padded = np.zeros(map_shape(n_components, log_potential.shape[1:]), dtype=np.float32)
    kernel = _Kernel(log_potential, padded, valid, None)
    if isinstance(log_potential, TablePotential):
        # each value's posteriors once (the same arithmetic), then read per pixel
        table = log_potential.table
        columns = channel_last(
            padded_posteriors(table, None), np.empty(table.shape[::-1], dtype=np.float32)
        )
        columns = np.ascontiguousarray(columns.T)

        def gather(first, stop, scratch):
            _gather_rows(kernel.q, columns, kernel.index, kernel.valid, kernel.rows, first, stop,
                         kernel.plan.n_last)

        kernel.run(gather, ("smoothing", 0, None))
        return padded

    def softmax(first, stop, scratch):
        _softmax_rows(kernel.q, kernel.potential, kernel.index, kernel.valid, kernel.rows,
                      first, stop,
                      kernel.plan.n_last, *scratch)

    kernel.run(softmax, ("smoothing", 0, None))
    return padded


def map_shape(n_components: int, spatial_shape) -> tuple:
    """Shape of the posterior map of an image (see the module docstring)."""
    grid = _grid(spatial_shape)
    return (n_components,) + tuple(n + 2 for n in grid[:-1]) + (2, (grid[-1] + 3) // 2)


def _grid(spatial_shape) -> tuple:
    """The grid maps are laid out on: the axes longer than 1, at least two.

    An axis of length 1 has no neighbours along it, so leaving it out
    changes no posterior (its neighbours would be the zero border), and a
    32-D image of one pixel per axis gets a map of one pixel, not 3**32.
    A signal is laid out as a grid of one row.
    """
    kept = tuple(n for n in spatial_shape if n != 1)
    return (1,) * max(0, 2 - len(kept)) + kept


def _grid_neighbours(spatial_shape, hood: Neighbourhood) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour offsets on the grid and their weights (see :func:`_grid`).

    Offsets along an axis of length 1 point at the border and are left out.
    """
    spatial_shape = tuple(spatial_shape)
    grid = _grid(spatial_shape)
    kept = [axis for axis, n in enumerate(spatial_shape) if n != 1]
    dropped = [axis for axis, n in enumerate(spatial_shape) if n == 1]
    inside = np.all(hood.offsets[:, dropped] == 0, axis=1)
    offsets = hood.offsets[inside][:, kept]
    lead = np.zeros((len(offsets), len(grid) - len(kept)), dtype=offsets.dtype)
    return np.hstack([lead, offsets]), hood.weights[inside]


# the even and the odd columns of a row, in the order of _row_keys
_PARITIES = (slice(0, None, 2), slice(1, None, 2))


def _row_keys(rows: slice, grid: tuple):
    """Where the even and the odd pixels of the grid rows ``rows`` are in a map."""
    n_last = grid[-1]
    lead = (slice(None), slice(rows.start + 1, rows.stop + 1)) + (slice(1, -1),) * (len(grid) - 2)
    return lead + (1, slice(0, (n_last + 1) // 2)), lead + (0, slice(1, 1 + n_last // 2))


def _map_index(map_spatial_shape, coordinates, offset) -> np.ndarray:
    """Flat positions in a map (without its component axis) of grid pixels plus ``offset``."""
    lead = tuple(c + 1 + o for c, o in zip(coordinates[:-1], offset[:-1]))
    column = coordinates[-1] + 1 + offset[-1]
    return np.ravel_multi_index(lead + (column % 2, column // 2), map_spatial_shape)


def most_probable(padded: np.ndarray, spatial_shape, dtype) -> np.ndarray:
    """``argmax`` over the components of a map, ``spatial_shape`` of ``dtype``.

    One compiled pass over the map; ties go to the first component, as with
    ``np.argmax``.
    """
    grid = _grid(spatial_shape)
    labels = np.empty(math.prod(grid), dtype=dtype)
    plan = _plan(grid)
    # one compiled pass (numpy took 2 K passes over the map; 0.07 s of 16.8 Mpx)
    _argmax_rows(padded.reshape(padded.shape[0], -1), labels, plan.rows, plan.n_last)
    return labels.reshape(spatial_shape)


def channel_last(padded: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Copy the posteriors of a map into ``out``, ``(*spatial_shape, K)``."""
    grid = _grid(out.shape[:-1])
    out_grid = out.reshape(grid + out.shape[-1:])
    for rows in _slabs(grid):
        even, odd = _row_keys(rows, grid)
        target = out_grid[rows]
        for k in range(out.shape[-1]):
            target[..., 0::2, k] = padded[even][k]
            target[..., 1::2, k] = padded[odd][k]
    return out


def _slabs(spatial_shape):
    """Slices of the first axis covering about ``_SLAB_PIXELS`` pixels each."""
    first = spatial_shape[0]
    per_row = max(1, math.prod(spatial_shape[1:]))
    step = max(1, _SLAB_PIXELS // per_row)
    for start in range(0, first, step):
        yield slice(start, min(start + step, first))


# --------------------------------------------------------------------------
# the compiled sweep
#
# In the kernels a map plane (one component) is flat: grid pixel
# (c_0, ..., c_d) is at padded lead coordinates c + 1 and padded column
# c_d + 1, split by parity. The pixels of one colour share the parity of
# their column, so each neighbour lies at a constant flat distance from
# them (one set of distances per parity of the last coordinate), and a
# colour's pixels in one row are contiguous. The kernels walk a list of
# rows sorted by colour, the colours in the order of
# itertools.product((0, 1), repeat=ndim): a sweep is exact coordinate
# ascent one colour at a time, however the rows are split between calls.


@dataclass(frozen=True)
class _Plan:
    """The rows of a grid, sorted by colour, and where they are in a map."""

    row_map: np.ndarray  # (n_rows,) int64: flat map position of the row's first pixel
    row_flat: np.ndarray  # (n_rows,) int64: flat grid position of the row's first pixel
    row_parity: np.ndarray  # (n_rows,) int64: parity of the last coordinate
    lead_padded: tuple  # padded lengths of every axis but the last
    n_last: int  # length of the last axis
    half_width: int  # length of one parity of a padded row
    colour_starts: np.ndarray  # first row of each colour, and the number of rows

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """``(3, n_rows)``: map position, grid position and parity of each row, as
        the compiled kernels take them."""
        return np.stack([self.row_map, self.row_flat, self.row_parity])

    @property
    def plane(self) -> int:
        return math.prod(self.lead_padded) * 2 * self.half_width

    def row_chunks(self, call_pixels: int):
        """Ranges of rows of about ``call_pixels`` pixels each, none across two colours."""
        step = max(1, int(call_pixels / max(1.0, self.n_last / 2)))
        for colour_first, colour_stop in zip(self.colour_starts[:-1], self.colour_starts[1:]):
            for first in range(int(colour_first), int(colour_stop), step):
                yield first, min(first + step, int(colour_stop))

    def deltas(self, offsets: np.ndarray) -> np.ndarray:
        """``(2, n_neighbours)`` flat distances to the neighbours, per column parity."""
        strides = np.full(len(self.lead_padded), 2 * self.half_width, dtype=np.int64)
        for axis in range(len(self.lead_padded) - 2, -1, -1):
            strides[axis] = strides[axis + 1] * self.lead_padded[axis + 1]
        lead = offsets[:, :-1].astype(np.int64) @ strides
        out = np.empty((2, len(offsets)), dtype=np.int64)
        for parity in (0, 1):
            column = parity + 1
            moved = column + offsets[:, -1].astype(np.int64)
            here = (column % 2) * self.half_width + column // 2
            out[parity] = lead + (moved % 2) * self.half_width + moved // 2 - here
        return out


@functools.lru_cache(maxsize=16)
def _plan(grid: tuple) -> _Plan:
    lead, n_last = grid[:-1], grid[-1]
    half_width = (n_last + 3) // 2
    coordinates = np.indices(lead).reshape(len(lead), -1)
    key = np.zeros(coordinates.shape[1], dtype=np.int64)  # parities, first axis first
    for axis_coordinates in coordinates:
        key = 2 * key + axis_coordinates % 2
    lead_padded = tuple(n + 2 for n in lead)
    map_start = np.ravel_multi_index(coordinates + 1, lead_padded).astype(np.int64)
    map_start *= 2 * half_width
    flat_start = np.ravel_multi_index(coordinates, lead).astype(np.int64) * n_last
    keys, maps, flats, parities = [], [], [], []
    for parity in (0, 1) if n_last > 1 else (0,):
        column = parity + 1
        keys.append(2 * key + parity)
        maps.append(map_start + (column % 2) * half_width + column // 2)
        flats.append(flat_start + parity)
        parities.append(np.full(key.shape, parity, dtype=np.int64))
    keys = np.concatenate(keys)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    colour_starts = np.concatenate([[0], np.flatnonzero(np.diff(keys)) + 1, [len(keys)]])
    return _Plan(
        row_map=np.concatenate(maps)[order], row_flat=np.concatenate(flats)[order],
        row_parity=np.concatenate(parities)[order], lead_padded=lead_padded,
        n_last=n_last, half_width=half_width, colour_starts=colour_starts,
    )


# Segments of a half-row (the pixels of one colour in one row) that the
# kernels work on at a time, and that the sweep updates or skips as a
# whole: long enough that the vectorised loops over them outweigh their
# fixed costs, short enough that the skipped share stays large. 256 against
# 64 (alternated in one process): 15-25 % less time a sweep on 512² to
# 4096² images (1 and 2 threads) and 24 % less a bound, and no slower where
# most segments are skipped (low noise, 10 sweeps). Posteriors differ by at
# most 2e-7 (what a skip leaves out), the bound by 1e-9 nats a pixel (its
# float32 partial sums run over a segment).
_SEGMENT = 256

_LOG2_E = np.float32(1.44269504088896341)
_LN2_HIGH = np.float32(0.693359375)  # ln 2 = _LN2_HIGH - _LN2_LOW, exactly in float32 steps
_LN2_LOW = np.float32(2.12194440e-4)
_EXP_FLOOR = np.float32(-87.0)  # below, exp() is under the smallest normal float32: 0

# Let the compiler vectorise sums and maxima (the values are finite): it
# reorders float32 sums within a segment, a rounding well below 1e-6.
_VECTORISE = {"reassoc", "nnan", "ninf", "nsz"}


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _exp_nonpositive(values, count, bits, scale):  # pragma: no cover - compiled
    """``values[:count] = exp(values[:count])`` for values ``<= 0``, in float32.

    Cephes' expf (within 2 float32 steps of the exact value), written so the
    compiler vectorises it: a scalar ``np.exp`` per value cost more than the
    rest of a sweep. ``bits`` and ``scale`` are views of one int32 scratch
    array; values below -87 give 0.
    """
    for t in range(count):
        x = max(values[t], _EXP_FLOOR)
        n = np.floor(x * _LOG2_E + np.float32(0.5))
        r = x - n * _LN2_HIGH + n * _LN2_LOW
        p = np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        bits[t] = (np.int32(n) + np.int32(127)) << np.int32(23)  # 2**n
        values[t] = p * r * r + r + np.float32(1.0) if values[t] >= _EXP_FLOOR else np.float32(0.0)
    for t in range(count):
        values[t] *= scale[t]


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _q_log_q(q, q_bits, start, count, bits, mantissa):  # pragma: no cover - compiled
    """``Σ q log q`` over ``q[start:start + count]`` (0 log 0 = 0), vectorisable.

    Cephes' logf; ``q_bits`` is ``q`` seen as int32, ``bits`` and
    ``mantissa`` are views of one int32 scratch array.
    """
    start = np.uint64(start)  # see _sweep_rows
    for t in range(count):
        bits[t] = (q_bits[start + np.uint64(t)] & np.int32(0x807FFFFF)) | np.int32(0x3F000000)
    total = np.float32(0.0)
    for t in range(count):
        value = q[start + np.uint64(t)]
        bits_t = q_bits[start + np.uint64(t)]
        exponent = np.float32(((bits_t >> np.int32(23)) & np.int32(0xFF)) - 126)
        m = mantissa[t]  # value = m * 2**exponent, m in [0.5, 1)
        if m < np.float32(0.707106781186547524):
            exponent -= np.float32(1.0)
            m = m + m - np.float32(1.0)
        else:
            m = m - np.float32(1.0)
        z = m * m
        y = np.float32(7.0376836292e-2) * m - np.float32(1.1514610310e-1)
        y = y * m + np.float32(1.1676998740e-1)
        y = y * m - np.float32(1.2420140846e-1)
        y = y * m + np.float32(1.4249322787e-1)
        y = y * m - np.float32(1.6668057665e-1)
        y = y * m + np.float32(2.0000714765e-1)
        y = y * m - np.float32(2.4999993993e-1)
        y = y * m + np.float32(3.3333331174e-1)
        y = y * m * z - exponent * _LN2_LOW - np.float32(0.5) * z
        log = m + y + exponent * _LN2_HIGH
        # denormal and zero posteriors: log of the smallest normal, times q ~ 0
        total += value * log if value >= np.float32(1.1754944e-38) else np.float32(0.0)
    return total


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy",
            fastmath=_VECTORISE)
def _sweep_rows(q, potential, index, valid, dirty, plan_rows, first, stop, n_last, half_width,
                deltas, weights, beta, skip_below, scratch, bits, scale):  # pragma: no cover
    """Update the dirty segments of rows ``first:stop``; the summed change of the posteriors.

    ``q`` is the map ``(K, plane)``, ``potential`` ``(K, n_pixels)``, or
    with ``index`` (``(n_pixels,)``, else empty) a table ``(K, n_values)``
    whose column ``index[i]`` pixel ``i`` takes; ``valid`` ``(n_pixels,)`` uint8 or empty, ``dirty`` one flag per
    segment of every half-row of the map. A segment in which a posterior
    moved by more than ``skip_below`` marks the segments of its neighbours
    dirty; the others stay as they are until a neighbour moves.

    Positions in the arrays are unsigned (``np.uint64``): numba wraps a
    negative signed index around, and that test per element made the
    compiler load every neighbour, potential and posterior with a gather
    instead of a contiguous vector load (1.6 times the time of a sweep).
    """
    n_components = q.shape[0]
    per_half_row = (half_width + _SEGMENT - 1) // _SEGMENT
    top = np.empty(_SEGMENT, dtype=np.float32)
    norm = np.empty(_SEGMENT, dtype=np.float32)
    even = np.empty(_SEGMENT, dtype=np.float32)
    odd = np.empty(_SEGMENT, dtype=np.float32)
    change = 0.0
    for row in range(first, stop):
        parity = plan_rows[2, row]
        at = deltas[parity]
        count = (n_last - parity + 1) // 2
        start_column = plan_rows[0, row] % half_width
        half_row = plan_rows[0, row] // half_width
        for segment in range(start_column // _SEGMENT, (start_column + count - 1) // _SEGMENT + 1):
            flag = half_row * per_half_row + segment
            if dirty[flag] == 0:
                continue
            dirty[flag] = 0
            lo = max(0, segment * _SEGMENT - start_column)
            size = min(count, (segment + 1) * _SEGMENT - start_column) - lo
            here = plan_rows[0, row] + lo
            pixel = plan_rows[1, row] + 2 * lo
            at_here, at_pixel = np.uint64(here), np.uint64(pixel)
            pairs = min(size, (potential.shape[1] - pixel) // 2)  # within the array
            # the order of operations of the numpy implementation it replaced
            for k in range(n_components):
                out = scratch[k]
                qk = q[k]
                neighbour = np.uint64(here + at[0])
                for t in range(size):
                    out[t] = weights[0] * qk[neighbour + np.uint64(t)]
                for j in range(1, at.size):
                    neighbour = np.uint64(here + at[j])
                    weight = weights[j]
                    for t in range(size):
                        out[t] += weight * qk[neighbour + np.uint64(t)]
                pk = potential[k]
                if index.size:
                    for t in range(size):
                        out[t] = out[t] * beta + pk[index[at_pixel + np.uint64(2 * t)]]
                else:
                    # each pixel's odd neighbour read too (and not used):
                    # whole vectors shuffled apart, not a gather of every other
                    for t in range(pairs):
                        even[t] = pk[at_pixel + np.uint64(2 * t)]
                        odd[t] = pk[at_pixel + np.uint64(2 * t + 1)]
                    for t in range(pairs, size):
                        even[t] = pk[at_pixel + np.uint64(2 * t)]
                    for t in range(size):
                        out[t] = out[t] * beta + even[t]
            for t in range(size):
                top[t] = scratch[0, t]
            for k in range(1, n_components):
                for t in range(size):
                    top[t] = max(top[t], scratch[k, t])
            for k in range(n_components):
                out = scratch[k]
                for t in range(size):
                    out[t] -= top[t]
                _exp_nonpositive(out, size, bits, scale)
            for t in range(size):
                norm[t] = scratch[0, t]
            for k in range(1, n_components):
                for t in range(size):
                    norm[t] += scratch[k, t]
            moved = np.float32(0.0)
            largest = np.float32(0.0)
            for k in range(n_components):
                out = scratch[k]
                qk = q[k]
                for t in range(size):
                    out[t] /= norm[t]
                if valid.size:
                    for t in range(size):
                        out[t] *= valid[at_pixel + np.uint64(2 * t)]
                for t in range(size):
                    step = abs(out[t] - qk[at_here + np.uint64(t)])
                    moved += step
                    largest = max(largest, step)
                    qk[at_here + np.uint64(t)] = out[t]
            change += moved
            if largest > skip_below:
                for j in range(at.size):
                    first_flag = here + at[j]
                    last_flag = first_flag + size - 1
                    first_flag = (first_flag // half_width) * per_half_row + (
                        first_flag % half_width) // _SEGMENT
                    last_flag = (last_flag // half_width) * per_half_row + (
                        last_flag % half_width) // _SEGMENT
                    for neighbour_flag in range(first_flag, last_flag + 1):
                        dirty[neighbour_flag] = 1
    return change


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy",
            fastmath=_VECTORISE)
def _bound_rows(q, q_bits, potential, index, plan_rows, first, stop, n_last, deltas, weights,
                beta, rows_of_pixels, resp, scratch, bits, mantissa):  # pragma: no cover - compiled
    """Mean-field bound of rows ``first:stop``; adds posteriors to ``resp`` by row.

    ``potential`` and ``index`` as in :func:`_sweep_rows`; ``rows_of_pixels``
    is ``(n_pixels,)`` int32 (``-1``: skip) or empty.
    """
    n_components = q.shape[0]
    half_beta = np.float32(0.5) * beta
    total = 0.0
    for row in range(first, stop):
        parity = plan_rows[2, row]
        at = deltas[parity]
        count = (n_last - parity + 1) // 2
        for lo in range(0, count, _SEGMENT):
            size = min(count - lo, _SEGMENT)
            here = plan_rows[0, row] + lo
            pixel = plan_rows[1, row] + 2 * lo
            at_here, at_pixel = np.uint64(here), np.uint64(pixel)  # see _sweep_rows
            part = np.float32(0.0)
            for k in range(n_components):
                qk = q[k]
                pk = potential[k]
                out = scratch[0]
                if index.size:
                    for t in range(size):
                        out[t] = qk[at_here + np.uint64(t)] * pk[
                            index[at_pixel + np.uint64(2 * t)]]
                else:
                    for t in range(size):
                        out[t] = qk[at_here + np.uint64(t)] * pk[at_pixel + np.uint64(2 * t)]
                if beta != 0:
                    neighbour = np.uint64(here + at[0])
                    field = scratch[1]
                    for t in range(size):
                        field[t] = weights[0] * qk[neighbour + np.uint64(t)]
                    for j in range(1, at.size):
                        neighbour = np.uint64(here + at[j])
                        weight = weights[j]
                        for t in range(size):
                            field[t] += weight * qk[neighbour + np.uint64(t)]
                    for t in range(size):
                        out[t] += half_beta * qk[at_here + np.uint64(t)] * field[t]
                for t in range(size):
                    part += out[t]
                part -= _q_log_q(qk, q_bits[k], here, size, bits, mantissa)
            total += part
            if rows_of_pixels.size:
                for t in range(size):
                    target = rows_of_pixels[at_pixel + np.uint64(2 * t)]
                    if target >= 0:
                        for k in range(n_components):
                            resp[target, k] += q[k, at_here + np.uint64(t)]
    return total


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _softmax_rows(q, potential, index, valid, plan_rows, first, stop, n_last, scratch, bits,
                  scale):  # pragma: no cover - compiled
    """Pixel-wise posteriors ``softmax(potential)`` into the map, for rows ``first:stop``.

    ``potential`` and ``index`` as in :func:`_sweep_rows`.
    """
    n_components = q.shape[0]
    top = np.empty(_SEGMENT, dtype=np.float32)
    norm = np.empty(_SEGMENT, dtype=np.float32)
    for row in range(first, stop):
        parity = plan_rows[2, row]
        count = (n_last - parity + 1) // 2
        for lo in range(0, count, _SEGMENT):
            size = min(count - lo, _SEGMENT)
            here = np.uint64(plan_rows[0, row] + lo)  # see _sweep_rows
            pixel = np.uint64(plan_rows[1, row] + 2 * lo)
            for k in range(n_components):
                out = scratch[k]
                pk = potential[k]
                if index.size:
                    for t in range(size):
                        out[t] = pk[index[pixel + np.uint64(2 * t)]]
                else:
                    for t in range(size):
                        out[t] = pk[pixel + np.uint64(2 * t)]
            for t in range(size):
                top[t] = scratch[0, t]
            for k in range(1, n_components):
                for t in range(size):
                    top[t] = max(top[t], scratch[k, t])
            for k in range(n_components):
                out = scratch[k]
                for t in range(size):
                    out[t] -= top[t]
                _exp_nonpositive(out, size, bits, scale)
            for t in range(size):
                norm[t] = scratch[0, t]
            for k in range(1, n_components):
                for t in range(size):
                    norm[t] += scratch[k, t]
            for k in range(n_components):
                for t in range(size):
                    new = scratch[k, t] / norm[t]
                    if valid.size:
                        new *= valid[pixel + np.uint64(2 * t)]
                    q[k, here + np.uint64(t)] = new


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _gather_rows(q, columns, index, valid, plan_rows, first, stop, n_last):  # pragma: no cover
    """Posteriors read from ``columns`` ``(K, n_values)`` at each pixel's value, for rows
    ``first:stop``; ``index`` and ``valid`` as in :func:`_sweep_rows`."""
    n_components = q.shape[0]
    for row in range(first, stop):
        count = (n_last - plan_rows[2, row] + 1) // 2
        here = np.uint64(plan_rows[0, row])  # see _sweep_rows
        pixel = np.uint64(plan_rows[1, row])
        for k in range(n_components):
            qk = q[k]
            column = columns[k]
            if valid.size:
                for t in range(count):
                    at = pixel + np.uint64(2 * t)
                    qk[here + np.uint64(t)] = column[index[at]] * valid[at]
            else:
                for t in range(count):
                    qk[here + np.uint64(t)] = column[index[pixel + np.uint64(2 * t)]]


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _argmax_rows(q, labels, plan_rows, n_last):  # pragma: no cover - compiled
    """``labels[pixel]`` = the first component of largest posterior, for every row."""
    n_components = q.shape[0]
    best = np.empty(_SEGMENT, dtype=np.float32)
    label = np.empty(_SEGMENT, dtype=labels.dtype)
    for row in range(plan_rows.shape[1]):
        count = (n_last - plan_rows[2, row] + 1) // 2
        for lo in range(0, count, _SEGMENT):
            size = min(count - lo, _SEGMENT)
            here = np.uint64(plan_rows[0, row] + lo)  # see _sweep_rows
            pixel = np.uint64(plan_rows[1, row] + 2 * lo)
            for t in range(size):
                best[t] = q[0, here + np.uint64(t)]
                label[t] = 0
            for k in range(1, n_components):
                for t in range(size):
                    value = q[k, here + np.uint64(t)]
                    if value > best[t]:
                        best[t] = value
                        label[t] = k
            for t in range(size):
                labels[pixel + np.uint64(2 * t)] = label[t]


@dataclass(frozen=True)
class TablePotential:
    """Log-potentials through a table: pixel ``i`` has column ``index[i]`` of ``table``.

    ``table`` is ``(K, n_values)`` float32, ``index`` a uint16 map of the
    image's spatial shape: an 8- or 16-bit image's values (as unsigned), 2
    bytes a pixel where the dense log-potentials take ``4 K``. Mean field
    and the pixel-wise posteriors take it wherever they take dense ones.
    """

    table: np.ndarray
    index: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.table.shape[:1] + self.index.shape


_NO_INDEX = np.empty(0, dtype=np.uint16)

#: Fewest pixels a thread gets in one call: smaller passes run in one thread.
_THREAD_PIXELS = 1 << 16


@functools.cache
def n_threads() -> int:
    """Threads a pass of the compiled kernels is split between: the usable cores.

    The rows of one colour are independent, so each thread takes a share
    of them; the colours still follow each other, so the result is that of
    one thread (sums are taken per share, in order). Plain threads, not
    numba's ``prange``: its fallback threading layer is not safe to call
    from several threads at once, as dask's workers and napari's do.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def spare_threads(most: int) -> int:
    """How many of ``most`` threads a pass uses: those the load average leaves a core.

    A pass waits for its slowest share, so on a machine whose cores are
    taken a second thread only adds the hand-over (measured: no faster at a
    load of 4-5 on 2 cores); one thread then, as many as there are idle
    cores otherwise. The threads of this process's last pass are part of
    the load and are not counted against it.
    """
    global _recent_threads
    try:
        others = os.getloadavg()[0] - _recent_threads
    except (AttributeError, OSError):  # not on Unix
        return most
    _recent_threads = max(1, min(most, int(n_threads() + 0.5 - others)))
    return _recent_threads


_recent_threads = 1


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The helper threads of this process (a forked child gets its own: the
    parent's threads do not exist there)."""
    with _pools_lock:
        pool = _pools.get(os.getpid())
        if pool is None:
            pool = _pools[os.getpid()] = ThreadPoolExecutor(
                max(1, n_threads() - 1), thread_name_prefix="gmm-segmenter-mrf"
            )
        return pool


def _split(first: int, stop: int, parts: int, n_pixels: int) -> list[tuple[int, int]]:
    """``first:stop`` in up to ``parts`` ranges of rows, none under :data:`_THREAD_PIXELS`."""
    parts = max(1, min(parts, n_pixels // _THREAD_PIXELS, stop - first))
    bounds = [first + (stop - first) * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class _Kernel:
    """What the compiled kernels need to walk one image's map."""

    def __init__(self, log_potential, padded, valid, hood):
        n_components = log_potential.shape[0]
        grid = _grid(log_potential.shape[1:])
        self.plan = _plan(grid)
        offsets, weights = (
            _grid_neighbours(log_potential.shape[1:], hood) if hood is not None else ((), ())
        )
        if len(offsets) == 0:  # no neighbour inside the image: one of weight 0 on the border
            offsets, weights = np.zeros((1, len(grid)), dtype=np.intp), np.zeros(1)
            offsets[0, -1] = 1
        self.deltas = self.plan.deltas(offsets)
        self.weights = weights.astype(np.float32)
        self.rows = self.plan.rows
        if isinstance(log_potential, TablePotential):
            self.potential = log_potential.table
            self.index = log_potential.index.reshape(-1)
        else:
            self.potential = np.ascontiguousarray(
                log_potential.reshape(n_components, -1), dtype=np.float32
            )
            self.index = _NO_INDEX
        self.n_pixels = math.prod(log_potential.shape[1:])
        self.q = None if padded is None else padded.reshape(n_components, -1)
        self.valid = (
            np.empty(0, dtype=np.uint8) if valid is None else
            np.ascontiguousarray(valid.reshape(-1)).view(np.uint8)
        )
        # per-segment scratch of each thread: values, and int32 bits also
        # read as float32
        self.scratch = [
            (np.empty((max(n_components, 2), _SEGMENT), dtype=np.float32), bits, bits.view(np.float32))
            for bits in (np.empty(_SEGMENT, dtype=np.int32) for _ in range(n_threads()))
        ]

    def dirty_flags(self) -> np.ndarray:
        """One flag per segment of every half-row of the map, all set."""
        per_half_row = -(-self.plan.half_width // _SEGMENT)
        return np.ones(self.plan.plane // self.plan.half_width * per_half_row, dtype=np.uint8)

    def run(self, call, progress_at, call_pixels=None) -> list:
        """``call(first, stop, scratch)`` over all rows: one pass; the results in row order.

        The rows go in chunks of one colour, each split into one part per
        scratch buffer (see :func:`n_threads`); the threads the load leaves
        (:func:`spare_threads`) share the parts, the calling thread taking
        what is left. The parts do not depend on the load, so neither do the
        per-part sums the kernels return or add up (the bound, the
        histogram's responsibilities): the same image gives the same bits
        on a busy machine. ``progress_at`` is reported every ~0.25 s between
        chunks, from the calling thread.
        """
        n_parts = len(self.scratch)
        workers = spare_threads(n_parts)
        call_pixels = call_pixels or _CALL_PIXELS
        results = []
        last = time.monotonic()
        for first, stop in self.plan.row_chunks(call_pixels * n_parts):
            parts = list(zip(
                _split(first, stop, n_parts, (stop - first) * self.plan.n_last // 2),
                self.scratch,
            ))
            futures = [_pool().submit(call, a, b, scratch) for (a, b), scratch in parts[1:workers]]
            here = [call(a, b, scratch) for (a, b), scratch in parts[:1] + parts[workers:]]
            results.append(here[0])
            results.extend(future.result() for future in futures)
            results.extend(here[1:])
            if time.monotonic() - last > _REPORT_SECONDS:
                report(*progress_at)
                last = time.monotonic()
        return results


def mean_field(
    log_potential: np.ndarray,
    padded: np.ndarray,
    valid: np.ndarray | None,
    beta: float,
    hood: Neighbourhood,
    *,
    max_sweeps: int,
    tol: float = SWEEP_TOL,
    block_pixels: int | None = None,
    skip_below: float = SKIP_BELOW,
    settled=None,
) -> tuple[int, float]:
    """Update the posteriors in ``padded`` in place, one colour at a time.

    Stops after ``max_sweeps`` sweeps or once the posteriors changed by
    less than ``tol`` on average in a sweep. Returns the number of sweeps
    and the last mean change.

    The first sweep updates every pixel; later ones only the pixels one of
    whose neighbours moved by more than ``skip_below`` (in any component)
    since their last update: the others would come out as they are, up to
    that. ``skip_below=-1`` updates every pixel every sweep. ``block_pixels``
    sets how many pixels one call of the compiled kernel covers (the result
    does not depend on it). ``settled()``, when given, is asked after every
    sweep and stops the sweeps when it answers true.
    """
    kernel = _Kernel(log_potential, padded, valid, hood)
    plan = kernel.plan
    dirty = kernel.dirty_flags()
    beta = np.float32(beta)
    skip_below = np.float32(skip_below)
    # the mean over the pixels that can change: masked ones stay at zero
    n_valid = kernel.n_pixels if valid is None else int(np.count_nonzero(valid))
    n_values = log_potential.shape[0] * max(n_valid, 1)
    change = np.inf
    sweep = 0

    def update(first, stop, scratch):
        return _sweep_rows(
            kernel.q, kernel.potential, kernel.index, kernel.valid, dirty, kernel.rows, first,
            stop, plan.n_last, plan.half_width, kernel.deltas, kernel.weights, beta, skip_below,
            *scratch,
        )

    for sweep in range(1, max_sweeps + 1):
        changes = kernel.run(update, ("smoothing", sweep - 1, max_sweeps), block_pixels)
        change = math.fsum(changes) / n_values
        report("smoothing", sweep, max_sweeps)
        if change < tol or (settled is not None and settled()):
            break
    return sweep, change


def objective(
    log_potential: np.ndarray,
    padded: np.ndarray,
    beta: float,
    hood: Neighbourhood,
    *,
    rows_map: np.ndarray | None = None,
    resp: np.ndarray | None = None,
    progress_at: tuple = ("smoothing", 0, None),
) -> float:
    """Mean-field objective summed over the pixels of one image.

    ``Σ_i Σ_k q_ik (log_potential_ik - log q_ik) + beta Σ_{i~j} c_ij q_i·q_j``:
    a lower bound on the log-likelihood up to the prior's normalising
    constant. With ``beta=0`` and pixel-wise posteriors it is the mixture's
    log-likelihood. Masked-out pixels hold ``q = 0`` and add nothing.

    With ``rows_map`` and ``resp``, each pixel's posteriors are also added
    to row ``rows_map[pixel]`` of ``resp`` in the same pass, as
    :func:`add_posteriors_by_row` does. ``progress_at`` is what to report
    while it runs.
    """
    kernel = _Kernel(log_potential, padded, None, hood)
    if rows_map is None:
        rows_of_pixels, resp = np.empty(0, dtype=np.int32), np.empty((0, 0))
    else:
        rows_of_pixels = np.ascontiguousarray(rows_map.reshape(-1), dtype=np.int32)
    q_bits = kernel.q.view(np.int32)
    # each thread sums the posteriors of its rows into a table of its own
    tables = {id(kernel.scratch[0]): resp}

    def bound(first, stop, scratch):
        table = tables.get(id(scratch))
        if table is None:
            table = tables[id(scratch)] = np.zeros_like(resp)
        values, bits, mantissa = scratch
        return _bound_rows(
            kernel.q, q_bits, kernel.potential, kernel.index, kernel.rows, first, stop,
            kernel.plan.n_last,
            kernel.deltas, kernel.weights, np.float32(beta), rows_of_pixels, table,
            values, bits, mantissa,
        )

    total = math.fsum(kernel.run(bound, progress_at))
    for scratch in kernel.scratch[1:]:
        if id(scratch) in tables and resp.size:
            resp += tables[id(scratch)]
    return total


# --------------------------------------------------------------------------
# estimating beta


def local_fields(
    padded: np.ndarray, spatial_shape, positions: np.ndarray, hood: Neighbourhood
) -> np.ndarray:
    """``Σ_j c_ij q_j`` at the given flat positions of the grid, ``(n, K)`` float64."""
    grid = _grid(spatial_shape)
    flat = padded.reshape(padded.shape[0], -1)
    coordinates = np.unravel_index(positions, grid)
    field = np.zeros((len(positions), padded.shape[0]), dtype=np.float64)
    for offset, weight in zip(*_grid_neighbours(spatial_shape, hood)):
        field += weight * flat[:, _map_index(padded.shape[1:], coordinates, offset)].T
    return field


def add_posteriors_by_row(padded: np.ndarray, rows_map: np.ndarray, resp: np.ndarray) -> None:
    """Add each pixel's posteriors to row ``rows_map[pixel]`` of ``resp`` (``-1``: skip).

    ``rows_map`` has the image's spatial shape; ``resp`` is ``(n_rows, K)``.
    """
    n_components = padded.shape[0]
    grid = _grid(rows_map.shape)
    rows_map = rows_map.reshape(grid)
    sums = np.empty(len(resp))
    for rows in _slabs(grid):
        index = rows_map[rows]
        for key, columns in zip(_row_keys(rows, grid), _PARITIES):
            part = index[..., columns].reshape(-1)
            _add_by_row(padded[key].reshape(n_components, -1), part, resp, sums)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _add_by_row(q, part, resp, sums):  # pragma: no cover - compiled
    """``resp[:, k] += np.bincount(part[used], weights=q[k, used])`` for every
    ``k``, where ``used = part >= 0``: the same sums in the same order (the
    same bits), without the K passes of ``bincount`` and the copies."""
    for k in range(q.shape[0]):
        sums[:] = 0.0
        for i in range(part.size):
            row = part[i]
            if row >= 0:
                sums[row] += q[k, i]
        for row in range(sums.size):
            resp[row, k] += sums[row]


def map_positions(padded: np.ndarray, spatial_shape, positions: np.ndarray) -> np.ndarray:
    """Where the given flat positions of the grid are in a map like ``padded``
    (flat, without its component axis): the ``index`` of :func:`posteriors_at`."""
    grid = _grid(spatial_shape)
    coordinates = np.unravel_index(positions, grid)
    return _map_index(padded.shape[1:], coordinates, (0,) * len(grid))


def posteriors_at(padded: np.ndarray, spatial_shape, positions: np.ndarray, index=None) -> np.ndarray:
    """Posteriors at the given flat positions of the grid, ``(n, K)`` float64.

    ``index``, when given, is :func:`map_positions` of the same arguments
    (to gather at the same positions again without recomputing it).
    """
    if index is None:
        index = map_positions(padded, spatial_shape, positions)
    out = np.empty((len(index), padded.shape[0]))
    _pick(padded.reshape(padded.shape[0], -1), index, out)
    return out


@numba.njit(cache=True, nogil=True)
def _pick(flat, index, out):  # pragma: no cover - compiled
    """``out[i, k] = flat[k, index[i]]`` as float64: the gather, transpose and
    cast numpy made in two passes (about 4 ms of the M-step of a 256² image)."""
    for i in range(index.size):
        at = index[i]
        for k in range(flat.shape[0]):
            out[i, k] = flat[k, at]


def spatial_posteriors(
    log_potential: np.ndarray, valid: np.ndarray | None, beta: float, hood: Neighbourhood
) -> np.ndarray:
    """Mean-field posteriors of one image from its pixel log-potentials, as a map."""
    padded = padded_posteriors(log_potential, valid)
    if beta:
        mean_field(log_potential, padded, valid, beta, hood, max_sweeps=PREDICT_MAX_SWEEPS)
    return padded
