"""``gmm-segment --help`` says what an installed copy can use."""

from __future__ import annotations

from gmm_segmenter.cli import build_parser


def test_help_says_whose_output_layout_it_keeps_and_links_the_online_documentation():
    text = " ".join(build_parser().format_help().split())
    assert "the usual script that fits scikit-learn's GaussianMixture to the pixels" in text
    assert "original" not in text  # a new user knows of no original
    assert text.endswith("https://github.com/gmm-segmenter/gmm-segmenter/blob/main/docs/cli.md")
    assert "Documentation: docs/cli.md" not in text
    assert "130 interrupted" in text


def test_a_usage_error_is_one_line_that_points_to_the_help(capsys):
    from gmm_segmenter.cli import main

    status = main(["x.png", "--covariance-type", "bogus"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "usage:" not in err
    assert "--covariance-type" in err and "gmm-segment --help" in err
