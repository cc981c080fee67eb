"""The arguments of ``gmm-segment``: the parser, the type checks and the checks across flags.

Building the parser imports neither numpy, scipy, scikit-learn nor
scikit-image, so ``gmm-segment --help`` and usage errors come at once; the
estimator is imported only to validate the parameters of a real run.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .._version import __version__
from ._console import PROG, describe, stdout_failed
from ._samples import available_samples

#: The estimator's defaults, shown in the help. Reading them from
#: ``GMMSegmenter`` would import scikit-learn before --help could answer;
#: ``tests/test_cli.py`` checks that they are the estimator's.
ESTIMATOR_DEFAULTS = {
    "n_components": 3,
    "n_components_range": (1, 8),
    "covariance_type": "full",
    "max_samples": 100_000,
    "init_params": "auto",
    "n_init": "auto",
    "max_iter": 100,
    "tol": 1e-3,
    "reg_covar": 1e-6,
    "beta": "auto",
    "connectivity": 1,
    "spacing": None,
    "max_iter_spatial": 20,
    "bias_field": None,
}

class _CovarianceTypes:
    """The names in ``_covariance.COVARIANCE_TYPES``, read when first needed.

    argparse reads choices only to check a given value or to print help;
    ``_covariance`` imports numpy and scipy, which building the parser must not.
    """

    def _names(self):
        from .._covariance import COVARIANCE_TYPES

        return list(COVARIANCE_TYPES)

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name):
        return name in self._names()


# ------------------------------------------------------------------ type checks


def _folder_name(text):
    """``-o``: a folder; an empty name (an unset variable) is refused, not read as ``.``."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"expected a folder name, got {text!r} (is a shell variable unset?); "
            "use -o . for the current folder"
        )
    return Path(text)


def _seed(text):
    """``--seed``: what numpy's random generators take, 0 to 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 4294967295, got {text!r}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def n_components_or_auto(text):
    """``-k``: a positive integer, or ``'auto'`` to choose by BIC."""
    if text == "auto":
        return "auto"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None


def _max_samples(text):
    return "all" if text == "all" else _positive_int(text)


def _seconds_or_none(text):
    """``--read-timeout``: seconds > 0, or 0 / 'none' for no limit (0.0)."""
    if text.strip().lower() in ("none", "0", "0.0"):
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds, or 0 or 'none' for no limit, got {text!r}"
        )
    return value


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _size_or_none(text):
    """``--read-memory``: bytes with an optional K, M, G or T (powers of 1024),
    or 0 / 'none' for no limit (0)."""
    if text.strip().lower() in ("none", "0"):
        return 0
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = cleaned[-1:] if cleaned[-1:] in _SIZE_UNITS else ""
    try:
        value = float(cleaned[: len(cleaned) - len(unit)]) * _SIZE_UNITS[unit]
    except ValueError:
        value = -1.0
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 4G or 500M, or 'none' for no limit, got {text!r}"
        )
    return int(value)


def _number_in(text, low, high, expected):
    """``text`` as a float in ``[low, high]`` (NaN and words fail), else a usage
    error that says what was ``expected``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _tol(text):
    return _number_in(text, 0.0, math.inf, "a number from 0 to inf")


def is_number(text) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _voxel_size(text):
    """``--spacing``: one voxel size, a positive finite number."""
    try:
        float(text)
    except ValueError:
        parts = text.replace(",", " ").replace("x", " ").split()
        if len(parts) > 1 and all(is_number(part) for part in parts):
            raise argparse.ArgumentTypeError(
                f"expected one voxel size per axis, got {text!r}; separate the sizes "
                f"with spaces: --spacing {' '.join(parts)}"
            ) from None
        raise argparse.ArgumentTypeError(
            f"expected a voxel size, got {text!r}; --spacing takes one number per spatial "
            "axis, in the array's order (3 1 1: slices 3 times as thick as the pixels "
            "are wide)"
        ) from None
    # from the smallest positive float to the largest finite one
    return _number_in(text, math.ulp(0.0), sys.float_info.max, "a positive, finite voxel size")


def _reg_covar(text):
    return _number_in(text, 0.0, 1e10, "a number from 0 to 1e+10")


def _channel_axis(text):
    if text in ("auto", "none"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'none' or an integer axis, got {text!r}"
        ) from None


def _beta(text):
    if text in ("auto", "pseudo-likelihood"):
        return text
    # as GMMSegmenter's beta
    return _number_in(text, 0.0, 1e6, "a number from 0 to 1e6, 'auto' or 'pseudo-likelihood'")


def _prior_weight(text):
    return _number_in(text, 0.0, sys.float_info.max, "a number >= 0")  # finite


