"""Helpers to run real rclpy nodes in tests (real DDS, no mocks).

Node classes in :mod:`cosarad_ros.ros` accept ``**node_kwargs`` forwarded to
``rclpy.node.Node.__init__`` (``context=``, ``parameter_overrides=``), so a test builds them
inside its own context::

    with RosHarness() as ros:
        node = ros.add(RegistrationNode(**ros.node_kwargs(voxel_size=0.002)))
        resp = ros.call(RegisterCloud, "/registration_node/register", req)
        msg = ros.wait_for_message(InspectionResult, "/inspection/result", LATCHED_QOS)
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from rclpy.node import Node

from cosarad_ros.ros.node_utils import BackgroundExecutor


class RosHarness(BackgroundExecutor):
    """An rclpy context with a multi-threaded executor spinning in a background thread, plus a
    client node and helpers to call services and wait for messages.
    """

    def __init__(self, threads: int = 4):
        super().__init__(threads=threads)
        self.client = self.add(Node("test_client", context=self.context))

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        """Call a service and return its response (raises TimeoutError)."""
        cli = self.client.create_client(srv_type, name)
        try:
            if not cli.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available after {timeout} s")
            fut = cli.call_async(request)
            end = time.monotonic() + timeout
            while not fut.done():
                if time.monotonic() > end:
                    raise TimeoutError(f"service {name} did not answer in {timeout} s")
                time.sleep(0.01)
            return fut.result()
        finally:
            self.client.destroy_client(cli)

    def action_client(self, action_type, name: str, timeout: float = 60.0):
        """An action client on ``name`` once the server's services and topics are all discovered
        (raises TimeoutError). Discovery of an action server's five endpoints can take several
        seconds on a loaded machine, so the bound is generous.
        """
        from rclpy.action import ActionClient

        client = ActionClient(self.client, action_type, name)
        if not client.wait_for_server(timeout_sec=timeout):
            raise TimeoutError(f"action server {name} not available after {timeout} s")
        return client

    def wait_for_message(self, msg_type, topic: str, qos=10, timeout: float = 20.0,
                         predicate: Callable[[Any], bool] | None = None, trigger: Callable[[], Any] | None = None):
        """Subscribe, optionally run ``trigger()``, and return the first message (matching
        ``predicate``). Raises TimeoutError.
        """
        got: list = []
        ev = threading.Event()

        def cb(msg):
            if predicate is None or predicate(msg):
                got.append(msg)
                ev.set()

        sub = self.client.create_subscription(msg_type, topic, cb, qos)
        try:
            if trigger is not None:
                trigger()
            if not ev.wait(timeout):
                raise TimeoutError(f"no message on {topic} within {timeout} s")
            return got[0]
        finally:
            self.client.destroy_subscription(sub)

    def collect(self, msg_type, topic: str, qos=10):
        """Start collecting messages of a topic into the returned list."""
        out: list = []
        self.client.create_subscription(msg_type, topic, out.append, qos)
        return out

    @staticmethod
    def wait_future(future, timeout: float = 30.0, what: str = "future"):
        """The result of an rclpy future (action goal, result, cancel) that the executor completes."""
        end = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > end:
                raise TimeoutError(f"{what} not done within {timeout} s")
            time.sleep(0.01)
        return future.result()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.02)
        raise TimeoutError(f"{what} not met within {timeout} s")
