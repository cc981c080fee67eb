"""Image files in and out, and safe model files.

Images are read with :mod:`tifffile` (TIFF, including 16-bit and
multi-page/3-D stacks) or :mod:`imageio` (everything else). Every writer goes
through a temporary file in the destination folder that is renamed into place
only once complete, so an interrupted run never leaves a half-written output
under the final name.

Models are saved as ``.npz`` files holding only float64 arrays and one JSON
string, written and read with ``allow_pickle=False``: loading a model file
from an untrusted source can fail, but cannot run code. :func:`load_model`
checks every array before it rebuilds a fitted :class:`GMMSegmenter`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import re
import secrets
import stat
import threading
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._version import __version__

if TYPE_CHECKING:
    from .estimator import GMMSegmenter

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "MAX_LAZY_PIXELS",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "read_image",
    "read_tiff_axes",
    "TiffAxes",
    "is_zarr_store",
    "read_zarr",
    "write_tiff",
    "write_png",
    "write_json",
    "save_model",
    "load_model",
]

#: File name endings treated as images when a folder is given.
IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm",
    ".ppm", ".pbm", ".pnm", ".npy",
)
_TIFF_EXTENSIONS = (".tif", ".tiff")

#: Tag and version stored in every model file.
MODEL_FORMAT = "gmm-segmenter-model"
MODEL_FORMAT_VERSION = 1

_METADATA_KEY = "metadata"
_FITTED_NAME = re.compile(r"^[a-z][a-z0-9_]*_$")


def _reserved_fitted() -> set:
    """Fitted attributes that the arrays (or the lists in the metadata) hold;
    beta_ is the model's and is written first, on its own."""
    from ._model import MODEL_ARRAYS

    return {name + "_" for name in MODEL_ARRAYS} | {
        "n_components_", "n_features_in_", "precisions_", "precisions_cholesky_",
        "n_components_candidates_", "bic_curve_", "lower_bounds_", "beta_", "model_",
    }
# A model is a handful of small arrays; anything much bigger is not one of ours
# and is refused before it is decompressed into memory.
_MAX_MODEL_BYTES = 256 * 1024 * 1024


# ------------------------------------------------------------------ images


def is_zarr_store(path) -> bool:
    """Whether ``path`` is a zarr array store (a folder with zarr metadata)."""
    path = Path(path)
    return path.is_dir() and any(
        (path / name).is_file() for name in ("zarr.json", ".zarray")
    )


#: Default limit of :func:`read_image`: values (pixels times channels) an image
#: file may declare. Checked from the header before anything is decoded.
MAX_PIXELS = 2**31
#: Default limit of :func:`read_zarr`: volumes are read lazily, chunk by chunk,
#: so they may be larger than memory; the limit keeps the task graph bounded.
MAX_LAZY_PIXELS = 2**40
# How much larger than the file the decoded data can be, by TIFF compression:
# none, PackBits (128 bytes from 2), LZW (12-bit codes of up to 4096 bytes),
# deflate (zlib's limit is 1032:1). Others (JPEG, zstd, ...) are not bounded here.
_TIFF_MAX_RATIO = {1: 1, 32773: 64, 5: 4096, 8: 1032, 32946: 1032}
_MAX_TIFF_PAGES = 1_000_000
_reading = threading.local()


class _CaptureWhileReading(logging.Filter):
    """Keep tifffile's log records of this thread's reads instead of printing them."""

    def filter(self, record):
        captured = getattr(_reading, "messages", None)
        if captured is None:
            return True
        if len(captured) < 20:
            captured.append(record.getMessage())
        return False


logging.getLogger("tifffile").addFilter(_CaptureWhileReading())


@contextlib.contextmanager
def _captured_log():
    _reading.messages = []
    try:
        yield _reading.messages
    finally:
        _reading.messages = None


#: A zarr group's arrays named in the message that asks for one of them, in
#: order of name (levels 0, 1, … first), of the first ones the store lists.
_LISTED_ARRAYS = 4
_LOOKED_AT_ARRAYS = 64