def _n_init(text):
    return "auto" if text == "auto" else _positive_int(text)


def _bias_field(text):
    """``--bias-field``: 'auto', or the degree of the field's polynomial (1 to 10)."""
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 10:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a polynomial degree from 1 to 10, got {text!r}"
        )
    return value


# ------------------------------------------------------------------ parser


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line: the problem, then where help is."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message, file=None):
        # argparse drops an OSError here without a word: --help into a full
        # disk exited 0 with nothing written and nothing said
        file = sys.stderr if file is None else file
        if not message or file is None:
            return
        try:
            file.write(message)
            file.flush()
        except (OSError, ValueError) as error:
            if file is sys.stdout:
                stdout_failed(error)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gmm-segment``."""
    parser = _Parser(
        prog=PROG,
        description=(
            "Segment images with a Gaussian mixture model of their pixel values. "
            "For each input NAME, writes NAME_labels.tif (labels 1..K, darkest "
            "component first, 0 = masked out), NAME_segmented.png (each pixel in "
            "its component's colour), NAME_Mask0.png ... NAME_Mask{K-1}.png (one "
            "0/255 mask per component) and NAME_report.json into OUTDIR. Volumes "
            "(3-D stacks) get .tif instead of .png. The names and the Result/ "
            "folder are those of the usual script that fits scikit-learn's "
            "GaussianMixture to the pixels of one image, so what reads its output "
            "reads this command's. Run with no arguments in a terminal to be asked "
            "for an image and a number of components."
        ),
        epilog=(
            "exit status: 0 all inputs segmented, 1 some input failed (each failure "
            "is reported on one line; the others are still processed), 2 usage error, "
            "130 interrupted (Ctrl-C). Full documentation, with examples: "
            "https://github.com/gmm-segmenter/gmm-segmenter/blob/main/docs/cli.md"
        ),
    )
    _add_input_arguments(parser)
    model = parser.add_argument_group("model")
    _add_component_arguments(model)
    _add_pixel_arguments(model)
    _add_em_arguments(model)
    _add_spatial_arguments(model)
    _add_model_file_arguments(model)
    _add_output_arguments(parser.add_argument_group("output"))
    _add_running_arguments(parser.add_argument_group("running"))
    return parser


def _add_input_arguments(parser):
    samples = available_samples()
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE",
        help="image files, folders (every image inside, not recursive) or glob "
        "patterns such as 'data/*.tif'",
    )
    parser.add_argument(
        "--sample", action="append", default=[], choices=samples, metavar="NAME",
        help="also segment a sample image shipped with scikit-image; outputs are "
        f"named after it. One of: {', '.join(samples)}. Repeatable.",
    )
    parser.add_argument(
        "--max-pixels", type=_positive_int, default=None, metavar="N",
        help="largest image read from a file, in values (pixels times channels), "
        "checked from its header before decoding (default: 2**31 = 2147483648; "
        "zarr volumes, read chunk by chunk: 2**40)",
    )
    parser.add_argument(
        "--read-timeout", type=_seconds_or_none, default=None, metavar="SECONDS",
        help="longest time one image file may take to decode; each file is decoded in "
        "a separate process, which is stopped after that time and the file reported "
        "as failed (default: 60; 0 or 'none': no limit; Linux only)",
    )
    parser.add_argument(
        "--read-memory", type=_size_or_none, default=None, metavar="SIZE",
        help="most memory one image file may take to decode, such as 4G or 500M "
        "(default: the memory free when the file is read, and at most 32 bytes per "
        "value --max-pixels allows; 'none': no limit; Linux only)",
    )
    parser.add_argument(
        "-o", "--outdir", default="Result", type=_folder_name,
        help="folder for the results, created if needed (default: ./Result)",
    )


def _add_component_arguments(model):
    defaults = ESTIMATOR_DEFAULTS
    model.add_argument(
        "-k", "--n-components", type=n_components_or_auto, default=None, metavar="N",
        help="number of components (segments), or 'auto' to choose it by BIC "
        f"(default: {defaults['n_components']})",
    )
    model.add_argument(
        "--k-range", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
        help="smallest and largest number of components -k auto may choose (default: "
        f"{' '.join(str(n) for n in defaults['n_components_range'])})",
    )
    model.add_argument(
        "--covariance-type", choices=_CovarianceTypes(), default=None,
        help=f"covariance structure of the components (default: {defaults['covariance_type']})",
    )


def _add_pixel_arguments(model):
    model.add_argument(
        "--channel-axis", type=_channel_axis, default="auto", metavar="AXIS",
        help="axis holding colour channels. 'auto' (default): a 2-D image whose "
        "last axis has 3 or 4 entries (RGB/RGBA; also a stack of such images) is "
        "segmented by colour, gray+alpha images by intensity, and an alpha channel "
        "is not a feature but excludes fully transparent pixels (label 0); a TIFF "
        "whose ImageJ or OME metadata names a channel axis (a Fiji hyperstack) uses it; "
        "everything else is grayscale, including multi-page/3-D TIFF volumes. "
        "'none' forces grayscale (every value is one pixel); an integer names the "
        "axis of the image as read, and then every channel, alpha included, is used.",
    )
    model.add_argument(
        "--mask", type=Path, default=None, metavar="MASKFILE",
        help="image whose nonzero pixels are segmented; the others get label 0. "
        "Must have the spatial shape of every input.",
    )
    model.add_argument(
        "--scribbles", type=Path, default=None, metavar="LABELFILE",
        help="label image guiding the fit (one integer per pixel, the input's "
        "spatial shape): 0 where nothing is known, k where the pixel belongs to "
        "class k. Scribbled classes get their number as label; the others are "
        "found freely and numbered after them, darkest first. Scribbled pixels keep "
        "their class. Applies to every input.",
    )
    model.add_argument(
        "--prior", type=Path, default=None, metavar="PRIORFILE",
        help="prior probability maps (an atlas, a previous segmentation), as FSL "
        "FAST and ANTs Atropos take them: one float map per class, the class axis "
        "first (a multi-page TIFF) or last, the other axes the input's spatial "
        "shape, summing to 1 at every pixel. Class k of the file is label k+1. "
        "Applies to every input.",
    )
    model.add_argument(
        "--prior-weight", type=_prior_weight, default=None, metavar="W",
        help="weight of the --prior maps: W * log(prior) is added to each pixel's "
        "log-probability (default: 1; 0 ignores them)",
    )
    model.add_argument(
        "--seed", type=_seed, default=0,
        help="random seed for the pixel subsample and initialisation (default: 0, "
        "so every run gives the same result)",
    )
    model.add_argument(
        "--max-samples", type=_max_samples, default=None, metavar="N",
        help="pixels drawn to fit colour/float images, or 'all' (default: "
        f"{ESTIMATOR_DEFAULTS['max_samples']})",
    )


def _add_em_arguments(model):
    defaults = ESTIMATOR_DEFAULTS
    model.add_argument(
        "--init", dest="init_params", default=None,
        choices=["auto", "otsu", "quantile", "kmeans", "k-means++", "random", "random_from_data"],
        help=f"how EM starts (default: {defaults['init_params']})",
    )
    model.add_argument("--n-init", type=_n_init, default=None, metavar="N",
                       help="initialisations, the best is kept; 'auto' screens several "
                       f"starts for colour images (default: {defaults['n_init']})")
    model.add_argument("--max-iter", type=_positive_int, default=None, metavar="N",
                       help=f"maximum EM iterations (default: {defaults['max_iter']})")
    model.add_argument("--tol", type=_tol, default=None,
                       help=f"EM convergence threshold (default: {defaults['tol']})")
    model.add_argument("--reg-covar", type=_reg_covar, default=None,
                       help=f"covariance regularisation (default: {defaults['reg_covar']})")


def _add_spatial_arguments(model):
    defaults = ESTIMATOR_DEFAULTS
    model.add_argument(
        "--beta", type=_beta, default=None, metavar="B",
        help="strength of the spatial smoothing prior (0 = independent pixels, "
        "'auto' = chosen from the image by free energy, 'pseudo-likelihood' = "
        f"Besag's estimate) (default: {defaults['beta']})",
    )
    model.add_argument(
        "--connectivity", type=int, default=None, metavar="C",
        help="neighbours the spatial prior counts: 1 those sharing a face (4 in 2-D, 6 in "
        "3-D), 2 also an edge (8, 18), 3 also a corner (26 in 3-D); at most the number "
        f"of spatial axes (default: {defaults['connectivity']})",
    )
    model.add_argument(
        "--spacing", type=_voxel_size, nargs="+", default=None, metavar="S",
        help="pixel/voxel size along each spatial axis, in the array's order (a stack's "
        "Z Y X: --spacing 3 1 1 for slices 3 times as thick as a pixel is wide), for the "
        "spatial prior (default: the voxel size an ImageJ or OME TIFF records, else "
        "cubic voxels)",
    )
    model.add_argument(
        "--max-iter-spatial", type=_positive_int, default=None, metavar="N",
        help="maximum iterations of EM under the spatial prior "
        f"(default: {defaults['max_iter_spatial']})",
    )
    model.add_argument(
        "--bias-field", type=_bias_field, default=None, metavar="{auto,N}",
        help="correct a smooth multiplicative bias field (uneven illumination, "
        "vignetting) while fitting: 'auto' (a polynomial of degree 3) or the degree "
        "N (1-10). Each image's field is written to NAME_bias.tif (default: off)",
    )


def _add_model_file_arguments(model):
    model.add_argument(
        "--model", type=Path, default=None, metavar="FILE",
        help="apply a model saved with --save-model instead of fitting",
    )
    model.add_argument(
        "--save-model", type=Path, default=None, metavar="FILE",
        help="save the fitted model (.npz, no pickle) for --model; needs a single "
        "input or --fit-on",
    )
    model.add_argument(
        "--fit-on", action="store_true",
        help="fit one model on all inputs together (a seeded sample of their "
        "pixels), so a label means the same component in every file; all inputs "
        "are held in memory at once",
    )


def _add_output_arguments(output):
    output.add_argument(
        "--colors", "--colours", choices=["mean", "labels"], default="mean",
        help="colour of each component in NAME_segmented.png: its mean intensity or "
        "colour ('mean', default), or a distinct colour "
        "per label ('labels')",
    )
    output.add_argument("--no-masks", action="store_true",
                        help="do not write NAME_Mask*.png")
    output.add_argument(
        "--proba", action="store_true",
        help="also write NAME_proba.tif: float32 posterior probabilities, component "
        "axis FIRST (K, M, N, or K, P, M, N for a volume), one page per component",
    )


def _add_running_arguments(run):
    run.add_argument("-j", "--jobs", type=_positive_int, default=1, metavar="N",
                     help="images processed at the same time (threads; default: 1)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="print only warnings and errors (no progress bar, no summary)")
    run.add_argument("--debug", action="store_true",
                     help="print full tracebacks for errors")
    run.add_argument("--version", action="version",
                     version=f"%(prog)s (gmm-segmenter) {__version__}")


# ------------------------------------------------------------------ checks across flags


def check_arguments(args, parser) -> dict:
    """Refuse flags that cannot go together; return the estimator's parameters."""
    if not args.images and not args.sample:
        parser.error("no IMAGE and no --sample given")
    if args.save_model is not None and not args.save_model.is_dir():
        from ..io import with_npz_suffix

        # as napari's Save model does: the name --model and a file manager expect
        args.save_model = with_npz_suffix(args.save_model)
    if args.model is not None:
        fitting_flags = {
            "-k": args.n_components, "--k-range": args.k_range,
            "--covariance-type": args.covariance_type, "--init": args.init_params,
            "--n-init": args.n_init, "--max-iter": args.max_iter, "--tol": args.tol,
            "--reg-covar": args.reg_covar, "--max-iter-spatial": args.max_iter_spatial,
            "--fit-on": args.fit_on or None,
            "--max-samples": args.max_samples,
        }
        given = [flag for flag, value in fitting_flags.items() if value is not None]
        if given:
            which = "which only shapes" if len(given) == 1 else "which only shape"
            parser.error(
                f"--model applies a saved model, so {', '.join(given)} ({which} a new "
                "fit) cannot be used with it"
            )
        for flag, value in (("--scribbles", args.scribbles), ("--prior", args.prior)):
            if value is not None:
                parser.error(
                    f"{flag} guides a new fit, but --model applies a saved model; "
                    "leave out one of them"
                )
        if args.beta in ("auto", "pseudo-likelihood"):
            parser.error(
                f"--beta {args.beta} chooses the strength while fitting, but --model "
                "applies a saved model; give a number, such as --beta 1"
            )
    if args.prior_weight is not None and args.prior is None:
        parser.error("--prior-weight weighs the --prior maps; give --prior PRIORFILE too")
    return _estimator_params(args, parser)


def _estimator_params(args, parser) -> dict:
    from ..estimator import GMMSegmenter

    params = {"random_state": args.seed}
    for name in ("covariance_type", "init_params", "n_init", "max_iter", "tol", "reg_covar",
                 "n_components", "beta", "connectivity", "bias_field", "prior_weight",
                 "max_iter_spatial"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if args.max_samples is not None:
        params["max_samples"] = None if args.max_samples == "all" else args.max_samples
    if args.k_range is not None:
        low, high = args.k_range
        if not 1 <= low <= high:
            parser.error(f"--k-range needs 1 <= MIN <= MAX, got {low} {high}")
        params["n_components_range"] = (low, high)
    if args.spacing is not None:
        params["spacing"] = tuple(args.spacing)
    try:
        GMMSegmenter(**params)._validate_params()
    except (TypeError, ValueError) as error:
        parser.error(describe(error))
    return params
