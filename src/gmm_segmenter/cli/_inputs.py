"""The inputs of ``gmm-segment``: files, folders, globs and samples, read and made ready.

Each input becomes a :class:`Source` with a unique output name, is read as
an array (an image file decoded in a child process under ``--read-timeout``
and ``--read-memory``, see :mod:`._isolated`), and :func:`prepare` puts its
channels last and turns an alpha channel and ``--mask`` into one mask.
"""

from __future__ import annotations

import functools
import glob
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._image import COLOUR_SIDE, channels_within_message, not_channels_message
from ..io import IMAGE_EXTENSIONS, is_zarr_store, read_image, read_zarr
from . import _isolated
from ._folder import outputs_in
from ._samples import load_sample

_GLOB_CHARACTERS = set("*?[")


class InputError(Exception):
    """A problem with one input: reported on one line, the batch goes on."""


@dataclass
class Source:
    """One input: a file or a scikit-image sample, and the stem of its outputs."""

    label: str
    path: Path | None = None
    sample: str | None = None
    name: str = ""


@dataclass
class Prepared:
    """An image ready for the estimator: channels last or none, and its mask."""

    pixels: np.ndarray
    channel_axis: int | None
    mask: np.ndarray | None
    info: dict = field(default_factory=dict)
    #: what was said of the input while it was read, for its report
    warnings: list = field(default_factory=list)
    #: the voxel size along the spatial axes the file records, and its unit
    voxel_size: tuple | None = None
    unit: str | None = None
    #: the channel axis is the one the file's metadata names
    axes_channel: bool = False

    @property
    def n_channels(self):
        return 1 if self.channel_axis is None else self.pixels.shape[-1]

    @property
    def spatial_shape(self):
        return self.pixels.shape if self.channel_axis is None else self.pixels.shape[:-1]


# ------------------------------------------------------------------ discovery


def collect_sources(patterns, samples,
                    option_files=None) -> tuple[list[Source], list[str], list[str]]:
    """Expand files, folders and globs into sources; return them, the errors, and
    notes on inputs given more than once (each is processed once) or passed over.

    ``option_files`` maps the files other options name (``--mask``,
    ``--scribbles``, ...) to those options: a folder or glob that holds one
    does not make it an input (a mask kept next to its images would be
    segmented too); an input named on its own is kept.
    """
    sources, errors, passed_over = [], [], {}
    by_path = {resolved(Path(file)): option for file, option in (option_files or {}).items()}
    by_path.pop(None, None)

    def not_option_files(paths, pattern):
        kept = []
        for found in paths:
            option = by_path.get(resolved(found))
            if option is None:
                kept.append(found)
            else:
                passed_over[resolved(found)] = (
                    f"{found}: the {option} file, not segmented as an input of {pattern}")
        if paths and not kept:
            errors.append(f"{pattern}: holds no image to segment besides the "
                          f"{' and '.join(sorted({by_path[resolved(p)] for p in paths}))} file")
        return kept

    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir() and not is_zarr_store(path):  # a zarr store is one volume
            results = outputs_in(path)  # an earlier run's outputs are not inputs
            found = sorted(
                child for child in path.iterdir()
                if child.is_file() and not child.name.startswith(".")
                and child.suffix.lower() in IMAGE_EXTENSIONS and child not in results
            )
            if not found:
                errors.append(f"{pattern}: folder holds no image files "
                              f"({', '.join(IMAGE_EXTENSIONS)})")
            sources += [Source(label=str(child), path=child)
                        for child in not_option_files(found, pattern)]
        elif path.exists() or not _GLOB_CHARACTERS & set(pattern):
            sources.append(Source(label=pattern, path=path))  # missing files fail on read
        else:
            matches = sorted(glob.glob(pattern, recursive=True))
            results = {p for folder in {Path(m).parent for m in matches} for p in outputs_in(folder)}
            matches = [Path(m) for m in matches if Path(m).is_file() and Path(m) not in results]
            if not matches:
                errors.append(f"{pattern}: no file matches this pattern")
            sources += [Source(label=str(m), path=m) for m in not_option_files(matches, pattern)]
    sources += [Source(label=f"sample {name}", sample=name) for name in samples]
    sources, notes = _once_each(sources)
    _assign_names(sources)
    named = {resolved(source.path) for source in sources if source.path is not None}
    # a file also named on its own is an input: nothing was passed over
    notes = [note for path, note in passed_over.items() if path not in named] + notes
    return sources, errors, notes


