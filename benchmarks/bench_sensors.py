"""Speed of the sensor layer, measured in one run (medians over repeats; ratios between rows).

    python benchmarks/bench_sensors.py [--repeats 5] [--quick]

Rows:
* simulated MotionCam-3D-like scan of the inspection cell with a real CAD part on the fixture,
  at the datasheet camera-mode resolution (1120 x 800) and at half resolution;
* simulated Ruler-like linear pass (1536 points per profile, 0.5 mm steps across the part);
* GenICam grab through harvesters from the simulated producer (viky.cti, 400 x 400 range);
* MCAP write and read of the full-resolution cloud.

Writes the figures to ``benchmarks/results/bench_sensors.json`` (``--record``; see ``record.py``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cosarad_ros.core.io import read_mesh  # noqa: E402
from cosarad_ros.core.sensors import SimulatedScene, make_sensor  # noqa: E402
from cosarad_ros.core.sensors.mcap_io import read_pointcloud_mcap, write_pointcloud_mcap  # noqa: E402
from record import add_record_option, write_record  # noqa: E402

PART = "/usr/share/opencascade/data/stl/motor.stl"


def timeit(fn, repeats):
    fn()  # warm-up (BVH build, imports)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 repeats, skip GenICam")
    add_record_option(ap, "bench_sensors")
    args = ap.parse_args()
    reps = 3 if args.quick else args.repeats
    scene = SimulatedScene.inspection_cell()
    if os.path.exists(PART):
        mesh = read_mesh(PART)
        mesh.apply_scale(0.001)
    else:  # pragma: no cover - occt-misc not installed
        import trimesh
        mesh = trimesh.creation.annulus(0.03, 0.05, 0.04)
    scene.place_part(mesh, part_id="motor")
    print(f"part: {os.path.basename(PART)}, {len(mesh.faces)} triangles; cell: table + fixture; {reps} repeats")
    rows = []

    full = make_sensor({"type": "motioncam", "scene": scene, "seed": 0})
    half = make_sensor({"type": "motioncam", "scene": scene, "seed": 0, "resolution": [560, 400]})
    with full, half:
        pose = full.default_pose()
        t_full, f_full = timeit(lambda: full.grab(pose), reps)
        t_half, f_half = timeit(lambda: half.grab(pose), reps)
    rows.append(("motioncam 1120x800", t_full, len(f_full), 1120 * 800))
    rows.append(("motioncam 560x400", t_half, len(f_half), 560 * 400))
    b = scene.bounds("part")
    ruler = make_sensor({"type": "ruler", "scene": scene, "seed": 0, "travel": float(b[1, 1] - b[0, 1]) + 0.02})
    with ruler:
        t_ruler, f_ruler = timeit(lambda: ruler.grab(), reps)
    rows.append((f"ruler 1536 x {ruler.num_profiles} profiles", t_ruler, len(f_ruler), 1536 * ruler.num_profiles))

    import genicam

    viky = os.path.join(os.path.dirname(genicam.__file__), "viky.cti")
    if not args.quick and os.path.isfile(viky):
        cam = make_sensor({"type": "genicam", "cti_path": viky})
        with cam:
            t_cam, f_cam = timeit(lambda: cam.grab(), reps)
        rows.append(("genicam viky 400x400", t_cam, len(f_cam), 400 * 400))

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.mcap")
        t_w, _ = timeit(lambda: write_pointcloud_mcap(path, [f_full]), reps)
        t_r, back = timeit(lambda: read_pointcloud_mcap(path), reps)
        assert np.array_equal(back[0].points, f_full.points)
        size = os.path.getsize(path)
    rows.append(("mcap write (zstd)", t_w, len(f_full), len(f_full)))
    rows.append(("mcap read", t_r, len(f_full), len(f_full)))

    print(f"\n{'operation':34s} {'median [s]':>10s} {'points':>9s} {'rays or pts/s':>14s}")
    for name, t, n, work in rows:
        print(f"{name:34s} {t:10.3f} {n:9d} {work / t:14.3g}")
    print(f"\nratio full/half resolution time: {t_full / t_half:.2f} (pixels ratio 4.00)")
    print(f"ruler profiles per second: {ruler.num_profiles / t_ruler:.0f}")
    print(f"MCAP file: {size / 1e6:.2f} MB for {len(f_full)} points with normals and intensity "
          f"({size / max(len(f_full), 1):.1f} B/point)")
    stats = dict(f_full.meta["stats"])
    print("motioncam losses at full resolution: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    write_record(args.record, "bench_sensors", {
        "part": os.path.basename(PART), "repeats": reps,
        "rows": [{"operation": name, "median_s": t, "points": n, "per_s": work / t} for name, t, n, work in rows],
        "full_over_half_resolution_time": t_full / t_half, "ruler_profiles_per_s": ruler.num_profiles / t_ruler,
        "mcap_bytes": size, "mcap_points": len(f_full), "motioncam_losses": stats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
