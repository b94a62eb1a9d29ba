"""Shared plumbing for the cosarad_ros nodes (convention: every node class takes ``**node_kwargs``
forwarded to ``rclpy.node.Node.__init__``, so tests can pass ``context=`` and
``parameter_overrides=``): typed, described, validated parameters; QoS profiles; guarded
callbacks; ``/diagnostics``; core ``warnings`` routed to ``/rosout``; and a ``main`` helper.

Every node class derives from :class:`GuardedCallbacks` (before ``Node`` / ``LifecycleNode``):
each service, subscription and timer callback it creates goes through :func:`guard`, so one
bad request or message can never take a node down. A service whose callback raises answers
``success=False`` with a message naming the service and the error (a fresh response: nothing
half-filled leaks out); a subscription or timer callback that raises logs one error line. The
node counts failures in ``error_count`` / ``last_error`` and answers the next request as usual.

Parameters are declared from a list of :class:`Param` specs::

    PARAMS = (
        Param("voxel_size", 0.002, "Down-sampling voxel edge [m]", check=positive),
        Param("method", "fpfh_ransac", "Global registration method", choices=("fpfh_ransac", "none")),
    )
    self.params = declare_parameters(self, PARAMS)   # -> SimpleNamespace(voxel_size=..., method=...)

Numeric checks made with :func:`in_range` (``positive``, ``non_negative``, ``at_least``,
``unit_interval``) also go into the parameter descriptor as a ``FloatingPointRange`` /
``IntegerRange``, which ``ros2 param describe`` and rqt show and rclpy enforces.

An invalid value at start raises :class:`ParameterError` naming the parameter (``run_node``
turns it into one fatal log line and exit code 2); invalid runtime changes (``ros2 param set``)
are refused with the same message.
"""
from __future__ import annotations

import array
import functools
import math
import os
import sys
import threading
import traceback
import warnings
import weakref
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

__all__ = [
    "Param", "ParameterError", "declare_parameters", "positive", "non_negative", "in_range", "at_least",
    "unit_interval", "Range", "SENSOR_QOS", "SENSOR_PUB_QOS", "LATCHED_QOS", "RELIABLE_QOS", "guard",
    "GuardedCallbacks", "cloud_points", "run_node", "BackgroundExecutor", "NodeDiagnostics", "forward_warnings",
]


class ParameterError(ValueError):
    """A node parameter has an invalid value; the message names the parameter."""


@dataclass(frozen=True)
class Param:
    """Spec of one ROS parameter.

    Attributes:
        name: parameter name (dots allowed for namespacing, e.g. ``icp.max_iterations``).
        default: default value; its Python type sets the parameter type (bool, int, float, str,
            or a list of one of those). Use ``type_`` when the default cannot tell (empty list).
        description: shown by ``ros2 param describe``; include the unit.
        check: predicate on the value; ``check_text`` says what it requires ("must be > 0").
        choices: allowed values, for strings.
        read_only: refuse runtime changes.
        type_: explicit ``rcl_interfaces.msg.ParameterType`` constant.
    """

    name: str
    default: Any
    description: str
    check: Callable[[Any], bool] | None = None
    check_text: str = ""
    choices: tuple | None = None
    read_only: bool = False
    type_: int | None = None

    def validate(self, value) -> None:
        if self.choices is not None and value not in self.choices:
            raise ParameterError(
                f"parameter '{self.name}' = {value!r}: must be one of {', '.join(map(repr, self.choices))}")
        if self.check is not None:
            try:
                ok = bool(self.check(value))
            except Exception as exc:  # a check that cannot even run refuses the value
                ok, self_text = False, f"{self.check_text} ({exc})"
            else:
                self_text = self.check_text
            if not ok:
                raise ParameterError(f"parameter '{self.name}' = {value!r}: {self_text or 'invalid value'}")