def _zarr_group_arrays(path) -> str | None:
    """``None`` unless ``path`` is a zarr group; then its first arrays, as
    ``": NAME/0 (shape …), …"`` (an OME-Zarr image's levels, full resolution
    first), or ``" (it holds none)"``. Only metadata are read."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        found = [
            (name, tuple(array.shape))
            for name, array in itertools.islice(group.arrays(), _LOOKED_AT_ARRAYS)
        ]
    except Exception:
        return None
    if not found:
        return " (it holds none)"
    # the store lists them in no set order
    found.sort(key=lambda item: (not item[0].isdigit(), int(item[0]) if item[0].isdigit()
                                 else 0, item[0]))
    listed = [f"{Path(path) / name} (shape {shape})" for name, shape in found]
    more = ", …" if len(listed) > _LISTED_ARRAYS else ""
    return ": " + ", ".join(listed[:_LISTED_ARRAYS]) + more


def read_zarr(path, *, max_pixels=MAX_LAZY_PIXELS):
    """A zarr array store as a lazy dask array (nothing is read yet).

    The store's metadata are checked before any chunk is read: its shape
    against ``max_pixels``, its chunk sizes (at least 1), its dtype (bool,
    integers or floats) and its codecs (no ``pickle``, which could run code
    with zarr 2). A store of very many small chunks (over 10 000) is read
    several chunks per dask block, so the task graph stays small.

    Raises ``ValueError`` naming the store when dask or zarr is missing, the
    store holds no array or a refused one, or it is larger than
    ``max_pixels``; and, when the array is computed, for a chunk that cannot
    be decoded (damaged, or not what the metadata say).
    """
    try:
        import dask.array as da
        import zarr
    except ImportError as error:
        raise ValueError(
            f"{path}: reading a zarr volume needs dask and zarr ({error}); "
            "pip install 'gmm-segmenter[dask]'"
        ) from None
    _check_zarr_codecs(path)
    try:
        array = zarr.open_array(str(path), mode="r")
        shape, chunks, dtype = tuple(array.shape), tuple(array.chunks), np.dtype(array.dtype)
        shards = tuple(getattr(array, "shards", None) or chunks)  # zarr 3: chunks of chunks
    except Exception as error:
        group = _zarr_group_arrays(path)
        if group is not None:
            raise ValueError(
                f"{path}: is a zarr group, not an array; give one of its arrays as the "
                f"input{group}"
            ) from None
        raise ValueError(f"{path}: cannot be read as a zarr array ({_reason(error)})") from error
    if dtype.kind not in "biuf":
        raise ValueError(
            f"{path}: the zarr array holds values of dtype {dtype}, not pixel values "
            "(expected bool, integers or floats)"
        )
    for what, sizes in (("chunks", chunks), ("shards", shards)):
        if len(sizes) != len(shape) or any(int(c) < 1 for c in sizes):
            raise ValueError(
                f"{path}: the zarr array of shape {shape} declares {what} of shape "
                f"{sizes}; every one needs a size of at least 1 along each axis"
            )
    _check_pixels(path, shape, dtype, max_pixels, in_memory=False)
    if not shape or 0 in shape:
        raise ValueError(f"{path}: the zarr array of shape {shape} holds no pixels")
    _check_chunk_count(path, shape, chunks, max_pixels)
    try:
        missing = int(array.nchunks) - int(array.nchunks_initialized)
    except Exception:  # a store that cannot list its chunks: reading them will say
        missing = 0
    if missing:
        warnings.warn(
            f"{path}: {missing} of {array.nchunks} chunks are not stored; zarr reads "
            f"them as the fill value {_fill_value(array)!r} (expected where "
            "a region holds only that value, which zarr does not store; otherwise chunks "
            "are lost)",
            UserWarning, stacklevel=2,
        )
    from dask.base import tokenize

    blocks = _dask_chunks(shape, chunks, dtype)
    # named from plain values: tokenizing the zarr array itself walks its
    # attributes, which a hostile store nests deep enough to overflow the stack
    name = "read-zarr-" + tokenize(str(Path(path).resolve()), shape, dtype.str, chunks, blocks)
    return da.from_array(
        _ZarrChunks(array, path, shape, dtype), chunks=blocks, name=name,
        meta=np.empty((0,) * len(shape), dtype),
    )


# zarr and dask spend about as long on one chunk (stored or not) as on
# thousands of values (measured: 1-2 ms per chunk to read, 4-8 ms to label),
# so the chunks count against the limit too: a store of 2 KB can declare a
# million chunks of one value each, which takes minutes to walk. A few hundred
# chunks are allowed under any limit.
_VALUES_PER_CHUNK_READ = 4096
_MIN_CHUNKS_ALLOWED = 256


def _check_chunk_count(path, shape, chunks, max_pixels):
    n_chunks = math.prod(-(-int(n) // int(c)) for n, c in zip(shape, chunks))
    allowed = max(_MIN_CHUNKS_ALLOWED, max_pixels // _VALUES_PER_CHUNK_READ)
    if n_chunks > allowed:
        raise ValueError(
            f"{path}: the zarr array of shape {shape} is split into {n_chunks:,} chunks of "
            f"shape {chunks}; with the limit of {max_pixels:,} values it may have at most "
            f"{allowed:,}, because zarr spends as long on a chunk as on about "
            f"{_VALUES_PER_CHUNK_READ:,} values. If the store is genuine, raise the limit "
            "(max_pixels in Python, --max-pixels in gmm-segment) or rewrite it in larger chunks"
        )


class _ZarrChunks:
    """A zarr array for dask: a chunk that zarr cannot decode is a ``ValueError``
    naming the store, whatever zarr or its codecs raised."""

    def __init__(self, array, path, shape, dtype):
        self.array, self.path = array, path
        self.shape, self.dtype, self.ndim = shape, dtype, len(shape)
        self.shards = _ShardIndexes.of(array, path)

    def __getitem__(self, selection):
        try:
            if self.shards is not None:
                self.shards.check(selection, self.shape)
            block = np.asarray(self.array[selection])
        except ValueError as error:
            if str(error).startswith(f"{self.path}:"):
                raise  # the shard check's own message
            raise ValueError(
                f"{self.path}: a chunk of the zarr array cannot be read ({_reason(error)})"
            ) from error
        except Exception as error:  # zlib.error, RuntimeError, checksum ValueError, ...
            raise ValueError(
                f"{self.path}: a chunk of the zarr array cannot be read ({_reason(error)})"
            ) from error
        if block.dtype != self.dtype:  # what the codecs gave is not what the metadata say
            raise ValueError(
                f"{self.path}: a chunk of the zarr array decodes to dtype {block.dtype}, "
                f"not the {self.dtype} of its metadata"
            )
        return block


class _ShardIndexes:
    """The indexes of a sharded zarr array (format 3), each checked against its
    shard's file before zarr reads the shard: zarr asks for a buffer of the
    size an index claims (up to 2**64 bytes) before it finds the file shorter."""

    _EMPTY = 2**64 - 1  # offset and size of a chunk that is not stored

    def __init__(self, path, shard_shape, n_chunks, byte_order, index_bytes, at_end, key):
        self.path, self.shard_shape, self.n_chunks = Path(path), shard_shape, n_chunks
        self.byte_order, self.index_bytes, self.at_end, self.key = (
            byte_order, index_bytes, at_end, key)
        self.checked = set()

    @classmethod
    def of(cls, array, path):
        """The indexes of ``array`` when it is sharded on a local folder, else ``None``."""
        try:
            metadata = array.metadata
            sharding = [c for c in getattr(metadata, "codecs", ()) if
                        type(c).__name__ == "ShardingCodec"]
            if len(sharding) != 1 or not Path(path, "zarr.json").is_file():
                return None
            sharding = sharding[0]
            index_codecs = [type(c).__name__ for c in sharding.index_codecs]
            if index_codecs not in (["BytesCodec"], ["BytesCodec", "Crc32cCodec"]):
                return None  # an index encoded otherwise is left to zarr
            shard_shape = tuple(int(n) for n in metadata.chunk_grid.chunk_shape)
            n_chunks = math.prod(
                -(-s // int(c)) for s, c in zip(shard_shape, sharding.chunk_shape)
            )
            little = str(getattr(sharding.index_codecs[0].endian, "value", "little")) == "little"
            return cls(path, shard_shape, n_chunks, "<" if little else ">",
                       16 * n_chunks + 4 * (len(index_codecs) == 2),
                       str(getattr(sharding.index_location, "value", "end")) == "end",
                       metadata.chunk_key_encoding.encode_chunk_key)
        except Exception:  # another zarr than this code knows: zarr's own checks apply
            return None

    def check(self, selection, shape):
        """Refuse a shard under ``selection`` whose index points beyond its file."""
        if not isinstance(selection, tuple) or not all(isinstance(s, slice) for s in selection):
            return
        ranges = []
        for part, n, shard in zip(selection, shape, self.shard_shape):
            start, stop, _ = part.indices(n)
            ranges.append(range(start // shard, (max(stop, start + 1) - 1) // shard + 1))
        for coordinates in itertools.product(*ranges):
            key = self.key(coordinates)
            if key not in self.checked:
                self._check_shard(key)
                self.checked.add(key)

    def _check_shard(self, key):
        shard = self.path / key
        try:
            size = shard.stat().st_size
        except OSError:
            return  # not stored: the fill value
        if size < self.index_bytes:
            return  # zarr finds the index missing
        try:
            with open(shard, "rb") as stream:
                stream.seek(size - self.index_bytes if self.at_end else 0)
                index = np.frombuffer(stream.read(16 * self.n_chunks), f"{self.byte_order}u8")
        except (OSError, ValueError):
            return  # zarr reports a shard it cannot read
        offsets, sizes = index[0::2], index[1::2]
        stored = ~((offsets == self._EMPTY) & (sizes == self._EMPTY))
        beyond = stored & ((offsets > size) | (sizes > size - np.minimum(offsets, size)))
        if beyond.any():
            first = int(np.flatnonzero(beyond)[0])
            raise ValueError(
                f"{self.path}: shard {key} declares a chunk of {int(sizes[first]):,} bytes at "
                f"byte {int(offsets[first]):,}, beyond the {size:,} bytes of its file"
            )


def _fill_value(array):
    try:
        return np.asarray(array.fill_value).item()
    except Exception:  # an odd fill value is reported as zarr gives it
        return array.fill_value


# Codecs that decode to Python objects by unpickling: reading a chunk could
# run code (zarr 2 applies any codec the metadata name).
_REFUSED_CODECS = ("pickle",)


def _check_zarr_codecs(path):
    """Refuse, from the metadata files, a store whose codecs include pickle."""
    for name in (".zarray", "zarr.json"):
        metadata = Path(path) / name
        try:
            if not metadata.is_file() or metadata.stat().st_size > 1_000_000:
                continue
            document = json.loads(metadata.read_bytes())
        except (OSError, ValueError, RecursionError):
            continue  # zarr says what is wrong with the metadata
        named = []

        def collect(node, depth=0):
            if depth > 50:
                return
            if isinstance(node, dict):
                for key in ("id", "name"):
                    if isinstance(node.get(key), str):
                        named.append(node[key])
                for value in node.values():
                    collect(value, depth + 1)
            elif isinstance(node, list):
                for value in node:
                    collect(value, depth + 1)

        if isinstance(document, dict):
            collect([document.get(key) for key in ("compressor", "filters", "codecs")])
        refused = sorted({codec for codec in named if codec.lower().endswith(_REFUSED_CODECS)})
        if refused:
            raise ValueError(
                f"{path}: the zarr array uses the codec {', '.join(refused)}, which unpickles "
                "Python objects and could run code; it is never read"
            )


# Up to this many chunks, dask reads a store chunk by chunk (and the labels are
# written in the same chunks); beyond, a task per chunk makes the graph itself slow.
_MAX_ZARR_BLOCKS = 10_000


def _dask_chunks(shape, chunks, dtype):
    """The store's chunks; for a store of very many, whole chunks grown to about 4 MiB."""
    blocks = [min(max(1, int(c)), n) for c, n in zip(chunks, shape)]
    if math.prod(-(-n // c) for n, c in zip(shape, blocks)) <= _MAX_ZARR_BLOCKS:
        return tuple(blocks)
    target = 4 * 1024 * 1024 // max(dtype.itemsize, 1)
    for axis in range(len(shape) - 1, -1, -1):  # the last axis is contiguous
        while math.prod(blocks) * 2 <= target and blocks[axis] < shape[axis]:
            blocks[axis] = min(blocks[axis] * 2, shape[axis])
    return tuple(blocks)


def _memory_headroom():
    """Bytes this process may still allocate: free memory, and any address-space limit."""
    from ._image import available_memory

    available = available_memory()
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as stream:
                used = int(stream.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            available = soft - used if available is None else min(available, soft - used)
    except (ImportError, OSError, ValueError, AttributeError):
        pass
    return available


def _check_pixels(path, shape, dtype, max_pixels, in_memory=True, shown=None):
    """Refuse, from the header, an image larger than ``max_pixels`` or than memory.

    ``shown`` is the shape the messages give (default ``shape``)."""
    from ._image import format_bytes

    n_values = math.prod(int(n) for n in shape)
    shown = tuple(int(n) for n in (shape if shown is None else shown))
    if n_values > max_pixels:
        raise ValueError(
            f"{path}: declares an image of shape {shown} ({n_values:,} values), "
            f"more than the limit of {max_pixels:,}; if the file is genuine, raise the "
            "limit (max_pixels in Python, --max-pixels in gmm-segment)"
        )
    n_bytes = n_values * np.dtype(dtype).itemsize
    available = _memory_headroom() if in_memory else None
    if available is not None and n_bytes > available:
        raise ValueError(
            f"{path}: declares an image of shape {shown} that needs "
            f"{format_bytes(n_bytes)} of memory, but only {format_bytes(max(available, 0))} "
            "is available (the free memory, or less under an address-space limit such "
            "as gmm-segment --read-memory sets)"
        )


def _as_read(header) -> tuple:
    """A Pillow header's ``(frames, height, width, bands)`` as the array will be
    shaped: one frame or one band adds no axis."""
    frames, height, width, bands = (int(n) for n in header)
    return ((frames,) if frames > 1 else ()) + (height, width) + ((bands,) if bands > 1 else ())


def _check_regular_file(path) -> int:
    """The size of ``path``; folders, FIFOs, devices and sockets are refused unopened."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror})") from None
    if stat.S_ISDIR(status.st_mode):
        raise ValueError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(
            f"{path}: is not a regular file (a pipe, device or socket), which could "
            "block or never end; give an image file"
        )
    return status.st_size


def _read_tiff(path, max_pixels, file_size):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        # Counting the pages first walks the chain of pages once and stops at a
        # loop; finding the series on an unwalked chain can go round it forever.
        n_pages = len(tif.pages)
        if n_pages > _MAX_TIFF_PAGES:
            raise ValueError(f"holds {n_pages} pages, more than any image stack here")
        series = tif.series
        if not series:
            raise ValueError("holds no image")
        first = series[0]
        _check_pixels(path, first.shape, first.dtype, max_pixels)
        # every page's, not only the first's: a later page's count is allocated
        # as claimed when it is read (2.5 GB for a damaged 1.5 kB ImageJ stack)
        for page in (first.keyframe, *first.pages):
            counts = () if page is None else page.databytecounts
            if any(int(count) > file_size for count in counts):
                raise ValueError(
                    f"declares more data than the file of {file_size:,} bytes holds")
        compression = first.keyframe.compression
        ratio = _TIFF_MAX_RATIO.get(int(compression))
        n_bytes = math.prod(first.shape) * np.dtype(first.dtype).itemsize
        if ratio is not None and n_bytes > file_size * ratio + 65536:
            raise ValueError(
                f"declares {n_bytes:,} bytes of {compression.name} data in a file of "
                f"{file_size:,} bytes, more than that compression can hold"
            )
        image = first.asarray()
        if len(series) > 1:
            warnings.warn(
                f"{path}: holds {len(series)} image series; only the first, of shape "
                f"{tuple(first.shape)}, is read",
                UserWarning, stacklevel=4,
            )
        return image


@dataclass(frozen=True)
class TiffAxes:
    """What a TIFF file says about its axes.

    ``axes`` are tifffile's letters, one per axis of the array
    :func:`read_image` returns (``'ZCYX'`` for an ImageJ hyperstack, ``'YXS'``
    for RGB, ``'Q'`` for an axis of unknown meaning); ``sizes`` the size of
    a pixel along the axes the file calibrates (``'X'``, ``'Y'`` from its
    resolution, ``'Z'`` from ImageJ's or OME's metadata), in ``unit``
    (``None`` when the file names none).
    """

    axes: str
    sizes: dict = field(default_factory=dict)
    unit: str | None = None

    @property
    def channel_axis(self) -> int | None:
        """The axis the file names as channels, when it holds more than one."""
        return self.axes.index("C") if self.axes.count("C") == 1 else None

    def spacing(self, channel_axis=None) -> tuple | None:
        """The voxel size along the spatial axes (every axis but ``channel_axis``),
        when the file calibrates each of them (never colour samples ``S`` taken
        as space)."""
        ndim = len(self.axes)
        skip = set() if channel_axis is None else {channel_axis % ndim}
        letters = [a for i, a in enumerate(self.axes) if i not in skip]
        if not letters or any(letter not in self.sizes for letter in letters):
            return None
        return tuple(float(self.sizes[letter]) for letter in letters)


#: Lengths in micrometres, to put units of length into one.
MICROMETRES = {"nm": 1e-3, "µm": 1.0, "\u03bcm": 1.0, "um": 1.0, "micron": 1.0, "mm": 1e3,
               "cm": 1e4, "m": 1e6, "inch": 25400.0}


def read_tiff_axes(path) -> TiffAxes | None:
    """The axes and pixel sizes a TIFF file records; ``None`` for other files, or
    when the file cannot tell (metadata is optional: this never raises).

    ImageJ files give ``unit``, ``spacing`` (Z) and X, Y from the resolution
    tags; OME-TIFF files their ``PhysicalSize`` of each axis. Other TIFFs give
    their axes only: their resolution is a printer's dots per inch. A field
    that cannot be read is left out (the others stay); a unit that is not a
    short name (letters, digits, ``µ``, ``._-``) is ``None``.
    """
    path = Path(path)
    if path.suffix.lower() not in _TIFF_EXTENSIONS:
        return None
    try:
        with _captured_log():
            return _tiff_axes(path)
    except Exception:  # the pixels were read (or failed) on their own: no metadata
        return None


def _tiff_axes(path) -> TiffAxes | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) > _MAX_TIFF_PAGES or not tif.series:  # walks the chain once
            return None
        series = tif.series[0]
        axes = str(series.axes)
        page = series.keyframe
        sizes, unit = {}, None
        # each field on its own: one that cannot be read leaves the others
        # (a plain TIFF's resolution is a printer's dots per inch, no voxel size)
        with contextlib.suppress(Exception):
            if tif.is_ome:
                sizes, unit = _ome_sizes(tifffile.xml2dict(tif.ome_metadata))
            elif tif.is_imagej:
                sizes, unit = _imagej_sizes(tif.imagej_metadata or {}, page)
        sizes = {a: v for a, v in sizes.items() if math.isfinite(v) and v > 0 and a in axes}
        return TiffAxes(axes=axes, sizes=sizes, unit=_unit(unit))


def _ome_sizes(document) -> tuple[dict, str | None]:
    """An OME-TIFF's ``PhysicalSize`` of X, Y, Z, in one unit."""
    pixels = document["OME"]["Image"]
    pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
    found = {}
    for letter in "XYZ":
        with contextlib.suppress(TypeError, ValueError):
            size = float(pixels.get(f"PhysicalSize{letter}") or 0)
            if size:
                found[letter] = (size, str(pixels.get(f"PhysicalSize{letter}Unit", "µm")))
    units = {u for _, u in found.values()}
    if len(units) == 1:
        return {a: v for a, (v, _) in found.items()}, units.pop()
    if units <= set(MICROMETRES):
        return {a: v * MICROMETRES[u] for a, (v, u) in found.items()}, "µm"
    return {}, None


def _imagej_sizes(imagej, page) -> tuple[dict, str | None]:
    """An ImageJ file's pixel width and height (its resolution) and ``spacing``."""
    sizes = {}
    unit = imagej.get("unit")
    with contextlib.suppress(TypeError, ValueError, ZeroDivisionError):
        spacing = float(imagej.get("spacing") or 0)
        if spacing:
            sizes["Z"] = spacing
    with contextlib.suppress(TypeError, ValueError, ZeroDivisionError):
        x, y = page.get_resolution()
        # a resolution of 1 without a unit or a spacing is no calibration
        if x > 0 and y > 0 and (unit or (x, y) != (1, 1) or "Z" in sizes):
            sizes.update(X=1.0 / x, Y=1.0 / y)
    return sizes, unit


def _unit(unit) -> str | None:
    """``unit`` when it is a short name of a unit (letters, µ, digits, ``._-``); else None,
    so that no text of a file's metadata goes into another file's description."""
    if isinstance(unit, str) and re.fullmatch(r"[A-Za-z\u00b5\u03bc][A-Za-z0-9\u00b5\u03bc ._-]{0,31}",
                                              unit):
        return unit
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png_chunks(path, file_size):
    """Refuse a PNG chunk that claims more bytes than the file holds (Pillow would
    allocate the claim, up to 2 GiB, before finding out)."""
    with open(path, "rb") as stream:
        if stream.read(8) != _PNG_SIGNATURE:
            return
        position = 8
        while position + 8 <= file_size:
            stream.seek(position)
            header = stream.read(8)
            length = int.from_bytes(header[:4], "big")
            if length > file_size - position - 8:
                raise ValueError(
                    f"a PNG chunk at byte {position} claims {length:,} bytes, more than "
                    f"the file of {file_size:,} bytes holds"
                )
            if header[4:8] == b"IEND":
                return
            position += 12 + length


def _read_npy(path, max_pixels):
    """A NumPy ``.npy`` array, its header checked first; pickled objects are refused."""
    def invalid(problem):
        return ValueError(f"{path}: {problem}")

    with open(path, "rb") as stream:
        shape, dtype = _npy_header(stream, "the array", path.stat().st_size, invalid)
        if dtype.kind not in "biuf":
            raise invalid(f"holds {dtype} values; an image holds real numbers")
        _check_pixels(path, shape, dtype, max_pixels)
        stream.seek(0)
        return np.lib.format.read_array(stream, allow_pickle=False)


def _read_pillow(path, max_pixels, file_size):
    import imageio.v3 as iio
    from PIL import Image

    _check_png_chunks(path, file_size)
    with _pillow_limit(max_pixels):
        with Image.open(path) as opened:  # reads the header only
            width, height = opened.size
            bands = len(opened.getbands())
            frames = int(getattr(opened, "n_frames", 1) or 1)
            itemsize = (
                2 if opened.mode.startswith("I;16") else (4 if opened.mode in ("F", "I") else 1)
            )
        _check_pixels(path, (frames, height, width, bands), f"u{itemsize}", max_pixels,
                      shown=_as_read((frames, height, width, bands)))
        # one frame is one image, also where imageio gives a stack (GIF)
        return iio.imread(path, plugin="pillow", index=0 if frames == 1 else None)


_pillow_lock = threading.Lock()
_pillow_readers = 0
_pillow_own_limit = None


@contextlib.contextmanager
def _pillow_limit(max_pixels):
    """Pillow's own size limit (about 179 million pixels, against decompression
    bombs, checked before ``max_pixels`` is) raised to ``max_pixels`` while
    this module reads, and put back when the last read ends: other readers
    in the process keep Pillow's guard."""
    from PIL import Image

    global _pillow_readers, _pillow_own_limit
    with _pillow_lock:
        if _pillow_readers == 0:
            _pillow_own_limit = Image.MAX_IMAGE_PIXELS
        _pillow_readers += 1
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        with _pillow_lock:
            _pillow_readers -= 1
            if _pillow_readers == 0:
                Image.MAX_IMAGE_PIXELS = _pillow_own_limit


def read_image(path, *, max_pixels=MAX_PIXELS) -> np.ndarray:
    """Read an image file into an array, as stored (no conversion).

    Parameters
    ----------
    path : str or path-like
        A TIFF (read with tifffile: multi-page files give a stack, 16- and
        32-bit data keep their dtype), a NumPy ``.npy`` array (no pickled
        objects), or any format Pillow reads (PNG, JPEG, BMP, GIF, WebP, PNM,
        ...), through imageio.
    max_pixels : int, default=2**31
        Largest number of values (pixels times channels) the file may
        declare. The header is checked before anything is decoded, together
        with the memory the image needs and, for TIFF, whether the file is
        large enough to hold it.

    Returns
    -------
    image : (M, N[, P][, C]) ndarray
        Real-valued pixels.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be decoded as an image, declares more than
        ``max_pixels`` values or more than memory holds, or is not a regular
        file (a folder, pipe or device); the message names the file.

    Warns
    -----
    UserWarning
        If a TIFF holds more than one image series: only the first is read.

    Notes
    -----
    tifffile's log messages about a damaged file are kept, not printed; the
    first one becomes part of the error when the read fails without a reason.
    """
    path = Path(path)
    file_size = _check_regular_file(path)
    with _captured_log() as messages:
        try:
            if path.suffix.lower() in _TIFF_EXTENSIONS:
                image = _read_tiff(path, max_pixels, file_size)
            elif path.suffix.lower() == ".npy":
                image = _read_npy(path, max_pixels)
            else:
                image = _read_pillow(path, max_pixels, file_size)
        except ValueError as error:
            if str(error).startswith(f"{path}:"):
                raise
            raise ValueError(f"{path}: cannot be read as an image ({_reason(error)})") from error
        except Exception as error:  # decoders raise anything from OSError to SyntaxError
            reason = _reason(error)
            if messages and reason == type(error).__name__:
                reason = f"{reason}; {messages[0]}"
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                reason += ("; the formats read are TIFF, NumPy .npy and those Pillow "
                           "knows, such as PNG, JPEG, BMP, GIF, WebP and PNM")
            raise ValueError(f"{path}: cannot be read as an image ({reason})") from error
    image = np.asarray(image)
    if image.dtype.kind not in "biuf" or image.ndim < 2 or image.size == 0:
        raise ValueError(
            f"{path}: not a usable image (got an array of shape {image.shape} and "
            f"dtype {image.dtype}; expected at least two spatial axes of real values)"
        )
    return image


def _reason(error) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(error).strip()
    return " ".join(text.splitlines()[0].split())[:300] if text else type(error).__name__


@contextlib.contextmanager
def _replace_when_done(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    An ``OSError`` names ``path``, not the temporary file.
    """
    path = Path(path)
    # os.open with mode 0o666 honours the umask, as a plain open() would
    # (tempfile.mkstemp would leave the output readable by its owner only).
    while True:
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.part"
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno is not None and (
            error.filename in (None, str(temporary), temporary)
        ):
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def write_tiff(path, array, *, axes=None, rgb=False, spacing=None, unit=None) -> Path:
    """Write ``array`` losslessly (zlib) to a TIFF file, atomically.

    ``axes`` (e.g. ``'CYX'``) is recorded in the file's metadata so tifffile
    reads the same shape back. Without ``rgb=True`` the data are stored as
    grayscale planes, even when an axis happens to have 3 entries.

    ``spacing`` (the pixel size along the spatial axes, 2 or 3 of them, last
    ones ``Y, X``) and its ``unit`` are written as ImageJ's calibration: the
    X and Y resolution and, for a stack, ImageJ's ``spacing``, so Fiji opens
    it at its voxel size (napari's own TIFF reader leaves it out). A stack of several
    channels first (``'CZYX'``), which ImageJ's axis order cannot hold as it
    is, gets the X and Y resolution only.
    """
    import tifffile

    array = np.ascontiguousarray(array)
    options = {"metadata": {"axes": axes} if axes else {}}
    if spacing is not None:
        options = _calibration(array, axes, rgb, tuple(float(s) for s in spacing), unit)
    with _replace_when_done(path) as temporary:
        tifffile.imwrite(
            temporary, array, compression="zlib",
            photometric="rgb" if rgb else "minisblack", **options,
        )
    return Path(path)


def _calibration(array, axes, rgb, spacing, unit) -> dict:
    """``tifffile.imwrite``'s options that record ``spacing`` (see :func:`write_tiff`)."""
    n_spatial = array.ndim - (1 if rgb else 0) - (1 if axes and axes[0] == "C" else 0)
    if len(spacing) != n_spatial or n_spatial not in (2, 3):
        raise ValueError(
            f"spacing gives {len(spacing)} sizes for an array of {n_spatial} spatial axes; "
            "give one size per spatial axis of a 2-D or 3-D image"
        )
    if not all(math.isfinite(size) and size > 0 for size in spacing):
        raise ValueError(f"spacing must hold positive, finite sizes; got {spacing}")
    resolution = (1.0 / spacing[-1], 1.0 / spacing[-2])
    stored = ("ZYX" if n_spatial == 3 else "YX") + ("S" if rgb else "")
    # what an ImageJ file holds: 8-bit colour, or grey of 8, 16 or 32-bit float
    imagej = (not axes or axes == stored) and (
        array.dtype == np.uint8 if rgb else array.dtype in (np.uint8, np.uint16, np.float32))
    if imagej:
        metadata = {"axes": stored}
        if n_spatial == 3:
            metadata["spacing"] = spacing[0]
        unit = "micron" if unit in ("µm", "\u03bcm") else _unit(unit)  # ImageJ's spelling
        if unit and unit.isascii():  # ImageJ's description is ASCII
            metadata["unit"] = unit
        return {"imagej": True, "resolution": resolution, "metadata": metadata}
    return {"resolution": resolution, "resolutionunit": "NONE",
            "metadata": {"axes": axes} if axes else {}}


def write_png(path, array) -> Path:
    """Write a uint8 or uint16 2-D (gray) or (M, N, 3|4) array to a PNG file, atomically."""
    import imageio.v3 as iio

    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"PNG images are uint8 or uint16; got dtype {array.dtype}")
    # encoded in memory, then written as plain bytes: a failing write (a full
    # disk) is one OSError, with no half-closed imageio plugin left behind
    data = iio.imwrite("<bytes>", array, extension=".png")
    with _replace_when_done(path) as temporary:
        Path(temporary).write_bytes(data)
    return Path(path)


def write_json(path, document) -> Path:
    """Write a JSON document (indented, UTF-8) atomically."""
    text = json.dumps(document, indent=2, allow_nan=True) + "\n"
    with _replace_when_done(path) as temporary:
        Path(temporary).write_text(text, encoding="utf-8")
    return Path(path)


# ------------------------------------------------------------------ models


def with_npz_suffix(path) -> Path:
    """``path`` as a model file is named: with ``.npz`` added unless it ends in it
    (napari's *Save model* and ``gmm-segment --save-model`` name files so)."""
    path = Path(path)
    return path if path.suffix.lower() == ".npz" else path.with_name(path.name + ".npz")


def save_model(segmenter, path, *, record=None) -> Path:
    """Save a fitted :class:`GMMSegmenter` to a ``.npz`` model file.

    The file holds the fitted model's float64 arrays and a JSON metadata
    string (format tag and version, gmm_segmenter version, parameters,
    shapes); it contains no pickled objects. Load it with :func:`load_model`.

    A model fitted with ``bias_field`` keeps the training images' fields
    (a few polynomial coefficients each) with a digest of those images: the
    loaded model labels them again as the fitted estimator did, with the
    fields fitted with the mixture. Any other image gets its own field,
    estimated with the mixture held fixed. (The image-sized ``bias_field_``
    is not stored.)

    Parameters
    ----------
    segmenter : GMMSegmenter
        A fitted segmenter.
    path : str or path-like
        Destination; written atomically. numpy does not add ``.npz`` to a
        name that lacks it here: the file is written exactly at ``path``.
    record : dict, optional
        How the model was made (settings, data, the Python call that
        reproduces it), stored as JSON in the metadata under ``"record"``;
        it must be JSON-serialisable. Loading ignores it.

    Returns
    -------
    path : Path
    """
    from sklearn.utils.validation import check_is_fitted

    from ._model import json_params

    check_is_fitted(segmenter)
    model = segmenter.model_
    # Scalar fitted attributes (converged_, n_iter_, ...) travel in the
    # metadata, so models of estimators with extra fitted scalars round-trip.
    fitted = {"beta_": float(model.beta)}
    reserved = _reserved_fitted()
    for name, value in vars(segmenter).items():
        if not _FITTED_NAME.match(name) or name in reserved:
            continue
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, (bool, int, float, str)):
            fitted[name] = value
    if hasattr(segmenter, "bic_curve_"):
        fitted["n_components_candidates_"] = [int(n) for n in segmenter.n_components_candidates_]
        fitted["bic_curve_"] = [float(b) for b in segmenter.bic_curve_]
    params = json_params(segmenter)
    for name, before in _ADDED_PARAMS.items():
        if name in params and params[name] == before:
            # at the value that means "as before", the file stays one that
            # versions before the parameter load (they refuse parameters
            # they do not know)
            del params[name]
    metadata = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "gmm_segmenter_version": __version__,
        "covariance_type": model.covariance_type,
        "n_components": int(model.n_components),
        "n_features": int(model.n_features),
        "params": params,
        "fitted": fitted,
    }
    training_field = _training_field_metadata(segmenter)
    if training_field is not None:
        metadata["training_field"] = training_field
    if record is not None:
        metadata["record"] = record
    with _replace_when_done(path) as temporary:
        with open(temporary, "wb") as stream:
            np.savez(stream, **model.arrays(), **{_METADATA_KEY: np.array(json.dumps(metadata))})
    return Path(path)


def load_model(path) -> GMMSegmenter:
    """Load a model file written by :func:`save_model` as a fitted GMMSegmenter.

    Nothing in the file is unpickled. The file is checked before use: the
    format tag and version, that every array is float64, finite and shaped as
    the covariance type, number of components and channels say, that the
    weights are positive and sum to 1, the scales positive, and that every
    covariance is positive definite. A model fitted with ``bias_field``
    comes back with its training images' fields, checked too, which it uses
    when given those images again (see :func:`save_model`).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a valid model file; the message names the file and
        the problem.
    """
    from ._covariance import CollapsedCovariance
    from ._model import FittedModel

    path = Path(path)
    if not path.exists():
        # a model saved under a name without .npz, or given without it
        other = path.with_suffix("") if path.suffix == ".npz" else with_npz_suffix(path)
        there = f"; there is {other}" if other.is_file() else ""
        raise FileNotFoundError(f"{path}: no such model file{there}")

    def invalid(problem):
        return ValueError(f"{path}: not a valid gmm-segmenter model file: {problem}")

    if not path.is_file():  # a folder, FIFO or device: refused before it is opened
        raise invalid("it is not a regular file (a folder, pipe or device)")

    arrays = _read_archive(path, invalid)
    metadata = _check_metadata(arrays.pop(_METADATA_KEY), invalid)
    _check_arrays(arrays, metadata, invalid)
    segmenter = _with_params(metadata, invalid)
    beta = _fitted_beta(metadata, invalid)
    try:
        model = FittedModel.from_arrays(
            arrays, metadata["covariance_type"], beta=beta,
            connectivity=segmenter.connectivity, spacing=segmenter.spacing,
        )
    except CollapsedCovariance as error:
        which = (
            "the tied covariance" if metadata["covariance_type"] == "tied"
            else f"covariance {error.args[0]}"
        )
        raise invalid(f"{which} is not positive definite") from None
    except ValueError as error:  # scipy's own checks
        raise invalid(f"the covariances are not usable ({error})") from None
    if not np.all(np.isfinite(model.mixture.precisions_cholesky)):
        raise invalid("the covariances are too close to singular to invert")
    _check_predictable(model, invalid)
    _check_memory_to_label(model, invalid)
    _check_probe(model, invalid)
    segmenter.model_ = model
    _set_fit_summary(segmenter, metadata["fitted"])
    _set_training_field(segmenter, metadata.get("training_field"), invalid)
    return segmenter


def _training_field_metadata(segmenter) -> dict | None:
    """The training images' bias fields and their digest, as JSON (``None``: no field).

    The coefficients are written as Python floats, whose JSON text reads back
    to the same float64 bits.
    """
    fields = vars(segmenter).get("_training_fields")
    digest = vars(segmenter).get("_training_digest")
    if fields is None or digest is None:
        return None
    return {
        "digest": digest,
        "fields": [
            None if field is None else {
                "shape": list(field.geometry.shape),
                "spacing": list(field.geometry.spacing),
                "degree": int(field.degree),
                "coefficients": np.asarray(field.coefficients, dtype=np.float64).tolist(),
            }
            for field in fields
        ],
    }


#: A model file's training fields: at most this many images, of at most this many axes.
_MAX_TRAINING_FIELDS = 100_000
_MAX_FIELD_AXES = 32


def _set_training_field(segmenter, stored, invalid) -> None:
    """The training images' fields of a model file (see :func:`save_model`), checked.

    Kept only with a ``bias_field`` parameter, which is what uses them.
    """
    from . import _bias

    if stored is None or segmenter.bias_field is None:
        return
    what = "'training_field'"
    if not isinstance(stored, dict) or not isinstance(stored.get("fields"), list):
        raise invalid(f"{what} must be an object with a list of fields")
    digest = stored.get("digest")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{32}", digest):
        raise invalid(f"{what} has no valid digest of the training images")
    entries = stored["fields"]
    if not 1 <= len(entries) <= _MAX_TRAINING_FIELDS:
        raise invalid(f"{what} holds {len(entries)} fields; expected 1 to {_MAX_TRAINING_FIELDS}")
    n_features = segmenter.model_.n_features
    fields = []
    for index, entry in enumerate(entries):
        if entry is None:
            fields.append(None)
            continue
        where = f"{what} field {index}"
        if not isinstance(entry, dict):
            raise invalid(f"{where} must be an object or null")
        shape, spacing, degree = entry.get("shape"), entry.get("spacing"), entry.get("degree")
        if not (isinstance(shape, list) and 1 <= len(shape) <= _MAX_FIELD_AXES and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape
        )):
            raise invalid(f"{where} has shape {shape!r}; expected 1 to {_MAX_FIELD_AXES} "
                          "positive integers")
        if not (isinstance(spacing, list) and len(spacing) == len(shape) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
            for v in spacing
        )):
            raise invalid(f"{where} has spacing {spacing!r}; expected {len(shape)} positive "
                          "numbers")
        if not (isinstance(degree, int) and not isinstance(degree, bool)
                and 1 <= degree <= _bias.MAX_DEGREE):
            raise invalid(f"{where} has degree {degree!r}; expected 1 to {_bias.MAX_DEGREE}")
        expected = (_bias.n_coefficients(len(shape), degree), n_features)
        try:
            coefficients = np.asarray(entry.get("coefficients"), dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            coefficients = None
        if coefficients is None or coefficients.shape != expected or not np.all(
            np.isfinite(coefficients)
        ):
            raise invalid(f"{where} must have finite coefficients of shape {expected}")
        fields.append(_bias.BiasField(_bias.Geometry.of(shape, spacing), degree, coefficients))
    segmenter._training_fields = fields
    segmenter._training_digest = digest


def _read_archive(path, invalid) -> dict:
    """The arrays of an ``.npz`` model file, refused before they are unpacked
    when the archive is not ours (too large, pickled objects, other names,
    headers that claim more data than the archive holds)."""
    if not zipfile.is_zipfile(path):
        raise invalid("it is not an .npz archive (save one with --save-model or save_model)")
    from ._model import MODEL_ARRAYS

    expected = set(MODEL_ARRAYS) | {_METADATA_KEY}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            size = sum(info.file_size for info in members)
            if size > _MAX_MODEL_BYTES:
                raise invalid(f"it unpacks to {size} bytes, far more than any model needs")
            names = {info.filename.removesuffix(".npy") for info in members}
            if names != expected or len(members) != len(expected):
                missing, extra = sorted(expected - names), sorted(names - expected)
                raise invalid(
                    "expected the arrays " + ", ".join(sorted(expected))
                    + (f"; missing {', '.join(missing)}" if missing else "")
                    + (f"; unexpected {', '.join(extra)}" if extra else "")
                )
            return {
                info.filename.removesuffix(".npy"): _read_array(archive, info, invalid)
                for info in members
            }
    except ValueError as error:
        if str(error).startswith(f"{path}:"):
            raise
        raise invalid(_reason(error)) from None
    except Exception as error:  # zipfile and zlib raise many kinds on a damaged archive
        raise invalid(f"the archive cannot be read ({_reason(error)})") from None


def _npy_header(stream, what, size, invalid):
    """``(shape, dtype)`` from an ``.npy`` header, refused (``invalid(problem)``)
    when it holds Python objects or claims more data than the ``size`` bytes."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise invalid(f"{what} has an .npy header of version {version}")
    if dtype.hasobject:
        raise invalid(f"{what} holds Python objects, which are never loaded (they could run code)")
    if math.prod(shape) * dtype.itemsize > size:
        raise invalid(f"{what} claims shape {shape}, more data than the file holds")
    return shape, dtype


def _read_array(archive, info, invalid):
    """One ``.npy`` member, its header checked against its size before the data are read."""
    name = info.filename.removesuffix(".npy")
    with archive.open(info) as member:
        _npy_header(member, f"array {name!r}", info.file_size, invalid)
    with archive.open(info) as member:
        try:
            return np.lib.format.read_array(member, allow_pickle=False)
        except ValueError as error:
            raise invalid(f"array {name!r} cannot be read ({_reason(error)})") from None


def _check_arrays(arrays, metadata, invalid) -> None:
    """Dtype, shape and finiteness of every array; weights and scales in range."""
    from ._covariance import COVARIANCE_TYPES

    covariance_type = metadata["covariance_type"]
    n_components, n_features = metadata["n_components"], metadata["n_features"]
    shapes = {
        "weights": (n_components,),
        "means": (n_components, n_features),
        "covariances": COVARIANCE_TYPES[covariance_type].shape(n_components, n_features),
        "intensity_offset": (n_features,),
        "intensity_scale": (n_features,),
    }
    for name, shape in shapes.items():
        array = arrays[name]
        if array.dtype != np.float64:
            raise invalid(f"array {name!r} has dtype {array.dtype}; expected float64")
        if array.shape != shape:
            raise invalid(
                f"array {name!r} has shape {array.shape}; expected {shape} for "
                f"covariance_type={covariance_type!r} with {n_components} components "
                f"and {n_features} channel(s)"
            )
        if not np.all(np.isfinite(array)):
            raise invalid(f"array {name!r} holds NaN or infinite values")
    weights = arrays["weights"]
    if np.any(weights <= 0) or not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
        raise invalid(
            f"the weights must be positive and sum to 1; got {weights.tolist()} "
            f"(sum {weights.sum():.9g})"
        )
    if np.any(arrays["intensity_scale"] <= 0):
        raise invalid("array 'intensity_scale' must be positive")
    _check_covariances(arrays, covariance_type, invalid)


# A fit refuses data whose spread leaves 1e-140..1e140 (so variances fit in
# float64); in standardised units its variances stay far inside 1e-30..1e30.
_VARIANCE_LIMITS = (1e-280, 1e280)
_STANDARDIZED_VARIANCE_LIMITS = (1e-30, 1e30)


def _variances(covariances, covariance_type):
    if covariance_type in ("full", "tied"):
        return np.diagonal(covariances, axis1=-2, axis2=-1)
    return covariances


def _check_covariances(arrays, covariance_type, invalid):
    """Symmetric, with variances a fit can give, in input and standardised units."""
    covariances = arrays["covariances"]
    if covariance_type in ("full", "tied"):
        transposed = np.swapaxes(covariances, -1, -2)
        scale = np.abs(covariances).max(initial=0.0)
        if not np.allclose(covariances, transposed, rtol=0.0, atol=1e-12 * scale):
            raise invalid("the covariances are not symmetric")
    variances = _variances(covariances, covariance_type)
    if np.any(variances <= 0):
        return  # not positive definite: the Cholesky factorisation says which
    low, high = _VARIANCE_LIMITS
    if np.any(variances < low) or np.any(variances > high):
        raise invalid(
            f"variances range from {variances.min():.3g} to {variances.max():.3g}; a fit "
            f"gives variances between {low:g} and {high:g}"
        )
    scale = arrays["intensity_scale"]
    if covariance_type == "spherical":  # one variance per component, for every channel
        variances = variances[:, np.newaxis]
    standardized = variances / (scale * scale)
    low, high = _STANDARDIZED_VARIANCE_LIMITS
    if not np.all(np.isfinite(standardized)) or np.any(standardized < low) or np.any(
        standardized > high
    ):
        raise invalid(
            "the variances do not match the intensity scale (in standardised units they "
            f"range from {standardized.min():.3g} to {standardized.max():.3g}; a fit gives "
            f"values between {low:g} and {high:g})"
        )


#: Parameters added after model files first shipped, and the value that
#: behaves as the versions before them did.
_ADDED_PARAMS = {"bias_field": None, "prior_weight": 1.0}


def _with_params(metadata, invalid) -> GMMSegmenter:
    """An unfitted segmenter with the file's (validated) parameters."""
    from .estimator import GMMSegmenter

    segmenter = GMMSegmenter()
    known = segmenter.get_params(deep=False)
    unknown = sorted(set(metadata["params"]) - set(known))
    if unknown:
        raise invalid(
            f"it sets parameter(s) {', '.join(unknown)} that this gmm_segmenter "
            f"({__version__}) does not have; it was saved by version "
            f"{metadata.get('gmm_segmenter_version')}. Upgrade gmm-segmenter to use it."
        )
    params = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in metadata["params"].items()
    }
    params["covariance_type"] = metadata["covariance_type"]
    segmenter.set_params(**params)
    try:
        segmenter._validate_params()
    except (TypeError, ValueError) as error:
        raise invalid(f"its parameters are not valid ({error})") from None
    return segmenter


