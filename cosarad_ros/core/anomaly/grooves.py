"""Narrow grooves: a matched line test on the residual deviation of a registered scan.

A scratch 0.5-2 mm wide covers a fifth or less of a deviation location's neighbourhood (a few
millimetres across), so the neighbourhood's mean deviation dilutes it below the noise even when
every point in the groove reads half a millimetre deep. The test here looks for the groove's shape
instead: a straight strip of points, one or two point spacings wide, lying lower than the surface
on both sides of it. This is the line detector of classic image processing (a strip mean against
the mean of its flanks; Steger, "An unbiased detector of curvilinear structures", IEEE TPAMI 20(2),
1998) applied to the signed distance to the CAD surface in the tangent plane of each candidate.

Every deviation is first taken relative to what the good templates read at the same place
(:class:`GrooveField`): scanned edges and corners read a little low all along them, and that
line must not look like a groove. The noise that is left is measured on the templates themselves,
each against the others, so the strip statistic is a z-score under the good parts' own noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..registration.preprocess import point_spacing

__all__ = ["GrooveField", "GrooveScores", "groove_scores"]

#: template points averaged into the expected deviation at one place
EXPECT_NEIGHBOURS = 6
#: seeds: points whose residual is below this many standard deviations
SEED_Z = 2.5
#: strip orientations tested per seed (180 / 16 = 11.25 degrees apart)
ORIENTATIONS = 16
#: a strip's half-width and the discs' radii (the strips' half-lengths), in point spacings
HALF_WIDTH = 1.0
DISC_RADII = (4.0, 8.0, 16.0)
#: points of a disc share the seed's face when their CAD normals agree within this cosine
SAME_FACE = 0.9
#: fewest points in a strip and in its flanks for a test
MIN_STRIP, MIN_FLANK = 4, 8
#: pseudo-points of the part's typical residual noise added to each location's own estimate
SHRINK_POINTS = 30.0


@dataclass(frozen=True)
class GrooveField:
    """What the good templates read near every place, and how much a point strays from it.

    Attributes:
        tree: k-d tree of the pooled template points ``(M, 3)`` (model frame) [m].
        dev: ``(M,)`` their signed deviations from the CAD surface [m].
        noise: ``(L,)`` standard deviation of one point's residual at each bank location [m].
        spacing: the templates' typical point spacing [m].
    """

    tree: cKDTree
    dev: np.ndarray
    noise: np.ndarray
    spacing: float

    @staticmethod
    def fit(templates, devs, *, location_tree: cKDTree, min_std: float) -> GrooveField:
        """Pool ``templates`` (``(N_g, 3)`` each, registered onto the model) and their signed
        deviations ``devs`` (``(N_g,)`` each); the residual noise is measured leave-one-out: each
        template's points against the expectation of the others.

        Raises:
            ValueError: fewer than 2 templates, or templates and deviations that do not pair up.
        """
        if len(templates) < 2 or len(templates) != len(devs):
            raise ValueError("GrooveField.fit needs 2 or more templates, each with its deviations")
        pts = [np.asarray(t, dtype=np.float64) for t in templates]
        dv = [np.asarray(d, dtype=np.float64) for d in devs]
        spacing = point_spacing(pts[0], sample=len(pts[0]))  # the median over every point
        L = location_tree.n
        sq, cnt = np.zeros(L), np.zeros(L)
        for g in range(len(pts)):
            others = [i for i in range(len(pts)) if i != g]
            tree = cKDTree(np.concatenate([pts[i] for i in others]))
            expect, ok = _expect(tree, np.concatenate([dv[i] for i in others]), pts[g], spacing)
            r = dv[g] - expect
            loc = location_tree.query(pts[g], k=1)[1]
            sq += np.bincount(loc[ok], weights=r[ok] ** 2, minlength=L)
            cnt += np.bincount(loc[ok], minlength=L)
        typical = float(sq.sum() / max(cnt.sum(), 1.0))  # pooled over the part
        var = (sq + SHRINK_POINTS * typical) / (cnt + SHRINK_POINTS)
        return GrooveField(cKDTree(np.concatenate(pts)), np.concatenate(dv),
                           np.sqrt(var + min_std ** 2), spacing)


def _expect(tree: cKDTree, dev: np.ndarray, points: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean deviation of the template points near each of ``points`` ``(N, 3)`` -> ``(expect (N,),
    found (N,) bool)``; places with no template point within two spacings keep 0 and ``found`` False.
    """
    d, idx = tree.query(points, k=EXPECT_NEIGHBOURS, distance_upper_bound=2.0 * spacing)
    near = np.isfinite(d)
    n = near.sum(1)
    vals = np.where(near, dev[np.minimum(idx, len(dev) - 1)], 0.0)
    return vals.sum(1) / np.maximum(n, 1), n >= 2


