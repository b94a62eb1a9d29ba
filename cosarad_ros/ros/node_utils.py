"""Shared plumbing for the cosarad_ros nodes (convention: every node class takes ``**node_kwargs``
forwarded to ``rclpy.node.Node.__init__``, so tests can pass ``context=`` and ``parameter_overrides=``): typed, described, validated parameters; QoS
profiles; guarded callbacks; and a ``main`` helper.

Parameters are declared from a list of :class:`Param` specs::

    PARAMS = (
        Param("voxel_size", 0.002, "Down-sampling voxel edge [m]", check=positive),
        Param("method", "fpfh_ransac", "Global registration method", choices=("fpfh_ransac", "none")),
    )
    self.params = declare_parameters(self, PARAMS)   # -> SimpleNamespace(voxel_size=..., method=...)

An invalid value at start raises :class:`ParameterError` naming the parameter (``run_node``
turns it into one fatal log line and exit code 2); invalid runtime changes (``ros2 param set``)
are refused with the same message.
"""
from __future__ import annotations

import array
import functools
import sys
import traceback
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import rclpy
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

__all__ = [
    "Param", "ParameterError", "declare_parameters", "positive", "non_negative", "in_range",
    "unit_interval", "SENSOR_QOS", "LATCHED_QOS", "RELIABLE_QOS", "guarded", "run_node", "BackgroundExecutor",
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


def positive(v) -> bool:
    return v > 0


positive.text = "must be > 0"  # type: ignore[attr-defined]


def non_negative(v) -> bool:
    return v >= 0


non_negative.text = "must be >= 0"  # type: ignore[attr-defined]


def in_range(lo, hi) -> Callable[[Any], bool]:
    def _check(v):
        return lo <= v <= hi
    _check.text = f"must be in [{lo}, {hi}]"  # type: ignore[attr-defined]
    return _check


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
        desc = ParameterDescriptor(name=p.name, type=ptype, description=p.description,
                                   read_only=p.read_only, additional_constraints=constraint)
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


# Point clouds from sensors: best effort, keep last 5 (REP 2003 / rclpy's sensor-data profile).
SENSOR_QOS: QoSProfile = qos_profile_sensor_data
# Latest-value topics (results, the cell description): late subscribers get the last message.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Visualisation output that RViz must receive with its default (reliable, volatile) subscription.
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)


def guarded(what: str):
    """Decorate a node method used as a subscription/timer callback so that an exception (a
    malformed message, say) is logged as one error line and counted in ``self.error_count``
    instead of killing the executor. Service callbacks should instead return
    ``success=False`` with the message."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - we report every failure and keep running
                self.error_count = getattr(self, "error_count", 0) + 1
                self.last_error = f"{what}: {exc}"
                self.get_logger().error(f"{what} failed: {exc}")
                if not isinstance(exc, ValueError):
                    self.get_logger().debug(traceback.format_exc())
                return None
        return wrapper
    return deco


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
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
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
        import threading

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=threads, context=self.context)
        self.nodes: list = []
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
        """Spin ``node`` (built with this context); returns it."""
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def close(self, timeout: float = 2.0):
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
