"""The gmm-segment command: in-process through ``main(argv)`` and as a subprocess."""

import io
import json
import os
import select
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pytest
import tifffile
from _helpers import run_cli
from _images import gray_bands, rgb_bands

from gmm_segmenter import GMMSegmenter, __version__, cli
from gmm_segmenter import io as gio

# Pixel-wise model: fast and exactly checkable (labels are then the argmax of
# the posteriors). The spatial prior itself is tested with the estimator.
FAST = ["--beta", "0"]

# The pictures the commands here read, written and checked again by the tests.
gray_image = partial(gray_bands, (30, 36))
rgb_image = partial(rgb_bands, (24, 30))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    gio.write_png(folder / "gray.png", gray_image())
    gio.write_png(folder / "rgb.png", rgb_image())
    return folder


def check_outputs(outdir, name, image, colors="mean", masks=True, ext=".png"):
    """Every output of one input is present, valid and consistent; returns (labels, report)."""
    report = json.loads((outdir / f"{name}_report.json").read_text())
    k = report["n_components"]
    labels = tifffile.imread(outdir / f"{name}_labels.tif")
    spatial = image.shape[:-1] if report["channel_axis"] is not None else image.shape
    assert labels.shape == spatial and labels.dtype == np.uint8
    assert labels.min() >= 1 and labels.max() <= k  # no mask: every pixel labelled
    assert {int(v) for v in np.unique(labels)} <= set(range(1, k + 1))
    counts = np.bincount(labels.ravel(), minlength=k + 1)
    assert report["pixels_per_label"] == {str(i): int(n) for i, n in enumerate(counts)}

    read = tifffile.imread if ext == ".tif" else gio.read_image
    for j in range(k):
        path = outdir / f"{name}_Mask{j}{ext}"
        if not masks:
            assert not path.exists()
            continue
        mask = read(path)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, labels == j + 1)
    assert not (outdir / f"{name}_Mask{k}{ext}").exists()

    segmented = read(outdir / f"{name}_segmented{ext}")
    means = np.asarray(report["model"]["means"])
    if colors == "mean":
        expected = np.clip(np.rint(means), 0, np.iinfo(segmented.dtype).max)
        if means.shape[1] == 1:
            expected = expected[:, 0]
        np.testing.assert_array_equal(segmented, expected[labels - 1])
    else:
        colours = segmented.reshape(-1, 3)
        per_label = {int(l): {tuple(c) for c in colours[labels.ravel() == l]} for l in np.unique(labels)}
        assert all(len(c) == 1 for c in per_label.values())
        assert len({next(iter(c)) for c in per_label.values()}) == len(per_label)
    assert set(report["outputs"]) <= {p.name for p in outdir.iterdir()}
    assert not [p for p in outdir.iterdir() if p.name.endswith(".part")]
    return labels, report


# ------------------------------------------------------------------ batches


