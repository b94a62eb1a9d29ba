"""Inverse kinematics of the arm with pinocchio.

A damped least-squares (Levenberg-Marquardt) solver on SE(3): the pose error is the twist
``log6(T_target^-1 T_current)`` (zero at the goal), linearised with the frame's local
Jacobian corrected by ``Jlog6`` (Sola et al., "A micro Lie theory for state estimation in
robotics", arXiv:1812.01537, sec. VII). The damping follows Sugihara, "Solvability-unconcerned
inverse kinematics by the Levenberg-Marquardt method", IEEE T-RO 27(5), 2011: ``lambda = 0.5 *
|e|^2 + lambda_min``, large far from the goal (gradient-like, robust from any seed) and vanishing
near it (Gauss-Newton, quadratic convergence). Multiple seeds find several IK branches (elbow
up / down, wrist flips) of a 6-axis arm; an ``accept`` callback (collision check) filters them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cosarad_ros.core.geometry import as_transform

__all__ = ["IKResult", "IKSolver", "wrap_to_limits"]


@dataclass(frozen=True)
class IKResult:
    """Outcome of one IK query.

    Attributes:
        q: ``(nq,)`` full configuration (all joints of the model; only the IK joints moved).
        success: pose reached within tolerance (and accepted by the callback, if any).
        position_error: remaining translation error [m].
        rotation_error_deg: remaining rotation error [deg].
        iterations: iterations used by the converged (or last) seed.
        seeds_tried: how many seeds were run.
        converged: how many seeds reached the pose (accepted or not); ``success=False`` with
            ``converged > 0`` means every solution found was rejected (e.g. collides).
    """

    q: np.ndarray
    success: bool
    position_error: float
    rotation_error_deg: float
    iterations: int
    seeds_tried: int
    converged: int = 0


def wrap_to_limits(q, lower, upper, reference=None) -> np.ndarray:
    """Move each revolute angle by multiples of 2 pi to the equivalent value inside
    ``[lower, upper]`` that is closest to ``reference`` (default: closest to 0).

    Args:
        q, lower, upper, reference: ``(n,)`` arrays [rad].

    Returns:
        ``(n,)`` array; joints with no equivalent inside the limits are clipped.
    """
    q = np.asarray(q, dtype=np.float64).copy()
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    ref = np.zeros_like(q) if reference is None else np.asarray(reference, dtype=np.float64)
    two_pi = 2.0 * np.pi
    # candidate equivalents q + 2 pi k for k in -2..2, keep those inside the limits
    ks = np.arange(-2, 3)[:, None]
    cand = q[None, :] + two_pi * ks
    inside = (cand >= lower - 1e-9) & (cand <= upper + 1e-9)
    dist = np.where(inside, np.abs(cand - ref[None, :]), np.inf)
    best = np.argmin(dist, axis=0)
    ok = np.isfinite(dist[best, np.arange(q.size)])
    out = np.where(ok, cand[best, np.arange(q.size)], np.clip(q, lower, upper))
    return out


class IKSolver:
    """Damped least-squares IK of one frame of a pinocchio model.

    Args:
        model: ``pinocchio.Model`` (revolute / prismatic joints, ``nq == nv``).
        frame: name of the frame to place (e.g. ``sensor_optical_frame``).
        joint_indices: indices into ``q`` of the joints IK may move (the arm); the others stay
            at the values given in ``q_fixed``.
        max_iterations: per seed.
        position_tolerance: [m].
        rotation_tolerance_deg: [deg].
        lambda_min: floor of the LM damping.
        max_step: largest joint change per iteration [rad] (keeps the linearisation valid).
        patience: iterations without a 1 % error decrease before a seed is given up.
    """

    def __init__(self, model, frame: str, joint_indices: Sequence[int], *, max_iterations: int = 80,
                 position_tolerance: float = 1e-6, rotation_tolerance_deg: float = 1e-4,
                 lambda_min: float = 1e-6, max_step: float = 0.5, patience: int = 8):
        import pinocchio as pin

        self._pin = pin
        self.model = model
        self.data = model.createData()
        if not model.existFrame(frame):
            raise ValueError(f"frame '{frame}' is not in the kinematic model")
        if model.nq != model.nv:
            raise ValueError("IKSolver supports models with nq == nv only (no continuous/free joints)")
        self.frame = frame
        self.frame_id = model.getFrameId(frame)
        self.idx = np.asarray(joint_indices, dtype=int)
        if self.idx.size == 0:
            raise ValueError("joint_indices is empty")
        self.lower = np.asarray(model.lowerPositionLimit, dtype=np.float64)
        self.upper = np.asarray(model.upperPositionLimit, dtype=np.float64)
        self.max_iterations = int(max_iterations)
        self.position_tolerance = float(position_tolerance)
        self.rotation_tolerance = np.deg2rad(float(rotation_tolerance_deg))
        self.lambda_min = float(lambda_min)
        self.max_step = float(max_step)
        self.patience = int(patience)

    # ------------------------------------------------------------------------------------------
    def fk(self, q) -> np.ndarray:
        """``(4, 4)`` pose of the IK frame in the model's root frame at ``q``."""
        pin = self._pin
        q = np.asarray(q, dtype=np.float64)
        pin.forwardKinematics(self.model, self.data, q)
        pin.updateFramePlacement(self.model, self.data, self.frame_id)
        return np.array(self.data.oMf[self.frame_id].homogeneous)

    def _descend(self, target, q):
        """Run LM from ``q``; returns ``(q, pos_err, rot_err, iterations)``. A seed whose error
        has not dropped by 1 % over ``patience`` iterations is abandoned (a joint limit or a
        singularity holds it; another seed does better than more iterations).
        """
        pin = self._pin
        m, d, fid, idx = self.model, self.data, self.frame_id, self.idx
        lo, hi = self.lower[idx], self.upper[idx]
        eye = np.eye(idx.size)
        q = q.copy()
        pos_err = rot_err = np.inf
        best, best_it = np.inf, 0
        it = 0
        for it in range(1, self.max_iterations + 1):
            pin.computeJointJacobians(m, d, q)          # forward kinematics + joint Jacobians
            pin.updateFramePlacement(m, d, fid)
            err_se3 = target.actInv(d.oMf[fid])         # E = T_target^-1 T_current
            e = pin.log6(err_se3).vector                 # (v, w) twist, zero at the goal
            t = err_se3.translation
            pos_err = float(np.sqrt(t @ t))
            rot_err = float(np.sqrt(e[3:] @ e[3:]))
            if pos_err < self.position_tolerance and rot_err < self.rotation_tolerance:
                return q, pos_err, rot_err, it
            total = pos_err + 0.1 * rot_err
            if total < 0.99 * best:
                best, best_it = total, it
            elif it - best_it >= self.patience:
                break
            # e(q + dq) ~ e + Jlog6(E) J_local dq  (right perturbation of the current pose)
            J = pin.Jlog6(err_se3) @ pin.getFrameJacobian(m, d, fid, pin.LOCAL)[:, idx]
            lam = 0.5 * float(e @ e) + self.lambda_min
            dq = -np.linalg.solve(J.T @ J + lam * eye, J.T @ e)
            step = float(np.max(np.abs(dq)))
            if step > self.max_step:
                dq *= self.max_step / step
            qi = q[idx] + dq
            if (qi < lo).any() or (qi > hi).any():
                qi = np.minimum(np.maximum(qi, lo), hi)
            q[idx] = qi
        return q, pos_err, rot_err, it

    def solve(self, target, seeds, *, q_fixed=None, accept: Callable[[np.ndarray], bool] | None = None,
              reference=None) -> IKResult:
        """Place the frame at ``target``, trying ``seeds`` in order until one converges (and is
        accepted).

        Args:
            target: ``(4, 4)`` desired pose in the model's root frame.
            seeds: ``(S, len(joint_indices))`` start values of the IK joints.
            q_fixed: ``(nq,)`` values of the joints IK does not move (default: neutral).
            accept: extra test of a converged ``q`` (e.g. collision-free).
            reference: ``(len(joint_indices),)`` angles the solution is wrapped towards (by
                multiples of 2 pi, within limits); default: the seed it came from.

        Returns:
            the first accepted solution, else the best failed attempt (``success=False``).
        """
        results = self.solve_all(target, seeds, q_fixed=q_fixed, accept=accept, max_solutions=1,
                                 reference=reference)
        return results[0]

    def solve_all(self, target, seeds, *, q_fixed=None, accept: Callable[[np.ndarray], bool] | None = None,
                  max_solutions: int = 4, distinct_rad: float = 0.2, reference=None) -> list[IKResult]:
        """Like :meth:`solve` but collects up to ``max_solutions`` distinct accepted solutions
        (IK branches). Successful results come first; when none succeeds the list holds one
        failed result (the closest attempt).
        """
        pin = self._pin
        T = pin.SE3(as_transform(target, name="IK target"))
        seeds = np.atleast_2d(np.asarray(seeds, dtype=np.float64))
        if seeds.shape[1] != self.idx.size:
            raise ValueError(f"seeds must have shape (S, {self.idx.size}), got {seeds.shape}")
        base = (np.asarray(pin.neutral(self.model), dtype=np.float64) if q_fixed is None
                else np.asarray(q_fixed, dtype=np.float64).copy())
        found: list[IKResult] = []
        best_fail = None
        n_conv = 0
        for s, seed in enumerate(seeds, start=1):
            q0 = base.copy()
            q0[self.idx] = np.clip(seed, self.lower[self.idx], self.upper[self.idx])
            q, pe, re, it = self._descend(T, q0)
            converged = pe < self.position_tolerance and re < self.rotation_tolerance
            if converged:
                n_conv += 1
                q[self.idx] = wrap_to_limits(q[self.idx], self.lower[self.idx], self.upper[self.idx],
                                             reference=seed if reference is None else reference)
                if any(np.max(np.abs(q[self.idx] - r.q[self.idx])) < distinct_rad for r in found):
                    continue
                if accept is None or accept(q):
                    found.append(IKResult(q, True, pe, float(np.degrees(re)), it, s))
                    if len(found) >= max_solutions:
                        break
                    continue
            score = pe + 0.1 * re + (0.0 if not converged else -1.0)
            if best_fail is None or score < best_fail[0]:
                best_fail = (score, IKResult(q, False, pe, float(np.degrees(re)), it, s))
        if found:
            return [IKResult(r.q, r.success, r.position_error, r.rotation_error_deg, r.iterations,
                             len(seeds), n_conv) for r in found]
        r = best_fail[1]
        return [IKResult(r.q, False, r.position_error, r.rotation_error_deg, r.iterations, len(seeds), n_conv)]