def _fitted_beta(metadata, invalid) -> float:
    """The strength of the spatial prior the file's model predicts with."""
    if "beta_" not in metadata["fitted"]:
        raise invalid(
            "it records no fitted beta_ (the strength of the spatial prior); "
            "fit and save the model again"
        )
    beta = metadata["fitted"]["beta_"]
    if (
        isinstance(beta, bool) or not isinstance(beta, (int, float))
        or not np.isfinite(beta) or beta < 0
    ):
        raise invalid(f"the fitted beta_ {beta!r} is not a finite number >= 0")
    return float(beta)


def _set_fit_summary(segmenter, fitted) -> None:
    """The fit's summary attributes: the file's scalars, neutral values otherwise."""
    segmenter.converged_ = True
    segmenter.n_iter_ = 0
    segmenter.lower_bound_ = np.nan
    segmenter.lower_bounds_ = []
    segmenter.fit_method_ = "loaded"
    segmenter.n_pixels_fit_ = 0
    reserved = _reserved_fitted()
    for name, value in fitted.items():
        if _FITTED_NAME.match(name) and name not in reserved and (
            isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) < 100)
        ):
            setattr(segmenter, name, value)
    candidates, curve = fitted.get("n_components_candidates_"), fitted.get("bic_curve_")
    if (
        isinstance(candidates, list) and isinstance(curve, list)
        and len(candidates) == len(curve)
        and all(isinstance(n, int) for n in candidates)
        and all(isinstance(b, (int, float)) for b in curve)
    ):
        segmenter.n_components_candidates_ = np.asarray(candidates, dtype=np.int64)
        segmenter.bic_curve_ = np.asarray(curve, dtype=np.float64)