def test_batch_folder_with_good_and_bad_files(tmp_path, images, capsys):
    (images / "notes.png").write_text("not an image at all\n")
    whole = (images / "gray.png").read_bytes()
    (images / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (images / "readme.txt").write_text("ignored: not an image extension\n")
    outdir = tmp_path / "out"
    missing = tmp_path / "missing.png"

    status, out, err = run_cli([images, missing, "-k", "3", "-o", outdir, *FAST], capsys)

    assert status == 1
    errors = err.strip().splitlines()
    assert len(errors) == 3, err
    assert all(line.startswith("gmm-segment: error: ") for line in errors)
    for bad in ("notes.png", "truncated.png", "missing.png"):
        assert sum(bad in line for line in errors) == 1
    assert "Traceback" not in err
    check_outputs(outdir, "gray", gray_image())
    labels, report = check_outputs(outdir, "rgb", rgb_image())
    assert report["channel_axis"] == 2
    np.testing.assert_array_equal(labels, np.repeat([1, 2, 3], 10)[np.newaxis].repeat(24, 0))
    assert not list(outdir.glob("notes*")) and not list(outdir.glob("truncated*"))
    assert "2 of 5 input(s) segmented" in out


def test_a_run_that_segments_nothing_leaves_no_empty_output_folder(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    outdir = tmp_path / "Result"
    status, out, err = run_cli([broken, "-k", "3", "-o", outdir, *FAST], capsys)
    assert status == 1 and "broken.png" in err
    assert not outdir.exists()
    assert "0 of 1 input(s) segmented; 1 failed" in out
    # a folder that was there before stays, even when nothing lands in it
    outdir.mkdir()
    assert run_cli([broken, "-k", "3", "-o", outdir, *FAST], capsys)[0] == 1
    assert outdir.is_dir()


def test_report_contents(tmp_path, images):
    assert run_cli([images / "gray.png", "-k", "3", "-o", tmp_path, *FAST]) == 0
    labels, report = check_outputs(tmp_path, "gray", gray_image())
    assert report["n_components"] == 3 and report["n_components_requested"] == 3
    assert report["model"]["source"] == "fitted on this image"
    assert len(report["model"]["weights"]) == 3
    assert np.isfinite(report["bic"]) and report["seconds"]["total"] > 0
    assert report["versions"]["gmm_segmenter"] == __version__
    assert {"numpy", "sklearn", "skimage"} <= set(report["versions"])
    assert report["model"]["params"]["random_state"] == 0
    np.testing.assert_allclose(sorted(np.ravel(report["model"]["means"])), [30, 120, 210], atol=5)


def test_the_report_gives_the_smoothing_strength_chosen(tmp_path, images):
    assert run_cli([images / "gray.png", "-k", "3", "-o", tmp_path, "--seed", "0"]) == 0
    report = json.loads((tmp_path / "gray_report.json").read_text())
    assert report["model"]["params"]["beta"] == "auto"
    chosen = report["model"]["beta"]
    again = GMMSegmenter(3, random_state=0).fit(gray_image())
    assert chosen == pytest.approx(again.beta_) and chosen > 0
    assert report["model"]["spatial_converged"] is True
    assert report["model"]["spatial_n_iter"] == again.spatial_n_iter_ > 0


def test_the_report_says_when_spatial_em_stopped_short(tmp_path, images, capsys):
    image = gray_image()
    noisy = image + np.random.default_rng(0).normal(0, 40, image.shape)
    gio.write_tiff(tmp_path / "noisy.tif", noisy.astype(np.float32))
    status, _, err = run_cli([tmp_path / "noisy.tif", "-k", "3", "--beta", "1",
                              "--max-iter-spatial", "1", "-o", tmp_path / "out"], capsys)
    assert status == 0 and "Raise --max-iter-spatial or --tol" in err
    report = json.loads((tmp_path / "out" / "noisy_report.json").read_text())
    assert report["model"]["spatial_converged"] is False
    assert report["model"]["spatial_n_iter"] == 1
    assert report["model"]["params"]["max_iter_spatial"] == 1


def test_auto_k_reports_the_bic_curve(tmp_path, images):
    assert run_cli([images / "gray.png", "-k", "auto", "--k-range", "1", "4", "-o", tmp_path,
                    *FAST]) == 0
    _, report = check_outputs(tmp_path, "gray", gray_image())
    assert report["n_components_requested"] == "auto"
    assert report["bic_curve"]["n_components"] == [1, 2, 3, 4]
    assert report["n_components"] == 3
    # the curve is of the fit's sample in standardised units: the file says
    # so, since its values are on another scale than "bic"
    assert "standardised units" in report["bic_curve"]["compared_on"]


def test_colors_labels_no_masks_and_proba(tmp_path, images):
    status = run_cli([images / "rgb.png", "-k", "3", "-o", tmp_path, "--colors", "labels",
                      "--no-masks", "--proba", *FAST])
    assert status == 0
    labels, report = check_outputs(tmp_path, "rgb", rgb_image(), colors="labels", masks=False)
    proba = tifffile.imread(tmp_path / "rgb_proba.tif")
    assert proba.dtype == np.float32 and proba.shape == (3,) + labels.shape  # components first
    np.testing.assert_allclose(proba.sum(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=0) + 1, labels)
    assert "rgb_proba.tif" in report["outputs"]


def test_16_bit_tiff_and_volume(tmp_path):
    deep = gray_image().astype(np.uint16) * 200 + 1000
    gio.write_tiff(tmp_path / "deep.tif", deep)
    volume = np.stack([gray_image(seed=s) for s in range(4)])  # (4, 30, 36): 4 pages
    tifffile.imwrite(tmp_path / "volume.tif", volume, photometric="minisblack")
    outdir = tmp_path / "out"
    assert run_cli([tmp_path / "deep.tif", tmp_path / "volume.tif", "-o", outdir, *FAST]) == 0
    # 16-bit input: the segmented picture is a 16-bit PNG of the true means
    check_outputs(outdir, "deep", deep)
    assert gio.read_image(outdir / "deep_segmented.png").dtype == np.uint16
    # a volume: labels are 3-D, pictures and masks are multi-page TIFFs
    labels, report = check_outputs(outdir, "volume", volume, ext=".tif")
    assert labels.shape == volume.shape and report["channel_axis"] is None


def test_channel_axis_none_and_alpha(tmp_path):
    rgba = np.dstack([rgb_image(), np.full(rgb_image().shape[:2], 255, np.uint8)])
    rgba[:4, :, 3] = 0  # transparent rows are not segmented
    gio.write_png(tmp_path / "rgba.png", rgba)
    assert run_cli([tmp_path / "rgba.png", "-o", tmp_path / "a", *FAST]) == 0
    labels = tifffile.imread(tmp_path / "a" / "rgba_labels.tif")
    assert (labels[:4] == 0).all() and (labels[4:] > 0).all()
    report = json.loads((tmp_path / "a" / "rgba_report.json").read_text())
    assert report["alpha_channel_as_mask"] and len(report["model"]["means"][0]) == 3

    assert run_cli([tmp_path / "rgba.png", "--channel-axis", "none", "-k", "2",
                    "-o", tmp_path / "b", *FAST]) == 0
    assert tifffile.imread(tmp_path / "b" / "rgba_labels.tif").shape == rgba.shape


def test_mask_file(tmp_path, images):
    mask = np.zeros(gray_image().shape, np.uint8)
    mask[5:25, 5:30] = 255
    gio.write_png(tmp_path / "mask.png", mask)
    assert run_cli([images / "gray.png", "--mask", tmp_path / "mask.png", "-o", tmp_path / "o",
                    *FAST]) == 0
    labels = tifffile.imread(tmp_path / "o" / "gray_labels.tif")
    np.testing.assert_array_equal(labels > 0, mask > 0)
    segmented = gio.read_image(tmp_path / "o" / "gray_segmented.png")
    assert (segmented[mask == 0] == 0).all()
    # a mask of the wrong shape fails that input only
    status = run_cli([images / "gray.png", images / "rgb.png", "--mask", tmp_path / "mask.png",
                      "-o", tmp_path / "p", *FAST])
    assert status == 1 and (tmp_path / "p" / "gray_labels.tif").exists()


def test_a_mask_kept_with_its_images_is_not_segmented_as_one_of_them(tmp_path, images, capsys):
    mask = np.zeros(gray_image().shape, np.uint8)
    mask[5:25, 5:30] = 255
    gio.write_png(images / "mask.png", mask)
    for inputs in ([images], [str(images / "*.png")]):
        outdir = tmp_path / f"o{len(str(inputs))}"
        status, out, err = run_cli([*inputs, "--mask", images / "mask.png", "-o", outdir,
                                    "--no-masks", "-k", "2", *FAST], capsys)
        assert status == 1, err  # rgb.png has another shape than the mask: that input fails
        assert "mask.png: the --mask file, not segmented as an input" in err
        assert not (outdir / "mask_labels.tif").exists()
        assert (outdir / "gray_labels.tif").exists()
    # named on its own, it is an input
    status, out, err = run_cli([images / "mask.png", images / "gray.png", "--mask",
                                images / "mask.png", "-o", tmp_path / "named", "--no-masks",
                                "-k", "2", *FAST], capsys)
    # (inside itself the mask holds one value: 2 components fail on it)
    assert "mask.png: -k 2 asks for 2 components" in err and "not segmented" not in err
    status, out, err = run_cli([images, images / "mask.png", "--mask", images / "mask.png",
                                "-o", tmp_path / "both", "--no-masks", "-k", "2", *FAST], capsys)
    assert "mask.png: -k 2 asks for 2 components" in err and "not segmented" not in err, err
    # a folder of nothing else is an error that says so
    alone = tmp_path / "alone"
    alone.mkdir()
    gio.write_png(alone / "mask.png", mask)
    status, out, err = run_cli([alone, "--mask", alone / "mask.png", "-o", tmp_path / "none",
                                *FAST], capsys)
    assert status == 1 and "alone: holds no image to segment besides the --mask file" in err, err


def test_an_imagej_hyperstack_is_read_with_its_channels_and_voxel_size(tmp_path, capsys):
    # Fiji's (Z, C, Y, X) stack of 0.5 x 0.5 x 1.5 um voxels: it was a 4-D grey volume
    # of cubic voxels, and the outputs opened in Fiji at 1 x 1 x 1 pixel
    rng = np.random.default_rng(0)
    stack = (rng.random((6, 2, 30, 32)) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "hyper.tif", stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"})
    status, out, err = run_cli([tmp_path / "hyper.tif", "-k", "2", "--beta", "0.5", "-o",
                                tmp_path / "out", "--no-masks", "--proba"], capsys)
    assert status == 0, err
    assert ("hyper_* (4 files); channels on axis 1 and voxel size 1.5 x 0.5 x 0.5 um, as "
            "the file records") in out + err
    report = json.loads((tmp_path / "out" / "hyper_report.json").read_text())
    assert report["channel_axis"] == 1 and report["axes"] == "ZCYX"
    assert report["voxel_size"] == {"spacing": [1.5, 0.5, 0.5], "unit": "um",
                                    "from": "the file's metadata"}
    assert report["model"]["params"]["spacing"] == [1.5, 0.5, 0.5]
    assert len(report["model"]["means"][0]) == 2  # the two channels modelled together
    for name in ("hyper_labels.tif", "hyper_segmented.tif"):  # (the picture is RGB)
        found = gio.read_tiff_axes(tmp_path / "out" / name)
        colour = found.axes.index("S") if "S" in found.axes else None
        assert found.spacing(colour) == (1.5, 0.5, 0.5), name
        assert found.unit == "um", name
    assert tifffile.imread(tmp_path / "out" / "hyper_labels.tif").shape == (6, 30, 32)
    assert tifffile.imread(tmp_path / "out" / "hyper_proba.tif").shape == (2, 6, 30, 32)
    # the options say otherwise: they win
    status, out, err = run_cli([tmp_path / "hyper.tif", "-k", "2", "--beta", "0.5", "-o",
                                tmp_path / "given", "--no-masks", "--spacing", "3", "1", "1"],
                               capsys)
    report = json.loads((tmp_path / "given" / "hyper_report.json").read_text())
    assert report["voxel_size"] == {"spacing": [3.0, 1.0, 1.0], "unit": None, "from": "--spacing"}
    assert "as the file records" in out + err and "voxel size" not in out + err
    assert gio.read_tiff_axes(tmp_path / "given" / "hyper_labels.tif").spacing() == (3, 1, 1)
    status, out, err = run_cli([tmp_path / "hyper.tif", "-k", "2", "--beta", "0", "-o",
                                tmp_path / "grey", "--no-masks", "--channel-axis", "none"],
                               capsys)
    report = json.loads((tmp_path / "grey" / "hyper_report.json").read_text())
    assert report["channel_axis"] is None and "voxel_size" not in report
    # ... and says what it drops
    assert ("--channel-axis none takes the file's channel axis (axis 1, C of ZCYX) as one "
            "more axis of space: segmented as a 4-D grey image, without the voxel size the "
            "file records") in err, err
    # a size for every axis of a file whose metadata makes one the channels
    status, out, err = run_cli([tmp_path / "hyper.tif", "-k", "2", "--beta", "0", "-o",
                                tmp_path / "four", "--spacing", "1.5", "1", "0.5", "0.5"],
                               capsys)
    assert status == 1 and ("--spacing gives 4 sizes, one per axis, but the file's metadata "
                            "names its axes ZCYX: axis 1 (C) holds the channels") in err, err
    assert "Give 3 sizes (in the order ZYX), or --channel-axis none" in err, err
    # an axis the file does not have: the range, as for other files (it was an IndexError
    # of the metadata's axis letters, "string index out of range")
    for axis in ("5", "-5"):
        status, out, err = run_cli([tmp_path / "hyper.tif", "-k", "2", "-o", tmp_path / "far",
                                    "--channel-axis", axis], capsys)
        assert status == 1 and (f"--channel-axis {axis} is out of range for an image of shape "
                                "(6, 2, 30, 32); use an axis in [-4, 3] or 'none'") in err, err
    # a time axis the metadata names is said to be segmented as space (it was silent)
    tifffile.imwrite(tmp_path / "movie.tif", stack[:, 0], imagej=True,
                     resolution=(2.0, 2.0), metadata={"axes": "TYX", "unit": "um"})
    status, out, err = run_cli([tmp_path / "movie.tif", "-k", "2", "--beta", "0", "-o",
                                tmp_path / "movie", "--no-masks"], capsys)
    assert status == 0 and ("The file's metadata names a time axis (T of TYX): it is "
                            "segmented as one more axis of space, smoothed across frames as "
                            "within them and without a voxel size") in err, err
    assert "segment the YX frames one by one with one model" in err
    assert "in Python fit one GMMSegmenter on the list of frames (docs/cli.md" in err
    # frames of channels: the advice gives their channel axis
    tifffile.imwrite(tmp_path / "movie2.tif", stack, imagej=True, metadata={"axes": "TCYX"})
    status, out, err = run_cli([tmp_path / "movie2.tif", "-k", "2", "--beta", "0", "-o",
                                tmp_path / "movie2", "--no-masks"], capsys)
    assert status == 0 and "the list of frames (channels on their axis 0)" in err, err
    # with a --model nothing is fitted: the advice labels the frames with it
    model = tmp_path / "movie.npz"
    assert run_cli([tmp_path / "movie.tif", "-k", "2", "--beta", "0", "-o",
                    tmp_path / "fitted", "--save-model", model]) == 0
    capsys.readouterr()
    status, out, err = run_cli([tmp_path / "movie.tif", "--model", model, "-o",
                                tmp_path / "applied"], capsys)
    assert status == 0 and ("To label the YX frames one by one with the --model, use napari's "
                            "Apply model") in err, err
    report = json.loads((tmp_path / "movie" / "movie_report.json").read_text())
    assert "time axis" in report["warnings"][0]
    # what the metadata names wins over what the shape suggests: a stack of 3 slices
    # is a volume, and 10 channels named by the file are not questioned
    tifffile.imwrite(tmp_path / "thin.tif", stack[:3, 0], imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 3.0, "unit": "um"})
    tifffile.imwrite(tmp_path / "many.tif", stack[:3].repeat(5, axis=1), imagej=True,
                     metadata={"axes": "ZCYX"})
    status, out, err = run_cli([tmp_path / "thin.tif", tmp_path / "many.tif", "-k", "2",
                                "--beta", "0", "-o", tmp_path / "named", "--no-masks"], capsys)
    assert status == 0 and "looks like" not in err, err
    assert json.loads((tmp_path / "named" / "many_report.json").read_text())["channel_axis"] == 1
    # a calibrated colour picture read as a volume of 3 slices: no size for them, no error
    tifffile.imwrite(tmp_path / "rgb.tif", stack[0, 0, :, :, None].repeat(3, -1).astype(np.uint8),
                     imagej=True, resolution=(2.0, 2.0), metadata={"axes": "YXS", "unit": "um"})
    for option, sizes in (("auto", [0.5, 0.5]), ("none", None)):
        status, out, err = run_cli([tmp_path / "rgb.tif", "-k", "2", "--beta", "0.5", "-o",
                                    tmp_path / option, "--no-masks", "--channel-axis", option],
                                   capsys)
        assert status == 0, err
        report = json.loads((tmp_path / option / "rgb_report.json").read_text())
        assert report.get("voxel_size", {}).get("spacing") == sizes
    # files of other voxel sizes fitted together: said, and fitted with none
    tifffile.imwrite(tmp_path / "other.tif", stack, imagej=True, resolution=(1.0, 1.0),
                     metadata={"axes": "ZCYX", "spacing": 1.0, "unit": "um"})
    status, out, err = run_cli([tmp_path / "hyper.tif", tmp_path / "other.tif", "--fit-on",
                                "-k", "2", "--beta", "0.5", "-o", tmp_path / "both",
                                "--no-masks"], capsys)
    assert status == 0 and "--fit-on: the files record voxels of different shapes" in err, err
    assert "hyper.tif: 1.5 x 0.5 x 0.5 um" in err
    report = json.loads((tmp_path / "both" / "other_report.json").read_text())
    assert report["voxel_size"]["spacing"] == [1.0, 1.0, 1.0]  # labelled at its own
    assert "voxels of different shapes" in report["warnings"][0]
    # the same voxel in nanometres is the same voxel; an OME-TIFF is named without .ome
    tifffile.imwrite(tmp_path / "nm.ome.tif", stack, ome=True, metadata={
        "axes": "ZCYX", "PhysicalSizeX": 500, "PhysicalSizeY": 500, "PhysicalSizeZ": 1500,
        "PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm", "PhysicalSizeZUnit": "nm"})
    status, out, err = run_cli([tmp_path / "hyper.tif", tmp_path / "nm.ome.tif", "--fit-on",
                                "-k", "2", "--beta", "0.5", "-o", tmp_path / "units",
                                "--no-masks"], capsys)
    assert status == 0 and "different shapes" not in err, err
    report = json.loads((tmp_path / "units" / "nm_report.json").read_text())
    assert report["voxel_size"]["spacing"] == [1500.0, 500.0, 500.0]
    assert report["voxel_size"]["unit"] == "nm" and report["channel_axis"] == 1


def test_sample_image(tmp_path, capsys):
    status, out, err = run_cli(["--sample", "coins", "-k", "2", "-o", tmp_path, "--no-masks",
                                *FAST], capsys)
    assert status == 0, err
    from skimage import data

    labels, report = check_outputs(tmp_path, "coins", data.coins(), masks=False)
    assert report["input"] == "skimage.data.coins"


def test_sample_names_only_ship_with_scikit_image():
    names = cli.available_samples()
    assert {"astronaut", "camera", "coins", "coffee"} <= set(names)


def test_duplicate_stems_and_globs(tmp_path, capsys):
    gio.write_png(tmp_path / "a.png", gray_image())
    gio.write_tiff(tmp_path / "a.tif", gray_image(seed=1))
    outdir = tmp_path / "out"
    status, out, err = run_cli([str(tmp_path / "a.*"), str(tmp_path / "zz*.png"), "-o", outdir,
                                "--no-masks", *FAST], capsys)
    assert status == 1 and "zz*.png: no file matches" in err
    assert (outdir / "a_png_labels.tif").exists() and (outdir / "a_tif_labels.tif").exists()


def test_inputs_sharing_a_stem_are_named_by_their_folders_in_any_order(tmp_path, capsys):
    for folder, seed in (("left", 1), ("right", 2)):
        (tmp_path / folder).mkdir()
        gio.write_png(tmp_path / folder / "img.png", gray_image(seed=seed))
    left, right = str(tmp_path / "left" / "img.png"), str(tmp_path / "right" / "img.png")
    for order, outdir in (((left, right), "one"), ((right, left), "two")):
        status, _, _ = run_cli([*order, "-o", tmp_path / outdir, "--no-masks", *FAST], capsys)
        assert status == 0
        for folder in ("left", "right"):
            report = json.loads((tmp_path / outdir / f"{folder}_img_report.json").read_text())
            assert report["input"] == str(tmp_path / folder / "img.png"), report["input"]
    # and a folder deeper when the nearest ones are alike too
    (tmp_path / "other" / "left").mkdir(parents=True)
    gio.write_png(tmp_path / "other" / "left" / "img.png", gray_image(seed=3))
    status, _, _ = run_cli([left, str(tmp_path / "other" / "left" / "img.png"), "-o",
                            tmp_path / "three", "--no-masks", *FAST], capsys)
    written = {p.name for p in (tmp_path / "three").glob("*_report.json")}
    assert status == 0 and written == {
        f"{tmp_path.name}_left_img_report.json", "other_left_img_report.json"
    }, written


def test_jobs_give_the_same_results(tmp_path, images):
    for name in ("c", "d"):
        gio.write_png(images / f"{name}.png", gray_image(seed=ord(name)))
    assert run_cli([images, "-o", tmp_path / "one", "--no-masks", *FAST]) == 0
    assert run_cli([images, "-o", tmp_path / "two", "--no-masks", "--jobs", "3", *FAST]) == 0
    for name in ("gray", "rgb", "c", "d"):
        np.testing.assert_array_equal(
            tifffile.imread(tmp_path / "one" / f"{name}_labels.tif"),
            tifffile.imread(tmp_path / "two" / f"{name}_labels.tif"),
        )


# ------------------------------------------------------------------ models


def test_model_round_trip_gives_identical_labels(tmp_path, images):
    model = tmp_path / "model.npz"
    assert run_cli([images / "rgb.png", "-o", tmp_path / "fit", "--save-model", model, *FAST]) == 0
    assert run_cli([images / "rgb.png", "-o", tmp_path / "apply", "--model", model]) == 0
    fitted = tifffile.imread(tmp_path / "fit" / "rgb_labels.tif")
    applied, report = check_outputs(tmp_path / "apply", "rgb", rgb_image())
    np.testing.assert_array_equal(applied, fitted)
    assert report["model"]["source"] == f"loaded from {model}"


def test_a_model_named_without_an_extension_is_saved_as_npz(tmp_path, images, capsys):
    status, out, err = run_cli([images / "rgb.png", "-o", tmp_path / "fit", "--save-model",
                                tmp_path / "coffee4", *FAST], capsys)
    assert status == 0 and (tmp_path / "coffee4.npz").is_file(), err
    assert not (tmp_path / "coffee4").exists()
    assert f"model saved to {tmp_path / 'coffee4.npz'}" in out + err
    assert run_cli([images / "rgb.png", "-o", tmp_path / "apply", "--model",
                    tmp_path / "coffee4.npz", *FAST]) == 0
    # and --model finds it under the name it was saved as
    assert run_cli([images / "rgb.png", "-o", tmp_path / "named", "--model",
                    tmp_path / "coffee4", *FAST]) == 0
    assert run_cli([images / "rgb.png", "-o", tmp_path / "v2", "--save-model",
                    tmp_path / "brain.v2", *FAST]) == 0
    assert (tmp_path / "brain.v2.npz").is_file() and not (tmp_path / "brain.v2").exists()
    # a model under a name without .npz (saved by an earlier version) is pointed to
    (tmp_path / "coffee4.npz").rename(tmp_path / "old")
    status, out, err = run_cli([images / "rgb.png", "-o", tmp_path / "again", "--model",
                                tmp_path / "old.npz"], capsys)
    assert status == 1 and f"old.npz: no such model file; there is {tmp_path / 'old'}" in err, err


def test_a_model_fitted_with_a_channel_axis_reads_such_files_as_they_are(tmp_path, capsys):
    # fitted on a (Z, C, Y, X) stack with --channel-axis 1, the file said
    # channel_axis=-1 (the CLI moves channels last): Python and a later --model
    # without --channel-axis could not read the next stack
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, size=(6, 1, 24, 32)).repeat(2, axis=1)
    stack = (truth * [[[[1.0]], [[-1.0]]]] + 0.2 * rng.normal(size=truth.shape))
    gio.write_tiff(tmp_path / "one.tif", stack.astype(np.float32))
    gio.write_tiff(tmp_path / "two.tif", stack[::-1].astype(np.float32))
    model = tmp_path / "model.npz"
    assert run_cli([tmp_path / "one.tif", "--channel-axis", "1", "-k", "2", "-o",
                    tmp_path / "fit", "--save-model", model, *FAST]) == 0
    loaded = gio.load_model(model)
    assert loaded.channel_axis == 1
    expected = loaded.predict(stack[::-1])
    assert expected.shape == (6, 24, 32)
    assert run_cli([tmp_path / "two.tif", "--model", model, "-o", tmp_path / "apply"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "apply" / "two_labels.tif"),
                                  expected)
    report = json.loads((tmp_path / "apply" / "two_report.json").read_text())
    assert report["channel_axis"] == 1
    # a model of channels on axis 0 too (0 was taken for no axis)
    first = np.ascontiguousarray(np.moveaxis(stack, 1, 0)[:, 0]).astype(np.float32)  # (C, Y, X)
    gio.write_tiff(tmp_path / "cyx.tif", first)
    model0 = tmp_path / "model0.npz"
    assert run_cli([tmp_path / "cyx.tif", "--channel-axis", "0", "-k", "2", "-o",
                    tmp_path / "fit0", "--save-model", model0, *FAST]) == 0
    assert run_cli([tmp_path / "cyx.tif", "--model", model0, "-o", tmp_path / "apply0"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "apply0" / "cyx_labels.tif"),
                                  gio.load_model(model0).predict(first))
    # another axis given: the error names the file's axes (it said "on its axis -1")
    status, _, err = run_cli([tmp_path / "two.tif", "--model", model, "--channel-axis", "0",
                              "-o", tmp_path / "wrong"], capsys)
    assert status == 1
    assert ("The image has 6 channels (on its axis 0, shape (6, 2, 24, 32)), but the --model "
            "was fitted on images with 2 channels. Give --channel-axis 1 if that axis holds "
            "them") in err, err


def test_the_report_lists_the_warnings_said_while_reading(tmp_path):
    # a (Z, C, Y, X) stack's warning was printed but left out of its report
    stack = np.random.default_rng(0).random((12, 2, 40, 48)).astype(np.float32)
    gio.write_tiff(tmp_path / "stack.tif", stack)
    assert run_cli([tmp_path / "stack.tif", "-k", "2", "-o", tmp_path / "out", *FAST]) == 0
    report = json.loads((tmp_path / "out" / "stack_report.json").read_text())
    assert len(report["warnings"]) == 1 and "looks like channels" in report["warnings"][0]


def test_model_takes_the_beta_of_the_run(tmp_path, images):
    model, smoothing = tmp_path / "model.npz", tmp_path / "smoothing.npz"
    assert run_cli([images / "gray.png", "-o", tmp_path, "--save-model", model, *FAST]) == 0
    assert run_cli([images / "gray.png", "-o", tmp_path, "--model", model, "--beta", "2",
                    "--save-model", smoothing]) == 0
    assert gio.load_model(model).beta_ == 0.0 and gio.load_model(smoothing).beta_ == 2.0


def test_model_with_wrong_channels_fails_that_file(tmp_path, images, capsys):
    model = tmp_path / "gray.npz"
    assert run_cli([images / "gray.png", "-o", tmp_path, "--save-model", model, *FAST]) == 0
    capsys.readouterr()
    status, _, err = run_cli([images, "-o", tmp_path / "apply", "--model", model], capsys)
    assert status == 1
    assert err.count("\n") == 1 and "rgb.png" in err
    # the axis --channel-axis auto chose is not called an option the user gave
    assert ("The image is in colour (3 channels, shape (24, 30, 3)), but the --model was "
            "fitted on grey images (1 channel). Give grey images (converted to grey), or use "
            "a model fitted on images like this one.") in err and "--channel-axis" not in err
    assert (tmp_path / "apply" / "gray_labels.tif").exists()
    # a stack's channels are named on the file's own axis (it said "on its axis -1")
    stack = (np.random.default_rng(0).random((4, 2, 24, 32)) * 200).astype(np.uint8)
    tifffile.imwrite(tmp_path / "zcyx.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    status, _, err = run_cli([tmp_path / "zcyx.tif", "-o", tmp_path / "stack", "--model",
                              model], capsys)
    assert status == 1 and ("The image has 2 channels (on its axis 1, shape (4, 2, 24, 32)), "
                            "but the --model was fitted on grey images (1 channel). Give grey "
                            "images (one channel saved on its own)") in err, err


