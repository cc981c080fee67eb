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
A colour is updated in blocks of rows small enough to stay in cache, so a
sweep is a handful of numpy operations per block; its cost is linear in
pixels x components x neighbours, and its extra memory is a few blocks.

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
from dataclasses import dataclass

import numpy as np

from ._progress import report

#: Prediction sweeps until the posteriors change by less than this on
#: average (the largest change lingers at a few undecided pixels while the
#: labels no longer move), or until PREDICT_MAX_SWEEPS.
SWEEP_TOL = 1e-4
PREDICT_MAX_SWEEPS = 30

# Pixels per slab when a whole map is reduced, to bound temporaries.
_SLAB_PIXELS = 1 << 17

# Pixels per block of a colour in a mean-field sweep: the block's K planes
# and its scratch stay in a core's cache across the dozen passes over them.
_SWEEP_BLOCK_PIXELS = 1 << 14


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


def _is_numeric_sequence(spacing) -> bool:
    try:
        np.asarray(spacing, dtype=float)
    except (TypeError, ValueError):
        return False
    return not isinstance(spacing, (str, bytes))


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

    >>> hood = neighbourhood(2, 1)
    >>> hood.offsets.tolist(), hood.weights.tolist()
    ([[-1, 0], [0, -1], [0, 1], [1, 0]], [1.0, 1.0, 1.0, 1.0])
    >>> neighbourhood(2, 1, spacing=(3.0, 1.0)).weights.tolist()
    [0.5, 1.5, 1.5, 0.5]
    >>> neighbourhood(3, 3).weights.sum().round(6)
    np.float64(6.0)
    """
    check_neighbourhood(ndim, connectivity, spacing)
    spacing = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=float)
    offsets = np.array(
        [
            offset
            for offset in itertools.product((-1, 0, 1), repeat=ndim)
            if 0 < np.count_nonzero(offset) <= connectivity
        ],
        dtype=np.intp,
    ).reshape(-1, ndim)
    closeness = 1.0 / np.sqrt(((offsets * spacing) ** 2).sum(axis=1))
    return Neighbourhood(offsets=offsets, weights=closeness * (2 * ndim / closeness.sum()))


# --------------------------------------------------------------------------
# posterior maps inside a zero border


def padded_posteriors(log_potential: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Pixel-wise posteriors ``softmax(log_potential)`` as a map with a zero border.

    ``log_potential`` is ``(K, *spatial_shape)``: ``log w_k + log p(x | k)``.
    """
    n_components = log_potential.shape[0]
    grid = _grid(log_potential.shape[1:])
    log_potential = log_potential.reshape((n_components,) + grid)
    valid = None if valid is None else valid.reshape(grid)
    padded = np.zeros(map_shape(n_components, grid), dtype=np.float32)
    for rows in _slabs(grid):
        block = log_potential[:, rows].astype(np.float32)
        _softmax_inplace(block, np.empty(block.shape[1:], dtype=np.float32))
        if valid is not None:
            block *= valid[rows]
        even, odd = _row_keys(rows, grid)
        padded[even] = block[..., 0::2]
        padded[odd] = block[..., 1::2]
    return padded