def _check_predictable(model, invalid):
    """Refuse a model that is valid in float64 but cannot label in float32.

    Prediction works in standardised units and float32: means 1e300 away
    from the offset, or a beta beyond float32, would give NaN posteriors or
    one label everywhere instead of an error.
    """
    limit = float(np.finfo(np.float32).max) / 1e6
    if model.beta > 1e6:
        raise invalid(f"the fitted beta_ {model.beta!r} is far beyond any useful strength")
    try:
        standardized = model.standardized
    except (ValueError, FloatingPointError) as error:
        raise invalid(f"its covariances are not positive definite in standardised units ({error})")
    for name in ("means", "precisions_cholesky"):
        values = getattr(standardized, name)
        if not np.all(np.isfinite(values)) or np.abs(values).max() > limit:
            raise invalid(
                f"its {name} in standardised units reach {np.abs(values).max():.3g}, beyond "
                "what float32 prediction can represent"
            )


def _check_memory_to_label(model, invalid):
    """Refuse a component count whose per-chunk tables cannot fit in memory."""
    from ._image import CHUNK_PIXELS, available_memory, format_bytes

    # log-densities and posteriors of one chunk of pixels, in float64, twice
    needed = 2 * CHUNK_PIXELS * model.n_components * 8
    available = available_memory()
    if available is not None and needed > available:
        raise invalid(
            f"its {model.n_components} components need about {format_bytes(needed)} of memory "
            f"per chunk of pixels when labelling, but only {format_bytes(available)} is available"
        )