def test_bad_model_file(tmp_path, images, capsys):
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"PK\x03\x04 but not really")
    status, _, err = run_cli([images / "gray.png", "-o", tmp_path, "--model", bogus], capsys)
    assert status == 1 and "bogus.npz" in err and err.count("\n") == 1


def test_fit_on_all_inputs_shares_one_model(tmp_path):
    first, second = gray_image(seed=1), gray_image(seed=2)[:, ::-1]
    gio.write_png(tmp_path / "first.png", first)
    gio.write_png(tmp_path / "second.png", second)
    model = tmp_path / "shared.npz"
    outdir = tmp_path / "out"
    status = run_cli([tmp_path / "first.png", tmp_path / "second.png", "--fit-on",
                      "--save-model", model, "-o", outdir, *FAST])
    assert status == 0
    _, one = check_outputs(outdir, "first", first)
    labels, two = check_outputs(outdir, "second", second)
    assert one["model"]["means"] == two["model"]["means"]
    assert "together" in one["model"]["source"]
    # the same component gets the same label in both files: dark on the right now
    assert (labels[:, -5:] == 1).all() and (labels[:, :5] == 3).all()
    assert gio.load_model(model).n_components_ == 3


def test_fit_on_refuses_the_odd_one_out_of_channels_not_the_majority(tmp_path, capsys):
    # the first file set the channels: one colour picture first failed the three grey ones
    grey = gray_image(seed=1)
    gio.write_png(tmp_path / "a_colour.png", np.repeat(grey[..., None], 3, axis=-1))
    for name in ("b.png", "c.png", "d.png"):
        gio.write_png(tmp_path / name, grey)
    status, out, err = run_cli([tmp_path, "--fit-on", "-o", tmp_path / "out", *FAST], capsys)
    assert status == 1
    assert ("a_colour.png: has 3 channel(s) but " in err and "b.png and 2 other input(s) have "
            "1; --fit-on needs inputs with the same channels") in err, err
    assert "b.png: has 1" not in err
    for name in ("b", "c", "d"):
        assert (tmp_path / "out" / f"{name}_labels.tif").exists()


