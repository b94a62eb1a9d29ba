"""Benchmark: PointCloud2 <-> numpy conversion of 1M points against a naive per-point loop.

Prints medians of repeated runs and the ratio naive / ours, measured in the same run. The naive
baseline is what hand-written nodes often do: ``struct.pack`` per point into a ``bytes`` object
assigned to ``msg.data`` (which makes rclpy validate every byte), and ``struct.unpack_from`` per
point when reading. The naive loops run on a subset and are scaled linearly (stated in the output).
Writes the figures to ``benchmarks/results/bench_conversions.json`` (``--record``; see ``record.py``).

    python benchmarks/bench_conversions.py [--points 1000000] [--repeats 5]
"""
import argparse
import statistics
import struct
import time

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from cosarad_ros.ros.conversions import pointcloud2_to_xyz, xyz_to_pointcloud2
from record import add_record_option, write_record


def naive_write(pts: np.ndarray) -> PointCloud2:
    msg = PointCloud2()
    msg.header.frame_id = "f"
    msg.height, msg.width = 1, len(pts)
    msg.fields = [PointField(name=c, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, c in enumerate("xyz")]
    msg.point_step, msg.row_step = 12, 12 * len(pts)
    buf = b"".join(struct.pack("<fff", *p) for p in pts.tolist())
    msg.data = buf  # rclpy checks every byte of a bytes value
    return msg


def naive_read(msg: PointCloud2) -> np.ndarray:
    data = bytes(msg.data)
    return np.array([struct.unpack_from("<fff", data, i * msg.point_step) for i in range(msg.width)], np.float32)


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--naive-points", type=int, default=100_000, help="subset size for the naive loops")
    ap.add_argument("--repeats", type=int, default=5)
    add_record_option(ap, "bench_conversions")
    a = ap.parse_args()
    pts = np.random.default_rng(0).normal(size=(a.points, 3)).astype(np.float32)
    sub = pts[: a.naive_points]
    scale = a.points / len(sub)

    msg = xyz_to_pointcloud2(pts, frame_id="f")
    t_write = median_time(lambda: xyz_to_pointcloud2(pts, frame_id="f"), a.repeats)
    t_read = median_time(lambda: pointcloud2_to_xyz(msg, skip_nans=False), a.repeats)
    t_read_nan = median_time(lambda: pointcloud2_to_xyz(msg), a.repeats)
    nmsg = naive_write(sub)
    t_nwrite = median_time(lambda: naive_write(sub), max(1, a.repeats // 2)) * scale
    t_nread = median_time(lambda: naive_read(nmsg), max(1, a.repeats // 2)) * scale
    assert np.array_equal(naive_read(nmsg), pointcloud2_to_xyz(xyz_to_pointcloud2(sub, frame_id="f")))

    print(f"PointCloud2 conversion, {a.points:,} points, median of {a.repeats} "
          f"(naive loops timed on {len(sub):,} points, scaled x{scale:g})")
    print(f"{'operation':<34}{'ours [ms]':>12}{'naive [ms]':>14}{'naive/ours':>12}")
    print(f"{'write xyz -> PointCloud2':<34}{t_write * 1e3:>12.2f}{t_nwrite * 1e3:>14.1f}{t_nwrite / t_write:>12.0f}")
    print(f"{'read PointCloud2 -> xyz (view)':<34}{t_read * 1e3:>12.3f}{t_nread * 1e3:>14.1f}{t_nread / t_read:>12.0f}")
    print(f"{'read + drop NaN points':<34}{t_read_nan * 1e3:>12.2f}{t_nread * 1e3:>14.1f}{t_nread / t_read_nan:>12.0f}")
    write_record(a.record, "bench_conversions", {
        "points": a.points, "naive_points": len(sub), "repeats": a.repeats,
        "median_s": {"write": t_write, "read_view": t_read, "read_drop_nan": t_read_nan,
                     "naive_write": t_nwrite, "naive_read": t_nread},
        "naive_over_ours": {"write": t_nwrite / t_write, "read_view": t_nread / t_read,
                            "read_drop_nan": t_nread / t_read_nan}})


if __name__ == "__main__":
    main()
