"""Griffe extension: render the Sphinx roles of numpydoc docstrings in MkDocs.

The docstrings use ``:class:`~sklearn.mixture.GaussianMixture``` and friends,
which Sphinx understands and Markdown does not. Public names of this package
become links to their entry in the API reference (checked by the strict
build); every other name becomes inline code (``~`` keeps the last part only,
as in Sphinx).
"""

import re

import griffe

PUBLIC = {"GMMSegmenter", "segment", "save_model", "load_model"}
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|obj|data|exc):`(~?)([^`]+)`")


def _replace(match):
    tilde, target = match.groups()
    name = target.rsplit(".", 1)[-1] if tilde else target
    short = target.rsplit(".", 1)[-1]
    if short in PUBLIC and target.split(".")[0] in {short, "gmm_segmenter"}:
        return f"[`{name}`][gmm_segmenter.{short}]"
    return f"`{name}`"


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_replace, obj.docstring.value)