def test_fit_on_inputs_of_other_bit_depths_is_said_once_with_their_names(tmp_path, capsys):
    eight = gray_image(seed=1)
    gio.write_png(tmp_path / "eight.png", eight)
    gio.write_tiff(tmp_path / "sixteen.tif", gray_image(seed=2).astype(np.uint16) * 16)
    outdir = tmp_path / "out"
    status, _, err = run_cli([tmp_path / "eight.png", tmp_path / "sixteen.tif", "--fit-on",
                              "-o", outdir, *FAST], capsys)
    assert status == 0
    said = [line for line in err.splitlines() if "other types" in line or "--fit-on:" in line]
    assert len(said) == 1, err  # the estimator's own warning is not said again
    assert "eight.png is uint8 and " in said[0] and "sixteen.tif is uint16." in said[0]
    assert "Run without --fit-on" in said[0]
    for name in ("eight", "sixteen"):
        report = json.loads((outdir / f"{name}_report.json").read_text())
        assert any("eight.png is uint8" in text for text in report["warnings"]), report
    # inputs of one type: nothing said
    gio.write_png(tmp_path / "other.png", gray_image(seed=3))
    status, _, err = run_cli([tmp_path / "eight.png", tmp_path / "other.png", "--fit-on",
                              "-o", tmp_path / "out2", *FAST], capsys)
    assert status == 0 and "--fit-on:" not in err and "other types" not in err


