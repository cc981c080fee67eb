"""Dask, zarr and dask.distributed inputs: same results as NumPy, lazily."""

import pickle

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from dask.callbacks import Callback  # noqa: E402
from scipy import ndimage  # noqa: E402

from gmm_segmenter import GMMSegmenter, _dask, _hmrf  # noqa: E402

#: Fraction of labels allowed to differ from the in-memory result with the
#: spatial prior (block seams); the figure docs/scale.md promises.
SEAM_TOLERANCE = 1e-3


def _phantom(shape, seed=0, dtype=np.uint16, noise=18.0):
    """Three smooth classes (40, 120, 200) with Gaussian noise."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), 3)
    classes = np.digitize(field, np.quantile(field, [0.3, 0.7]))
    image = classes * 80.0 + 40.0 + rng.normal(0, noise, shape)
    if np.dtype(dtype).kind in "iu":
        image = image.clip(0, np.iinfo(dtype).max).round()
    return image.astype(dtype)


class _Largest(Callback):
    """Records the largest array any task returns (scheduler='sync')."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(result, np.ndarray):
            self.largest = max(self.largest, result.nbytes)


@pytest.fixture(scope="module")
def volume():
    return _phantom((24, 40, 36))


def test_pixelwise_labels_equal_numpy_with_input_chunks(volume):
    lazy = da.from_array(volume, chunks=(10, 16, 15))
    segmenter = GMMSegmenter(3, beta=0, random_state=0).fit(volume)
    labels = segmenter.predict(lazy)
    assert isinstance(labels, da.Array)
    assert labels.chunks == lazy.chunks
    np.testing.assert_array_equal(labels.compute(), segmenter.predict(volume))
    posteriors = segmenter.predict_proba(lazy)
    assert posteriors.chunks == lazy.chunks + ((3,),)
    np.testing.assert_array_equal(posteriors.compute(), segmenter.predict_proba(volume))
    np.testing.assert_array_equal(
        segmenter.transform(lazy).compute(), segmenter.transform(volume)
    )
    assert segmenter.score(lazy) == pytest.approx(segmenter.score(volume))


def test_histogram_fit_from_chunks_equals_numpy_fit(volume):
    lazy = da.from_array(volume, chunks=(10, 16, 15))
    in_memory = GMMSegmenter(3, beta=0, random_state=0).fit(volume)
    chunked = GMMSegmenter(3, beta=0, random_state=0).fit(lazy)
    assert chunked.fit_method_ == "histogram"
    np.testing.assert_array_equal(chunked.means_, in_memory.means_)
    np.testing.assert_array_equal(chunked.covariances_, in_memory.covariances_)
    assert chunked.n_pixels_fit_ == volume.size


def test_rgb_subsample_fit_and_masks_from_chunks():
    base = _phantom((60, 70), seed=1, dtype=np.float32, noise=0.0)
    noise = np.random.default_rng(2).normal(0, 10, (3, 60, 70))
    rgb = (np.stack([base, 0.5 * base, 255 - base]) + noise).astype(np.float32)
    rgb[0, :3, 20:23] = np.nan
    mask = np.ones(rgb.shape[1:], dtype=bool)
    mask[:, :10] = False
    lazy = da.from_array(rgb, chunks=(3, 25, 30))
    params = dict(beta=0, channel_axis=0, random_state=0, max_samples=500)
    chunked = GMMSegmenter(3, **params).fit(lazy, mask=da.from_array(mask, chunks=20))
    again = GMMSegmenter(3, **params).fit(lazy, mask=mask)
    assert chunked.fit_method_ == "subsample"
    assert chunked.n_pixels_fit_ == mask.sum() - 9  # nine NaN pixels
    np.testing.assert_array_equal(chunked.means_, again.means_)  # seeded
    in_memory = GMMSegmenter(3, **params).fit(rgb, mask=mask)
    np.testing.assert_allclose(chunked.means_, in_memory.means_, rtol=0.1, atol=5)
    labels = chunked.predict(lazy, mask=mask)
    assert labels.chunks == ((25, 25, 10), (30, 30, 10))
    np.testing.assert_array_equal(labels.compute(), chunked.predict(rgb, mask=mask))
    assert labels[:3, 20:23].compute().max() == 0


