"""The fitted model: everything a prediction needs, in one frozen object."""

from __future__ import annotations

import json

import numpy as np

__all__ = ["json_params", "label_dtype"]


def label_dtype(n_components: int) -> np.dtype:
    """The smallest unsigned dtype that holds labels ``0..n_components``."""
    return np.dtype(np.uint8 if n_components < 256 else np.uint16)


def json_params(estimator) -> dict:
    """The estimator's parameters that survive a JSON round trip unchanged.

    Others (a ``RandomState`` instance as ``random_state``) are left out:
    they are not needed to predict, and a repr could not be set back.
    """
    params = {}
    for name, value in estimator.get_params(deep=False).items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, np.generic):
            value = value.item()
        try:
            if json.loads(json.dumps(value)) == value:
                params[name] = value
        except (TypeError, ValueError):
            pass
    return params