class Range:
    """A numeric interval check, ``lo <= v <= hi`` (``lo_open`` / ``hi_open``: strict); ``text``
    says it in words and :meth:`descriptor_range` gives the ``FloatingPointRange`` /
    ``IntegerRange`` of the parameter descriptor (ranges there are closed: an open bound is
    the closed one in the descriptor and the strict test stays in the check).
    """

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
                 hi_open: bool = False):
        if not lo <= hi:
            raise ValueError(f"empty range [{lo}, {hi}]")
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        if math.isinf(hi):
            self.text = f"must be {'>' if lo_open else '>='} {lo:g}"
        elif math.isinf(lo):
            self.text = f"must be {'<' if hi_open else '<='} {hi:g}"
        else:
            self.text = f"must be in {self.interval}"

    @property
    def interval(self) -> str:
        """``[lo, hi]`` / ``(lo, hi]`` / ... with ``inf`` for an unbounded side."""
        left = "(" if self.lo_open or math.isinf(self.lo) else "["
        right = ")" if self.hi_open or math.isinf(self.hi) else "]"
        return f"{left}{self.lo:g}, {self.hi:g}{right}"

    def __call__(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def descriptor_range(self, ptype: int) -> dict:
        """``{"floating_point_range": [...]}`` / ``{"integer_range": [...]}`` for a double /
        integer parameter (empty for other types).
        """
        if ptype == ParameterType.PARAMETER_DOUBLE:
            big = sys.float_info.max
            return {"floating_point_range": [FloatingPointRange(
                from_value=max(float(self.lo), -big), to_value=min(float(self.hi), big), step=0.0)]}
        if ptype == ParameterType.PARAMETER_INTEGER:
            if math.isinf(self.lo):
                lo = -2 ** 63
            else:
                lo = math.floor(self.lo) + 1 if self.lo_open else math.ceil(self.lo)
            if math.isinf(self.hi):
                hi = 2 ** 63 - 1
            else:
                hi = math.ceil(self.hi) - 1 if self.hi_open else math.floor(self.hi)
            return {"integer_range": [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]}
        return {}


def in_range(lo, hi, *, lo_open: bool = False, hi_open: bool = False) -> Range:
    """``lo <= v <= hi`` (strict on an ``_open`` side)."""
    return Range(lo, hi, lo_open=lo_open, hi_open=hi_open)


def at_least(lo) -> Range:
    """``v >= lo``."""
    return Range(lo, math.inf)


positive = Range(0, math.inf, lo_open=True)
non_negative = Range(0, math.inf)
unit_interval = in_range(0.0, 1.0)

_TYPE_OF = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}
_LIST_TYPE_OF = {
    bool: ParameterType.PARAMETER_BOOL_ARRAY,
    int: ParameterType.PARAMETER_INTEGER_ARRAY,
    float: ParameterType.PARAMETER_DOUBLE_ARRAY,
    str: ParameterType.PARAMETER_STRING_ARRAY,
}


def _param_type(p: Param) -> int:
    if p.type_ is not None:
        return p.type_
    d = p.default
    if isinstance(d, (list, tuple)):
        if not d:
            raise ParameterError(f"parameter '{p.name}': empty list default needs type_")
        return _LIST_TYPE_OF[type(d[0])]
    return _TYPE_OF[type(d)]


