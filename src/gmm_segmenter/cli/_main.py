"""``main``: parse the arguments (or ask for them), then run the batch."""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import tempfile
import traceback

from . import _isolated
from ._console import (
    PROG, Console, Terminated, describe, forget_signals, is_terminal, note_signal,
    stdout_failed, stop_if_signalled,
)
from ._interactive import interactive_argv
from ._parser import build_parser, check_arguments, is_number

# Saved-model settings that act when labelling, so a run can change them.
_LABELLING_PARAMETERS = ("beta", "connectivity", "spacing", "bias_field")


class _CannotStart(Exception):
    """--mask or --model cannot be read: reported, and nothing is segmented."""


def main(argv=None) -> int:
    """Run ``gmm-segment`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    previous = _on_termination()
    previous_hook = sys.unraisablehook
    stops = []  # interrupts that arrived where Python could only print them

    def unraisable(report):
        if isinstance(report.exc_value, KeyboardInterrupt):
            stops.append(report.exc_value)
        else:
            previous_hook(report)

    sys.unraisablehook = unraisable
    try:
        with _warnings_name_their_file():
            status = _main(argv)
        if stops:  # the run went on past an interrupt it could not raise: report it now
            raise stops[0]
        stop_if_signalled()  # one a library turned into another error
        return status
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP, at any moment
        signum = getattr(stop, "signum", None)
        _say(f"{PROG}: stopped by signal {signum}" if signum else f"{PROG}: interrupted")
        status = 128 + signum if signum else 130
        if argv is None:
            # Run as the command: exit with this status now. (An interrupt that
            # landed in code Python runs on its own would otherwise make the
            # interpreter end by the signal on the way out.)
            _isolated.shut_down()
            _flush_stdout()
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os._exit(status)
        return status
    finally:
        sys.unraisablehook = previous_hook
        _restore(previous)
        _flush_stdout()
        if argv is None:
            _ignore_late_signals()


def _ignore_late_signals():
    """Run as the command, the work is done: a Ctrl-C (or SIGTERM, SIGHUP) from
    here on is ignored. Python resets its own handlers while it shuts down, and
    a signal landing then would end the process by the signal, with no message."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_IGN)


def _main(argv) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        if not is_terminal(sys.stdin):
            parser.print_usage(sys.stderr)
            print(f"{PROG}: error: no image given (run in a terminal to be asked for one)",
                  file=sys.stderr)
            return 2
        answered = interactive_argv()
        if isinstance(answered, int):  # the user stopped at a prompt
            return answered
        argv = answered
    try:
        args = _parse(parser, argv)
        return _run(args, parser)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)


def _parse(parser, argv):
    """The arguments, images allowed after options (``a.png -k 2 b.png``).

    What follows ``--`` is images whatever it looks like (a file named
    ``-d.png``), which ``parse_intermixed_args`` does not keep apart before
    Python 3.12: it parses what comes before, and the rest is added.
    """
    after = []
    if "--" in argv:
        cut = argv.index("--")
        argv, after = argv[:cut], argv[cut + 1:]
        # an option after -- would be taken for an image (and its value too),
        # and the run would go on without it (into Result/ instead of -o's folder)
        for name in after:
            if name in parser._option_string_actions and not os.path.exists(name):
                parser.error(
                    f"{name} comes after --, which makes it (and all that follows) an image "
                    f"name, and there is no file {name!r}; put the options before --"
                )
    args = parser.parse_intermixed_args(_sizes_last(argv))
    args.images = list(args.images) + after
    return args


def _sizes_last(argv):
    """``argv`` with each ``--spacing`` and the numbers after it moved to the end.

    argparse gives an option of ``nargs='+'`` every word up to the next
    option, so ``--spacing 3 1 1 stack.tif`` would read the image as a
    fourth size. Moved behind the images, the option keeps its numbers and
    nothing else (``--spacing stack.tif``, without a number, stays put and is
    refused as a voxel size).
    """
    kept, moved, index = [], [], 0
    while index < len(argv):
        word = argv[index]
        name, equals, first = word.partition("=")
        # argparse's forms of the option too: a unique prefix, and --spacing=3
        if len(name) >= len("--sp") and "--spacing".startswith(name):
            sizes = [first] if equals else []
            stop = index + 1
            while stop < len(argv) and is_number(argv[stop]):
                stop += 1
            sizes += argv[index + 1:stop]
            if sizes:
                moved += ["--spacing", *sizes]
                index = stop
                continue
        kept.append(word)
        index += 1
    return kept + moved


