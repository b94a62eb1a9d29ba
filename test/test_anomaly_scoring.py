"""COSARAD scoring maths: Cohen's d, aggregators, point scores, thresholds, AUROC (hand-computed)."""
import math

import numpy as np
import pytest

from cosarad_ros.core.anomaly import (
    aggregate,
    calibrate_threshold,
    cohens_d,
    local_effect_sizes,
    point_scores_from_patches,
)
from cosarad_ros.core.anomaly.evaluation import auroc, roc_curve
from cosarad_ros.core.anomaly.memory_bank import GlobalBank, LocalBank
from cosarad_ros.core.anomaly.scoring import add_point_deviation


def test_cohens_d_hand_computed():
    # D^t = [4, 6] (mean 5, var 2), D = [1, 2, 3] (mean 2, var 1)
    # pooled var = (1*2 + 2*1) / (2 + 3 - 2) = 4/3 -> s_p = 1.1547; d = 3 / 1.1547 = 2.598
    assert cohens_d([4, 6], [1, 2, 3]) == pytest.approx(3 / math.sqrt(4 / 3), rel=1e-12)
    # equal samples -> 0; reversed -> negative
    assert cohens_d([1, 2, 3], [1, 2, 3]) == pytest.approx(0.0)
    assert cohens_d([1, 2, 3], [4, 6]) == pytest.approx(-3 / math.sqrt(4 / 3))
    # the floor of the pooled standard deviation
    assert cohens_d([1.0, 1.0], [0.0, 0.0], min_std=0.5) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        cohens_d([1.0], [2.0])
    with pytest.raises(ValueError):
        cohens_d([1.0, np.nan], [2.0, 3.0])


def test_local_effect_sizes_match_scalar_definition():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(5, 4, 8))
    test = rng.normal(size=(5, 8))
    d = local_effect_sizes(bank, test, min_std=0.0)
    for j in range(5):
        dt = np.linalg.norm(bank[j] - test[j], axis=1)
        pairs = [np.linalg.norm(bank[j, a] - bank[j, b]) for a in range(4) for b in range(a + 1, 4)]
        assert d[j] == pytest.approx(cohens_d(dt, pairs), rel=1e-9)
    # an invalid template is left out of both samples
    valid = np.ones((5, 4), dtype=bool)
    valid[2, 1] = False
    d2 = local_effect_sizes(bank, test, bank_valid=valid, min_std=0.0)
    keep = [0, 2, 3]
    dt = np.linalg.norm(bank[2, keep] - test[2], axis=1)
    pairs = [np.linalg.norm(bank[2, a] - bank[2, b]) for i, a in enumerate(keep) for b in keep[i + 1:]]
    assert d2[2] == pytest.approx(cohens_d(dt, pairs), rel=1e-9)
    # fewer than 2 valid templates -> NaN
    valid[3, 1:] = False
    assert np.isnan(local_effect_sizes(bank, test, bank_valid=valid)[3])


def test_variance_shrinkage_toward_the_median_location():
    rng = np.random.default_rng(3)
    bank = rng.normal(size=(7, 4, 8))
    bank[5] = bank[5, :1] + 1e-4 * rng.normal(size=(4, 8))  # templates that agree almost exactly
    test = rng.normal(size=(7, 8))
    test[5] = bank[5, 0] + 0.05
    k = 6.0
    d = local_effect_sizes(bank, test, min_std=0.0, prior_weight=k)
    # by hand: the median over locations of the pairwise-distance variance is the prior
    iu = np.triu_indices(4, k=1)
    pair = [np.linalg.norm(bank[j][:, None] - bank[j][None], axis=-1)[iu] for j in range(7)]
    s0sq = np.median([p.var(ddof=1) for p in pair])
    for j in (0, 5):
        dt = np.linalg.norm(bank[j] - test[j], axis=1)
        ss = ((dt - dt.mean()) ** 2).sum() + ((pair[j] - pair[j].mean()) ** 2).sum()
        sp = math.sqrt((ss + k * s0sq) / (4 + 6 - 2 + k))
        assert d[j] == pytest.approx((dt.mean() - pair[j].mean()) / sp, rel=1e-9)
    # the paper's per-location value makes the near-identical location explode; shrinkage does not
    d0 = local_effect_sizes(bank, test, min_std=0.0)
    assert d0[5] > 100 and d[5] < d0[5] / 20
    # 0 is the paper's formula, negative weights are refused
    assert np.allclose(local_effect_sizes(bank, test, min_std=0.0, prior_weight=0.0), d0)
    with pytest.raises(ValueError, match="prior_weight"):
        local_effect_sizes(bank, test, prior_weight=-1.0)
    with pytest.raises(ValueError, match="std_prior_weight"):
        LocalBank(bank, std_prior_weight=-1.0)
    assert np.allclose(LocalBank(bank, min_std=0.0, std_prior_weight=k).score(test), d)


