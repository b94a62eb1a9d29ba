"""Built-in execution of planned views: collision-checked joint paths, time-parameterised.

A move is a sequence of point-to-point segments: direct, through the home configuration, or an
RRT-Connect path when those collide (:func:`~cosarad_ros.core.planning.motion.plan_joint_path`).
Every segment follows one synchronised trapezoidal velocity profile of a path parameter ``s`` in
[0, 1]: all joints start and stop together, and the profile's velocity and acceleration limits
are the tightest ones over the joints, so no joint exceeds its own limits (the
"phase-synchronised PTP" of industrial controllers; Biagiotti & Melchiorri, "Trajectory Planning
for Automatic Machines and Robots", Springer 2008, ch. 3.2 and 5.1). The result is sampled at
``dt`` into a :class:`JointTrajectory` the ROS node turns into ``trajectory_msgs/JointTrajectory``
and plays back as ``sensor_msgs/JointState``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cosarad_ros.core.planning.motion import PathBlockedError, plan_joint_path

__all__ = ["JointTrajectory", "trapezoid_profile", "time_parameterize", "BuiltinExecutor", "MoveResult",
           "PathBlockedError"]


@dataclass(frozen=True)
class JointTrajectory:
    """A time-parameterised joint trajectory.

    Attributes:
        joint_names: names of the columns.
        times: ``(M,)`` seconds from the start, increasing, ``times[0] == 0``.
        positions, velocities, accelerations: ``(M, n)``.
    """

    joint_names: tuple
    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray

    @property
    def duration(self) -> float:
        return float(self.times[-1]) if len(self.times) else 0.0

    def sample(self, t: float) -> np.ndarray:
        """Positions ``(n,)`` at time ``t`` (linear between samples, clamped to the ends)."""
        t = float(np.clip(t, 0.0, self.duration))
        k = int(np.searchsorted(self.times, t, side="right")) - 1
        k = min(max(k, 0), len(self.times) - 2) if len(self.times) > 1 else 0
        if len(self.times) == 1:
            return self.positions[0].copy()
        t0, t1 = self.times[k], self.times[k + 1]
        a = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        return (1.0 - a) * self.positions[k] + a * self.positions[k + 1]


def trapezoid_profile(v_max: float, a_max: float) -> tuple[float, float, float]:
    """Trapezoidal (or triangular) profile of ``s`` from 0 to 1.

    Returns:
        ``(duration, t_acc, v_peak)``.
    """
    if v_max <= 0 or a_max <= 0:
        raise ValueError("profile limits must be > 0")
    if v_max * v_max / a_max >= 1.0:      # never reaches v_max: triangle
        t_acc = np.sqrt(1.0 / a_max)
        return 2.0 * t_acc, t_acc, a_max * t_acc
    t_acc = v_max / a_max
    return 1.0 / v_max + t_acc, t_acc, v_max


def _profile_at(t, T, ta, vp):
    """``(s, ds, dds)`` of the trapezoid at times ``t`` (array)."""
    a = vp / ta
    s = np.empty_like(t)
    ds = np.empty_like(t)
    dds = np.empty_like(t)
    acc = t < ta
    dec = t > T - ta
    cru = ~(acc | dec)
    s[acc] = 0.5 * a * t[acc] ** 2
    ds[acc] = a * t[acc]
    dds[acc] = a
    s[cru] = 0.5 * a * ta ** 2 + vp * (t[cru] - ta)
    ds[cru] = vp
    dds[cru] = 0.0
    r = T - t[dec]
    s[dec] = 1.0 - 0.5 * a * r ** 2
    ds[dec] = a * r
    dds[dec] = -a
    return np.clip(s, 0.0, 1.0), ds, dds


def time_parameterize(waypoints, velocity, acceleration, *, dt: float = 0.02,
                      joint_names: Sequence[str] = ()) -> JointTrajectory:
    """Time-parameterise a piecewise-linear joint path, stopping at every waypoint.

    Args:
        waypoints: ``(K, n)`` configurations (K >= 1).
        velocity: ``(n,)`` joint velocity limits [rad/s].
        acceleration: ``(n,)`` joint acceleration limits [rad/s^2].
        dt: sampling period [s].
        joint_names: column names.

    Returns:
        :class:`JointTrajectory` through every waypoint (exactly at the segment ends).
    """
    W = np.atleast_2d(np.asarray(waypoints, dtype=np.float64))
    v = np.asarray(velocity, dtype=np.float64)
    a = np.asarray(acceleration, dtype=np.float64)
    if W.shape[0] < 1 or W.shape[1] != v.size or a.size != v.size:
        raise ValueError(f"waypoints (K, n) must match velocity/acceleration (n,): {W.shape}, {v.shape}, {a.shape}")
    if np.any(v <= 0) or np.any(a <= 0):
        raise ValueError("velocity and acceleration limits must be > 0")
    if not np.isfinite(W).all():
        raise ValueError("waypoints contain non-finite values")
    if dt <= 0:
        raise ValueError("dt must be > 0")
    times, pos, vel, acc = [np.zeros(1)], [W[:1]], [np.zeros((1, v.size))], [np.zeros((1, v.size))]
    t0 = 0.0
    for qa, qb in zip(W[:-1], W[1:]):
        d = qb - qa
        big = np.abs(d) > 1e-12
        if not big.any():
            continue
        sv = float(np.min(v[big] / np.abs(d[big])))
        sa = float(np.min(a[big] / np.abs(d[big])))
        T, ta, vp = trapezoid_profile(sv, sa)
        n = max(2, int(np.ceil(T / dt)) + 1)
        t = np.linspace(0.0, T, n)[1:]
        s, ds, dds = _profile_at(t, T, ta, vp)
        s[-1], ds[-1], dds[-1] = 1.0, 0.0, 0.0
        times.append(t0 + t)
        pos.append(qa + s[:, None] * d)
        vel.append(ds[:, None] * d)
        acc.append(dds[:, None] * d)
        t0 += T
    return JointTrajectory(tuple(joint_names), np.concatenate(times), np.concatenate(pos),
                           np.concatenate(vel), np.concatenate(acc))


@dataclass(frozen=True)
class MoveResult:
    """A planned move.

    Attributes:
        trajectory: the time-parameterised joint trajectory.
        waypoints: ``(K, n)`` configurations it passes (start, ..., goal).
        direct: the straight joint move is collision-free (``waypoints`` is just start and goal).
        sensor_pose: ``(4, 4)`` optical -> world at the end (forward kinematics).
    """

    trajectory: JointTrajectory
    waypoints: np.ndarray
    direct: bool
    sensor_pose: np.ndarray


class BuiltinExecutor:
    """Plans collision-checked, time-parameterised moves of the cell (no MoveIt needed).

    Args:
        cell: the :class:`~cosarad_ros.core.planning.cell.CellModel`.
        checker: its :class:`~cosarad_ros.core.planning.collision.CollisionChecker` (with the part).
        velocity_scale: share of the joint velocity limits used (0-1].
        acceleration: joint acceleration limit [rad/s^2] (scalar or per joint).
        dt: trajectory sampling period [s].
        check_step_rad: collision-check resolution along a segment [rad].
    """

    def __init__(self, cell, checker=None, *, velocity_scale: float = 0.5, acceleration=2.0, dt: float = 0.02,
                 check_step_rad: float = 0.03):
        if not (0.0 < velocity_scale <= 1.0):
            raise ValueError(f"velocity_scale must be in (0, 1], got {velocity_scale}")
        self.cell = cell
        self.checker = checker if checker is not None else cell.collision_checker()
        self.velocity = cell.velocity_limits * float(velocity_scale)
        acc = np.broadcast_to(np.asarray(acceleration, dtype=np.float64), self.velocity.shape).copy()
        if np.any(acc <= 0):
            raise ValueError("acceleration must be > 0")
        self.acceleration = acc
        self.dt = float(dt)
        self.check_step = float(check_step_rad)

    def plan_move(self, q_start, q_goal, *, waypoints=None) -> MoveResult:
        """Plan ``q_start -> q_goal`` (direct, through home, or RRT-Connect) and time it.

        Args:
            q_start, q_goal: ``(n,)`` configurations.
            waypoints: a joint path already planned for this move (``View.path``), re-checked
                and used when it starts at ``q_start``.

        Raises:
            ValueError: the goal (or start) is in collision.
            PathBlockedError: no collision-free path was found.
        """
        cell = self.cell
        qs, qg = cell.check_q(q_start, name="start"), cell.check_q(q_goal, name="goal")
        wps = None
        if waypoints is not None:
            W = np.asarray(waypoints, dtype=np.float64)
            if (W.ndim == 2 and len(W) >= 2 and np.allclose(W[0], qs, atol=1e-6) and np.allclose(W[-1], qg, atol=1e-6)
                    and all(self.checker.segment_free(a, b, max_step_rad=self.check_step)
                            for a, b in zip(W[:-1], W[1:]))):
                wps = W
        if wps is None:
            wps = plan_joint_path(self.checker, qs, qg, via=(cell.home,), check_step=self.check_step)
        traj = time_parameterize(wps, self.velocity, self.acceleration, dt=self.dt, joint_names=cell.joint_names)
        return MoveResult(traj, wps, len(wps) == 2, cell.fk(qg))
