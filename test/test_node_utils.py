"""Node plumbing over real DDS: numeric constraints reach the parameter descriptors as
FloatingPointRange / IntegerRange (what `ros2 param describe` and rqt show, and what rclpy
enforces), core `warnings` reach /rosout, and /diagnostics statuses.
"""
import time
import warnings

import pytest

pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Log, Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, SetParameters  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from cosarad_ros.ros.node_utils import (  # noqa: E402
    NodeDiagnostics,
    Param,
    ParameterError,
    at_least,
    declare_parameters,
    in_range,
    non_negative,
    positive,
    unit_interval,
)
from ros_utils import RosHarness  # noqa: E402

PARAMS = (
    Param("voxel", 0.002, "Voxel edge [m]", check=positive),
    Param("share", 0.5, "A share", check=unit_interval),
    Param("coverage", 0.9, "Coverage", check=in_range(0.0, 1.0, lo_open=True)),
    Param("retries", 1, "Retries", check=non_negative),
    Param("fail_after", -1, "Fault injection", check=at_least(-1)),
    Param("levels", 4, "Levels", check=in_range(1, 8)),
    Param("name", "x", "A string", choices=("x", "y")),
)


class _Node(Node):
    def __init__(self, **kw):
        super().__init__("param_node", **kw)
        self.p = declare_parameters(self, PARAMS)


def test_range_checks():
    assert positive(1e-9) and not positive(0.0) and not positive(-1)
    assert non_negative(0) and not non_negative(-1e-12)
    assert in_range(0.0, 1.0, lo_open=True)(1.0) and not in_range(0.0, 1.0, lo_open=True)(0.0)
    assert not positive(True) and not positive("1")                # not numbers
    assert positive.text == "must be > 0" and in_range(0.0, 1.0, lo_open=True).text == "must be in (0, 1]"
    assert at_least(-1).text == "must be >= -1"


def test_descriptors_carry_numeric_ranges_over_dds():
    with RosHarness() as ros:
        node = ros.add(_Node(**ros.node_kwargs()))
        names = [p.name for p in PARAMS]
        desc = {d.name: d for d in ros.call(DescribeParameters, "/param_node/describe_parameters",
                                            DescribeParameters.Request(names=names)).descriptors}
        fr = desc["voxel"].floating_point_range[0]
        assert fr.from_value == 0.0 and fr.to_value > 1e300 and desc["voxel"].additional_constraints == "must be > 0"
        fr = desc["share"].floating_point_range[0]
        assert (fr.from_value, fr.to_value, fr.step) == (0.0, 1.0, 0.0)
        ir = desc["retries"].integer_range[0]
        assert (ir.from_value, ir.to_value, ir.step) == (0, 2 ** 63 - 1, 1)
        assert (desc["fail_after"].integer_range[0].from_value, desc["levels"].integer_range[0].to_value) == (-1, 8)
        assert not desc["name"].floating_point_range and not desc["name"].integer_range

        def set_(name, value):
            v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value) if isinstance(value, float) \
                else ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
            return ros.call(SetParameters, "/param_node/set_parameters",
                            SetParameters.Request(parameters=[Parameter(name=name, value=v)])).results[0]

        assert set_("share", 0.25).successful and node.p.share == 0.25
        r = set_("share", 1.5)                       # outside the descriptor's range: refused
        assert not r.successful and node.p.share == 0.25
        r = set_("coverage", 0.0)                    # inside the closed range, refused by the strict bound
        assert not r.successful and "coverage" in r.reason and "(0, 1]" in r.reason
        assert not set_("levels", 9).successful and set_("levels", 8).successful


def test_out_of_range_start_value_is_refused_naming_the_parameter():
    with RosHarness() as ros:
        with pytest.raises(ParameterError, match=r"parameter 'voxel' = -1.0: must be > 0"):
            _Node(**ros.node_kwargs(voxel=-1.0))
        with pytest.raises(ParameterError, match=r"'levels' = 0: must be in \[1, 8\]"):
            _Node(**ros.node_kwargs(levels=0))


def test_core_warnings_reach_rosout():
    rosout_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
    with RosHarness() as ros:
        ros.add(_Node(**ros.node_kwargs()))            # BackgroundExecutor.add forwards warnings
        logs = ros.collect(Log, "/rosout", rosout_qos)
        time.sleep(0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            from cosarad_ros.core.anomaly import detector  # a core module that reports by warnings

            warnings.warn_explicit("template 3 of 'flange' did not register", UserWarning,
                                   detector.__file__, 367, module=detector.__name__)
        ros.wait_until(lambda: any("did not register" in m.msg for m in logs), timeout=10, what="warning on /rosout")
        m = next(m for m in logs if "did not register" in m.msg)
        assert m.level == Log.WARN and m.name == "test_client"    # the harness's first node logs them
        assert "UserWarning" in m.msg and "detector.py:367" in m.msg
        before = warnings.showwarning
    # with the nodes gone, Python's own handler is back
    assert warnings.showwarning is not before and warnings.showwarning.__module__ != "cosarad_ros.ros.node_utils"


def test_diagnostics_default_status_follows_failures():
    with RosHarness() as ros:
        node = ros.add(_Node(**ros.node_kwargs()))
        diag = NodeDiagnostics(node, period=0.2)
        ok = ros.wait_for_message(DiagnosticArray, "/diagnostics", timeout=10,
                                  predicate=lambda m: m.status and m.status[0].name == "param_node: node")
        assert ok.status[0].level == DiagnosticStatus.OK and ok.status[0].hardware_id == "/param_node"
        node.error_count, node.last_error = 2, "register: fitness 0.1"
        warn = ros.wait_for_message(DiagnosticArray, "/diagnostics", timeout=10,
                                    predicate=lambda m: m.status and m.status[0].level == DiagnosticStatus.WARN)
        assert "fitness 0.1" in warn.status[0].message
        assert {kv.key: kv.value for kv in warn.status[0].values}["errors"] == "2"
        diag.status_fn = lambda: 1 / 0                   # a broken status function is reported, not raised
        err = ros.wait_for_message(DiagnosticArray, "/diagnostics", timeout=10,
                                   predicate=lambda m: m.status and m.status[0].level == DiagnosticStatus.ERROR)
        assert "ZeroDivisionError" in err.status[0].message


def test_parameter_docs_are_current_and_show_ranges():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "scripts" / "param_table.py"), "--check"], timeout=120)
    assert r.returncode == 0, "docs/parameters.md is stale: run python scripts/param_table.py"
    text = (root / "docs" / "parameters.md").read_text()
    assert "| `target_coverage` | `0.95` | `(0, 1]` |" in text
    assert "| `rate` | `2.0` | `(0, inf)` |" in text
    assert "| `sim.fail_after` | `-1` | `[-1, inf)` |" in text