@dataclass(frozen=True)
class GrooveScores:
    """Strip tests of one scan.

    Attributes:
        score: ``(S,)`` per seed, the best strip's z-score, capped by the tolerance term as the
            location scores are (``threshold x depth / tolerance``).
        depth: ``(S,)`` how much lower the best strip lies than its flanks [m].
        seeds: ``(S,)`` indices of the seed points in the scan.
        members: per seed, the scan indices of the best strip's points.
    """

    score: np.ndarray
    depth: np.ndarray
    seeds: np.ndarray
    members: tuple

    def point_scores(self, n: int) -> np.ndarray:
        """``(n,)`` the highest score of a strip each scan point belongs to (``-inf``: none)."""
        out = np.full(n, -np.inf)
        if self.members:
            np.maximum.at(out, np.concatenate(self.members), np.repeat(self.score, [len(m) for m in self.members]))
        return out


def groove_scores(field: GrooveField, points: np.ndarray, dev: np.ndarray, normals: np.ndarray,
                  location: np.ndarray, *, threshold: float, tolerance: float) -> GrooveScores:
    """Strip tests around the scan points that read lowest against the templates.

    Args:
        field: the part type's :class:`GrooveField`.
        points: ``(N, 3)`` the registered scan (model frame) [m].
        dev: ``(N,)`` its signed deviations from the CAD surface [m].
        normals: ``(N, 3)`` the CAD normal nearest each point.
        location: ``(N,)`` index of each point's bank location (for its residual noise).
        threshold, tolerance: the detector's; see :class:`~.deviation.DeviationDetector`.

    Returns:
        :class:`GrooveScores` (empty when no point reads low enough to seed a test).

    Raises:
        ValueError: arrays that do not pair up.
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if not (len(dev) == len(normals) == len(location) == n):
        raise ValueError(f"points ({n}), dev ({len(dev)}), normals ({len(normals)}) and location "
                         f"({len(location)}) must have one row per scan point")
    expect, found = _expect(field.tree, field.dev, points, field.spacing)
    sigma = field.noise[location]
    resid = np.where(found, dev - expect, np.nan)
    seeds = np.flatnonzero(found & (resid < -SEED_Z * sigma))
    empty = GrooveScores(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), ())
    if not len(seeds):
        return empty
    hw = HALF_WIDTH * field.spacing
    tree = cKDTree(points)
    lists = tree.query_ball_point(points[seeds], max(DISC_RADII) * field.spacing)
    owner = np.repeat(np.arange(len(seeds)), [len(x) for x in lists])
    nb = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
    keep = (nb != seeds[owner]) & found[nb] & (np.einsum("ij,ij->i", normals[nb], normals[seeds[owner]]) >= SAME_FACE)
    owner, nb = owner[keep], nb[keep]
    # tangent frame of each seed's face
    nz = normals[seeds]
    helper = np.where(np.abs(nz[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    e1 = np.cross(nz, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(nz, e1)
    rel = points[nb] - points[seeds[owner]]
    dist = np.linalg.norm(rel, axis=1)
    u, v = np.einsum("ij,ij->i", rel, e1[owner]), np.einsum("ij,ij->i", rel, e2[owner])
    theta = np.arange(ORIENTATIONS) * (np.pi / ORIENTATIONS)
    S, n_o = len(seeds), ORIENTATIONS
    r, s2 = resid[nb], sigma[nb] ** 2
    scores, depths = [], []
    for R in DISC_RADII:  # the longer strips test only their own share of the disc
        inside = dist <= R * field.spacing
        across = np.abs(-u[inside, None] * np.sin(theta) + v[inside, None] * np.cos(theta))  # (P_R, O)
        sc, dp = _strip_tests(owner[inside], across, r[inside], s2[inside], S, hw,
                              threshold=threshold, tolerance=tolerance)
        scores.append(sc)
        depths.append(dp)
    score, depth = np.concatenate(scores, axis=1), np.concatenate(depths, axis=1)
    best = score.argmax(1)
    best_score = score[np.arange(S), best]
    good = np.isfinite(best_score)
    if not good.any():
        return empty
    depth = depth[np.arange(S), best]
    ri, oi = best // n_o, best % n_o
    t = theta[oi[owner]]
    in_best = ((dist <= np.asarray(DISC_RADII)[ri[owner]] * field.spacing)
               & (np.abs(-u * np.sin(t) + v * np.cos(t)) <= hw))
    order = np.argsort(owner[in_best], kind="stable")
    grouped = np.split(nb[in_best][order], np.cumsum(np.bincount(owner[in_best], minlength=S))[:-1])
    members = tuple(np.append(g, seeds[i]) for i, g in enumerate(grouped) if good[i])
    return GrooveScores(best_score[good], depth[good], seeds[good], members)


def _strip_tests(owner: np.ndarray, across: np.ndarray, r: np.ndarray, s2: np.ndarray, S: int, hw: float, *,
                 threshold: float, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Strip against flanks for every seed and orientation.

    Args:
        owner: ``(P,)`` seed of each (seed, neighbour) pair.
        across: ``(P, O)`` the neighbour's distance from the seed's line at each orientation [m].
        r, s2: ``(P,)`` the neighbour's residual [m] and the templates' point variance there [m^2].
        S: number of seeds; hw: the strip's half-width [m].

    Returns:
        ``(score (S, O), depth (S, O))`` for ``O`` orientations: ``-inf`` / NaN where the strip or its flanks hold too
        few points.
    """
    n_o = across.shape[1]
    key = owner[:, None] * n_o + np.arange(n_o)

    def sums(mask, w):
        return np.bincount(key[mask], weights=np.broadcast_to(w[:, None], mask.shape)[mask], minlength=S * n_o)

    strip, flank = across <= hw, across >= 2.0 * hw
    ones = np.ones_like(r)
    ns, nf = sums(strip, ones), sums(flank, ones)
    ok = (ns >= MIN_STRIP) & (nf >= MIN_FLANK)
    ns, nf = np.maximum(ns, 1.0), np.maximum(nf, 1.0)
    ms, mf = sums(strip, r) / ns, sums(flank, r) / nf
    depth = np.where(ok, mf - ms, np.nan)
    # the point noise: the templates' at these places, or the flanks' own spread where that is
    # larger (a wall seen obliquely reads noisier in this scan than the templates' pooled estimate)
    noise2 = np.maximum((sums(strip, s2) + sums(flank, s2)) / (ns + nf), sums(flank, r * r) / nf - mf ** 2)
    z = depth / np.sqrt(noise2 * (1.0 / ns + 1.0 / nf) + 1e-30)
    cap = threshold * depth / tolerance if tolerance > 0 else np.full_like(z, np.inf)
    return np.where(ok, np.minimum(z, cap), -np.inf).reshape(S, n_o), depth.reshape(S, n_o)