@pytest.mark.parametrize("shape, chunks", [((24, 40, 36), (10, 20, 18)), ((90, 100), (30, 40))])
def test_spatial_labels_match_numpy_within_seam_tolerance(shape, chunks):
    image = _phantom(shape, seed=4, noise=30.0)
    segmenter = GMMSegmenter(3, beta=1.0, random_state=0).fit(image)
    lazy = da.from_array(image, chunks=chunks)
    labels = segmenter.predict(lazy)
    assert labels.chunks == lazy.chunks
    differing = np.mean(labels.compute() != segmenter.predict(image))
    assert differing < SEAM_TOLERANCE
    posteriors = segmenter.predict_proba(lazy)
    assert posteriors.chunks == lazy.chunks + ((3,),)
    assert np.abs(posteriors.compute() - segmenter.predict_proba(image)).mean() < 1e-3


def test_spatial_fit_on_dask_matches_numpy_for_small_volumes(volume):
    lazy = da.from_array(volume, chunks=(10, 16, 15))
    chunked = GMMSegmenter(3, random_state=0).fit(lazy)
    in_memory = GMMSegmenter(3, random_state=0).fit(volume)
    np.testing.assert_allclose(chunked.means_, in_memory.means_)


def test_spatial_fit_of_a_large_dask_image_equals_the_in_memory_fit():
    # HMRF-EM ran on the image's centre (4 Mi pixels), in memory on tiles spread over
    # the whole image: a class only near the top and bottom edges was missed
    rng = np.random.default_rng(0)
    rows = np.arange(2400)[:, np.newaxis]
    classes = np.where((rows < 500) | (rows >= 1900), 2, (np.arange(2400) // 300) % 2)
    image = (classes * 60 + 60 + rng.normal(0, 12, (2400, 2400))).clip(0, 255)
    image = image.astype(np.uint8)
    lazy = da.from_array(image, chunks=(600, 600))
    chunked = GMMSegmenter(3, random_state=0).fit(lazy)
    in_memory = GMMSegmenter(3, random_state=0).fit(image)
    assert chunked.beta_ == in_memory.beta_
    np.testing.assert_allclose(chunked.means_, in_memory.means_, rtol=1e-9)
    np.testing.assert_allclose(chunked.covariances_, in_memory.covariances_, rtol=1e-9)


def test_fit_and_predict_never_materialise_the_volume(volume, monkeypatch):
    # the spatial prior is fitted on tiles spread over the volume (a crop when guided)
    monkeypatch.setattr(_dask, "SPATIAL_FIT_PIXELS", 2000)
    monkeypatch.setattr(_hmrf, "FIT_PIXELS", 2000)
    monkeypatch.setattr(_hmrf, "TILE_PIXELS", 256)
    lazy = da.from_array(volume, chunks=(8, 20, 18))
    block_bytes = 8 * 20 * 18 * volume.itemsize
    with dask.config.set(scheduler="sync"), _Largest() as largest:
        segmenter = GMMSegmenter(3, random_state=0).fit(lazy)
    assert 0 < largest.largest <= 64 * block_bytes // 2  # histogram counts, not the volume
    assert largest.largest < volume.nbytes // 2  # one tile of it
    labels = segmenter.predict(lazy)  # building the graph computes nothing
    with dask.config.set(scheduler="sync"), _Largest() as largest:
        labels.blocks[0, 0, 0].compute()
    halo_block = (8 + 16) * (20 + 16) * (18 + 16)
    assert largest.largest <= halo_block * 3 * 4 < volume.size * 3 * 4


def test_predict_builds_a_graph_without_computing():
    def boom(block):
        raise AssertionError("a block was computed")

    image = _phantom((40, 40))
    segmenter = GMMSegmenter(3, beta=0.5, random_state=0).fit(image)
    exploding = da.from_array(image, chunks=20).map_blocks(boom, dtype=image.dtype)
    for method in (segmenter.predict, segmenter.predict_proba, segmenter.transform):
        assert isinstance(method(exploding), da.Array)


def test_the_function_shipped_to_workers_is_small():
    image = _phantom((200, 200))
    segmenter = GMMSegmenter(3, random_state=0).fit(image)
    graph = segmenter.predict(da.from_array(image, chunks=100)).__dask_graph__()
    import cloudpickle

    layer = [layer for name, layer in graph.layers.items() if "gmm" in name][0]
    size = len(cloudpickle.dumps(dict(layer)))
    assert size < 64_000, size
    # what the workers get: the frozen fitted model, not the estimator
    assert len(pickle.dumps(segmenter.model_)) < 8_000


def test_batch_mixes_dask_and_numpy(volume):
    segmenter = GMMSegmenter(3, beta=0, random_state=0).fit(volume)
    lazy, eager = segmenter.predict([da.from_array(volume, chunks=12), volume])
    assert isinstance(lazy, da.Array) and isinstance(eager, np.ndarray)
    np.testing.assert_array_equal(lazy.compute(), eager)


def test_zarr_round_trip(tmp_path, volume):
    zarr = pytest.importorskip("zarr")
    store = zarr.open(str(tmp_path / "volume.zarr"), mode="w", shape=volume.shape,
                      chunks=(12, 20, 18), dtype=volume.dtype)
    store[...] = volume
    source = zarr.open(str(tmp_path / "volume.zarr"), mode="r")
    segmenter = GMMSegmenter(3, random_state=0).fit(da.from_zarr(source))
    labels = segmenter.predict(source)  # a zarr array goes through dask
    assert isinstance(labels, da.Array) and labels.chunks == da.from_zarr(source).chunks
    labels.to_zarr(str(tmp_path / "labels.zarr"))
    written = zarr.open(str(tmp_path / "labels.zarr"), mode="r")
    expected = GMMSegmenter(3, random_state=0).fit(volume).predict(volume)
    assert np.mean(written[...] != expected) < SEAM_TOLERANCE


def test_runs_on_a_distributed_cluster(volume):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit="400MiB",
        dashboard_address=None, silence_logs=50,
    ) as cluster, distributed.Client(cluster):
        lazy = da.from_array(volume, chunks=(12, 20, 18))
        segmenter = GMMSegmenter(3, random_state=0).fit(lazy)
        labels = segmenter.predict(lazy).compute()
        pixelwise = GMMSegmenter(3, beta=0, random_state=0).fit(lazy)
        exact = pixelwise.predict(lazy).compute()
    np.testing.assert_array_equal(exact, pixelwise.predict(volume))
    expected = GMMSegmenter(3, random_state=0).fit(volume).predict(volume)
    assert np.mean(labels != expected) < SEAM_TOLERANCE


def test_cli_segments_a_zarr_volume_into_a_zarr_store(tmp_path, volume):
    zarr = pytest.importorskip("zarr")
    from gmm_segmenter.cli import main

    store = zarr.open(str(tmp_path / "vol.zarr"), mode="w", shape=volume.shape,
                      chunks=(12, 20, 18), dtype=volume.dtype)
    store[...] = volume
    assert main([str(tmp_path / "vol.zarr"), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["vol_labels.zarr", "vol_report.json"]
    labels = zarr.open(str(tmp_path / "out" / "vol_labels.zarr"), mode="r")
    assert labels.shape == volume.shape and labels.chunks == (12, 20, 18)
    expected = GMMSegmenter(3, random_state=0).fit(volume).predict(volume)
    assert np.mean(labels[...] != expected) < SEAM_TOLERANCE
    import json

    report = json.loads((tmp_path / "out" / "vol_report.json").read_text())
    assert sum(report["pixels_per_label"].values()) == volume.size
    # its report gives the voxel size, as an in-memory input's does
    assert main([str(tmp_path / "vol.zarr"), "-o", str(tmp_path / "sized"), "--quiet",
                 "--beta", "0.5", "--spacing", "3", "1", "1"]) == 0
    report = json.loads((tmp_path / "sized" / "vol_report.json").read_text())
    assert report["voxel_size"] == {"spacing": [3.0, 1.0, 1.0], "unit": None,
                                    "from": "--spacing"}


def test_cli_says_which_outputs_a_zarr_volume_does_not_get(tmp_path, volume, capsys):
    zarr = pytest.importorskip("zarr")
    from gmm_segmenter.cli import main

    store = zarr.open(str(tmp_path / "vol.zarr"), mode="w", shape=volume.shape,
                      chunks=(12, 20, 18), dtype=volume.dtype)
    store[...] = volume
    args = [str(tmp_path / "vol.zarr"), "-o", str(tmp_path / "out"), "--beta", "0"]
    assert main(args + ["--proba", "--bias-field", "auto"]) == 0
    err = capsys.readouterr().err
    # one line, naming both options; dask's bar is not drawn into a file
    (line,) = [text for text in err.splitlines() if "not written" in text]
    assert "--proba (vol_proba.tif) and --bias-field's field (vol_bias.tif) not" in line, line
    assert "for a zarr store's input" in line and "volume" not in line, line  # 2-D too
    assert "Completed" not in err and "\r" not in err, err
    import json

    report = json.loads((tmp_path / "out" / "vol_report.json").read_text())
    assert any("--proba" in text for text in report["warnings"]), report["warnings"]
    # whether the field corrected anything, as for an image in memory
    field = report["bias_field"]
    assert field["corrected"] is (not field["min"] == field["max"] == 1.0), field
    assert main(args) == 0  # asked for neither: nothing to say
    assert "not written" not in capsys.readouterr().err


@pytest.mark.parametrize("chunks", [(1, 256), (256, 1), (5, 256)])
def test_thin_chunks_keep_the_seam_tolerance_and_their_layout(chunks):
    # a chunk thinner than the halo cut its neighbours' halo to its own
    # width: 1-pixel rows differed from the in-memory labels at 1.4e-3
    image = _phantom((256, 256), noise=60.0)
    model = GMMSegmenter(3, random_state=0).fit(image)
    expected = model.predict(image)
    lazy = model.predict(da.from_array(image, chunks=chunks))
    assert lazy.chunks == da.from_array(image, chunks=chunks).chunks
    differing = np.mean(lazy.compute() != expected)
    assert differing < SEAM_TOLERANCE / 2, differing


def test_thin_chunks_are_merged_along_their_seams_only():
    from gmm_segmenter._dask import MAX_MERGED_PIXELS, MIN_SPATIAL_CHUNK, _thick_chunks

    assert (MIN_SPATIAL_CHUNK, MAX_MERGED_PIXELS) == (32, 1 << 22)
    assert _thick_chunks(((1,) * 70, (256,) * 2, (5, 40, 3))) == ((32, 38), (256,) * 2, (48,))
    assert _thick_chunks(((2048,), (100, 1))) == ((2048,), (101,))
    # not into blocks of more than 2**22 pixels (or the input's largest):
    # 32 slices of 4096² would be half a billion
    assert _thick_chunks(((1,) * 70, (4096,), (4096,))) == ((1,) * 70, (4096,), (4096,))
    assert _thick_chunks(((1,) * 70, (1024,) * 4, (512,) * 8)) == (
        (8,) * 7 + (14,), (1024,) * 4, (512,) * 8
    )


def test_uint64_above_2_63_fits_the_same_from_chunks():
    rng = np.random.default_rng(0)
    image = (np.uint64(2**63) + rng.choice([0, 10**6, 2 * 10**6, 5 * 10**8, 5 * 10**8 + 10**6], size=(40, 40)).astype(np.uint64))
    in_memory = GMMSegmenter(2, beta=0).fit(image)
    from_chunks = GMMSegmenter(2, beta=0).fit(da.from_array(image, chunks=(20, 20)))
    np.testing.assert_allclose(from_chunks.means_, in_memory.means_, rtol=1e-12)
    assert from_chunks.fit_method_ == in_memory.fit_method_ == "histogram"


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_two_lazy_predictions_in_one_graph_stay_apart(volume, beta):
    # frames of a time series are stacked into one array: their keys must differ
    segmenter = GMMSegmenter(3, beta=beta, random_state=0).fit(volume)
    frames = [volume, volume[:, ::-1].copy()]
    lazy = [segmenter.predict(da.from_array(frame, chunks=(12, 20, 18))) for frame in frames]
    stacked = da.stack(lazy).compute()
    for index, frame in enumerate(frames):
        assert np.mean(stacked[index] != segmenter.predict(frame)) < SEAM_TOLERANCE