# ------------------------------------------------------------------ usage


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-k", "3"], "no IMAGE"),
        (["x.png", "-k", "0"], "positive integer"),
        (["x.png", "--covariance-type", "round"], "invalid choice"),
        (["x.png", "--model", "m.npz", "-k", "3"], "--model applies a saved model"),
        (["x.png", "--model", "m.npz", "--beta", "auto"], "--beta auto chooses the strength"),
        (["x.png", "--beta=-1"], "--beta: expected a number from 0 to 1e6"),
        (["x.png", "--beta", "nan"], "--beta: expected a number from 0 to 1e6"),
        (["x.png", "y.png", "--save-model", "m.npz"], "add --fit-on"),
        (["x.png", "--k-range", "5", "2"], "--k-range"),
        (["--sample", "not-a-sample"], "invalid choice"),
        (["x.png", "--tol", "-1"], "--tol: expected a number from 0 to inf, got '-1'"),
        (["x.png", "--reg-covar", "nan"], "--reg-covar: expected a number from 0 to 1e+10"),
        (["x.png", "--bias-field", "yes"], "expected 'auto' or a polynomial degree"),
        (["x.png", "--bias-field", "11"], "expected 'auto' or a polynomial degree"),
    ],
)
def test_usage_errors_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli(argv, capsys)
    assert status == 2 and message in err


