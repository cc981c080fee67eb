"""Where images enter: the one place that decides how they are held.

:func:`open_images` validates what the caller passed and returns one object
that everything below speaks to through these operations:

- ``histogram()``: the exact ``(distinct values, counts)`` of integer images;
- ``sample(n_samples, random_state)``: a seeded uniform sample of valid pixels;
- ``spatial_fit_views()``: in-memory views on which a guided spatial prior is
  fitted (whole images, or a crop of them; unguided fits take ``views`` and
  read only the tiles they are fitted on, see :func:`._hmrf.tile_views`);
- ``field_fit_views()``: in-memory views on which a bias field is fitted
  (strided copies of images of more than ``_bias.FIELD_FIT_PIXELS``
  pixels), and the step between their pixels in the full image;
- ``corrected(fields, names)``: the same images divided by their bias fields;
- ``field_maps(fields, log)``: each image's field ``(*spatial_shape, C)``, or
  with ``log=True`` its ``sum_c log b_c`` (the correction's log-Jacobian);
- ``pixels_at(positions)``: each image's values at flat positions, and
  whether each is valid (inside the mask and finite): the scribbled pixels;
- ``spatial_fit_keys()``: where in each image its spatial fit view lies
  (``None`` for the whole image), so that guidance can be cropped to it;
- ``predict(model, output, guidance)``: labels, posteriors or
  log-likelihoods, one per image, computed by :func:`._kernel.predict_image`
  (with ``guidance``, a :class:`._guidance.Guidance`, added to the unary term).

NumPy images get :class:`InMemoryImages` here; dask and zarr arrays get
:class:`._dask.ChunkedImages`, which answers the same operations from the
chunks and returns lazy outputs. Another backend (CuPy, or any array-API
namespace) would be one more class with these methods, chosen in
:func:`open_images`; see ``docs/architecture.md``.
"""

from __future__ import annotations

from . import _bias, _dask, _image, _kernel

__all__ = ["open_images", "InMemoryImages"]


class InMemoryImages(_image.Images):
    """NumPy images, walked chunk by chunk."""

    def histogram(self):
        return _image.integer_histogram(self.views)

    def sample(self, n_samples, random_state):
        return _image.sample_pixels(self.views, n_samples, random_state)

    def spatial_fit_views(self):
        return self.views

    def spatial_fit_keys(self):
        return [None] * len(self.views)

    def pixels_at(self, positions):
        return [_image.pixels_at(view, where) for view, where in zip(self.views, positions)]

    def field_fit_views(self):
        return _bias.field_fit_views(self.views)

    def corrected(self, fields, names):
        views = [_bias.corrected_view(v, f, n) for v, f, n in zip(self.views, fields, names)]
        return InMemoryImages(views, self.batch)

    def field_maps(self, fields, log=False):
        if log:
            return [_bias.log_field_sum(f, v.spatial_shape) for v, f in zip(self.views, fields)]
        return [_bias.field_image(f, v.spatial_shape, v.n_channels) for v, f in zip(self.views, fields)]

    def predict(self, model, output, guidance=None):
        if output != "log_likelihood" and model.beta > 0:
            # the whole batch's maps at once: each image keeps its output
            _kernel.check_spatial_memory(
                self.views, model.n_components, "Labelling with the spatial prior"
            )
        adjust = [None] * len(self.views) if guidance is None else guidance.adjusters()
        return self.unbatch([
            _kernel.predict_image(view, model, output, adjust_potential=add)
            for view, add in zip(self.views, adjust)
        ])


def open_images(X, *, channel_axis, mask=None, param_name="X", grey_model=False,
                n_sizes=None) -> _image.Images:
    """Validate one image or a batch and pick the backend that will hold them
    (``grey_model``, ``n_sizes``: see :func:`._image.as_images`)."""
    views = _image.as_images(
        X, channel_axis=channel_axis, mask=mask, param_name=param_name,
        convert=_dask.lazy_inputs, grey_model=grey_model, n_sizes=n_sizes,
    )
    batch = _image.is_batch(X)
    if any(_image.is_dask_array(view.pixels) for view in views):
        return _dask.ChunkedImages(views, batch)
    return InMemoryImages(views, batch)
