"""The inspection cell: URDF (from ``urdf/cosarad_cell.urdf.xacro``), arm kinematics and
collision checking with pinocchio + coal.

``CellModel.default()`` processes the cell xacro with the UR arm of the ``example-robot-data``
PyPI package (or ``ur_description`` on a ROS install, ``arm_source="ur_description"``), builds
the pinocchio kinematic model and the collision model of every link, and knows where the part
sits (frame ``part``). :meth:`CellModel.collision_checker` adds a part mesh to the collision
world. Collision pairs follow the usual MoveIt Setup Assistant rules: links joined by a joint
("adjacent") and pairs already touching in the home configuration ("default") are not checked;
every other arm link is checked against the other arm links, the cell furniture and the part.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from .collision import CollisionChecker

__all__ = [
    "CellConfig",
    "CellModel",
    "urdf_dir",
    "example_robot_data_share",
    "package_dirs",
    "process_xacro",
    "CELL_XACRO",
]

CELL_XACRO = "cosarad_cell.urdf.xacro"
URDF_DIR_ENV = "COSARAD_URDF_DIR"


# ----------------------------------------------------------------------------------------------
# locating files
# ----------------------------------------------------------------------------------------------

def urdf_dir() -> Path:
    """Folder with the cell xacro and ``sensors.yaml``.

    Looked up in order: ``$COSARAD_URDF_DIR``; ``urdf/`` of the source checkout this module
    belongs to; ``share/cosarad_ros/urdf`` of a colcon install (ament index).

    Raises:
        FileNotFoundError: none of these holds ``cosarad_cell.urdf.xacro``.
    """
    tried = []
    env = os.environ.get(URDF_DIR_ENV)
    if env:
        tried.append(Path(env))
    tried.append(Path(__file__).resolve().parents[3] / "urdf")
    try:
        from ament_index_python.packages import get_package_share_directory

        tried.append(Path(get_package_share_directory("cosarad_ros")) / "urdf")
    except Exception:  # noqa: BLE001 - ament index absent or package not installed
        pass
    for d in tried:
        if (d / CELL_XACRO).is_file():
            return d
    raise FileNotFoundError(
        f"cannot find {CELL_XACRO}; looked in {', '.join(map(str, tried))} (set ${URDF_DIR_ENV})")


def example_robot_data_share() -> Path | None:
    """``share`` folder of the ``example-robot-data`` PyPI package (its ``package://`` root), or
    None when it is not installed.
    """
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            share = Path(distribution("example-robot-data").locate_file("cmeel.prefix/share"))
        except PackageNotFoundError:
            return None
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    return share if (share / "example-robot-data").is_dir() else None


def package_dirs() -> list[str]:
    """Folders holding ROS packages, for resolving ``package://`` mesh URIs: the
    example-robot-data share folder and ``<prefix>/share`` of every ``$AMENT_PREFIX_PATH`` entry.
    """
    out = []
    erd = example_robot_data_share()
    if erd is not None:
        out.append(str(erd))
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and os.path.isdir(os.path.join(prefix, "share")):
            out.append(os.path.join(prefix, "share"))
    return out


def resolve_package_uri(uri: str, dirs: Sequence[str] | None = None) -> str:
    """``package://pkg/rel/path`` -> absolute file path (first match in ``dirs``); other
    strings (``file://`` stripped) are returned as they are.
    """
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if not uri.startswith("package://"):
        return uri
    rel = uri[len("package://"):]
    for d in (package_dirs() if dirs is None else dirs):
        cand = os.path.join(d, rel)
        if os.path.exists(cand):
            return cand
    raise FileNotFoundError(f"cannot resolve {uri} (searched {', '.join(dirs or package_dirs())})")


def process_xacro(path, mappings: dict | None = None) -> str:
    """Run xacro on ``path`` with ``name:=value`` ``mappings``; returns the URDF text.

    Raises:
        FileNotFoundError: missing file.
        ValueError: xacro failed (the message is xacro's).
    """
    import xacro

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"xacro file not found: {path}")
    maps = {str(k): _xacro_value(v) for k, v in (mappings or {}).items()}
    try:
        doc = xacro.process_file(str(path), mappings=maps)
    except Exception as exc:  # xacro raises XacroException, SubstitutionException, ...
        raise ValueError(f"xacro failed on {path.name}: {exc}") from exc
    return doc.toprettyxml(indent="  ")


def _xacro_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple, np.ndarray)):
        return " ".join(repr(float(x)) for x in v)
    return str(v)


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CellConfig:
    """Arguments of ``urdf/cosarad_cell.urdf.xacro`` (one field per xacro argument).

    Lengths in metres, angles in radians; ``world`` is the table top under the robot base.
    """

    arm_source: str = "example_robot_data"     # or "ur_description" (ROS install)
    ur_type: str = "ur10"                       # example-robot-data: ur3, ur5, ur10
    arm_urdf: str = ""                          # example_robot_data: path of the arm URDF
    sensor_type: str = "motioncam3d_s"          # key of urdf/sensors.yaml
    sensors_file: str = ""                      # empty: urdf/sensors.yaml
    mount_parent: str = "tool0"
    mount_xyz: tuple = (0.0, 0.0, 0.01)
    mount_rpy: tuple = (0.0, -np.pi / 2, 0.0)
    table_height: float = 0.75
    table_size_x: float = 1.40
    table_size_y: float = 1.20
    table_center_x: float = 0.30
    fixture_x: float = 0.45
    fixture_y: float = 0.0
    fixture_height: float = 0.12
    fixture_radius: float = 0.05
    turntable: bool = False
    turntable_radius: float = 0.10
    turntable_thickness: float = 0.02
    part_xyz: tuple = (0.0, 0.0, 0.0)
    part_rpy: tuple = (0.0, 0.0, 0.0)

    @classmethod
    def from_dict(cls, d: dict | None) -> "CellConfig":
        """Build from a dict, refusing unknown keys (a typo should not pass silently)."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown cell argument(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        for k in ("mount_xyz", "mount_rpy", "part_xyz", "part_rpy"):
            if k in d:
                v = tuple(float(x) for x in np.asarray(d[k], dtype=np.float64).reshape(-1))
                if len(v) != 3:
                    raise ValueError(f"cell argument {k} needs 3 numbers, got {len(v)}")
                d[k] = v
        return cls(**d)

    def xacro_mappings(self) -> dict:
        """The ``name -> value`` mappings handed to xacro (arm_urdf resolved for
        example-robot-data).
        """
        m = asdict(self)
        if self.arm_source == "example_robot_data" and not self.arm_urdf:
            share = example_robot_data_share()
            if share is None:
                raise FileNotFoundError(
                    "arm_source 'example_robot_data' needs the example-robot-data package "
                    "(pip install example-robot-data) or arm_urdf pointing to a UR URDF")
            urdf = share / "example-robot-data" / "robots" / "ur_description" / "urdf" / f"{self.ur_type}_robot.urdf"
            if not urdf.is_file():
                known = sorted(p.name.replace("_robot.urdf", "") for p in urdf.parent.glob("*_robot.urdf"))
                raise ValueError(f"ur_type '{self.ur_type}' has no URDF in example-robot-data "
                                 f"(known: {', '.join(known)})")
            m["arm_urdf"] = str(urdf)
        return m


# ----------------------------------------------------------------------------------------------
# the cell
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _UrdfInfo:
    joints: dict            # name -> (type, parent, child)
    links_with_collision: frozenset
    parent_of: dict         # child link -> parent link


def _parse_urdf(urdf: str) -> _UrdfInfo:
    try:
        root = ET.fromstring(urdf)
    except ET.ParseError as exc:
        raise ValueError(f"URDF is not valid XML: {exc}") from exc
    if root.tag != "robot":
        raise ValueError(f"URDF root element must be <robot>, got <{root.tag}>")
    joints, parent_of = {}, {}
    for j in root.findall("joint"):
        p, c = j.find("parent"), j.find("child")
        if p is None or c is None:
            raise ValueError(f"URDF joint '{j.get('name')}' lacks parent or child")
        joints[j.get("name")] = (j.get("type"), p.get("link"), c.get("link"))
        parent_of[c.get("link")] = p.get("link")
    links = frozenset(link.get("name") for link in root.findall("link") if link.find("collision") is not None)
    return _UrdfInfo(joints, links, parent_of)


class CellModel:
    """Kinematics, collision geometry and frames of the inspection cell.

    Args:
        urdf: URDF text of the whole cell (arm, furniture, sensor, ``part`` frame).
        sensor_frame: frame whose pose the planner controls (REP 103 optical frame).
        part_frame: frame the part mesh is expressed in.
        base_frame: root frame of the poses (``world``).
        turntable_joint: name of the turntable joint, when the cell has one.
        home: ``(n,)`` rest configuration of all movable joints (model order); default: the sensor
            ``home_height`` above the part frame looking down at it (IK from an upright UR pose),
            (lower when out of reach); the upright pose when that has no collision-free solution.
        collision_margin: clearance required between bodies [m].
        package_dirs: folders to resolve ``package://`` mesh URIs (default :func:`package_dirs`).
        sensor_type: name of the sensor preset the URDF was built with (informative).
        config: the :class:`CellConfig` the URDF came from (informative).
        home_height: see ``home`` [m].

    Raises:
        ValueError: URDF without the required frames, or unusable.
    """

    #: UR joint names (both example-robot-data and ur_description use them).
    UR_JOINTS = ("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint",
                 "wrist_1_joint", "wrist_2_joint", "wrist_3_joint")
    #: An upright UR configuration (elbow up, flange pointing down).
    UR_HOME = (0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0)

    def __init__(self, urdf: str, *, sensor_frame: str = "sensor_optical_frame", part_frame: str = "part",
                 base_frame: str = "world", turntable_joint: str | None = "turntable_joint",
                 home: Sequence[float] | None = None, collision_margin: float = 0.01,
                 package_dirs: Sequence[str] | None = None, sensor_type: str = "",
                 config: CellConfig | None = None, home_height: float = 0.45):
        import pinocchio as pin

        self._pin = pin
        self.urdf = urdf
        self.info = _parse_urdf(urdf)
        self.config = config
        self.sensor_type = sensor_type or (config.sensor_type if config else "")
        try:
            self.model = pin.buildModelFromXML(urdf)
        except Exception as exc:  # noqa: BLE001 - pinocchio raises RuntimeError / ValueError
            raise ValueError(f"pinocchio cannot build the cell model: {exc}") from exc
        if self.model.nq != self.model.nv:
            raise ValueError("the cell has continuous or floating joints; use revolute joints with limits")
        self.data = self.model.createData()
        for f in (sensor_frame, part_frame, base_frame):
            if not self.model.existFrame(f):
                raise ValueError(f"the cell URDF has no frame '{f}'")
        self.sensor_frame, self.part_frame, self.base_frame = sensor_frame, part_frame, base_frame
        self.joint_names: tuple[str, ...] = tuple(self.model.names[i] for i in range(1, self.model.njoints))
        self.turntable_joint = turntable_joint if turntable_joint in self.joint_names else None
        self.arm_joint_names = tuple(n for n in self.joint_names if n != self.turntable_joint)
        self.arm_indices = np.array([self.model.joints[self.model.getJointId(n)].idx_q
                                     for n in self.arm_joint_names], dtype=int)
        self.turntable_index = (None if self.turntable_joint is None else
                                int(self.model.joints[self.model.getJointId(self.turntable_joint)].idx_q))
        self.lower = np.array(self.model.lowerPositionLimit, dtype=np.float64)
        self.upper = np.array(self.model.upperPositionLimit, dtype=np.float64)
        self.velocity_limits = np.array(self.model.velocityLimit, dtype=np.float64)
        self.velocity_limits[self.velocity_limits <= 0] = 1.0
        upright = np.zeros(self.model.nq)
        if set(self.UR_JOINTS) <= set(self.arm_joint_names):
            for n, v in zip(self.UR_JOINTS, self.UR_HOME):
                upright[self.joint_index(n)] = v
        self.home = upright if home is None else np.asarray(home, dtype=np.float64).copy()
        if self.home.shape != (self.model.nq,):
            raise ValueError(f"home must have {self.model.nq} values ({', '.join(self.joint_names)}), "
                             f"got {self.home.shape}")
        self.collision_margin = float(collision_margin)
        self.package_dirs = list(package_dirs) if package_dirs is not None else globals()["package_dirs"]()
        self._geom_model = None
        self._ik = None
        if home is None:
            self.home = self._overview_home(upright, home_height)

    def _overview_home(self, upright: np.ndarray, height: float) -> np.ndarray:
        """IK of the sensor ``height`` above the part frame looking down (lower heights, down to
        0.3 m, when that is out of reach); the upright pose when none works.
        """
        from cosarad_ros.core.geometry import look_at

        self.home = upright
        p = self.part_pose()[:3, 3]
        try:
            checker = self.collision_checker()
        except ValueError:
            return upright
        for h in np.arange(height, 0.299, -0.05):
            target = look_at(p + [0.0, 0.0, h], p, up=(1.0, 0.0, 0.0))
            res = self.ik_solver().solve(target, self.ik_seeds(6, seed=0), q_fixed=upright,
                                         accept=lambda q: not checker.in_collision(q),
                                         reference=upright[self.arm_indices])
            if res.success:
                return res.q.copy()
        return upright

    # ------------------------------------------------------------------------------------------
    @classmethod
    def default(cls, config: CellConfig | dict | None = None, **kwargs) -> "CellModel":
        """The cosarad cell from ``urdf/cosarad_cell.urdf.xacro``.

        Args:
            config: :class:`CellConfig` or a dict of its fields (xacro arguments).
            **kwargs: more :class:`CellModel` arguments (``home``, ``collision_margin``...).
        """
        cfg = config if isinstance(config, CellConfig) else CellConfig.from_dict(config)
        urdf = process_xacro(urdf_dir() / CELL_XACRO, cfg.xacro_mappings())
        kwargs.setdefault("sensor_type", cfg.sensor_type)
        return cls(urdf, config=cfg, **kwargs)

    @classmethod
    def from_file(cls, path, mappings: dict | None = None, **kwargs) -> "CellModel":
        """Load a ``.urdf`` or process a ``.xacro`` file (with ``mappings``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"cell description not found: {path}")
        urdf = process_xacro(path, mappings) if path.suffix == ".xacro" else path.read_text()
        return cls(urdf, **kwargs)

    # ------------------------------------------------------------------------------------------
    @property
    def nq(self) -> int:
        return int(self.model.nq)

    def joint_index(self, name: str) -> int:
        """Index in ``q`` of the joint ``name``."""
        if name not in self.joint_names:
            raise ValueError(f"unknown joint '{name}' (joints: {', '.join(self.joint_names)})")
        return int(self.model.joints[self.model.getJointId(name)].idx_q)

    def check_q(self, q, *, name: str = "q") -> np.ndarray:
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (self.nq,):
            raise ValueError(f"{name} must have {self.nq} values ({', '.join(self.joint_names)}), got {q.size}")
        if not np.isfinite(q).all():
            raise ValueError(f"{name} contains non-finite values")
        return q

    def frame_pose(self, frame: str, q=None) -> np.ndarray:
        """``(4, 4)`` pose of ``frame`` in the base frame at ``q`` (default: home)."""
        pin = self._pin
        if not self.model.existFrame(frame):
            raise ValueError(f"unknown frame '{frame}'")
        q = self.home if q is None else self.check_q(q)
        pin.forwardKinematics(self.model, self.data, q)
        fid = self.model.getFrameId(frame)
        pin.updateFramePlacement(self.model, self.data, fid)
        return np.array(self.data.oMf[fid].homogeneous)

    def fk(self, q) -> np.ndarray:
        """``(4, 4)`` sensor optical frame -> world at ``q``."""
        return self.frame_pose(self.sensor_frame, q)

    def part_pose(self, turntable_angle: float = 0.0) -> np.ndarray:
        """``(4, 4)`` part frame -> world (at a turntable angle, when the cell has a turntable)."""
        q = self.home.copy()
        if self.turntable_index is not None:
            q[self.turntable_index] = float(turntable_angle)
        return self.frame_pose(self.part_frame, q)

    def sensor_mount(self) -> np.ndarray:
        """``(4, 4)`` sensor optical frame expressed in the flange frame ``tool0``."""
        parent = self.config.mount_parent if self.config else "tool0"
        T_tool = self.frame_pose(parent)
        return np.linalg.inv(T_tool) @ self.fk(self.home)

    def shoulder_position(self) -> np.ndarray:
        """World position of the second arm joint (the shoulder lift axis), centre of the
        arm's reachable sphere.
        """
        pin = self._pin
        pin.forwardKinematics(self.model, self.data, self.home)
        jid = self.model.getJointId(self.arm_joint_names[min(1, len(self.arm_joint_names) - 1)])
        return np.array(self.data.oMi[jid].translation)

    def reach(self, *, samples: int = 4000, seed: int = 0) -> float:
        """Largest distance from :meth:`shoulder_position` to the sensor optical origin over
        random arm configurations [m] (an outer bound used to reject candidate views early).
        """
        if getattr(self, "_reach", None) is None:
            rng = np.random.default_rng(seed)
            c = self.shoulder_position()
            best = 0.0
            pin = self._pin
            fid = self.model.getFrameId(self.sensor_frame)
            lo, hi = np.maximum(self.lower, -np.pi), np.minimum(self.upper, np.pi)
            for _ in range(samples):
                q = self.home.copy()
                q[self.arm_indices] = rng.uniform(lo[self.arm_indices], hi[self.arm_indices])
                pin.framesForwardKinematics(self.model, self.data, q)
                best = max(best, float(np.linalg.norm(self.data.oMf[fid].translation - c)))
            self._reach = best * 1.02
        return self._reach

    # ------------------------------------------------------------------------------------------
    def ik_solver(self, **kwargs):
        """An :class:`~cosarad_ros.core.planning.kinematics.IKSolver` of the sensor optical frame
        over the arm joints (cached when called without arguments).
        """
        from cosarad_ros.core.planning.kinematics import IKSolver

        if kwargs:
            return IKSolver(self.model, self.sensor_frame, self.arm_indices, **kwargs)
        if self._ik is None:
            self._ik = IKSolver(self.model, self.sensor_frame, self.arm_indices)
        return self._ik

    def ik_seeds(self, n_random: int = 8, *, seed: int = 0, reference=None) -> np.ndarray:
        """``(S, n_arm)`` IK seeds: the reference (default home), its elbow/wrist-flipped
        variants, and random configurations within +-pi.
        """
        ref = (self.home if reference is None else np.asarray(reference))[self.arm_indices]
        seeds = [ref]
        if len(ref) == 6:
            for flips in ((1, 2), (3, 4), (1, 2, 3, 4), (0,)):
                s = ref.copy()
                for j in flips:
                    s[j] = -s[j] if j in (1, 2) else s[j] + (np.pi if j == 0 else -np.sign(s[j] or 1) * np.pi)
                seeds.append(s)
        rng = np.random.default_rng(seed)
        lo = np.maximum(self.lower[self.arm_indices], -np.pi)
        hi = np.minimum(self.upper[self.arm_indices], np.pi)
        seeds += list(rng.uniform(lo, hi, size=(n_random, len(ref))))
        return np.asarray(seeds)

    # ------------------------------------------------------------------------------------------
    def geometry_model(self):
        """The pinocchio ``GeometryModel`` of the collision geometry (cached; meshes resolved with
        :attr:`package_dirs`).
        """
        if self._geom_model is None:
            pin = self._pin
            try:
                self._geom_model = pin.buildGeomFromUrdfString(self.model, self.urdf, pin.GeometryType.COLLISION,
                                                               package_dirs=self.package_dirs)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"cannot load the cell's collision geometry: {exc} "
                                 f"(package folders: {', '.join(self.package_dirs) or 'none'})") from exc
        return self._geom_model

    def link_of(self, geom) -> str:
        return self.model.frames[geom.parentFrame].name

    def adjacent_links(self) -> set[frozenset]:
        """Pairs of collision links joined by a joint, looking through links without collision
        geometry (``tool0`` between ``wrist_3_link`` and ``sensor_link``).
        """
        info = self.info
        pairs = set()
        for child in info.links_with_collision:
            p = info.parent_of.get(child)
            while p is not None and p not in info.links_with_collision:
                p = info.parent_of.get(p)
            if p is not None:
                pairs.add(frozenset((child, p)))
        return pairs

    def environment_boxes(self) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
        """Static and turntable collision primitives of the cell as
        ``(link, kind, size, pose)``: kind ``box`` (size = 3 edge lengths) or ``cylinder``
        (size = radius, length, 0); pose ``(4, 4)`` in world at the home configuration. Used to
        occlude views (the fixture hides the part's underside).
        """
        import coal

        gm = self.geometry_model()
        pin = self._pin
        gd = pin.GeometryData(gm)
        pin.updateGeometryPlacements(self.model, self.data, gm, gd, self.home)
        arm_joints = {self.model.getJointId(n) for n in self.arm_joint_names}
        out = []
        for k, g in enumerate(gm.geometryObjects):
            if g.parentJoint in arm_joints or self._on_arm(g.parentJoint, arm_joints):
                continue
            T = np.array(gd.oMg[k].homogeneous)
            shape = g.geometry
            if isinstance(shape, coal.Box):
                out.append((self.link_of(g), "box", 2.0 * np.array(shape.halfSide), T))
            elif isinstance(shape, coal.Cylinder):
                out.append((self.link_of(g), "cylinder", np.array([shape.radius, 2.0 * shape.halfLength, 0.0]), T))
        return out

    def _on_arm(self, joint_id: int, arm_joints: set) -> bool:
        j = joint_id
        while j > 0:
            if j in arm_joints:
                return True
            j = self.model.parents[j]
        return False

    def collision_checker(self, part_mesh=None, *, part_collision: str = "hull",
                          margin: float | None = None) -> "CollisionChecker":
        """A :class:`~.collision.CollisionChecker` of this cell, with ``part_mesh`` (trimesh, metres, part
        frame) as an obstacle.
        """
        from .collision import CollisionChecker

        return CollisionChecker(self, part_mesh=part_mesh, part_collision=part_collision,
                                margin=self.collision_margin if margin is None else margin)

    def __repr__(self) -> str:
        return (f"CellModel(joints={list(self.joint_names)}, sensor_type={self.sensor_type!r}, "
                f"part at {np.round(self.part_pose()[:3, 3], 3).tolist()})")

