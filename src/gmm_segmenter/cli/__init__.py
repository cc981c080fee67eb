"""``gmm-segment``: segment image files with a Gaussian mixture from the shell.

The usual workflow of fitting a Gaussian mixture to an image's pixels (ask
for an image and a number of components, write the segmented picture and one
mask per component into ``Result/``) as a batch tool. See ``docs/cli.md`` or ``gmm-segment --help``.
"""

try:
    from ._main import main
    from ._parser import build_parser
    from ._samples import available_samples
except KeyboardInterrupt:  # Ctrl-C while the command starts: its documented status
    raise SystemExit(130) from None

__all__ = ["main", "build_parser", "available_samples"]
