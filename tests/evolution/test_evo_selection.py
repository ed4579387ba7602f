"""Occam's choice among scored candidates (`one_standard_error_choice`)."""

import pytest

from evolution.selection import one_standard_error_choice


def test_simplest_within_one_standard_error_is_chosen():
    """A simpler candidate whose paired deficit is within one standard error wins; one
    clearly worse does not."""
    best = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    noisy = [0.1, 0.8, 0.1, 0.8, -0.1, 1.0, 0.0, 1.1]  # mean 0.475 vs 0.5, noisy
    worse = [x - 0.5 for x in best]
    assert one_standard_error_choice([best, noisy], [2, 1]) == 1
    assert one_standard_error_choice([best, worse], [2, 1]) == 0


def test_tolerance_makes_tiny_consistent_gains_ties():
    """A constant (zero-variance) gain is significant however small; within `tolerance`
    it no longer buys complexity."""
    best = [float(i % 3) for i in range(30)]
    simpler = [x - 1e-4 for x in best]
    assert one_standard_error_choice([best, simpler], [2, 1]) == 0
    assert one_standard_error_choice([best, simpler], [2, 1], tolerance=1e-3) == 1
    assert one_standard_error_choice([best, [x - 1e-2 for x in best]], [2, 1],
                                     tolerance=1e-3) == 0


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        one_standard_error_choice([[1.0], [1.0, 2.0]], [1, 2])
    with pytest.raises(ValueError):
        one_standard_error_choice([[1.0]], [1, 2])
