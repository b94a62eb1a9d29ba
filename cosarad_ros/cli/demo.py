"""``cosarad demo``: the simulated inspection cell, end to end, with real rclpy nodes over DDS.

All six nodes (scanner, viewpoint planner, registration, CAD classifier, anomaly detector,
inspection manager) run in one process on a multi-threaded executor and talk over real DDS,
exactly as ``ros2 launch cosarad_ros inspection.launch.py`` runs them as separate processes. A
production run of good and defective parts of several types (:mod:`cosarad_ros.core.inspection.production`)
goes through the ``InspectPart`` action one part at a time. Output folder:

* ``results.json`` -- one entry per part: ``verdict`` (PASS / FAIL / INCONCLUSIVE), scores,
  defects, stage seconds, the expected verdict and the injected defect;
* ``pictures/<part>.png`` -- each scored part, defects boxed;
* ``inspection_results/`` -- rosbag2 (MCAP) recording of ``/inspection/result``
  (``ros2 bag play reports/demo/inspection_results``);
* ``coverage/`` -- the planner's coverage pictures; ``cell/`` -- CAD library and part meshes.

Each finished inspection is saved before the next one starts (``results.json`` rewritten
atomically, the recording flushed to disk), so Ctrl-C -- which stops the run within a few
seconds, exit code 130 -- or a crash loses only the part in progress.
"""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

HELP = "run the simulated inspection cell end to end"
MARKER = ".cosarad_demo"


def add_arguments(p):
    from cosarad_ros.core.inspection.production import DEFAULT_DEFECTS, DEFAULT_FAMILIES

    p.add_argument("--out", default="reports/demo", help="report folder (default: reports/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of parts, defects and sensor noise")
    p.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), help="one part type per family")
    p.add_argument("--defects", nargs="+", default=list(DEFAULT_DEFECTS), help="defects injected, one part each")
    p.add_argument("--good-per-type", type=int, default=1, help="good parts per type")
    p.add_argument("--method", default="deviation", choices=("deviation", "cosarad", "fpfh", "global-bank"),
                   help="anomaly detector (see docs/anomaly.md)")
    p.add_argument("--templates", type=int, default=3, help="simulated good templates per part type")
    p.add_argument("--tell-type", action="store_true",
                   help="give the part type to the manager instead of classifying each part")
    p.add_argument("--fault", action="store_true",
                   help="finish with a part whose sensor stops answering (expected INCONCLUSIVE)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per inspection")


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise ValueError(f"{out} exists, is not empty and is not a demo report folder: choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by cosarad demo; the next run replaces this folder\n")


def _wait(future, timeout: float, what: str):
    end = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} did not finish within {timeout:g} s")
        time.sleep(0.02)
    return future.result()


