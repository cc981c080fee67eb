"""``python -m gmm_segmenter``: the ``gmm-segment`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