def _say(text):
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def _on_termination():
    """Turn SIGTERM and SIGHUP into :class:`Terminated`, and note every stopping
    signal, Ctrl-C's too (main thread only)."""
    import signal
    import threading

    forget_signals()
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        note_signal(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    previous = {}
    for name, default in (("SIGINT", signal.default_int_handler), ("SIGTERM", signal.SIG_DFL),
                          ("SIGHUP", signal.SIG_DFL)):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) in (default, None):
            previous[number] = signal.signal(number, stop)
    return previous


def _restore(previous):
    import signal

    for number, handler in previous.items():
        signal.signal(number, handler)


def _flush_stdout():
    """Flush stdout; if it is closed or full, say so once and silence the exit's flush."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError) as error:
        stdout_failed(error)


@contextlib.contextmanager
def _warnings_name_their_file():
    """Print warnings as one line each, prefixed with the input they concern."""
    import warnings

    from ._console import current_input, note_warning

    def show(message, category, filename, lineno, file=None, line=None):
        label = current_input()
        text = describe(message)
        note_warning(text)
        if label and not text.startswith(label):
            text = f"{label}: {text}"
        _say(f"{PROG}: warning: {text}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        # --channel-axis N is judged on the file's axes when the input is
        # read; the estimator's own judgement, of the array with that axis
        # moved last, would name the wrong axes (and come again at predict)
        warnings.filterwarnings("ignore", r"X has shape .* looks like a spatial axis")
        warnings.filterwarnings("ignore", r"X has shape .* looks like the channels")
        warnings.filterwarnings("ignore", r"X(\[\d+\])? has shape .* looks like channels")
        yield


def _run(args, parser) -> int:
    _start_reading(args)  # the decoders load in another process meanwhile
    # Imported here, not at the top: numpy, scipy and scikit-learn load only
    # once the arguments are known to describe a run.
    from ._inputs import collect_sources
    from ._runner import Runner, run_all

    params = check_arguments(args, parser)
    option_files = {
        getattr(args, name): flag for name, flag in (
            ("mask", "--mask"), ("scribbles", "--scribbles"), ("prior", "--prior"),
            ("model", "--model"), ("save_model", "--save-model"),
        ) if getattr(args, name, None) is not None
    }
    sources, collect_errors, repeats = collect_sources(args.images, args.sample, option_files)
    if args.save_model is not None and not args.fit_on and args.model is None and len(sources) > 1:
        parser.error(
            f"--save-model saves one model, but {len(sources)} inputs each get their "
            "own; add --fit-on to fit one model on all of them"
        )
    if args.save_model is not None:
        _check_save_model_path(args.save_model, parser, args.outdir)
    console = Console(len(sources), args.quiet, args.debug)
    if (args.read_timeout is not None or args.read_memory is not None) and not _isolated.supported():
        console.warn("--read-timeout and --read-memory need Linux; files are read in this "
                     "process, without a time or memory limit")
    failed = len(collect_errors)
    for message in collect_errors:
        console.error(message)
    for message in repeats:
        console.warn(message)
    try:
        mask = _read_file_option(args, console, "mask")
        shared_model = _read_model(args, params, console)
        scribbles = _read_file_option(args, console, "scribbles")
        prior = _read_file_option(args, console, "prior")
        if not sources:
            return 1
        created = not args.outdir.exists()
        _make_outdir(args.outdir, console)
        model_source = None if shared_model is None else f"loaded from {args.model}"
        runner = Runner(args, params, shared_model, model_source, mask, console.status,
                        protected=_input_paths(sources), scribbles=scribbles, prior=prior)
        if args.jobs == 1:  # one stage bar cannot follow several images at once
            runner.on_stage = console.stage
        try:
            with _locked(args.outdir, console):
                outcomes, failed_without_outcome = run_all(runner, sources, console, args)
        finally:  # also when interrupted: a folder this run made holds nothing
            if created:
                _remove_if_empty(args.outdir)
        failed += failed_without_outcome
    except _CannotStart:
        return 1
    finally:
        console.close()

    succeeded = [o for o in outcomes if o.error is None]
    failed += sum(o.error is not None for o in outcomes)
    if args.save_model is not None and succeeded:
        model = runner.shared_model if runner.shared_model is not None else succeeded[0].segmenter
        if isinstance(args.channel_axis, int) and model.channel_axis is not None:
            # fitted with the channels moved last; the file keeps the images' own
            # axis, so Python and a later --model read such images as they are
            model = copy.copy(model)
            model.set_params(channel_axis=args.channel_axis)
        failed += not _save_model(model, args.save_model, console)
    where = f" into {args.outdir}{os.sep}" if succeeded else ""
    console.info(
        f"{len(succeeded)} of {len(succeeded) + failed} input(s) segmented{where}"
        + (f"; {failed} failed" if failed else "")
    )
    return 1 if failed else 0


def _start_reading(args):
    """Start the process that decoding children come from, if files will be read."""
    reads_files = args.images or any(
        path is not None for path in (args.mask, args.scribbles, args.prior)
    )
    if reads_files and _isolated.Limits.from_arguments(args).active:
        try:
            _isolated.start(quiet=not args.debug)
        except OSError:  # each read tries again, and reports a failure on one line
            pass


def _check_save_model_path(path, parser, outdir):
    """Refuse a --save-model path that cannot be written, before the batch runs
    (its folder may be ``-o OUTDIR``, which the run creates)."""
    folder = path.parent
    if path.is_dir():
        parser.error(f"--save-model {path}: is a folder; name the model file")
    if not folder.exists() and folder.absolute() == outdir.absolute():
        return  # beside the results: -o's folder is made (or refused) before the run
    if not folder.is_dir():
        parser.error(f"--save-model {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        parser.error(f"--save-model {path}: the folder {folder} is not writable")


def _make_outdir(outdir, console):
    """Create ``-o OUTDIR``, or report on one line why it cannot be used."""
    if outdir.exists() and not outdir.is_dir():
        console.error(f"-o {outdir}: exists and is not a folder; name a folder for the results")
        raise _CannotStart
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        console.error(f"-o {outdir}: cannot create the output folder "
                      f"({error.strerror or describe(error)})")
        raise _CannotStart from error


def _remove_if_empty(outdir):
    """Remove the output folder this run made when nothing was written into it."""
    try:
        outdir.rmdir()  # only ever removes an empty folder
    except OSError:
        pass


def _input_paths(sources):
    """The inputs' files, resolved: results are never written over them."""
    from ._inputs import resolved

    paths = {resolved(source.path) for source in sources if source.path is not None}
    return frozenset(paths - {None})