def test_help_and_version_exit_0(capsys):
    status, out, _ = run_cli(["--help"], capsys)
    assert status == 0 and "--channel-axis" in out and "RGB" in out
    status, out, _ = run_cli(["--version"], capsys)
    assert status == 0 and __version__ in out


def test_beta_flag_reaches_the_estimator(tmp_path, images):
    assert run_cli([images / "gray.png", "-o", tmp_path, "--beta", "0.5", "--no-masks"]) == 0
    report = json.loads((tmp_path / "gray_report.json").read_text())
    assert report["model"]["params"]["beta"] == 0.5


def test_help_shows_the_estimators_defaults():
    from gmm_segmenter.cli._parser import ESTIMATOR_DEFAULTS

    params = GMMSegmenter().get_params()
    assert ESTIMATOR_DEFAULTS == {name: params[name] for name in ESTIMATOR_DEFAULTS}


def test_parser_imports_no_numerical_library():
    # The package's __init__ is bypassed: only what the command line itself
    # loads before parsing is checked.
    code = (
        "import importlib.util, sys, types\n"
        "package = types.ModuleType('gmm_segmenter')\n"
        "package.__path__ = importlib.util.find_spec('gmm_segmenter').submodule_search_locations\n"
        "sys.modules['gmm_segmenter'] = package\n"
        "from gmm_segmenter.cli import build_parser, main\n"
        "build_parser()\n"
        "print(sorted({'numpy', 'scipy', 'sklearn', 'skimage'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_debug_shows_tracebacks(tmp_path, capsys):
    status, _, err = run_cli([tmp_path / "missing.png", "--debug", "-o", tmp_path], capsys)
    assert status == 1 and "Traceback" in err and "missing.png" in err


# ------------------------------------------------------------------ interactive


class _Terminal(io.StringIO):
    """Typed answers on a stdin that says it is a terminal."""

    def isatty(self):
        return True


def test_interactive_prompts_in_process(tmp_path, images, monkeypatch, capsys):
    # main() decides between prompting and printing usage with
    # sys.stdin.isatty(); a StringIO that claims to be a terminal drives the
    # prompts in-process. The pty test below covers a real terminal.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", _Terminal(f"{images / 'gray.png'}\nthree\n2\n"))
    status, out, _ = run_cli([], capsys)
    assert status == 0
    assert "Enter the image name" in out and "Enter the number of components" in out
    assert "positive whole number" in out  # 'three' was refused, then 2 accepted
    _, report = check_outputs(tmp_path / "Result", "gray", gray_image())
    assert report["n_components"] == 2


def test_no_arguments_without_a_terminal_prints_usage(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status, _, err = run_cli([], capsys)
    assert status == 2 and err.startswith("usage: gmm-segment")


# ------------------------------------------------------------------ subprocess


def _command(*argv):
    return [sys.executable, "-m", "gmm_segmenter", *map(str, argv)]


def test_module_entry_point_subprocess(tmp_path, images):
    (images / "broken.png").write_text("nope")
    result = subprocess.run(
        _command(images, "-k", "3", "-o", tmp_path / "out", *FAST),
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "broken.png" in result.stderr
    check_outputs(tmp_path / "out", "gray", gray_image())
    check_outputs(tmp_path / "out", "rgb", rgb_image())

    usage = subprocess.run(_command(), capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: gmm-segment")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_interactive_prompts_on_a_real_terminal(tmp_path, images):
    # The child's stdin/stdout/stderr are a pseudo-terminal, so isatty() is
    # genuinely true; answers are typed into the master side after each prompt.
    master, slave = os.openpty()
    child = subprocess.Popen(_command(), stdin=slave, stdout=slave, stderr=slave,
                             cwd=tmp_path, close_fds=True)
    os.close(slave)
    transcript = b""

    def read_until(text, timeout=60):
        nonlocal transcript
        deadline = time.monotonic() + timeout
        while text not in transcript and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    transcript += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
        return text in transcript

    try:
        assert read_until(b"Enter the image name"), transcript
        os.write(master, f"{images / 'rgb.png'}\n".encode())
        assert read_until(b"Enter the number of components"), transcript
        os.write(master, b"3\n")
        assert read_until(b"segmented into"), transcript
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    check_outputs(tmp_path / "Result", "rgb", rgb_image())


def test_progress_bars_follow_em_and_labelling_on_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("gmm_segmenter.cli._console.is_terminal", lambda stream: True)
    assert cli.main(["--sample", "coins", "-k", "2", "-o", str(tmp_path)]) == 0
    shown = capsys.readouterr().err
    for stage in ("EM:", "spatial EM:", "labelling:", "image"):
        assert stage in shown


def test_sixteen_bit_colour_images_get_an_eight_bit_picture(tmp_path):
    rgb = (np.random.default_rng(0).integers(0, 3, size=(40, 40, 1)) * 20000
           + np.arange(3) * 100).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb, photometric="rgb")
    assert cli.main([str(tmp_path / "rgb16.tif"), "-k", "3", "-o", str(tmp_path / "out"),
                     "--quiet"]) == 0
    picture = gio.read_image(tmp_path / "out" / "rgb16_segmented.png")
    assert picture.dtype == np.uint8 and picture.shape == (40, 40, 3)


def test_a_rerun_with_fewer_components_leaves_no_stale_masks(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["--sample", "coins", "-k", "4", "-o", str(out), "--quiet", "--proba"]) == 0
    assert cli.main(["--sample", "coins", "-k", "2", "-o", str(out), "--quiet"]) == 0
    left = sorted(path.name for path in out.iterdir())
    assert left == ["coins_Mask0.png", "coins_Mask1.png", "coins_labels.tif",
                    "coins_report.json", "coins_segmented.png"]


def test_otsu_init_and_automatic_beta_are_flags(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["--sample", "coins", "-k", "2", "--init", "otsu", "--beta", "auto",
                     "-o", str(out), "--quiet"]) == 0
    report = json.loads((out / "coins_report.json").read_text())
    assert report["model"]["params"]["init_params"] == "otsu"
    assert report["model"]["params"]["beta"] == "auto"


def test_bias_field_flag_writes_the_field_and_reports_it(tmp_path):
    from _images import biased_blobs

    image, truth, field = biased_blobs((96, 96), amplitude=0.4)
    gio.write_tiff(tmp_path / "lit.tif", image.astype(np.float32))
    out = tmp_path / "out"
    assert run_cli([tmp_path / "lit.tif", "-k", "3", "--bias-field", "auto", "-o", out,
                    "--quiet", *FAST]) == 0
    report = json.loads((out / "lit_report.json").read_text())
    assert report["model"]["params"]["bias_field"] == "auto"
    assert report["bias_field"]["setting"] == "auto" and report["bias_field"]["degree"] == 3
    assert report["bias_field"]["corrected"] is True
    assert "lit_bias.tif" in report["outputs"]
    written = tifffile.imread(out / "lit_bias.tif")
    assert written.shape == image.shape and written.dtype == np.float32
    assert report["bias_field"]["min"] == pytest.approx(float(written.min()), rel=1e-6)
    assert np.corrcoef(np.log(written).ravel(), np.log(field).ravel())[0, 1] > 0.95
    labels = tifffile.imread(out / "lit_labels.tif")
    segmenter = GMMSegmenter(3, beta=0, bias_field="auto", random_state=0).fit(image)
    np.testing.assert_array_equal(labels, segmenter.predict(image))
    # a run without the flag removes the field it no longer writes
    assert run_cli([tmp_path / "lit.tif", "-k", "3", "-o", out, "--quiet", *FAST]) == 0
    assert not (out / "lit_bias.tif").exists()
    report = json.loads((out / "lit_report.json").read_text())
    assert report["model"]["params"]["bias_field"] is None and "bias_field" not in report


def test_bias_field_of_a_colour_image_has_a_field_per_channel(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["--sample", "astronaut", "-k", "3", "--bias-field", "1", "-o", str(out),
                     "--quiet", "--no-masks", *FAST]) == 0
    field = tifffile.imread(out / "astronaut_bias.tif")
    assert field.shape == (3, 512, 512)  # channels first, as the posteriors
    assert np.all(field > 0)


def test_a_saved_model_keeps_its_bias_field(tmp_path, images):
    model = tmp_path / "model.npz"
    assert run_cli([images / "gray.png", "-o", tmp_path / "a", "--bias-field", "1",
                    "--save-model", model, "--quiet", *FAST]) == 0
    assert run_cli([images / "gray.png", "-o", tmp_path / "b", "--model", model,
                    "--quiet"]) == 0
    assert (tmp_path / "b" / "gray_bias.tif").exists()
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "a" / "gray_labels.tif"),
        tifffile.imread(tmp_path / "b" / "gray_labels.tif"),
    )


def test_each_input_s_line_counts_its_components_in_words(tmp_path, capsys):
    gio.write_png(tmp_path / "flat.png", np.full((32, 32), 90, np.uint8))
    gio.write_png(tmp_path / "bands.png", gray_image())
    status, out, err = run_cli([tmp_path, "-o", tmp_path / "out", "-k", "auto"], capsys)
    assert status == 0
    said = out + err
    assert "flat.png: 1 component -> flat_*" in said
    assert "bands.png: 1 component" not in said and "components -> bands_*" in said