def _once_each(sources):
    """The sources without repeats (one file named twice, or by a folder and a
    glob); a note for each repeat. A repeat would be segmented again under
    another name, and weigh twice in a --fit-on fit."""
    kept, seen, notes = [], {}, []
    for source in sources:
        key = ("sample", source.sample) if source.sample else resolved(source.path) or source.path
        if key in seen:
            notes.append(f"{source.label}: the same input as {seen[key]}, processed once")
            continue
        seen[key] = source.label
        kept.append(source)
    return kept, notes


def resolved(path):
    """``path`` made absolute with its links followed; ``None`` when that fails
    (unreadable, or a symlink loop: reading it fails and says so)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def _assign_names(sources):
    """Output stems: the file stem, made unique when two inputs share one.

    Inputs that share a stem get their extension appended when that tells
    them apart (``a_png``, ``a_tif``), and otherwise as many of their
    folders in front as it takes (``left_img``, ``right_img`` for
    ``scans/left/img.png`` and ``scans/right/img.png``). A name depends on
    the inputs, not on their order on the command line, so that running the
    same files again in another order does not write one input's results
    under another's name. An array of a zarr group (``image.zarr/0``, an
    OME-Zarr level) is named with the group (``image_0``), not ``0``.
    """
    stems = [s.sample if s.sample else _stem(s.path) for s in sources]
    names = list(stems)
    for stem in set(stems):
        group = [i for i, other in enumerate(stems) if other == stem]
        if len(group) > 1:
            for i, name in zip(group, _told_apart([sources[i] for i in group], stem)):
                names[i] = name
    # what is still shared (a made-up name that is also a stem, or two
    # inputs alike in every folder): numbered in the order of their paths
    taken = set()
    order = sorted(range(len(sources)), key=lambda i: (names[i] != stems[i], _path_key(sources[i])))
    for i in order:
        unique, counter = names[i], 2
        while unique in taken:
            unique, counter = f"{names[i]}_{counter}", counter + 1
        taken.add(unique)
        sources[i].name = unique


def _stem(path):
    parent = path.parent
    if parent.suffix.lower() == ".zarr" and path.suffix.lower() != ".zarr":
        return f"{parent.stem}_{path.stem}"
    if path.suffix.lower() in (".tif", ".tiff") and path.stem.lower().endswith(".ome"):
        return path.stem[: -len(".ome")]  # OME-TIFF's one extension, .ome.tif
    return path.stem


def _told_apart(group, stem):
    """Names for inputs that share ``stem``: the extension, then folders in front."""
    files = [i for i, source in enumerate(group) if source.path is not None]
    paths = [group[i].path for i in files]
    suffixes = [path.suffix.lstrip(".").lower() for path in paths]
    if len(files) < len(group) or len(set(suffixes)) > 1:  # a sample keeps the stem
        tails = [f"{stem}_{suffix}" if suffix else stem for suffix in suffixes]
    else:
        tails = [stem] * len(files)
    if len(set(tails)) < len(tails):
        # the folders below the root (or drive), nearest first, as many as it takes
        folders = [(resolved(path) or path.absolute()).parent.parts[1:] for path in paths]
        for depth in range(1, max(len(parts) for parts in folders) + 1):
            tried = ["_".join([*parts[-depth:], tail]) for parts, tail in zip(folders, tails)]
            if len(set(tried)) == len(tried):
                tails = tried
                break
    names = [stem] * len(group)
    for i, tail in zip(files, tails):
        names[i] = tail
    return names


def _path_key(source):
    if source.path is None:
        return ("", source.sample or "")
    return (str(resolved(source.path) or source.path.absolute()), "")


# ------------------------------------------------------------------ reading


def _read_file(path, max_pixels, limits):
    """:func:`read_image`, in a child process under ``limits`` (none: in this one)."""
    reader = functools.partial(read_image, **({} if max_pixels is None else {"max_pixels": max_pixels}))
    if limits is None or not limits.active:
        return reader(path)
    return _isolated.read(path, reader, limits)


def load_source(source: Source, max_pixels=None, limits=None) -> np.ndarray:
    """The input's pixels; ``max_pixels`` (``--max-pixels``) bounds files and stores,
    ``limits`` the time and memory for decoding a file."""
    if source.sample is not None:
        return np.asarray(load_sample(source.sample))
    if is_zarr_store(source.path):
        limit = {} if max_pixels is None else {"max_pixels": max_pixels}
        return read_zarr(source.path, **limit)  # lazy: read chunk by chunk when labelled
    return _read_file(source.path, max_pixels, limits)


def read_mask(path, max_pixels=None, limits=None) -> np.ndarray:
    mask = _read_file(path, max_pixels, limits)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        mask = mask[..., :3].any(axis=-1) if mask.shape[-1] == 3 else (
            mask[..., :3].any(axis=-1) & (mask[..., 3] > 0)
        )
    return np.asarray(mask) != 0


def read_scribbles(path, max_pixels=None, limits=None) -> np.ndarray:
    """A label image: one integer per pixel (checked against each input by the estimator)."""
    scribbles = np.asarray(_read_file(path, max_pixels, limits))
    if scribbles.ndim == 3 and scribbles.shape[-1] in (3, 4) and scribbles.dtype == np.uint8:
        raise ValueError(
            f"{path} is a colour image (shape {scribbles.shape}); scribbles are a label "
            "image with one integer per pixel (0 = unknown, k = class k), as napari "
            "saves a Labels layer"
        )
    return scribbles


def read_prior(path, max_pixels=None, limits=None) -> np.ndarray:
    """``--prior`` maps as the file holds them (see :func:`prior_for`)."""
    return np.asarray(_read_file(path, max_pixels, limits))


def prior_for(prior, spatial_shape) -> np.ndarray:
    """``--prior`` maps laid out for an input: the class axis last."""
    if prior.ndim == len(spatial_shape) + 1:
        if prior.shape[:-1] == spatial_shape:
            return prior
        if prior.shape[1:] == spatial_shape:
            return np.moveaxis(prior, 0, -1)
    raise ValueError(
        f"--prior has shape {prior.shape} but the input's spatial shape is "
        f"{spatial_shape}; give one map per class, the class axis first "
        f"(K, {', '.join(map(str, spatial_shape))}) or last"
    )


def prepare(image, channel_axis_option, mask, n_sizes=None, file_axes=None) -> Prepared:
    """Put channels last (or none) as ``--channel-axis`` says; alpha becomes a mask.

    ``n_sizes``: how many voxel sizes ``--spacing`` gave. As many as the image
    has axes say they are all space: no warning that one looks like channels.
    ``file_axes``: the axis letters the file's metadata gives. Naming every axis
    as space or time (``ZYX``) says so too; naming the channel axis taken
    (``C``) leaves it unquestioned.
    """
    named = file_axes is not None and "Q" not in file_axes
    all_space = n_sizes == image.ndim or (named and not set(file_axes) & set("CS"))
    from_file = (named and isinstance(channel_axis_option, int)
                 and -len(file_axes) <= channel_axis_option < len(file_axes)
                 and file_axes[channel_axis_option] == "C")
    pixels, axis, alpha = _channels_last(image, channel_axis_option, all_space=all_space,
                                         from_file=from_file)
    spatial_shape = pixels.shape if axis is None else pixels.shape[:-1]
    if len(spatial_shape) < 1 or 0 in spatial_shape:
        raise InputError(f"no pixels left after taking channels out of shape {image.shape}")
    combined = None
    if alpha is not None:
        combined = alpha > 0
        if not combined.any():
            raise InputError(
                "every pixel is transparent (alpha 0): there is nothing to segment"
            )
    if mask is not None:
        if mask.shape != spatial_shape:
            raise InputError(
                f"--mask has shape {mask.shape} but the image's spatial shape is "
                f"{spatial_shape}; give a --mask of the image's size (one --mask applies "
                "to every input: segment inputs of other sizes in runs of their own)"
            )
        combined = mask if combined is None else combined & mask
    info = {
        "shape": list(image.shape),
        "dtype": str(image.dtype),
        "channel_axis": None if axis is None else (
            channel_axis_option if isinstance(channel_axis_option, int) else image.ndim - 1
        ),
        "alpha_channel_as_mask": alpha is not None,
    }
    return Prepared(pixels=pixels, channel_axis=axis, mask=combined, info=info)


def _warn_unless_alpha(alpha, shape):
    """Warn when a last channel read as alpha holds more than transparent and opaque
    pixels (a second channel of a microscope, say): the share at 0 or full scale."""
    if alpha.dtype.kind == "b" or alpha.size == 0:
        return  # on or off: alpha-like whatever it holds
    if alpha.dtype.kind in "iu":
        full = np.iinfo(alpha.dtype).max
    else:  # float alpha: 0-1, or a grey level's scale
        top = float(np.max(alpha, initial=0.0, where=np.isfinite(alpha)))
        full = next((scale for scale in (1.0, 255.0, 65535.0) if top <= scale), top)
    clear_or_opaque = np.count_nonzero((alpha <= 0) | (alpha == full)) / alpha.size
    if clear_or_opaque < 0.5:
        left_out = np.count_nonzero(~(alpha > 0)) / alpha.size
        warnings.warn(
            f"The image has shape {shape}: its last channel is read as alpha (pixels "
            f"where it is 0 or less get label 0: {_share(left_out)} of them here), but "
            f"only {_share(clear_or_opaque)} of it is transparent or opaque. If it is a "
            "channel of its own, pass --channel-axis -1 to segment every channel.",
            UserWarning, stacklevel=3,
        )


def _share(fraction) -> str:
    """A share as a percentage that says "0%" only of none and "100%" only of all."""
    if 0 < fraction < 0.005:
        return "under 1%"
    if 0.995 <= fraction < 1:
        return "over 99%"
    return f"{fraction:.0%}"


def _warn_if_channels_within(shape):
    """Warn when one short axis among long ones (a ``(Z, C, Y, X)`` hyperstack,
    ``(Z, Y, X, C)``, ``(C, Y, X)``) is about to be segmented as space."""
    message = channels_within_message(shape, "The image", "--channel-axis {axis}")
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=3)


def _channels_last(image, channel_axis_option, all_space=False, from_file=False):
    """``(pixels, channel_axis, alpha)``: channels last or none, alpha split off in 'auto'.

    ``all_space``: the user gave a voxel size for every axis (or the file named
    them space), so an axis that looks like channels is not warned about.
    ``from_file``: the file's metadata names the channel axis taken.
    """
    alpha = None
    if channel_axis_option == "none":
        pixels, axis = image, None
    elif channel_axis_option == "auto":
        colour = (image.ndim == 3 and image.shape[-1] in (2, 3, 4)) or (
            image.ndim == 4 and image.shape[-1] in (3, 4)
        )
        pixels, axis = (image, -1) if colour else (image, None)
        if not colour and not all_space and image.ndim == 3 and image.shape[0] in (3, 4) and (
            min(image.shape[1:]) >= COLOUR_SIDE
        ):
            warnings.warn(
                f"The image has shape {image.shape}: its first axis of {image.shape[0]} "
                "looks like colour channels (as a channel-first TIFF stores them), but "
                f"it is segmented as a volume of {image.shape[0]} slices. Pass "
                "--channel-axis 0 for a colour image; for a volume, ignore this warning.",
                UserWarning, stacklevel=2,
            )
        elif not colour and not all_space:
            _warn_if_channels_within(image.shape)
        if colour and image.shape[-1] in (2, 4):
            pixels, alpha = image[..., :-1], image[..., -1]
            _warn_unless_alpha(alpha, image.shape)
    else:
        if not -image.ndim <= channel_axis_option < image.ndim:
            raise InputError(
                f"--channel-axis {channel_axis_option} is out of range for an image of "
                f"shape {image.shape}; use an axis in [{-image.ndim}, {image.ndim - 1}] "
                "or 'none'"
            )
        # judged on the file's own axes: the estimator only sees them moved
        # (its warning of the moved array is not shown, see _main)
        message = None if from_file else not_channels_message(
            image.shape, channel_axis_option, "The image")
        if message is not None:
            warnings.warn(message, UserWarning, stacklevel=2)
        pixels, axis = np.moveaxis(image, channel_axis_option, -1), -1
    if axis is not None and pixels.shape[-1] == 1:
        pixels, axis = pixels[..., 0], None
    return pixels, axis, alpha