def declare_parameters(node, params: Sequence[Param]) -> SimpleNamespace:
    """Declare, read and validate parameters; refuse invalid runtime changes.

    Returns:
        namespace whose attributes are the parameter values (dots in names become ``_``),
        kept up to date when parameters are changed at run time.

    Raises:
        ParameterError: a value (from defaults, YAML or the command line) fails its check or
            has the wrong type.
    """
    specs = {p.name: p for p in params}
    values = SimpleNamespace()
    for p in params:
        ptype = _param_type(p)
        text = p.check_text or getattr(p.check, "text", "")
        if p.check_text == "" and text:
            p = Param(p.name, p.default, p.description, p.check, text, p.choices, p.read_only, p.type_)
            specs[p.name] = p
        constraint = text or (f"one of {list(p.choices)}" if p.choices else "")
        ranges = p.check.descriptor_range(ptype) if isinstance(p.check, Range) else {}
        desc = ParameterDescriptor(name=p.name, type=ptype, description=p.description,
                                   read_only=p.read_only, additional_constraints=constraint, **ranges)
        override = getattr(node, "_parameter_overrides", {}).get(p.name)
        if override is not None and override.value is not None:
            p.validate(override.value)   # our message, before rclpy's own range check refuses it
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        if isinstance(default, list) and not default:
            # an empty list says nothing of its element type (rclpy would guess a byte array):
            # declare the type itself, so overrides of that type are accepted
            from rclpy.parameter import Parameter as _RclParameter

            default = _RclParameter.Type(ptype)
        try:
            param = node.declare_parameter(p.name, default, desc)
        except Exception as exc:  # rclpy raises InvalidParameterTypeException etc.
            raise ParameterError(f"parameter '{p.name}': {exc}") from exc
        value = param.value
        if value is None and isinstance(p.default, (list, tuple)):
            value = []
        if isinstance(value, (tuple, array.array)) or type(value).__name__ == "ndarray":
            value = list(value)
        p.validate(value)
        setattr(values, p.name.replace(".", "_"), value)

    def _on_set(changes):
        for change in changes:
            spec = specs.get(change.name)
            if spec is None:
                continue
            try:
                spec.validate(change.value)
            except ParameterError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        for change in changes:
            if change.name in specs:
                setattr(values, change.name.replace(".", "_"), change.value)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_on_set)
    return values


# Subscriptions to sensor data: best effort, keep last 5 (REP 2003: consumers subscribe with the
# sensor-data profile, which matches reliable and best-effort publishers alike).
SENSOR_QOS: QoSProfile = qos_profile_sensor_data
# Publishers of sensor data (drivers): reliable, volatile (REP 2003: the system default), so RViz,
# `ros2 bag record` and reliable subscribers receive as well as best-effort ones.
SENSOR_PUB_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)
# Latest-value topics (results, the cell description): late subscribers get the last message.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Visualisation output that RViz must receive with its default (reliable, volatile) subscription.
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)