def map_shape(n_components: int, spatial_shape) -> tuple:
    """Shape of the posterior map of an image (see the module docstring)."""
    grid = _grid(spatial_shape)
    return (n_components,) + tuple(n + 2 for n in grid[:-1]) + (2, (grid[-1] + 3) // 2)


def _grid(spatial_shape) -> tuple:
    """The grid maps are laid out on: at least two axes (a signal is one row)."""
    spatial_shape = tuple(spatial_shape)
    return spatial_shape if len(spatial_shape) > 1 else (1,) + spatial_shape


def _grid_offsets(offsets: np.ndarray, ndim: int) -> np.ndarray:
    """Neighbour offsets on the grid (a signal's gain a zero for its one row)."""
    lead = np.zeros((len(offsets), ndim - offsets.shape[1]), dtype=offsets.dtype)
    return np.hstack([lead, offsets])


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

    Plane by plane; ties go to the first component, as with ``np.argmax``.
    """
    grid = _grid(spatial_shape)
    labels = np.zeros(grid, dtype=dtype)
    n_components = padded.shape[0]
    for rows in _slabs(grid):
        for key, columns in zip(_row_keys(rows, grid), _PARITIES):
            block = padded[key]
            out = labels[rows][..., columns]
            best = block[0].copy()
            for k in range(1, n_components):
                np.copyto(out, labels.dtype.type(k), where=block[k] > best)
                np.maximum(best, block[k], out=best)
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


def _softmax_inplace(logits: np.ndarray, plane: np.ndarray) -> None:
    """Softmax across the first (component) axis; ``plane`` is scratch for one component."""
    np.copyto(plane, logits[0])
    for component in logits[1:]:
        np.maximum(plane, component, out=plane)
    logits -= plane
    np.exp(logits, out=logits)
    np.copyto(plane, logits[0])
    for component in logits[1:]:
        plane += component
    logits /= plane


def _slabs(spatial_shape):
    """Slices of the first axis covering about ``_SLAB_PIXELS`` pixels each."""
    first = spatial_shape[0]
    per_row = max(1, math.prod(spatial_shape[1:]))
    step = max(1, _SLAB_PIXELS // per_row)
    for start in range(0, first, step):
        yield slice(start, min(start + step, first))


@dataclass(frozen=True)
class _Block:
    """Rows of one colour (the pixels whose coordinates have given parities).

    ``target`` selects them in the map, ``sub`` in the unpadded grid,
    ``neighbours[j]`` their neighbours at the ``j``-th offset in the map;
    all lead with the component axis.
    """

    shape: tuple
    target: tuple
    sub: tuple
    neighbours: tuple


@functools.lru_cache(maxsize=16)
def _colour_blocks(grid: tuple, offsets: tuple, block_pixels: int) -> tuple:
    """The colours of the grid, in order, each cut into blocks of rows."""
    every = slice(None)
    blocks = []
    for parities in itertools.product((0, 1), repeat=len(grid)):
        counts = [(n - p + 1) // 2 for n, p in zip(grid, parities)]
        if min(counts) == 0:
            continue
        # the colour's (start, stop) along each axis of the grid, per block on the first
        spans = [(p, p + 2 * c - 1) for p, c in zip(parities, counts)]
        step = max(1, block_pixels // math.prod(counts[1:]))
        for row in range(0, counts[0], step):
            stop_row = min(row + step, counts[0])
            spans[0] = (parities[0] + 2 * row, parities[0] + 2 * stop_row - 1)

            def key(offset, lead=tuple(spans[:-1]), parity=parities[-1], count=counts[-1]):
                column = 1 + parity + offset[-1]  # padded column of the first pixel
                return (
                    (every,)
                    + tuple(slice(1 + lo + o, hi + 1 + o, 2) for (lo, hi), o in zip(lead, offset))
                    + (column % 2, slice(column // 2, column // 2 + count))
                )

            blocks.append(
                _Block(
                    shape=(stop_row - row,) + tuple(counts[1:]),
                    target=key((0,) * len(grid)),
                    sub=(every,) + tuple(slice(lo, hi, 2) for lo, hi in spans),
                    neighbours=tuple(key(offset) for offset in offsets),
                )
            )
    return tuple(blocks)


def _blocks(grid: tuple, hood: Neighbourhood, block_pixels: int) -> tuple:
    offsets = _grid_offsets(hood.offsets, len(grid))
    return _colour_blocks(grid, tuple(map(tuple, offsets.tolist())), block_pixels)


def _neighbour_field(padded, block, weights, field, scratch) -> None:
    """``field = Σ_j c_ij q_j`` for the pixels of ``block``."""
    for j, (neighbours, weight) in enumerate(zip(block.neighbours, weights)):
        if j == 0:
            np.multiply(padded[neighbours], weight, out=field)
        elif weight == 1:
            field += padded[neighbours]
        else:
            np.multiply(padded[neighbours], weight, out=scratch)
            field += scratch


class _Buffers:
    """Scratch arrays shaped for one block at a time, allocated once per pass."""

    def __init__(self, n_components: int, blocks, count: int):
        largest = max((math.prod(block.shape) for block in blocks), default=0)
        self.n_components = n_components
        self.planes = np.empty(largest, dtype=np.float32)
        self.maps = [np.empty(n_components * largest, dtype=np.float32) for _ in range(count)]

    def for_block(self, block):
        size = math.prod(block.shape)
        shape = (self.n_components,) + block.shape
        maps = [buffer[: self.n_components * size].reshape(shape) for buffer in self.maps]
        return self.planes[:size].reshape(block.shape), *maps


def mean_field(
    log_potential: np.ndarray,
    padded: np.ndarray,
    valid: np.ndarray | None,
    beta: float,
    hood: Neighbourhood,
    *,
    max_sweeps: int,
    tol: float = SWEEP_TOL,
    block_pixels: int = _SWEEP_BLOCK_PIXELS,
) -> tuple[int, float]:
    """Update the posteriors in ``padded`` in place, one colour at a time.

    Stops after ``max_sweeps`` sweeps or once the posteriors changed by
    less than ``tol`` on average in a sweep. Returns the number of sweeps
    and the last mean change.
    """
    n_components = log_potential.shape[0]
    grid = _grid(log_potential.shape[1:])
    log_potential = log_potential.reshape((n_components,) + grid)
    valid = None if valid is None else valid.reshape(grid)
    beta = np.float32(beta)
    weights = [np.float32(weight) for weight in hood.weights]
    blocks = _blocks(grid, hood, block_pixels)
    buffers = _Buffers(n_components, blocks, 2)  # no allocation in the sweeps
    # the mean over the pixels that can change: masked ones stay at zero
    n_valid = log_potential[0].size if valid is None else int(np.count_nonzero(valid))
    n_values = n_components * max(n_valid, 1)
    change = np.inf
    sweep = 0
    for sweep in range(1, max_sweeps + 1):
        change = 0.0
        for block in blocks:
            plane, field, scratch = buffers.for_block(block)
            _neighbour_field(padded, block, weights, field, scratch)
            field *= beta
            field += log_potential[block.sub]
            _softmax_inplace(field, plane)
            if valid is not None:
                field *= valid[block.sub[1:]]
            current = padded[block.target]
            np.subtract(field, current, out=scratch)
            np.abs(scratch, out=scratch)
            change += float(scratch.sum()) / n_values
            np.copyto(current, field)
        report("smoothing", sweep, max_sweeps)
        if change < tol:
            break
    return sweep, change


def objective(
    log_potential: np.ndarray, padded: np.ndarray, beta: float, hood: Neighbourhood
) -> float:
    """Mean-field objective summed over the pixels of one image.

    ``Σ_i Σ_k q_ik (log_potential_ik - log q_ik) + beta Σ_{i~j} c_ij q_i·q_j``:
    a lower bound on the log-likelihood up to the prior's normalising
    constant. With ``beta=0`` and pixel-wise posteriors it is the mixture's
    log-likelihood. Masked-out pixels hold ``q = 0`` and add nothing.
    """
    n_components = log_potential.shape[0]
    grid = _grid(log_potential.shape[1:])
    log_potential = log_potential.reshape((n_components,) + grid)
    weights = [np.float32(weight) for weight in hood.weights]
    blocks = _blocks(grid, hood, _SWEEP_BLOCK_PIXELS)
    buffers = _Buffers(n_components, blocks, 2)
    tiny = np.finfo(np.float32).tiny  # q log q -> 0 as q -> 0
    # float32 sums within a block: their rounding is far below tol per pixel
    total = 0.0
    for block in blocks:
        _, field, scratch = buffers.for_block(block)
        q = padded[block.target]
        np.multiply(q, log_potential[block.sub], out=scratch)
        total += float(scratch.sum())
        np.maximum(q, tiny, out=scratch)
        np.log(scratch, out=scratch)
        scratch *= q
        total -= float(scratch.sum())
        if beta:
            # each pair of neighbours once: half of every pixel's field
            _neighbour_field(padded, block, weights, field, scratch)
            field *= q
            total += 0.5 * beta * float(field.sum())
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
    for offset, weight in zip(_grid_offsets(hood.offsets, len(grid)), hood.weights):
        field += weight * flat[:, _map_index(padded.shape[1:], coordinates, offset)].T
    return field


def add_posteriors_by_row(padded: np.ndarray, rows_map: np.ndarray, resp: np.ndarray) -> None:
    """Add each pixel's posteriors to row ``rows_map[pixel]`` of ``resp`` (``-1``: skip).

    ``rows_map`` has the image's spatial shape; ``resp`` is ``(n_rows, K)``.
    """
    n_components = padded.shape[0]
    grid = _grid(rows_map.shape)
    rows_map = rows_map.reshape(grid)
    for rows in _slabs(grid):
        index = rows_map[rows]
        for key, columns in zip(_row_keys(rows, grid), _PARITIES):
            part = index[..., columns].reshape(-1)
            used = part >= 0
            q = padded[key].reshape(n_components, -1)[:, used]
            part = part[used]
            for k in range(n_components):
                resp[:, k] += np.bincount(part, weights=q[k], minlength=len(resp))


def posteriors_at(padded: np.ndarray, spatial_shape, positions: np.ndarray) -> np.ndarray:
    """Posteriors at the given flat positions of the grid, ``(n, K)`` float64."""
    grid = _grid(spatial_shape)
    coordinates = np.unravel_index(positions, grid)
    index = _map_index(padded.shape[1:], coordinates, (0,) * len(grid))
    picked = padded.reshape(padded.shape[0], -1)[:, index]
    return np.ascontiguousarray(picked.T, dtype=np.float64)


def spatial_posteriors(
    log_potential: np.ndarray, valid: np.ndarray | None, beta: float, hood: Neighbourhood
) -> np.ndarray:
    """Mean-field posteriors of one image from its pixel log-potentials, as a map."""
    padded = padded_posteriors(log_potential, valid)
    if beta:
        mean_field(log_potential, padded, valid, beta, hood, max_sweeps=PREDICT_MAX_SWEEPS)
    return padded