def _check_probe(model, invalid):
    """Label the components' own means: the posteriors must be finite and sum to 1."""
    from ._image import as_images
    from ._kernel import predict_image

    probe = model.mixture.means.reshape(1, model.n_components, model.n_features)
    view = as_images(probe, channel_axis=-1)[0]
    with np.errstate(all="ignore"):
        posteriors = predict_image(view, model.with_settings(beta=0.0), "posteriors")
    if not np.all(np.isfinite(posteriors)) or not np.allclose(
        posteriors.sum(axis=-1), 1.0, atol=1e-3
    ):
        raise invalid("it gives posteriors that are not finite on its own means")


def _check_metadata(array, invalid) -> dict:
    from ._covariance import COVARIANCE_TYPES

    if array.dtype.kind != "U" or array.ndim != 0:
        raise invalid(f"'metadata' must be a single string; got dtype {array.dtype}, shape {array.shape}")
    try:
        metadata = json.loads(str(array))
    except json.JSONDecodeError as error:
        raise invalid(f"'metadata' is not JSON ({error})") from None
    except RecursionError:
        raise invalid("'metadata' is JSON nested too deeply to be a model's") from None
    if not isinstance(metadata, dict):
        raise invalid("'metadata' must be a JSON object")
    if metadata.get("format") != MODEL_FORMAT:
        raise invalid(f"format tag is {metadata.get('format')!r}; expected {MODEL_FORMAT!r}")
    file_version = metadata.get("format_version")
    if not isinstance(file_version, int) or isinstance(file_version, bool) or file_version < 1:
        raise invalid(f"format_version {file_version!r} is not a positive integer")
    if file_version > MODEL_FORMAT_VERSION:
        raise invalid(
            f"format_version {file_version} is newer than this gmm_segmenter "
            f"({__version__}) reads (up to {MODEL_FORMAT_VERSION}); upgrade gmm-segmenter"
        )
    if metadata.get("covariance_type") not in COVARIANCE_TYPES:
        raise invalid(
            f"covariance_type {metadata.get('covariance_type')!r} is not one of "
            f"{', '.join(COVARIANCE_TYPES)}"
        )
    for key in ("n_components", "n_features"):
        value = metadata.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            raise invalid(f"{key} {value!r} is not an integer in [1, 65535]")
    if not isinstance(metadata.get("params", {}), dict):
        raise invalid("'params' must be a JSON object")
    metadata.setdefault("params", {})
    if not isinstance(metadata.get("fitted", {}), dict):
        raise invalid("'fitted' must be a JSON object")
    metadata.setdefault("fitted", {})
    return metadata