def _error_text(exc: BaseException) -> str:
    """A bad-input error speaks for itself; anything else also names its type."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (ValueError, FileNotFoundError)) and not isinstance(exc, UnicodeError):
        return text
    if isinstance(exc, MemoryError):
        return "out of memory (MemoryError): the input is too large"
    return f"{type(exc).__name__}: {text}"


def _record_failure(node, what: str, exc: BaseException) -> str:
    text = f"{what} failed: {_error_text(exc)}"
    node.error_count = getattr(node, "error_count", 0) + 1
    node.last_error = text
    try:
        node.get_logger().error(text)
        if not isinstance(exc, ValueError):
            node.get_logger().debug(traceback.format_exc())
    except Exception:  # noqa: BLE001 - the node is being destroyed: nothing left to log to
        pass
    return text


def guard(node, what: str, callback: Callable, response_type=None) -> Callable:
    """Wrap a callback of ``node`` so that no exception escapes into the executor.

    Args:
        node: the node (its ``error_count`` / ``last_error`` record failures).
        what: what the callback serves (``"service /anomaly_node/detect"``), used in messages.
        callback: the callback.
        response_type: for a service callback, the response class: on an exception (or a
            callback that returns no response of this type) a fresh response is returned with
            ``success=False`` and ``message`` set, where the service type has them. ``None``
            for a subscription or timer: the exception is logged and swallowed.

    Returns:
        the wrapped callback.
    """
    if response_type is None:
        @functools.wraps(callback)
        def on_message(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - report every failure and keep running
                _record_failure(node, what, exc)
                return None
        return on_message

    @functools.wraps(callback)
    def on_request(request, response):
        try:
            out = callback(request, response)
            if not isinstance(out, response_type):
                raise TypeError(f"the callback returned {type(out).__name__}, not a {response_type.__name__}")
            return out
        except Exception as exc:  # noqa: BLE001 - a service always answers; the node keeps running
            text = _record_failure(node, what, exc)
            fresh = response_type()
            if hasattr(fresh, "success"):
                fresh.success = False
            if hasattr(fresh, "message"):
                fresh.message = text
            return fresh
    return on_request


class GuardedCallbacks:
    """Mixin for node classes (``class MyNode(GuardedCallbacks, Node)``): every service,
    subscription and timer callback the node creates goes through :func:`guard`.
    """

    def _resolved(self, name: str) -> str:
        return f"{self.get_fully_qualified_name().rstrip('/')}/{name[2:]}" if name.startswith("~/") else name

    def create_service(self, srv_type, srv_name, callback, **kwargs):
        return super().create_service(srv_type, srv_name, guard(self, self._resolved(srv_name), callback,
                                                                srv_type.Response), **kwargs)

    def create_subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        return super().create_subscription(msg_type, topic, guard(self, f"topic {self._resolved(topic)}", callback),
                                           qos_profile, **kwargs)

    def create_timer(self, timer_period_sec, callback, *args, **kwargs):
        name = getattr(callback, "__name__", "timer")
        return super().create_timer(timer_period_sec, guard(self, f"timer {name}", callback), *args, **kwargs)


def cloud_points(msg, *, name: str = "cloud", min_points: int = 1, max_points: int | None = None,
                 seed: int = 0):
    """The points of a ``sensor_msgs/PointCloud2`` as checked input for a node's core object.

    Non-finite points are dropped; the rest must number at least ``min_points`` and be a
    plausible size in metres (REP 103; :func:`cosarad_ros.core.geometry.check_metres` says so
    when the cloud looks like millimetres); a cloud of more than ``max_points`` points is cut to
    a seeded random subset of that many up front, before any work is done on it.

    Returns:
        ``(N, 3)`` float64 points, ``N <= max_points``.

    Raises:
        ValueError: a malformed message, too few points, or not metres; the message names ``name``.
    """
    import numpy as np

    from cosarad_ros.core.geometry import as_points, cap_points, check_metres
    from cosarad_ros.ros.conversions import pointcloud2_to_xyz

    try:
        raw = pointcloud2_to_xyz(msg, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    n = len(raw)
    if n < min_points:
        raise ValueError(f"{name} has {n} finite points; need at least {min_points}")
    if max_points is not None:
        raw = cap_points(raw, int(max_points), seed=seed)
    pts = as_points(raw, name=name, min_points=min_points).astype(np.float64, copy=False)
    return check_metres(pts, name=name)


class NodeDiagnostics:
    """Publish a node's health on ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, one
    ``DiagnosticStatus`` named ``<node>: <what>``) every ``period`` seconds, as
    ``diagnostic_updater`` does for C++ nodes.

    Args:
        node: the node.
        status: ``() -> (level, message, values)`` or ``() -> DiagnosticStatus``; default: OK
            while the node has counted no failure (``node.error_count`` / ``node.last_error``, as
            :func:`guard` keeps them), WARN with the last error after one.
        what: second half of the status name (default: the node's name).
        period: seconds between messages.
    """

    def __init__(self, node, status: Callable[[], tuple] | None = None, *, what: str = "",
                 period: float = 1.0, callback_group=None):
        from diagnostic_msgs.msg import DiagnosticArray

        self.node = node
        self.status_fn = status or self.default_status
        self.name = f"{node.get_name()}: {what or 'node'}"
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = node.create_timer(period, self.publish, callback_group=callback_group)

    def default_status(self) -> tuple:
        from diagnostic_msgs.msg import DiagnosticStatus

        errors = int(getattr(self.node, "error_count", 0))
        last = str(getattr(self.node, "last_error", "") or "")
        if errors:
            return DiagnosticStatus.WARN, f"{errors} failure(s); last: {last}", {"errors": errors, "last_error": last}
        return DiagnosticStatus.OK, "running", {"errors": 0}

    def status(self):
        """The current ``DiagnosticStatus``."""
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        result = self.status_fn()
        if isinstance(result, DiagnosticStatus):   # a status function that builds the message itself
            return result
        level, message, values = result
        st = DiagnosticStatus(level=level, name=self.name, message=str(message),
                              hardware_id=self.node.get_fully_qualified_name())
        st.values = [KeyValue(key=str(k), value=str(v)) for k, v in (values or {}).items()]
        return st

    def publish(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        msg = DiagnosticArray()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        try:
            msg.status = [self.status()]
        except Exception as exc:  # noqa: BLE001 - a broken status function is itself a diagnosis
            from diagnostic_msgs.msg import DiagnosticStatus

            msg.status = [DiagnosticStatus(level=DiagnosticStatus.ERROR, name=self.name,
                                           message=f"status unavailable: {type(exc).__name__}: {exc}")]
        self.pub.publish(msg)


_warning_nodes: list = []           # weak references to the nodes that log Python warnings
_warning_lock = threading.Lock()
_previous_showwarning: list = []    # what warnings.showwarning was before the first registration


def _showwarning(message, category, filename, lineno, file=None, line=None):
    with _warning_lock:
        nodes = [n for n in (r() for r in _warning_nodes) if n is not None]
    if not nodes:
        return warnings._showwarning_orig(message, category, filename, lineno, file, line)
    nodes[0].get_logger().warning(f"{category.__name__}: {message} ({os.path.basename(filename)}:{lineno})")


def forward_warnings(node) -> Callable[[], None]:
    """Log Python ``warnings`` (how the core library reports recoverable trouble, e.g. a template
    that did not register) through ``node``'s logger, so that they reach ``/rosout`` and
    ``ros2 launch``'s output instead of only the process's stderr. In a process with several
    nodes, the first registered node that is still alive logs them.

    Returns:
        a function that undoes the registration (the last one restores Python's handler).
    """
    ref = weakref.ref(node)
    with _warning_lock:
        if not _warning_nodes:
            _previous_showwarning[:] = [warnings.showwarning]
            warnings.showwarning = _showwarning
        _warning_nodes.append(ref)

    def undo():
        with _warning_lock:
            if ref in _warning_nodes:
                _warning_nodes.remove(ref)
                if not _warning_nodes and _previous_showwarning:
                    warnings.showwarning = _previous_showwarning.pop()
    return undo


def run_node(factory: Callable[[], Any], args: Sequence[str] | None = None, *,
             threads: int | None = None) -> int:
    """``main()`` of a node executable: init, build the node, spin until Ctrl-C, clean up.

    Returns:
        exit code: 0 on a normal shutdown, 2 when the node refused its parameters.
    """
    rclpy.init(args=list(sys.argv if args is None else args))
    node = None
    try:
        try:
            node = factory()
        except ParameterError as exc:
            print(f"[FATAL] {exc}", file=sys.stderr)
            return 2
        undo = forward_warnings(node)
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            undo()
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


class BackgroundExecutor:
    """Nodes on a multi-threaded executor of their own rclpy context, spinning in a background
    thread (the simulated cell, notebooks, tests). ``close()`` destroys the nodes and the context.

    Args:
        threads: executor threads.
    """

    def __init__(self, threads: int = 4):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=threads, context=self.context)
        self.nodes: list = []
        self._undo_warnings: list = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the executor is being shut down under us
                if not self.context.ok():
                    return
                raise

    def node_kwargs(self, **params) -> dict:
        """Keyword arguments for a node constructor: this context plus parameter overrides."""
        from rclpy.parameter import Parameter

        return {"context": self.context,
                "parameter_overrides": [Parameter(k, value=v) for k, v in params.items()]}

    def add(self, node):
        """Spin ``node`` (built with this context) and log Python warnings through it; returns it."""
        self.nodes.append(node)
        self._undo_warnings.append(forward_warnings(node))
        self.executor.add_node(node)
        return node

    def close(self, timeout: float = 2.0):
        for undo in self._undo_warnings:
            undo()
        for n in self.nodes:
            try:
                self.executor.remove_node(n)
                n.destroy_node()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self.executor.shutdown(timeout_sec=timeout)
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(timeout=timeout + 1.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
