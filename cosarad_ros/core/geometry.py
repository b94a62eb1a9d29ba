"""Small geometric helpers shared by the core library.

Conventions (REP 103): metres, right-handed frames. A transform ``T`` is a ``(4, 4)`` float64
homogeneous matrix mapping points expressed in a child frame into the parent frame:
``p_parent = T[:3, :3] @ p_child + T[:3, 3]``. Quaternions are ``(x, y, z, w)`` as in
``geometry_msgs/Quaternion``.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "as_points",
    "check_metres",
    "cap_points",
    "check_mesh",
    "MAX_ABS_COORDINATE",
    "MAX_COORDINATE_M",
    "MAX_EXTENT_M",
    "as_transform",
    "transform_points",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "pose_to_matrix",
    "matrix_to_pose",
    "random_rotation",
    "rotation_angle_deg",
    "look_at",
]

#: largest |coordinate| :func:`as_points` accepts in any unit (1e9: a kilometre in micrometres);
#: beyond it values are garbage (a byte-order mix-up, a corrupt file) that overflow voxel indices
MAX_ABS_COORDINATE = 1e9
#: largest |coordinate| of a cloud or mesh in metres (REP 103) [m]: an inspection cell is a few
#: metres across, robot base at the origin
MAX_COORDINATE_M = 100.0
#: largest extent (bounding-box diagonal) of one scan or part in metres [m]
MAX_EXTENT_M = 10.0


def as_points(points, *, name: str = "points", min_points: int = 1, allow_nan: bool = False,
              dtype=np.float64) -> np.ndarray:
    """Validate and convert a point array.

    Args:
        points: array-like of shape ``(N, 3)``.
        name: what to call the array in error messages.
        min_points: the fewest points accepted.
        allow_nan: keep non-finite rows instead of refusing them.
        dtype: output dtype.

    Returns:
        ``(N, 3)`` contiguous array of ``dtype``.

    Raises:
        ValueError: wrong shape, too few points, non-finite values (unless ``allow_nan``), or a
            coordinate beyond ``MAX_ABS_COORDINATE`` (garbage in any unit).
    """
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.shape[0] < min_points:
        if arr.shape[0] == 0:
            raise ValueError(f"{name} is empty (0 points); need at least {min_points}")
        raise ValueError(f"{name} has {arr.shape[0]} points; need at least {min_points}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not allow_nan and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr).all(axis=1)).sum())
        raise ValueError(f"{name} contains {bad} non-finite (NaN/inf) points; drop them first")
    vals = arr[np.isfinite(arr)] if allow_nan else arr
    if vals.size:
        big = float(np.abs(vals).max())
        if big > MAX_ABS_COORDINATE:
            raise ValueError(f"{name} has coordinates up to {big:.3g}, beyond {MAX_ABS_COORDINATE:g} in any unit: "
                             "corrupt data (wrong byte order or field type?)")
    return arr


def check_metres(points, *, name: str = "points") -> np.ndarray:
    """Refuse ``(N, 3)`` finite points that cannot be metres of an inspection cell (REP 103).

    Coordinates must stay within ``MAX_COORDINATE_M`` and the bounding-box diagonal within
    ``MAX_EXTENT_M``; when the data would fit once divided by 1000 the message says it looks like
    millimetres.

    Returns:
        ``points`` unchanged (as an array).

    Raises:
        ValueError: too large for metres, naming ``name``, the size and the unit.
    """
    arr = np.asarray(points)
    if arr.size == 0:
        return arr
    big = float(np.abs(arr).max())
    extent = float(np.linalg.norm(arr.max(axis=0) - arr.min(axis=0)))
    if big <= MAX_COORDINATE_M and extent <= MAX_EXTENT_M:
        return arr
    if big / 1000.0 <= MAX_COORDINATE_M and extent / 1000.0 <= MAX_EXTENT_M:
        hint = "it looks like millimetres given as metres: scale it by 0.001"
    else:
        hint = "not a plausible size in metres"
    raise ValueError(f"{name} is {extent:.4g} m across with coordinates up to {big:.4g} m (limits "
                     f"{MAX_EXTENT_M:g} m across, {MAX_COORDINATE_M:g} m from the origin): {hint}")


def cap_points(points, max_points: int, *, seed: int = 0) -> np.ndarray:
    """At most ``max_points`` of ``(N, 3)`` points: a seeded random subset in the original order
    (the same input and seed give the same subset). Returns ``points`` itself when small enough.
    """
    n = len(points)
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if n <= max_points:
        return points
    sel = np.random.default_rng(seed).choice(n, int(max_points), replace=False)
    return points[np.sort(sel)]


def check_mesh(mesh, *, name: str = "mesh", metres: bool = True):
    """Refuse a degenerate triangle mesh; return it unchanged.

    A usable mesh has finite vertices, at least 4 of them, triangles of positive total area, and
    vertices that span a volume (at least a tetrahedron: not all in one plane or on one line);
    with ``metres`` (REP 103) its size must also be plausible in metres (see :func:`check_metres`).

    Args:
        mesh: anything with ``vertices (V, 3)`` and ``faces (F, 3)`` (``trimesh.Trimesh``).
        name: what to call it in messages (the file name, say).
        metres: apply the size check for metres.

    Raises:
        ValueError: naming ``name`` and the defect.
    """
    V = np.asarray(getattr(mesh, "vertices", ()), dtype=np.float64).reshape(-1, 3)
    F = np.asarray(getattr(mesh, "faces", ()), dtype=np.int64).reshape(-1, 3)
    if len(F) == 0:
        raise ValueError(f"{name}: mesh has no triangles")
    if not np.isfinite(V).all():
        raise ValueError(f"{name}: mesh has non-finite vertices")
    if len(V) < 4:
        raise ValueError(f"{name}: mesh has {len(V)} vertices; a part needs at least 4 (a tetrahedron)")
    if F.min() < 0 or F.max() >= len(V):
        raise ValueError(f"{name}: mesh faces index missing vertices")
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    area = 0.5 * float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())
    if not area > 0.0:
        raise ValueError(f"{name}: mesh has zero surface area")
    big = float(np.abs(V).max())
    if big > MAX_ABS_COORDINATE:
        raise ValueError(f"{name}: mesh has coordinates up to {big:.3g}: corrupt data")
    used = V[np.unique(F)]
    sub = used if len(used) <= 20000 else used[np.random.default_rng(0).choice(len(used), 20000, replace=False)]
    centred = sub - sub.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False) if len(centred) >= 3 else np.zeros(3)
    if len(s) < 3 or not s[2] > 1e-6 * s[0]:
        raise ValueError(f"{name}: mesh is flat (all vertices in one plane or on one line): it encloses no "
                         "volume, a part needs at least a tetrahedron")
    if metres:
        check_metres(used, name=name)
    return mesh


def as_transform(T, *, name: str = "transform") -> np.ndarray:
    """Validate a ``(4, 4)`` homogeneous transform (finite, last row ``0 0 0 1``)."""
    arr = np.asarray(T, dtype=np.float64)
    if arr.shape != (4, 4):
        raise ValueError(f"{name} must have shape (4, 4), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    if not np.allclose(arr[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise ValueError(f"{name} last row must be [0, 0, 0, 1], got {arr[3].tolist()}")
    return arr


def transform_points(T, points) -> np.ndarray:
    """Apply a ``(4, 4)`` transform to ``(N, 3)`` points; returns ``(N, 3)`` float64."""
    T = as_transform(T)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    return pts @ T[:3, :3].T + T[:3, 3]


def quaternion_to_matrix(q) -> np.ndarray:
    """Unit quaternion ``(x, y, z, w)`` -> ``(3, 3)`` rotation matrix. Normalises the input."""
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if q.shape != (4,) or not np.isfinite(q).all():
        raise ValueError(f"quaternion must be 4 finite numbers (x, y, z, w), got {q}")
    n = np.linalg.norm(q)
    if n < 1e-12:
        raise ValueError("quaternion has zero norm")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R) -> np.ndarray:
    """``(3, 3)`` rotation matrix -> unit quaternion ``(x, y, z, w)`` with ``w >= 0``.

    Uses the numerically stable branch on the largest diagonal term (Shepperd's method).
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"rotation must have shape (3, 3), got {R.shape}")
    tr = np.trace(R)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def pose_to_matrix(position, quaternion) -> np.ndarray:
    """Position ``(3,)`` and quaternion ``(x, y, z, w)`` -> ``(4, 4)`` transform."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(quaternion)
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or not np.isfinite(p).all():
        raise ValueError(f"position must be 3 finite numbers, got {p}")
    T[:3, 3] = p
    return T


def matrix_to_pose(T) -> tuple[np.ndarray, np.ndarray]:
    """``(4, 4)`` transform -> ``(position (3,), quaternion (x, y, z, w))``."""
    T = as_transform(T)
    return T[:3, 3].copy(), matrix_to_quaternion(T[:3, :3])


def random_rotation(rng: np.random.Generator, max_angle_deg: float | None = None) -> np.ndarray:
    """A random ``(3, 3)`` rotation: uniform over SO(3), or about a uniform axis with an angle
    uniform in ``[-max_angle_deg, max_angle_deg]``.
    """
    if max_angle_deg is None:
        q = rng.normal(size=4)
        return quaternion_to_matrix(q)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg))
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def rotation_angle_deg(R_a, R_b=None) -> float:
    """Angle in degrees of the rotation ``R_a`` (or of ``R_a^T R_b`` when ``R_b`` is given)."""
    R = np.asarray(R_a, dtype=np.float64)[:3, :3]
    if R_b is not None:
        R = R.T @ np.asarray(R_b, dtype=np.float64)[:3, :3]
    c = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(c)))


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Pose of a camera optical frame (REP 103 optical: z forward, x right, y down) at ``eye``
    looking at ``target``. Returns a ``(4, 4)`` transform optical -> world.
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    z = target - eye
    n = np.linalg.norm(z)
    if n < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    z /= n
    up = np.asarray(up, dtype=np.float64)
    if abs(np.dot(up / np.linalg.norm(up), z)) > 0.999:
        up = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)  # camera x (right) = forward x up... keeps y pointing "down"
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T
