"""``gmm-segment`` with no arguments in a terminal: ask, as the original script did."""

from __future__ import annotations

import argparse
import sys

from ._parser import n_components_or_auto


def interactive_argv(parser) -> list[str] | None:
    """Ask for an image and a number of components; ``None`` if input ends first."""
    try:
        image = input("Enter the image name: ").strip()
        while not image:
            image = input("Enter the image name (a file path): ").strip()
        while True:
            answer = input("Enter the number of components [3]: ").strip() or "3"
            try:
                n_components_or_auto(answer)
                break
            except argparse.ArgumentTypeError:
                print("Please enter a positive whole number, or 'auto'.")
    except EOFError:
        print(file=sys.stderr)
        parser.print_usage(sys.stderr)
        return None
    return [image, "-k", answer]
