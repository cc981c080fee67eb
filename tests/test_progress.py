"""Progress reports and cancellation."""

import numpy as np
import pytest
from _images import quadrants

from gmm_segmenter import Cancelled, GMMSegmenter, progress


def test_fit_and_predict_report_their_stages():
    image, _ = quadrants(noise=30)
    seen = []
    with progress(lambda stage, done, total: seen.append((stage, done, total))):
        segmenter = GMMSegmenter(4, random_state=0).fit(image)
        segmenter.predict(image)
    stages = {stage for stage, _, _ in seen}
    assert {"EM", "spatial EM", "smoothing"} <= stages
    em = [done for stage, done, _ in seen if stage == "EM"]
    assert em == list(range(1, segmenter.n_iter_ + 1))
    assert all(total is None or done <= total for _, done, total in seen)


def test_labelling_reports_pixels():
    image, _ = quadrants((300, 500))
    segmenter = GMMSegmenter(4, beta=0, random_state=0).fit(image)
    seen = []
    with progress(lambda stage, done, total: seen.append((stage, done, total))):
        segmenter.predict(image)
    labelling = [(done, total) for stage, done, total in seen if stage == "labelling"]
    assert labelling[-1] == (image.size, image.size)
    assert len(labelling) >= 2  # more than one chunk


def test_no_callback_outside_the_context():
    image, _ = quadrants()
    seen = []
    with progress(lambda *args: seen.append(args)):
        pass
    GMMSegmenter(4, beta=0).fit(image)
    assert seen == []


def test_cancelling_a_fit_leaves_the_estimator_as_it_was():
    image, _ = quadrants(noise=30)
    segmenter = GMMSegmenter(4, random_state=0).fit(image)
    means = segmenter.means_.copy()

    def cancel(stage, done, total):
        if stage == "spatial EM":
            raise Cancelled

    with pytest.raises(Cancelled) as stopped, progress(cancel):
        segmenter.fit(np.flipud(image) * 2.0)
    # a log or a traceback says what stopped it (str() was empty)
    assert str(stopped.value) == "cancelled from the progress callback"
    assert str(Cancelled("the user closed the window")) == "the user closed the window"
    np.testing.assert_array_equal(segmenter.means_, means)
    np.testing.assert_array_equal(segmenter.predict(image), GMMSegmenter(4, random_state=0).fit_predict(image))

    fresh = GMMSegmenter(4)
    with pytest.raises(Cancelled), progress(cancel):
        fresh.fit(image)
    assert not hasattr(fresh, "means_")
