"""Image files and model files: round trips, and refusal of anything unsafe or broken."""

import json
import os
import pickle
from functools import partial

import numpy as np
import pytest
import tifffile
from _helpers import make_segmenter
from _images import gray_bands, rgb_bands

from gmm_segmenter import io as gio

# The pictures these tests write and fit. Models are pixel-wise (the default
# of make_segmenter), which keeps the tests fast: the file format is the same.
_gray = partial(gray_bands, (24, 30))
_rgb = partial(rgb_bands, (20, 30))


# ------------------------------------------------------------------ images


def test_read_png_and_tiff_keep_dtype_and_shape(tmp_path):
    gray, rgb = _gray(), _rgb()
    gio.write_png(tmp_path / "gray.png", gray)
    gio.write_png(tmp_path / "rgb.png", rgb)
    deep = (gray.astype(np.uint16) * 250)
    gio.write_tiff(tmp_path / "deep.tif", deep)
    stack = np.stack([gray, gray // 2, 255 - gray])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")  # three pages

    np.testing.assert_array_equal(gio.read_image(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(gio.read_image(tmp_path / "rgb.png"), rgb)
    read_deep = gio.read_image(tmp_path / "deep.tif")
    assert read_deep.dtype == np.uint16
    np.testing.assert_array_equal(read_deep, deep)
    np.testing.assert_array_equal(gio.read_image(tmp_path / "stack.tif"), stack)


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        gio.read_image(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    with pytest.raises(ValueError, match="notes.png: cannot be read as an image"):
        gio.read_image(text)
    gio.write_png(tmp_path / "whole.png", _gray())
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        gio.read_image(tmp_path / "cut.png")
    with pytest.raises(ValueError, match="is a folder"):
        gio.read_image(tmp_path)


def test_writers_leave_no_partial_file_and_keep_the_old_one_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    gio.write_png(target, _gray())
    before = target.read_bytes()

    # the PNG is encoded in memory, then written: the disk fills half way
    def broken(self, data):
        with open(self, "wb") as stream:
            stream.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(gio.Path, "write_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        gio.write_png(target, _gray(seed=1))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = gio.write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert json.loads(path.read_text()) == {"a": 1}


def test_tiff_axes_and_voxel_size_are_read_from_imagej_and_ome_files(tmp_path):
    stack = np.zeros((4, 2, 8, 10), np.uint16)
    tifffile.imwrite(tmp_path / "hyper.tif", stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"})
    found = gio.read_tiff_axes(tmp_path / "hyper.tif")
    assert found.axes == "ZCYX" and found.channel_axis == 1 and found.unit == "um"
    assert found.spacing(1) == (1.5, 0.5, 0.5)
    assert found.spacing(None) is None  # C has no size: not every axis is space
    tifffile.imwrite(tmp_path / "ome.tif", stack[:, 0], ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 2.0,
        "PhysicalSizeZUnit": "mm", "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
    found = gio.read_tiff_axes(tmp_path / "ome.tif")
    assert found.spacing() == (2000.0, 0.25, 0.25) and found.unit == "µm"
    # a file that records nothing, another format, a broken file: nothing, no error
    gio.write_tiff(tmp_path / "plain.tif", stack[:, 0])
    assert gio.read_tiff_axes(tmp_path / "plain.tif").spacing() is None
    # a photograph's 72 dpi is no voxel size; colour samples taken as space have none
    tifffile.imwrite(tmp_path / "dpi.tif", np.zeros((8, 10, 3), np.uint8), photometric="rgb",
                     resolution=(72, 72), resolutionunit="INCH")
    assert gio.read_tiff_axes(tmp_path / "dpi.tif").sizes == {}
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 10, 3), np.uint8), imagej=True,
                     resolution=(2.0, 2.0), metadata={"axes": "YXS", "unit": "um"})
    found = gio.read_tiff_axes(tmp_path / "rgb.tif")
    assert found.spacing(2) == (0.5, 0.5) and found.spacing(None) is None
    # a unit that is not a unit's name is not carried on; a bad spacing leaves the rest
    tifffile.imwrite(tmp_path / "odd.tif", stack[:, 0], imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": "thick", "unit": "um=slices"})
    found = gio.read_tiff_axes(tmp_path / "odd.tif")
    assert found.unit is None and found.sizes == {"X": 0.5, "Y": 0.5} and found.axes == "ZYX"
    gio.write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    assert gio.read_tiff_axes(tmp_path / "a.png") is None
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\xff" * 20)
    assert gio.read_tiff_axes(tmp_path / "broken.tif") is None


@pytest.mark.parametrize("shape, axes, rgb, dtype", [
    ((5, 6, 7), None, False, np.uint8),        # labels of a stack
    ((6, 7), None, False, np.uint16),          # labels of a picture
    ((5, 6, 7, 3), None, True, np.uint8),      # segmented picture of a stack
    ((5, 6, 7), None, False, np.float32),      # bias field
])
def test_a_written_voxel_size_reads_back_as_imagej_calibration(tmp_path, shape, axes, rgb, dtype):
    array = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    spacing = (3.0, 0.5, 0.25)[-(len(shape) - rgb):]
    gio.write_tiff(tmp_path / "out.tif", array, axes=axes, rgb=rgb, spacing=spacing, unit="µm")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), array)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "micron"
        assert tif.pages[0].get_resolution() == pytest.approx((4.0, 2.0))  # pixels per unit
        assert tif.imagej_metadata.get("spacing") == (3.0 if len(spacing) == 3 else None)
    assert gio.read_tiff_axes(tmp_path / "out.tif").spacing(-1 if rgb else None) == spacing


def test_channels_first_keep_their_axes_and_get_the_pixel_size(tmp_path):
    posteriors = np.random.default_rng(0).random((3, 5, 6, 7)).astype(np.float32)
    gio.write_tiff(tmp_path / "proba.tif", posteriors, axes="CZYX", spacing=(3, 0.5, 0.25))
    with tifffile.TiffFile(tmp_path / "proba.tif") as tif:
        assert tif.series[0].axes == "CZYX" and tif.series[0].shape == posteriors.shape
        assert tif.pages[0].get_resolution() == pytest.approx((4.0, 2.0))
    with pytest.raises(ValueError, match="spacing gives 2 sizes for an array of 3 spatial axes"):
        gio.write_tiff(tmp_path / "bad.tif", posteriors, axes="CZYX", spacing=(1, 1))
    for bad in ((2, 0, 1), (float("nan"), 1, 1), (-1, 1, 1)):
        with pytest.raises(ValueError, match=r"spacing must hold positive, finite sizes"):
            gio.write_tiff(tmp_path / "bad.tif", posteriors[0], spacing=bad)
    # ImageJ holds no 16-bit colour: the pixel size only, and the array as it is
    colour = np.zeros((6, 7, 3), np.uint16)
    gio.write_tiff(tmp_path / "c16.tif", colour, rgb=True, spacing=(2, 4))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c16.tif"), colour)
    # a unit that would break ImageJ's description is left out
    gio.write_tiff(tmp_path / "unit.tif", posteriors[0], spacing=(3, 1, 1), unit="um\nslices=9")
    with tifffile.TiffFile(tmp_path / "unit.tif") as tif:
        assert tif.imagej_metadata["slices"] == 5 and "unit" not in tif.imagej_metadata


def test_png_refuses_float(tmp_path):
    with pytest.raises(TypeError, match="uint8 or uint16"):
        gio.write_png(tmp_path / "x.png", np.zeros((3, 3)))


# ------------------------------------------------------------------ models


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_model_round_trip_predicts_identically(tmp_path, covariance_type):
    image = _rgb()
    segmenter = make_segmenter(
        n_components=3, channel_axis=-1, covariance_type=covariance_type
    ).fit(image)
    path = gio.save_model(segmenter, tmp_path / "model.npz")
    loaded = gio.load_model(path)
    np.testing.assert_array_equal(loaded.predict(image), segmenter.predict(image))
    np.testing.assert_allclose(loaded.predict_proba(image), segmenter.predict_proba(image))
    np.testing.assert_allclose(loaded.precisions_cholesky_, segmenter.precisions_cholesky_)
    np.testing.assert_allclose(loaded.precisions_, segmenter.precisions_)
    assert loaded.get_params() == segmenter.get_params()
    assert loaded.n_features_in_ == 3 and loaded.n_components_ == 3


def test_model_round_trip_keeps_the_bic_curve(tmp_path):
    image = _gray()
    segmenter = make_segmenter(n_components="auto", n_components_range=(1, 4)).fit(image)
    loaded = gio.load_model(gio.save_model(segmenter, tmp_path / "auto.npz"))
    np.testing.assert_allclose(loaded.bic_curve_, segmenter.bic_curve_)
    np.testing.assert_array_equal(
        loaded.n_components_candidates_, segmenter.n_components_candidates_
    )
    np.testing.assert_array_equal(loaded.predict(image), segmenter.predict(image))


def test_model_file_holds_no_object_arrays(tmp_path):
    path = gio.save_model(make_segmenter(n_components=2).fit(_gray()), tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[name].dtype != object for name in archive.files)


def _arrays_and_metadata(tmp_path, **params):
    params.setdefault("n_components", 2)
    image = _rgb() if params.get("channel_axis") is not None else _gray()
    path = gio.save_model(make_segmenter(**params).fit(image), tmp_path / "valid.npz")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    metadata = json.loads(str(arrays.pop("metadata")))
    return arrays, metadata


def _write(tmp_path, arrays, metadata, name="crafted.npz", allow_pickle=False):
    path = tmp_path / name
    content = dict(arrays)
    if metadata is not None:
        content["metadata"] = np.array(json.dumps(metadata))
    with open(path, "wb") as stream:
        np.savez(stream, allow_pickle=allow_pickle, **content)
    return path


def _crafted(tmp_path, change, **params):
    arrays, metadata = _arrays_and_metadata(tmp_path, **params)
    change(arrays, metadata)
    return _write(tmp_path, arrays, metadata)


def _set(key, value):
    def change(arrays, metadata):
        arrays[key] = value
    return change


def _meta(key, value):
    def change(arrays, metadata):
        metadata[key] = value
    return change


CRAFTED = {
    "means of the wrong shape": (_set("means", np.zeros((3, 1))), r"'means' has shape \(3, 1\)"),
    "covariances of the wrong shape": (
        _set("covariances", np.ones((2, 2, 2))), "'covariances' has shape"
    ),
    "NaN mean": (_set("means", np.array([[np.nan], [1.0]])), "NaN or infinite"),
    "infinite scale": (_set("intensity_scale", np.array([np.inf])), "NaN or infinite"),
    "float32 weights": (
        _set("weights", np.array([0.5, 0.5], dtype=np.float32)), "dtype float32; expected float64"
    ),
    "weights not summing to 1": (_set("weights", np.array([0.5, 0.6])), "sum to 1"),
    "negative weight": (_set("weights", np.array([-0.5, 1.5])), "positive"),
    "non positive-definite covariance": (
        _set("covariances", np.array([[[1.0]], [[-2.0]]])), "covariance 1 is not positive definite"
    ),
    "zero scale": (_set("intensity_scale", np.array([0.0])), "intensity_scale"),
    "missing array": (lambda a, m: a.pop("weights"), "missing weights"),
    "extra array": (_set("payload", np.zeros(3)), "unexpected payload"),
    "wrong format tag": (_meta("format", "something-else"), "format tag"),
    "future format version": (_meta("format_version", 99), "format_version 99 is newer"),
    "unknown covariance type": (_meta("covariance_type", "banana"), "covariance_type 'banana'"),
    "K disagreeing with arrays": (_meta("n_components", 3), r"expected \(3,\)"),
    "unknown parameter": (
        lambda a, m: m["params"].update(smoothing_kernel=3), "smoothing_kernel"
    ),
    "invalid parameter value": (
        lambda a, m: m["params"].update(max_iter=-4), "parameters are not valid"
    ),
    "metadata not an object": (
        lambda a, m: (m.clear(), m.update(x=1)), "format tag"
    ),
    "means beyond float32 prediction": (
        _set("means", np.array([[1e300], [2e300]])), "beyond what float32 prediction"
    ),
    "beta beyond any strength": (
        lambda a, m: m["fitted"].update(beta_=1e308), "far beyond any useful strength"
    ),
}


@pytest.mark.parametrize("problem", sorted(CRAFTED))
def test_load_model_rejects_crafted_files(tmp_path, problem):
    change, message = CRAFTED[problem]
    path = _crafted(tmp_path, change)
    with pytest.raises(ValueError, match=message) as caught:
        gio.load_model(path)
    assert str(caught.value).startswith(f"{path}: not a valid gmm-segmenter model file")


def test_load_model_rejects_a_non_positive_definite_full_covariance(tmp_path):
    def change(arrays, metadata):
        covariances = arrays["covariances"].copy()
        covariances[0] = [[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # eigenvalue -1
        arrays["covariances"] = covariances

    path = _crafted(tmp_path, change, channel_axis=-1)
    with pytest.raises(ValueError, match="covariance 0 is not positive definite"):
        gio.load_model(path)


class _Exploit:
    """Unpickling this would create a file; loading a model must never do it."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_model_never_unpickles(tmp_path):
    arrays, metadata = _arrays_and_metadata(tmp_path)
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    arrays["weights"] = np.array([_Exploit(), 1.0], dtype=object)
    path = _write(tmp_path, arrays, metadata, allow_pickle=True)
    with pytest.raises(ValueError, match="holds Python objects, which are never loaded"):
        gio.load_model(path)
    assert not marker.exists()

    # A bare pickle (not an .npz archive) is refused before anything is read.
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ValueError, match="not an .npz archive"):
        gio.load_model(pickled)
    assert not marker.exists()


def test_load_model_rejects_other_files(tmp_path):
    noise = tmp_path / "noise.npz"
    noise.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ValueError, match="noise.npz: not a valid .*not an .npz archive"):
        gio.load_model(noise)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        gio.load_model(npy)
    arrays, _ = _arrays_and_metadata(tmp_path)
    no_metadata = _write(tmp_path, arrays, None, name="bare.npz")
    with pytest.raises(ValueError, match="missing metadata"):
        gio.load_model(no_metadata)
    arrays, metadata = _arrays_and_metadata(tmp_path)
    arrays["metadata"] = np.array("{not json")
    not_json = _write(tmp_path, arrays, None, name="badjson.npz")
    with pytest.raises(ValueError, match="'metadata' is not JSON"):
        gio.load_model(not_json)
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        gio.load_model(tmp_path / "nowhere.npz")


def test_load_model_refuses_a_zip_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(gio, "_MAX_MODEL_BYTES", 1000)
    arrays, metadata = _arrays_and_metadata(tmp_path)
    arrays["means"] = np.zeros((2, 1))
    path = _write(tmp_path, {**arrays, "weights": np.zeros(10_000)}, metadata)
    with pytest.raises(ValueError, match="far more than any model needs"):
        gio.load_model(path)


def test_model_from_before_the_spatial_prior_is_refused(tmp_path):
    # Such files were never released: load_model has no compatibility branch
    # for them and names what is missing.
    arrays, metadata = _arrays_and_metadata(tmp_path, n_components=3)
    for name in ("beta", "connectivity", "spacing", "max_iter_spatial"):
        metadata["params"].pop(name, None)
    metadata["fitted"] = {k: v for k, v in metadata["fitted"].items()
                          if k in ("converged_", "n_iter_", "lower_bound_")}
    path = _write(tmp_path, arrays, metadata, name="old.npz")
    with pytest.raises(ValueError, match="records no fitted beta_") as caught:
        gio.load_model(path)
    assert str(caught.value).startswith(f"{path}: not a valid gmm-segmenter model file")
