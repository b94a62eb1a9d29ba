"""Joint trajectories for a real arm: the ``trajectory_msgs/JointTrajectory`` of a planned move and
a client of the ``control_msgs/action/FollowJointTrajectory`` action that ros2_control joint
trajectory controllers serve (``<controller>/follow_joint_trajectory``; the Universal Robots
driver's default controller is ``scaled_joint_trajectory_controller``).

``control_msgs`` is imported only when a :class:`FollowJointTrajectoryClient` is built: it comes
with a ROS 2 install (``ros-<distro>-control-msgs``), not with the PyPI wheels.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from builtin_interfaces.msg import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cosarad_ros.ros import conversions as cv

__all__ = ["UR_CONTROLLER", "duration_msg", "trajectory_msg", "FollowJointTrajectoryClient", "TrajectoryExecutionError"]

#: the Universal Robots ROS 2 driver's default joint trajectory controller
UR_CONTROLLER = "scaled_joint_trajectory_controller"


class TrajectoryExecutionError(RuntimeError):
    """The controller refused, aborted or did not finish a trajectory (the message says why)."""


def duration_msg(seconds: float) -> Duration:
    """``builtin_interfaces/Duration`` of ``seconds`` (negative: 0)."""
    t = cv.seconds_to_stamp(max(0.0, float(seconds)))
    return Duration(sec=t.sec, nanosec=t.nanosec)


def trajectory_msg(traj, joint_names=None, *, frame_id: str = "", stamp=None) -> JointTrajectory:
    """A core :class:`~cosarad_ros.core.planning.executor.JointTrajectory` as a message, keeping
    the columns of ``joint_names`` (default: all) in that order.

    Raises:
        ValueError: a name in ``joint_names`` is not a column of ``traj``.
    """
    names = list(traj.joint_names) if joint_names is None else list(joint_names)
    missing = [n for n in names if n not in traj.joint_names]
    if missing:
        raise ValueError(f"joint(s) {', '.join(missing)} not in the trajectory ({', '.join(traj.joint_names)})")
    cols = [list(traj.joint_names).index(n) for n in names]
    msg = JointTrajectory(joint_names=names)
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    msg.points = [JointTrajectoryPoint(positions=[float(x) for x in traj.positions[i, cols]],
                                       velocities=[float(x) for x in traj.velocities[i, cols]],
                                       accelerations=[float(x) for x in traj.accelerations[i, cols]],
                                       time_from_start=duration_msg(traj.times[i]))
                  for i in range(len(traj.times))]
    return msg


class FollowJointTrajectoryClient:
    """Send trajectories to ``<controller>/follow_joint_trajectory`` and wait for the result.

    Args:
        node: the rclpy node that owns the action client.
        controller: controller name (namespace of its action), e.g. :data:`UR_CONTROLLER`.
        callback_group: callback group of the action client.

    Raises:
        RuntimeError: ``control_msgs`` is not installed.
    """

    def __init__(self, node, controller: str = UR_CONTROLLER, *, callback_group=None):
        try:
            from control_msgs.action import FollowJointTrajectory
        except ImportError as exc:
            raise RuntimeError("the follow_joint_trajectory executor needs control_msgs "
                               f"(ros-<distro>-control-msgs), which is not installed: {exc}") from None
        from rclpy.action import ActionClient

        self.action_type = FollowJointTrajectory
        self.name = f"{controller}/follow_joint_trajectory"
        self.client = ActionClient(node, FollowJointTrajectory, self.name, callback_group=callback_group)

    def execute(self, trajectory: JointTrajectory, *, server_timeout: float = 5.0, margin: float = 5.0,
                feedback=None, cancel: threading.Event | None = None) -> np.ndarray | None:
        """Execute ``trajectory``; returns the controller's last reported actual positions
        (``None`` when it reported none).

        Args:
            server_timeout: seconds to wait for the controller's action server.
            margin: seconds allowed beyond the trajectory's duration.
            feedback: ``callback(fraction, positions)`` on each controller feedback.
            cancel: set it to cancel the goal (the controller stops the arm).

        Raises:
            TrajectoryExecutionError: no server, goal refused, aborted, cancelled or late.
        """
        if not self.client.wait_for_server(timeout_sec=server_timeout):
            raise TrajectoryExecutionError(f"no trajectory controller answers on {self.name} "
                                           f"within {server_timeout:g} s")
        duration = cv.stamp_to_seconds(trajectory.points[-1].time_from_start) if trajectory.points else 0.0
        last: list = [None]
        t0 = time.monotonic()

        def on_feedback(fb):
            actual = np.asarray(fb.feedback.actual.positions, dtype=np.float64)
            last[0] = actual
            if feedback is not None:
                feedback(min(1.0, (time.monotonic() - t0) / duration) if duration > 0 else 1.0, actual)

        goal = self.action_type.Goal(trajectory=trajectory)
        handle = _wait(self.client.send_goal_async(goal, feedback_callback=on_feedback), server_timeout,
                       f"goal acceptance by {self.name}")
        if not handle.accepted:
            raise TrajectoryExecutionError(f"{self.name} refused the trajectory")
        result_future = handle.get_result_async()
        end = time.monotonic() + duration + margin
        while not result_future.done():
            if cancel is not None and cancel.is_set():
                _wait(handle.cancel_goal_async(), server_timeout, "cancel")
                raise TrajectoryExecutionError(f"cancelled; the controller {self.name} stopped the arm")
            if time.monotonic() > end:
                handle.cancel_goal_async()
                raise TrajectoryExecutionError(f"{self.name} did not finish within {duration + margin:.1f} s")
            time.sleep(0.01)
        res = result_future.result().result
        if res.error_code != 0:   # FollowJointTrajectory.Result.SUCCESSFUL
            raise TrajectoryExecutionError(f"{self.name} failed (error code {res.error_code}): {res.error_string}")
        return last[0]


def _wait(future, timeout: float, what: str):
    end = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > end:
            raise TrajectoryExecutionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.01)
    return future.result()
