"""``cosarad scan``: simulate a scan of a mesh with the structured-light or laser-line sensor.

Examples::

    cosarad scan part.stl --sensor motioncam --out scan.ply
    cosarad scan part.stl --scale 0.001 --sensor ruler --frame sensor --out scan.pcd --preview scan.png
    cosarad scan part.stl --pose 0 -0.4 0.6 0.966 0 0 -0.259 --set noise_sigma=0 --out scan.xyz

The part's frame is the world frame of the simulation. Without ``--pose`` the sensor looks at
the part from its working distance (motioncam: from above at 60 degrees elevation; ruler: a
linear pass straight down whose travel covers the part).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HELP = "simulate a scan of a mesh with a structured-light or laser-line sensor"

_FORMATS = (".ply", ".pcd", ".xyz", ".xyzn", ".txt", ".npy", ".mcap")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mesh", help="part mesh (STL/PLY/OBJ/OFF/GLB), metres unless --scale")
    parser.add_argument("--sensor", choices=("motioncam", "ruler"), default="motioncam",
                        help="simulated device (default: motioncam)")
    parser.add_argument("--pose", nargs=7, type=float, metavar=("X", "Y", "Z", "QX", "QY", "QZ", "QW"),
                        help="sensor optical-frame pose in the part frame "
                             "(default: the device's working-distance view)")
    parser.add_argument("--frame", choices=("part", "sensor"), default="part",
                        help="frame of the written points (default: part)")
    parser.add_argument("--out", required=True, help=f"output cloud ({', '.join(_FORMATS)})")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply mesh coordinates (0.001 for millimetre files)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--table", action="store_true",
                        help="put a table under the part (its top at the part's lowest z)")
    parser.add_argument("--part-only", action="store_true", help="keep only points on the part (drop table hits)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="sensor constructor argument, e.g. --set noise_sigma=0 --set resolution=[560,400]")
    parser.add_argument("--preview", metavar="PNG",
                        help="also write a PNG: depth image (motioncam) or height map (ruler)")


def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"cannot parse value {text!r}: {exc}") from exc


def _write_cloud(path: str, points: np.ndarray, normals, frame, pose_frame) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FORMATS:
        raise ValueError(f"--out must end with one of {', '.join(_FORMATS)}, got {path!r}")
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    if ext == ".npy":
        np.save(path, np.hstack([points, normals]) if normals is not None else points)
        return
    if ext == ".mcap":
        from cosarad_ros.core.sensors.base import SensorFrame
        from cosarad_ros.core.sensors.mcap_io import write_pointcloud_mcap

        out = SensorFrame(points=points, stamp=frame.stamp, frame_id=pose_frame,
                          sensor_pose=frame.sensor_pose if pose_frame == frame.frame_id else None,
                          normals=normals, intensity=frame.intensity)
        write_pointcloud_mcap(path, [out])
        return
    from cosarad_ros.core.io import write_points

    write_points(path, points, normals=normals)


def _preview(path: str, sensor, frame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frame.height_map is not None:
        hm = frame.height_map.astype(np.float64)
        img = np.where(hm > 0, frame.meta["height_map_offset"] + frame.meta["height_map_scale"] * (hm - 1), np.nan)
        title, label = "laser profiler range map (one row per profile)", "depth z [m]"
    else:
        img = sensor.depth_image(frame)
        title, label = "structured-light depth image", "depth z [m]"
    rows, cols = np.nonzero(np.isfinite(img))
    r0 = c0 = 0
    if rows.size and frame.height_map is None:  # crop the depth image to what was seen
        pad = 10
        r0, c0 = max(rows.min() - pad, 0), max(cols.min() - pad, 0)
        img = img[r0: rows.max() + pad + 1, c0: cols.max() + pad + 1]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    im = ax.imshow(img, cmap="viridis", interpolation="nearest", aspect="auto",
                   extent=(c0 - 0.5, c0 + img.shape[1] - 0.5, r0 + img.shape[0] - 0.5, r0 - 0.5))
    ax.set_title(f"{title}\n{len(frame)} points")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from cosarad_ros.core.geometry import pose_to_matrix
    from cosarad_ros.core.sensors import SimulatedScene, make_sensor
    from cosarad_ros.core.sensors.scene import PART, as_mesh_arrays

    if not os.path.exists(args.mesh):
        raise FileNotFoundError(f"mesh not found: {args.mesh}")
    if not args.scale > 0:
        raise ValueError(f"--scale must be > 0, got {args.scale}")
    v, f = as_mesh_arrays(args.mesh, name=args.mesh)
    v = v * args.scale
    diag = float(np.linalg.norm(v.max(axis=0) - v.min(axis=0)))
    if diag > 5.0:
        print(f"cosarad scan: warning: the mesh is {diag:.1f} m across; if it is in millimetres use --scale 0.001",
              file=sys.stderr)
    scene = SimulatedScene()
    scene.set_part((v, f), np.eye(4), part_id=os.path.basename(args.mesh))
    if args.table:
        lo, hi = v.min(axis=0), v.max(axis=0)
        size = (hi - lo)[:2] * 3.0 + 0.2
        scene.set_table(top_z=float(lo[2]), size=tuple(size), center_xy=tuple((lo + hi)[:2] / 2.0))
    cfg: dict = {"type": args.sensor, "scene": scene, "seed": args.seed}
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key.strip() in ("type", "scene"):
            raise ValueError(f"--set cannot change {key.strip()!r}")
        cfg[key.strip()] = _parse_value(value.strip())
    if args.sensor == "ruler" and "travel" not in cfg and args.pose is None:
        b = scene.bounds(PART)
        cfg["travel"] = float(b[1, 1] - b[0, 1]) + 0.02  # default pass moves along world y
    sensor = make_sensor(cfg)
    pose = pose_to_matrix(args.pose[:3], args.pose[3:]) if args.pose else sensor.default_pose()
    t0 = time.perf_counter()
    with sensor:
        frame = sensor.grab(pose)
    dt = time.perf_counter() - t0
    keep = np.ones(len(frame), dtype=bool)
    if args.part_only:
        keep = frame.meta["labels"] == scene.label_of(PART)
    if not keep.any():
        raise ValueError("the sensor saw nothing of the part from this pose; try another --pose")
    if args.frame == "part":
        pts = frame.points_world()[keep]
        nrm = frame.normals_world()[keep]
        out_frame = "part"
    else:
        pts = frame.points[keep].astype(np.float64)
        nrm = frame.normals[keep]
        out_frame = frame.frame_id
    _write_cloud(args.out, pts, nrm, frame, out_frame)
    on_part = int((frame.meta["labels"] == scene.label_of(PART)).sum())
    stats = dict(frame.meta.get("stats", {}))
    print(f"{args.sensor}: {int(keep.sum())} points written to {args.out} (frame: {out_frame}); "
          f"{on_part} on the part; scan took {dt:.2f} s")
    p = pose[:3, 3]
    print(f"sensor at [{p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}] m; losses: " +
          ", ".join(f"{k}={v}" for k, v in stats.items() if k not in ("points",)))
    if args.preview:
        _preview(args.preview, sensor, frame)
        print(f"preview written to {args.preview}")
    return 0
