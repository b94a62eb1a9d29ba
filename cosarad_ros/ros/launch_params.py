"""What the launch files compute, as plain functions (no import of ``launch``, so the same code is
tested where ROS 2's launch is not installed): the parameters a node starts with, paths with
``~`` expanded, and the cell description robot_state_publisher gets from the very parameters the
view planner builds its own cell model from.

The launch files in ``launch/`` call these from their ``OpaqueFunction`` s with the performed
launch arguments (strings).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import yaml

__all__ = ["as_bool", "expand_path", "node_parameters", "launch_parameters", "planner_launch", "TRUE_WORDS"]

TRUE_WORDS = ("1", "true", "yes", "on")


def as_bool(text) -> bool:
    """A launch argument (``true`` / ``false`` / ``1`` / ...) as a bool."""
    return str(text).strip().lower() in TRUE_WORDS


def expand_path(text: str) -> str:
    """``~`` and ``$VARS`` expanded (launch substitutions are plain strings: nothing else expands
    them before a node gets them); empty stays empty.
    """
    return os.path.expanduser(os.path.expandvars(text)) if text else text


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def node_parameters(node: str, params_file: str | None = None, overrides: dict | None = None) -> dict:
    """The parameters ``node`` (a module of :mod:`cosarad_ros.ros`) starts with, as ROS would give
    them: its declared defaults, then the ``<node>`` / ``/**`` section of ``params_file``, then
    ``overrides``; each validated by the node's own check.

    Raises:
        ValueError: unknown parameter, or a value the node refuses (names it).
        FileNotFoundError: ``params_file`` does not exist.
    """
    specs = {p.name: p for p in importlib.import_module(f"cosarad_ros.ros.{node}").PARAMS}
    values = {name: (list(p.default) if isinstance(p.default, tuple) else p.default) for name, p in specs.items()}
    if params_file:
        doc = yaml.safe_load(Path(params_file).read_text()) or {}
        for section in ("/**", node, f"/{node}"):
            body = (doc.get(section) or {}).get("ros__parameters") or {}
            values.update(_flatten(body))
    values.update(overrides or {})
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ValueError(f"{node} has no parameter(s) {', '.join(unknown)}")
    for name, value in values.items():
        specs[name].validate(value)
    return values


def launch_parameters(node: str, params_file: str | None = None, overrides: dict | None = None, *,
                      use_sim_time="false") -> dict:
    """The ``parameters=[...]`` dict a launch file hands a node: :func:`node_parameters` (so a
    bad value stops the launch with the parameter's name, and the YAML section applies whatever
    ``node_name`` the node is launched with) plus ``use_sim_time``. Empty lists are left out: a
    parameters file cannot type them, the node's declaration does.
    """
    params = node_parameters(node, params_file, overrides)
    out = {k: v for k, v in params.items() if not (isinstance(v, list) and not v)}
    out["use_sim_time"] = as_bool(use_sim_time)
    return out


def planner_launch(args: dict) -> tuple[str, dict]:
    """``viewpoint_planner.launch.py``: the URDF robot_state_publisher publishes and the parameter
    overrides of ``viewpoint_planner_node``, from the launch arguments (strings): ``params_file``,
    ``use_moveit``, ``executor``, ``controller_name``, ``sensor_type``, ``turntable``,
    ``arm_source``, ``cad_library``.

    The xacro arguments come from the planner's full parameter set (defaults, params file,
    overrides) through :func:`~cosarad_ros.ros.viewpoint_planner_node.cell_config`, the function
    the node builds its own cell model with: ``ur_type``, fixture, part and mount poses included.
    """
    from cosarad_ros.core.planning.cell import CELL_XACRO, CellConfig, process_xacro, urdf_dir
    from cosarad_ros.ros.viewpoint_planner_node import cell_config

    executor = args.get("executor") or ("moveit" if as_bool(args.get("use_moveit", "false")) else "builtin")
    overrides: dict = {"executor": executor}
    for name in ("sensor_type", "arm_source", "controller_name"):
        if args.get(name):
            overrides[name] = args[name]
    if args.get("turntable"):
        overrides["turntable"] = as_bool(args["turntable"])
    if args.get("cad_library"):
        overrides["cad_library"] = expand_path(args["cad_library"])
    params = node_parameters("viewpoint_planner_node", args.get("params_file"), overrides)
    cfg = CellConfig.from_dict(cell_config(params))
    urdf = process_xacro(urdf_dir() / CELL_XACRO, cfg.xacro_mappings())
    return urdf, overrides
