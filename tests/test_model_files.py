"""Model files are checked for meaning, and load_model raises only ValueError."""

import io
import json
import threading
import zipfile

import numpy as np
import pytest

from gmm_segmenter import GMMSegmenter
from gmm_segmenter import io as gio


def _saved(tmp_path, n_features=1, covariance_type="full"):
    rng = np.random.default_rng(0)
    if n_features == 1:
        image = np.repeat([10.0, 100.0, 200.0], 40)[np.newaxis].repeat(5, axis=0)
        image = image + rng.normal(scale=3, size=image.shape)
        segmenter = GMMSegmenter(3, beta=0.0, covariance_type=covariance_type, random_state=0)
        segmenter.fit(image)
    else:
        image = rng.normal(size=(30, 40, n_features)) + (np.arange(40) // 14)[:, None] * 5
        segmenter = GMMSegmenter(3, beta=0.0, covariance_type=covariance_type,
                                 channel_axis=-1, random_state=0).fit(image)
    return gio.save_model(segmenter, tmp_path / "model.npz")


def _arrays(path):
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def _write(path, arrays):
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)
    return path


def _refused(path, match):
    with pytest.raises(ValueError, match=f"not a valid gmm-segmenter model file: {match}"):
        gio.load_model(path)


def test_huge_variances_are_refused_instead_of_giving_nan(tmp_path):
    path = _saved(tmp_path)
    arrays = _arrays(path)
    arrays["covariances"] = np.full_like(arrays["covariances"], 1e300)
    _refused(_write(tmp_path / "huge.npz", arrays), "variances range from 1e\\+300")
    arrays["covariances"] = np.full_like(arrays["covariances"], 1e200)
    _refused(_write(tmp_path / "off.npz", arrays), "the variances do not match the intensity")


def test_an_asymmetric_covariance_is_refused(tmp_path):
    path = _saved(tmp_path, n_features=2)
    arrays = _arrays(path)
    arrays["covariances"][1, 0, 1] += 0.5 * abs(arrays["covariances"][1, 0, 1]) + 0.1
    _refused(_write(tmp_path / "asym.npz", arrays), "the covariances are not symmetric")


def test_a_valid_model_still_loads_and_labels_like_the_original(tmp_path):
    for covariance_type in ("full", "tied", "diag", "spherical"):
        path = _saved(tmp_path, n_features=2, covariance_type=covariance_type)
        loaded = gio.load_model(path)
        assert loaded.n_components_ == 3


def test_too_many_components_for_memory_are_refused(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    monkeypatch.setattr("gmm_segmenter._image.available_memory", lambda: 1024**2)
    _refused(path, "its 3 components need about .* per chunk of pixels when labelling")


def test_deeply_nested_json_is_a_value_error(tmp_path):
    arrays = _arrays(_saved(tmp_path))
    arrays["metadata"] = np.array("[" * 100_000 + "]" * 100_000)
    _refused(_write(tmp_path / "nested.npz", arrays), "'metadata' is JSON nested too deeply")


def test_an_npy_header_claiming_a_huge_array_is_refused_before_reading(tmp_path):
    path = _saved(tmp_path)
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**15,)}
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(b"\0" * 64)
    crafted = tmp_path / "claim.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(crafted, "w") as target:
        for info in source.infolist():
            data = buffer.getvalue() if info.filename == "weights.npy" else source.read(info)
            target.writestr(info.filename, data)
    _refused(crafted, "array 'weights' claims shape \\(1000000000000000,\\)")


def test_an_unsupported_zip_feature_is_a_value_error(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    # the "version needed to extract" of the first central directory entry: 21.2
    entry = data.index(b"PK\x01\x02")
    data[entry + 6 : entry + 8] = (212).to_bytes(2, "little")
    crafted = tmp_path / "version.npz"
    crafted.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="version.npz: not a valid gmm-segmenter model file"):
        gio.load_model(crafted)


def test_dev_zero_as_a_model_is_refused_at_once():
    outcome = {}

    def target():
        try:
            gio.load_model("/dev/zero")
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert isinstance(outcome["error"], ValueError)
    assert "not a regular file" in str(outcome["error"])
