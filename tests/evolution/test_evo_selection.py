"""Occam's choice among scored candidates (`one_standard_error_choice` and its form for
statistics without rows) and the half-sample intervals it and the text reports use."""

import pytest

from evolution.selection import (
    one_standard_error_choice,
    race_survivors,
    resampled_gap_errors,
    within_noise,
)


def resampled_one_standard_error_choice(values, resampled, complexity, scale=1.0):
    """The text selection's rule (`CoEvolution.choose_on_fresh`): `within_noise` over the
    errors of `resampled_gap_errors`."""
    return within_noise(values, resampled_gap_errors(values, resampled, scale), complexity)


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


def test_a_statistic_without_rows_uses_its_resampled_paired_gaps():
    """For a statistic of all rows (MAUVE), the standard error of a gap is the spread of the
    gap over the shared resamples, times `scale`: a deficit of 0.05 with resampled gaps
    spread 0.1 is noise (the simpler program wins), spread 0.01 is not."""
    values = [1.0, 0.95]
    noisy = [[1.1, 0.9] * 10, [0.95] * 20]  # gaps 0.15 / -0.05: sd 0.103
    steady = [[1.01, 0.99] * 10, [0.95] * 20]  # sd 0.0103
    assert resampled_one_standard_error_choice(values, noisy, [2, 1]) == 1
    assert resampled_one_standard_error_choice(values, steady, [2, 1]) == 0
    # the same spread, scaled to a standard error 5 times larger: noise again
    assert resampled_one_standard_error_choice(values, steady, [2, 1], scale=5.0) == 1
    assert resampled_one_standard_error_choice([0.9, 0.95], steady, [2, 1]) == 1
    with pytest.raises(ValueError):
        resampled_one_standard_error_choice(values, [[1.0], [1.0]], [2, 1])


def test_a_race_keeps_the_candidates_within_two_standard_errors_and_the_reference():
    """Gaps to the best 0.10 (error 0.04: 2.5 errors out), 0.05 (0.03: in), 0.02 (0.001: 20
    errors out), 0 (the best): survivors 1 and 3, with the reference 0 kept in any case;
    at most `most` of the closest, best first; every survivor where noise is wide."""
    values, errors = [0.70, 0.75, 0.78, 0.80], [0.04, 0.03, 0.001, 0.0]
    assert race_survivors(values, errors, most=4) == [1, 3]
    assert race_survivors(values, errors, most=4, keep=0) == [0, 1, 3]
    assert race_survivors(values, errors, most=1, keep=0) == [0, 3]
    assert race_survivors(values, [0.1] * 4, most=4) == [0, 1, 2, 3]
    assert race_survivors(values, [0.1] * 4, most=2) == [2, 3]
    with pytest.raises(ValueError):
        race_survivors(values, errors[:2], most=2)


def test_half_samples_give_the_standard_error_of_a_mean():
    """Half-samples without replacement, rescaled by `half_sample_scale`, spread a mean as
    much as its standard error S / sqrt(n) (odd n too), and hold no row twice."""
    import random
    import statistics

    from evolution.report import half_sample_interval, half_sample_scale, half_samples

    for n in (40, 41):
        x = [random.Random(n).gauss(0, 1) for _ in range(n)]
        halves = half_samples(n, 4000, seed=1)
        assert all(len(h) == n // 2 == len(set(h)) for h in halves)
        means = [sum(x[i] for i in h) / len(h) for h in halves]
        se = statistics.stdev(x) / n ** 0.5
        assert half_sample_scale(n) * statistics.stdev(means) == pytest.approx(se, rel=0.08)
        point = sum(x) / n
        lo, hi = half_sample_interval(point, means, n)
        assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.12)
    # a statistic that repeated rows would lower (the share of distinct rows) keeps its value
    distinct = [len({i for i in h}) / len(h) for h in half_samples(10, 50)]
    assert half_sample_interval(1.0, distinct, 10) == (1.0, 1.0)