@contextlib.contextmanager
def _locked(outdir, console):
    """The run's hold on ``OUTDIR``: one run writes into a folder at a time."""
    from ._folder import locked, tidy

    with contextlib.ExitStack() as held:
        try:
            held.enter_context(locked(outdir, console.warn))
            # a folder that cannot take a file (read-only, another user's) is
            # one error before any input, not one per input
            tempfile.TemporaryFile(dir=outdir, prefix=".gmm-segment-probe-").close()
        except OSError as error:
            console.error(f"-o {outdir}: cannot write into the output folder "
                          f"({error.strerror or describe(error)})")
            raise _CannotStart from error
        try:
            for note in tidy(outdir):
                console.warn(note)
        except OSError as error:
            console.warn(f"-o {outdir}: cannot tidy up after an interrupted run ({describe(error)})")
        yield


def _read_file_option(args, console, option):
    """The file of ``--mask``, ``--scribbles`` or ``--prior`` (``option``) as
    its reader in :mod:`._inputs` returns it, or ``None`` without one."""
    path = getattr(args, option)
    if path is None:
        return None
    from . import _inputs

    reader = {
        "mask": _inputs.read_mask, "scribbles": _inputs.read_scribbles,
        "prior": _inputs.read_prior,
    }[option]
    try:
        return reader(path, args.max_pixels, _isolated.Limits.from_arguments(args))
    except Exception as error:
        console.error(f"--{option} {describe(error)}", traceback.format_exc())
        raise _CannotStart from error


def _read_model(args, params, console):
    """The ``--model``, with this run's spatial settings; ``None`` without one."""
    if args.model is None:
        return None
    from ..io import load_model, with_npz_suffix

    if not args.model.exists() and with_npz_suffix(args.model).is_file():
        args.model = with_npz_suffix(args.model)  # as --save-model names it
    try:
        model = load_model(args.model)
    except Exception as error:
        console.error(f"--model {describe(error)}", traceback.format_exc())
        raise _CannotStart from error
    settings = {name: params[name] for name in _LABELLING_PARAMETERS if name in params}
    model.set_params(**settings)
    if "beta" in settings:
        model = _with_beta(model, settings["beta"])
    return model


def _with_beta(segmenter, beta):
    """``segmenter``, labelling with the spatial strength ``beta`` instead of its fitted one."""
    # The one place the command line changes a fitted model: beta_ is a
    # read-only view of the frozen model_, so the model is replaced.
    segmenter.model_ = segmenter.model_.with_settings(beta=float(beta))
    return segmenter


def _save_model(model, path, console) -> bool:
    """Save ``model`` for ``--save-model``; report and return ``False`` if that fails."""
    from ..io import save_model

    try:
        save_model(model, path)
    except Exception as error:
        console.error(f"--save-model {path}: {describe(error)}", traceback.format_exc())
        return False
    console.info(f"model saved to {path}")
    return True
