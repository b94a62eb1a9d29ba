"""Benchmark of the data layer: benchmark generation time, per-stage costs, PCD I/O speed.

Prints medians and ratios measured in this run:

* ``cosarad synth`` on ``--classes`` classes (default 4: 2 procedural + 2 package meshes) with
  the default per-class sizes (4 templates of 40k points, 34 test scans of 20k points), the
  rate in scans/s, and the time extrapolated linearly to 12 classes (target: < 600 s).
  ``--classes 12`` measures the full size instead of extrapolating.
* per-stage medians: building a procedural part, ``apply_defect_to_mesh`` per defect type,
  ``apply_defect`` on a 20k-point cloud, one partial (ray-cast) scan, one full scan, labelling a
  scan, writing a test sample.
* PCD read/write: our reader vs Open3D's on the same 100k-point file (binary and ASCII). In
  ASCII files our reader restores the declared float32 values exactly; Open3D keeps the decimal
  text as float64, hence differences of about 1e-8.

Writes the figures to ``benchmarks/results/bench_synth.json`` (``--record``; see ``record.py``).

Usage::

    python benchmarks/bench_synth.py [--classes 4] [--repeats 5] [--out /tmp/bench_synth]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from record import add_record_option, write_record  # noqa: E402


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    add_record_option(ap, "bench_synth")
    args = ap.parse_args()

    import open3d as o3d

    from cosarad_ros.core.data.datasets import write_test_sample
    from cosarad_ros.core.data.defects import DEFECT_TYPES, apply_defect, apply_defect_to_mesh
    from cosarad_ros.core.data.parts import make_part
    from cosarad_ros.core.data.scans import full_scan, partial_scan
    from cosarad_ros.core.data.synth import SynthConfig, generate_benchmark
    from cosarad_ros.core.io import read_points, sample_mesh, write_points

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    scratch = Path(args.out or tempfile.mkdtemp(prefix="bench_synth_"))
    scratch.mkdir(parents=True, exist_ok=True)
    R = args.repeats

    print("== per-stage medians ==")
    t_part = _median_time(lambda: make_part("mold_insert", seed=3), R)
    print(f"build procedural part (mold_insert)     {t_part * 1e3:8.1f} ms")
    part = make_part("pocket_block", seed=1)
    pts, nrm = sample_mesh(part.mesh, 20000, seed=0)
    mesh_t, point_t = {}, {}
    for kind in DEFECT_TYPES:
        seeds = iter(range(1000))
        mesh_t[kind] = _median_time(lambda: apply_defect_to_mesh(part, kind, np.random.default_rng(next(seeds))), R)
        point_t[kind] = _median_time(lambda: apply_defect(pts, nrm, kind, np.random.default_rng(next(seeds))), R)
        print(f"defect {kind:8s} mesh {mesh_t[kind] * 1e3:8.1f} ms   point cloud {point_t[kind] * 1e3:7.1f} ms"
              f"   ratio {mesh_t[kind] / point_t[kind]:5.1f}x")
    rng = np.random.default_rng(0)
    t_partial = _median_time(lambda: partial_scan(part.mesh, 20000, rng), R)
    t_full = _median_time(lambda: full_scan(part.mesh, 40000, rng), R)
    dmesh, rec = apply_defect_to_mesh(part, "sink", np.random.default_rng(0))
    scan = partial_scan(dmesh, 20000, rng)
    t_label = _median_time(lambda: rec.label_points(scan.clean_points), R)
    mask = rec.label_points(scan.clean_points)
    t_write = _median_time(lambda: write_test_sample(scratch / "w", "real3d", "c", 0, "sink",
                                                     scan.points * 1e3, mask), R)
    print(f"partial scan, 20k points                {t_partial * 1e3:8.1f} ms")
    print(f"full scan (template), 40k points        {t_full * 1e3:8.1f} ms")
    print(f"label a 20k-point scan (sink record)    {t_label * 1e3:8.1f} ms")
    print(f"write test sample (PCD + GT text)       {t_write * 1e3:8.1f} ms")

    print("== PCD I/O, 100k points: ours vs Open3D ==")
    big = np.random.default_rng(1).normal(size=(100_000, 3))
    pcd_read = {}
    for binary in (True, False):
        p = write_points(scratch / f"io_{int(binary)}.pcd", big, binary=binary)
        ours = _median_time(lambda: read_points(p), R)
        theirs = _median_time(lambda: np.asarray(o3d.io.read_point_cloud(str(p)).points), R)
        diff = np.abs(read_points(p) - np.asarray(o3d.io.read_point_cloud(str(p)).points)).max()
        print(f"read {'binary' if binary else 'ascii ':6s} ours {ours * 1e3:7.1f} ms   open3d {theirs * 1e3:7.1f} ms"
              f"   ratio open3d/ours {theirs / ours:5.2f}   max |ours - open3d| {diff:.1e}")
        pcd_read["binary" if binary else "ascii"] = {"ours_s": ours, "open3d_s": theirs, "max_abs_difference": diff}
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(big))
    w_ours = _median_time(lambda: write_points(scratch / "w_ours.pcd", big), R)
    w_o3d = _median_time(lambda: o3d.io.write_point_cloud(str(scratch / "w_o3d.pcd"), pc), R)
    print(f"write binary ours {w_ours * 1e3:7.1f} ms   open3d {w_o3d * 1e3:7.1f} ms   ratio {w_o3d / w_ours:5.2f}")

    print(f"== generation: {args.classes} classes x (4 templates + 34 tests) ==")
    cfg = SynthConfig(n_classes=args.classes, seed=0, gallery=8)
    out = scratch / "bench"
    if out.exists():
        shutil.rmtree(out)
    res = generate_benchmark(out, cfg, progress=False)
    scans = res.n_templates + res.n_tests
    per_class = res.seconds / res.n_classes
    print(f"wrote {res.n_classes} classes, {scans} scans ({res.n_defective} defective: "
          f"{sorted(k for k in res.defect_counts if k != 'good')}) in {res.seconds:.1f} s "
          f"= {scans / res.seconds:.2f} scans/s, {per_class:.1f} s/class")
    if res.n_classes != 12:
        print(f"extrapolated to 12 classes (linear in classes): {12 * per_class:.0f} s "
              f"(target < 600 s: ratio {12 * per_class / 600:.2f})")
    else:
        print(f"12 classes measured: {res.seconds:.0f} s (target < 600 s: ratio {res.seconds / 600:.2f})")
    if args.out is None:
        shutil.rmtree(scratch, ignore_errors=True)
    write_record(args.record, "bench_synth", {
        "repeats": R,
        "stage_median_s": {"build_part": t_part, "partial_scan_20k": t_partial, "full_scan_40k": t_full,
                           "label_scan": t_label, "write_test_sample": t_write},
        "defect_median_s": {k: {"mesh": mesh_t[k], "point_cloud": point_t[k]} for k in DEFECT_TYPES},
        "pcd_100k": {"read": pcd_read, "write_binary": {"ours_s": w_ours, "open3d_s": w_o3d}},
        "generation": {"classes": res.n_classes, "scans": scans, "defective": res.n_defective, "seconds": res.seconds,
                       "scans_per_s": scans / res.seconds, "s_per_class": per_class,
                       "seconds_for_12_classes": res.seconds if res.n_classes == 12 else 12 * per_class,
                       "extrapolated": res.n_classes != 12}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