def run(args) -> int:
    try:
        import rclpy  # noqa: F401

        from cosarad_ros.action import InspectPart  # noqa: F401
    except ImportError as exc:
        print(f"cosarad demo needs ROS 2 (rclpy) and the built cosarad_ros interfaces ({exc}); "
              "run `make demo`, or source scripts/env.sh after `make setup`", file=sys.stderr)
        return 2
    from rclpy.action import ActionClient
    from rclpy.node import Node

    from cosarad_ros.action import InspectPart
    from cosarad_ros.core.geometry import matrix_to_pose
    from cosarad_ros.core.inspection.outcome import summary_table, write_results_json
    from cosarad_ros.core.inspection.production import make_cell_scenario
    from cosarad_ros.core.planning import CellModel
    from cosarad_ros.core.visualize import render_scored_cloud
    from cosarad_ros.msg import InspectionResult
    from cosarad_ros.ros import conversions as cv
    from cosarad_ros.ros.bag import BagWriter
    from cosarad_ros.ros.result_msgs import outcome_from_msg
    from cosarad_ros.ros.sim_cell import SimulatedCell
    from cosarad_ros.srv import LoadPart

    out = Path(args.out)
    _prepare_out(out)
    t_start = time.perf_counter()
    print(f"[demo] building the production run in {out / 'cell'}", flush=True)
    scenario = make_cell_scenario(out / "cell", families=args.families, defects=args.defects,
                                  good_per_type=args.good_per_type, seed=args.seed,
                                  progress=lambda m: print(f"[demo]   {m}", flush=True))
    p, q = matrix_to_pose(CellModel.default().part_pose())
    cell = SimulatedCell(scenario.cad_dir, part_pose=[*p, *q], seed=args.seed, method=args.method,
                         n_templates=args.templates, work_dir=out)
    bag = BagWriter(out / "inspection_results")
    outcomes = []
    recorded = threading.Semaphore(0)

    def save():
        compute = [o.extra["compute_seconds"] for o in outcomes if o.verdict != "INCONCLUSIVE"]
        write_results_json(out / "results.json", outcomes, seed=args.seed, method=args.method,
                           correct=sum(o.extra["correct"] for o in outcomes), total=len(outcomes),
                           median_compute_seconds=statistics.median(compute) if compute else None,
                           bag=str(out / "inspection_results"))

    queue: list = []
    interrupted = False
    try:
        driver = cell.add(Node("cell_demo", context=cell.context))
        # with the QoS the manager offers; each result written releases the wait below
        bag.record(driver, "/inspection/result", InspectionResult, then=lambda _m: recorded.release())
        action = ActionClient(driver, InspectPart, "/inspection_manager/inspect")
        load = driver.create_client(LoadPart, "/scanner_node/load_part")
        if not action.wait_for_server(timeout_sec=60) or not load.wait_for_service(timeout_sec=60):
            raise RuntimeError("the cell's nodes did not come up within 60 s")
        queue = list(scenario.parts)
        if args.fault:
            last = queue[-1]
            queue.append(type(last)(f"{last.part_id}-fault", last.part_type, last.mesh_path, None, "INCONCLUSIVE"))
        print(f"[demo] inspecting {len(queue)} parts of {len(scenario.part_types)} types "
              f"({'types given' if args.tell_type else 'classified from the scan'})", flush=True)
        for k, part in enumerate(queue, 1):
            resp = _wait(load.call_async(LoadPart.Request(mesh_path=part.mesh_path, part_id=part.part_id)),
                         60, "load_part")
            if not resp.success:
                raise RuntimeError(f"could not load {part.mesh_path}: {resp.message}")
            if part.expected == "INCONCLUSIVE":
                cell.scanner.sensor.unplug()  # the device stops answering mid-run
            goal = InspectPart.Goal(part_id=part.part_id, part_type=part.part_type if args.tell_type else "")
            t0 = time.perf_counter()
            handle = _wait(action.send_goal_async(goal), 30, "goal acceptance")
            if not handle.accepted:
                raise RuntimeError(f"the manager refused the goal for {part.part_id}")
            msg = _wait(handle.get_result_async(), args.timeout, f"inspection of {part.part_id}").result.result
            wall = time.perf_counter() - t0
            o = outcome_from_msg(msg)
            truth = part.defect
            near = None
            if truth and o.defects:
                c = np.asarray(truth["centre"])
                near = float(min(np.linalg.norm(np.asarray(d.centroid) - c) for d in o.defects))
            extra = {"expected": part.expected, "correct": o.verdict == part.expected, "true_type": part.part_type,
                     "injected_defect": truth, "nearest_defect_to_injected_m": near, "wall_seconds": wall,
                     "compute_seconds": float(sum(t.seconds for t in msg.timings if t.stage != "move"))}
            o = type(o)(**{**o.__dict__, "extra": extra})
            outcomes.append(o)
            recorded.acquire(timeout=5.0)  # the published result reaches the recording (latched: it arrives)
            bag.flush()
            save()
            if len(msg.scored_cloud.data):
                arr = cv.pointcloud2_to_array(msg.scored_cloud)
                pts = cv.pointcloud2_to_xyz(msg.scored_cloud, skip_nans=False)
                boxes = [(np.asarray(d.centroid), np.asarray(d.extent)) for d in o.defects]
                render_scored_cloud(out / "pictures" / f"{part.part_id}.png", pts, arr["anomaly_score"],
                                    threshold=o.threshold, boxes=boxes,
                                    title=f"{part.part_id} {o.part_type}: {o.verdict}"
                                          f"{' (' + truth['type'] + ')' if truth else ''}")
            mark = "ok" if o.verdict == part.expected else f"expected {part.expected}"
            print(f"[demo] {k}/{len(queue)} {part.part_id} {o.part_type or '?':<15} {o.verdict:<13} "
                  f"score {o.object_score:7.3f} / {o.threshold:6.3f}  defects {len(o.defects)}  "
                  f"{wall:6.1f} s  {mark}  {o.reason}", flush=True)
            if part.expected == "INCONCLUSIVE":
                cell.scanner.sensor.plug_in()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        try:
            bag.close()
            if not interrupted:
                cell.close()
        finally:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        save()
        print(f"cosarad demo: interrupted after {len(outcomes)} of {len(queue) or '?'} inspections; "
              f"{out / 'results.json'} and the recording hold the finished ones", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # the nodes may be inside a long computation (template simulation, bank fitting) on executor
        # threads that neither stop nor survive their nodes being destroyed under them: everything
        # is saved, so the process ends here, nodes and all
        os._exit(130)
    compute = [o.extra["compute_seconds"] for o in outcomes if o.verdict != "INCONCLUSIVE"]
    correct = sum(o.extra["correct"] for o in outcomes)
    save()
    print()
    print(summary_table(outcomes))
    print()
    if compute:
        print(f"[demo] median compute time per inspection (excluding simulated motion): "
              f"{statistics.median(compute):.1f} s over {len(compute)} inspections")
    print(f"[demo] {correct}/{len(outcomes)} verdicts as expected; total {time.perf_counter() - t_start:.0f} s")
    print(f"[demo] report: {out / 'results.json'}, pictures in {out / 'pictures'}, "
          f"recording in {out / 'inspection_results'}")
    (out / "summary.txt").write_text(summary_table(outcomes) + "\n")
    if not compute:
        print("[demo] no inspection reached a verdict: the cell is not working", file=sys.stderr)
        return 1
    return 0