def test_local_bank_scores_outlier_location_highest():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 1, 16))
    bank = base + 0.05 * rng.normal(size=(6, 4, 16))
    test = base[:, 0] + 0.05 * rng.normal(size=(6, 16))
    test[4] += 1.0  # a different local shape at location 4
    s = LocalBank(bank).score(test)
    assert int(np.argmax(s)) == 4
    assert s[4] > 5 * np.abs(np.delete(s, 4)).max()
    loo = LocalBank(bank).leave_one_out()
    assert loo.shape == (4, 6) and np.isfinite(loo).all()
    # the global bank: nearest neighbour anywhere
    g = GlobalBank(bank)
    gs = g.score(test, np.array([True, True, True, True, True, False]))
    assert np.isnan(gs[5]) and int(np.nanargmax(gs)) == 4


def test_aggregators_hand_computed():
    s = np.array([0.5, 3.0, np.nan, 2.0, -1.0, 4.0])
    assert aggregate(s, "max") == 4.0
    assert aggregate(s, "topk_sum", k=2) == 7.0
    assert aggregate(s, "topk_mean", k=3) == pytest.approx(3.0)
    assert aggregate(s, "topk_mean", k=10) == pytest.approx(np.nanmean(s))
    with pytest.raises(ValueError):
        aggregate([np.nan, np.nan])
    with pytest.raises(ValueError):
        aggregate(s, "median")


def test_point_scores_gaussian_weighted_mean():
    centres = np.array([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]])
    scores = np.array([1.0, 3.0, np.nan])
    pts = np.array([[0.5, 0, 0], [0.0, 0, 0], [40.0, 0, 0]])
    out = point_scores_from_patches(pts, centres, scores, sigma=1.0)
    assert out[0] == pytest.approx(2.0)  # equidistant -> plain mean
    w0, w1 = 1.0, math.exp(-0.5)
    assert out[1] == pytest.approx((w0 * 1 + w1 * 3) / (w0 + w1))
    assert out[2] == pytest.approx(3.0)  # out of range -> nearest scored patch (NaN patch ignored)


def test_point_deviation_term_hand_computed():
    s = np.array([1.0, 1.0, 2.0, 0.5])
    dev = np.array([0.0, 0.125e-3, 0.5e-3, 10e-3])  # metres
    out = add_point_deviation(s, dev, weight=2.0, tolerance=0.25e-3, clip=4.0)
    # 0, half a tolerance, two tolerances, clipped at four tolerances
    assert np.allclose(out, [1.0, 1.0 + 2 * 0.5, 2.0 + 2 * 2.0, 0.5 + 2 * 4.0])
    # weight 0 is the paper's point score, unchanged and not aliased
    same = add_point_deviation(s, dev, weight=0.0)
    assert np.array_equal(same, s) and same is not s
    # a point off the surface inside an evenly scored patch now ranks first
    assert np.argmax(add_point_deviation(np.full(3, 5.0), np.array([0.0, 0.4e-3, 0.1e-3]))) == 1
    with pytest.raises(ValueError, match="weight"):
        add_point_deviation(s, dev, weight=-1.0)
    with pytest.raises(ValueError, match="tolerance"):
        add_point_deviation(s, dev, tolerance=0.0)
    with pytest.raises(ValueError, match="one length"):
        add_point_deviation(s, dev[:2])


def test_calibrated_threshold_max_is_gaussian_extreme():
    from scipy.stats import norm

    rng = np.random.default_rng(2)
    good = rng.normal(1.0, 0.5, size=(4, 300))
    thr, pthr = calibrate_threshold(good, aggregator="max", n_eff=100, false_alarm_rate=0.01)
    z = norm.ppf(0.99 ** (1 / 100))
    assert thr == pthr
    assert thr == pytest.approx(1.0 + z * 0.5, abs=0.1)
    # simulated good objects exceed it about 1 % of the time
    sims = rng.normal(1.0, 0.5, size=(20000, 100)).max(1)
    assert 0.002 < (sims > thr).mean() < 0.03
    t2, _ = calibrate_threshold(good, aggregator="topk_mean", top_k=3, n_eff=100)
    assert t2 < thr


def test_auroc_hand_values_and_roc():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)  # all tied
    assert auroc([3, 2, 1], [1, 0, 0]) == 1.0
    assert np.isnan(auroc([1, 2], [1, 1]))
    rng = np.random.default_rng(3)
    s, y = rng.normal(size=300), rng.random(300) < 0.3
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert auroc(s, y) == pytest.approx(brute)
    f, t = roc_curve(s, y)
    assert f[0] == 0 and t[0] == 0 and f[-1] == 1 and t[-1] == 1
    assert np.trapezoid(t, f) == pytest.approx(brute)
