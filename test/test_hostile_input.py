"""Hostile and broken input (the corpus of ``hostile_corpus.py``) against the ``cosarad`` command and
the real nodes over DDS.

* Every CLI case runs as its own process: one clear error line naming the problem, the expected
  exit code, no traceback, within its time and resident-memory bounds; files it must not touch
  are as they were.
* Every node case goes to the node running as a separate process (as ``ros2 run`` starts it): a
  refusal with a message naming the problem, answered within its bound; then the node is still
  alive, answers a good request, and its peak resident memory stays under 2 GB.
* The inspection manager notices a scanner that stops answering (and one killed mid-scan) within a
  bound tied to the scanner's earlier answers, not the 120 s ``service_timeout``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hostile_corpus import CLI_CASES, MAX_RSS_MB, box_points, cloud_msg, node_cases, resolve_models, write_node_inputs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
UNPRIVILEGED = os.geteuid() == 0  # root ignores file permissions: such cases run without that privilege
#: a node process of root without the capabilities that bypass file permissions
DROP_CAPS = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
             "--inh-caps=-dac_override,-dac_read_search"] if UNPRIVILEGED and shutil.which("setpriv") else []


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _report(name: str, seconds: float, rss_mb: float, outcome) -> None:
    """Append one line per case to ``$COSARAD_CORPUS_REPORT`` when set (figures for the docs)."""
    path = os.environ.get("COSARAD_CORPUS_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"case": name, "seconds": round(seconds, 2), "rss_mb": round(rss_mb),
                                 "outcome": outcome}) + "\n")


@pytest.fixture(scope="module")
def corpus_root():
    d = Path(tempfile.mkdtemp(prefix="cosarad_hostile_"))
    d.chmod(0o755)  # readable by the unprivileged cases
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runner():
    proc = subprocess.Popen([sys.executable, str(HERE / "hostile_corpus.py"), "--serve"], cwd=ROOT, env=_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline() or "{}").get("ready"), "the corpus runner did not start"

    def run(job: dict) -> dict:
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, "the corpus runner died"
        return json.loads(line)

    yield run
    proc.stdin.close()
    proc.wait(timeout=10)


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: f"{c.category}-{c.name}")
def test_cli_case(case, runner, corpus_root):
    d = corpus_root / case.name
    d.mkdir()
    d.chmod(0o755)
    argv = resolve_models(case.make(d), d)
    res = runner({"argv": argv, "cwd": str(d), "stdout": str(d / "stdout.txt"), "stderr": str(d / "stderr.txt"),
                  "max_seconds": case.max_seconds, "max_rss_mb": case.max_rss_mb,
                  "unprivileged": case.unprivileged and UNPRIVILEGED})
    _report(f"cli/{case.category}/{case.name}", res["seconds"], res["max_rss_mb"], res["rc"])
    err = (d / "stderr.txt").read_text(errors="replace")
    what = f"{case.name}: cosarad {' '.join(map(str, argv))[:300]}\nstderr: {err[-2000:]}"
    assert not res["killed"], f"{res['killed']}; {what}"
    assert res["rc"] == case.rc, f"exit code {res['rc']}, expected {case.rc}; {what}"
    assert "Traceback" not in err, what
    if case.expect:
        lines = [ln for ln in err.splitlines() if ": error: " in ln]
        assert len(lines) == 1 and lines[0].startswith(f"cosarad {argv[0]}: error: "), what
        assert case.expect in lines[0], what
    assert res["seconds"] < case.max_seconds, f"{res['seconds']:.1f} s; {what}"
    assert res["max_rss_mb"] < case.max_rss_mb, f"{res['max_rss_mb']:.0f} MB; {what}"
    if case.check is not None:
        problem = case.check(d)
        assert problem is None, f"{problem}; {what}"


def test_cli_debug_prints_the_traceback(runner, corpus_root):
    d = corpus_root / "debug"
    d.mkdir()
    bad = d / "empty.pcd"
    bad.write_bytes(b"")
    res = runner({"argv": ["register", str(bad), str(bad), "--debug"], "cwd": str(d), "stdout": str(d / "o.txt"),
                  "stderr": str(d / "e.txt"), "max_seconds": 30, "max_rss_mb": MAX_RSS_MB})
    err = (d / "e.txt").read_text()
    assert res["rc"] == 2 and "Traceback" in err and "cosarad register: error: " in err, err


# ------------------------------------------------------------------------------------------------
# nodes
# ------------------------------------------------------------------------------------------------
NODES = {  # key -> module of cosarad_ros.ros
    "anomaly": "anomaly_node",
    "registration": "registration_node",
    "classifier": "cad_classifier_node",
    "planner": "viewpoint_planner_node",
    "scanner": "scanner_node",
}


def _ros_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_ros_value(x) for x in v) + "]"
    return str(v)


class NodeProcess:
    """One node as a separate process (source tree on the path), logging to a file."""

    def __init__(self, module: str, params: dict, log: Path, *, unprivileged: bool = False, env: dict,
                 namespace: str = ""):
        args = (DROP_CAPS if unprivileged else []) + [
            sys.executable, "-c", f"import sys; from cosarad_ros.ros.{module} import main; sys.exit(main())",
            "--ros-args"]
        for k, v in params.items():
            args += ["-p", f"{k}:={_ros_value(v)}"]
        if namespace:
            args += ["-r", f"__ns:={namespace}"]
        self.log = log
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._fh, stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            return next(int(ln.split()[1]) / 1024.0 for ln in fh if ln.startswith("VmHWM:"))

    def stop(self):
        if self.alive:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


@pytest.fixture(scope="module")
def cell(corpus_root):
    """The five service nodes, started together, plus a test client over DDS."""
    pytest.importorskip("rclpy")
    from ros_utils import RosHarness

    ctx = write_node_inputs(corpus_root / "nodes")
    shared = corpus_root / "nodes" / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    env = _env(ROS_LOG_DIR=shared, ROS_HOME=shared, HOME=shared)
    params = {
        "anomaly": {"template_dir": ctx["templates"], "cache_dir": shared / "banks", "default_part_type": "box",
                    "min_points": 200, "max_points": 20000},
        "registration": {"reference_dir": ctx["refs"], "attempts": 2, "max_points": 20000},
        "classifier": {"library_dir": ctx["library"], "quality_points": 2000, "compute_quality": False},
        "planner": {"n_candidates": 60, "n_samples": 600, "playback_speed": 0.0,
                    "coverage_dir": shared / "coverage"},
        "scanner": {"autostart": True},   # no lifecycle manager in the test: configure and activate at once
    }
    procs = {key: NodeProcess(NODES[key], params[key], corpus_root / "nodes" / f"{key}.log", env=env,
                              unprivileged=UNPRIVILEGED and key == "anomaly") for key in NODES}
    ros = RosHarness()
    try:
        yield ctx, procs, ros
    finally:
        ros.close()
        for p in procs.values():
            p.stop()


def _good_request(key: str, ctx: dict):
    from cosarad_ros.srv import ClassifyPart, DetectAnomalies, LoadPart, PlanViews, RegisterCloud

    if key == "anomaly":
        return DetectAnomalies, "/anomaly_node/detect", DetectAnomalies.Request(
            part_type="box", part_id="good", cloud=cloud_msg(ctx["scan"]))
    if key == "registration":
        req = RegisterCloud.Request(reference="box")
        req.source = cloud_msg(ctx["scan"])
        return RegisterCloud, "/registration_node/register", req
    if key == "classifier":
        return ClassifyPart, "/cad_classifier_node/classify", ClassifyPart.Request(cloud=cloud_msg(ctx["scan"]))
    if key == "planner":
        return PlanViews, "/viewpoint_planner_node/plan_views", PlanViews.Request(mesh_path=str(ctx["good_mesh"]))
    return LoadPart, "/scanner_node/load_part", LoadPart.Request(mesh_path=str(ctx["good_mesh"]), part_id="good")


_SERVICE_OF = {"DetectAnomalies": "/anomaly_node/detect", "RegisterCloud": "/registration_node/register",
               "ClassifyPart": "/cad_classifier_node/classify",
               "RegisterCadModel": "/cad_classifier_node/register_cad_model",
               "PlanViews": "/viewpoint_planner_node/plan_views", "LoadPart": "/scanner_node/load_part"}

NODE_CASES = [(key, case) for key in NODES for case in node_cases(key)]


@pytest.mark.ros
@pytest.mark.parametrize("key,case", NODE_CASES, ids=[f"{k}-{c.category}-{c.name}" for k, c in NODE_CASES])
def test_node_case(key, case, cell):
    ctx, procs, ros = cell
    node = procs[key]
    if case.name == "template-file-unreadable" and UNPRIVILEGED and not DROP_CAPS:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    srv_type, srv_name, good = _good_request(key, ctx)
    if not getattr(node, "warm", False):  # first request: the node has started and serves
        cli = ros.client.create_client(srv_type, srv_name)
        try:
            end = time.monotonic() + 120
            while not cli.wait_for_service(timeout_sec=0.5):
                assert node.alive, f"{key} did not start:\n{node.log.read_text(errors='replace')[-3000:]}"
                assert time.monotonic() < end, f"{key}: {srv_name} did not appear within 120 s"
        finally:
            ros.client.destroy_client(cli)
        r = ros.call(srv_type, srv_name, good, timeout=180)
        assert r.success, f"{key}: the good request failed before any bad one: {r.message}"
        node.warm = True
    msg = case.request(ctx)
    t0 = time.monotonic()
    if case.topic:
        from sensor_msgs.msg import PointCloud2

        from cosarad_ros.ros.node_utils import SENSOR_QOS

        size = node.log.stat().st_size
        pub = ros.client.create_publisher(PointCloud2, case.topic, SENSOR_QOS)
        try:
            ros.wait_until(lambda: pub.get_subscription_count() > 0, timeout=10, what="subscriber")
            pub.publish(msg)
            ros.wait_until(lambda: node.log.stat().st_size > size, timeout=case.max_seconds, what="a logged error")
        finally:
            ros.client.destroy_publisher(pub)
        time.sleep(0.3)
        logged = node.log.read_bytes()[size:].decode(errors="replace")
        assert "ERROR" in logged and (not case.expect or case.expect in logged), logged
    else:
        from cosarad_ros import srv as srvs

        name = type(msg).__name__.rsplit("_", 1)[0]
        r = ros.call(getattr(srvs, name), _SERVICE_OF[name], msg, timeout=case.max_seconds + 30)
        took = time.monotonic() - t0
        if case.verdict:
            verdict = r.result.verdict_text if r.success else ""
            assert verdict in case.verdict, f"{case.name}: success={r.success} {r.message!r} verdict {verdict!r} " \
                                            f"({r.result.reason if r.success else ''})"
        elif case.succeeds:
            assert r.success, f"{case.name}: {r.message}"
        else:
            assert not r.success, f"{case.name}: accepted ({r.message})"
            assert case.expect in r.message, f"{case.name}: {r.message!r} lacks {case.expect!r}"
        assert took < case.max_seconds, f"{case.name}: answered in {took:.1f} s (bound {case.max_seconds} s)"
        _report(f"node/{key}/{case.category}/{case.name}", took, node.peak_rss_mb(), r.message[:120])
    if case.check is not None:
        problem = case.check(ctx)
        assert problem is None, problem
    assert node.alive, f"{key} died on {case.name}; log:\n{node.log.read_text(errors='replace')[-3000:]}"
    r = ros.call(srv_type, srv_name, good, timeout=120)
    assert r.success, f"{key} no longer answers a good request after {case.name}: {r.message}"
    assert node.peak_rss_mb() < MAX_RSS_MB


@pytest.mark.ros
def test_classifier_registers_a_good_model_with_normal_permissions(cell):
    from cosarad_ros.srv import ClassifyPart, RegisterCadModel

    ctx, procs, ros = cell
    r = ros.call(RegisterCadModel, "/cad_classifier_node/register_cad_model",
                 RegisterCadModel.Request(mesh_path=str(ctx["spare"]), label="spare_box"), timeout=60)
    assert r.success, r.message
    lib = Path(ctx["library"])
    modes = {p.name: p.stat().st_mode & 0o777 for p in lib.iterdir() if p.stem == "spare_box"}
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes) == {"spare_box.stl", "spare_box.yaml"} and set(modes.values()) == {0o666 & ~umask}, modes
    scan = box_points(3000, size=(0.05, 0.035, 0.025), seed=5)
    r = ros.call(ClassifyPart, "/cad_classifier_node/classify", ClassifyPart.Request(cloud=cloud_msg(scan)), timeout=60)
    assert r.success and r.label == "spare_box", r.message


@pytest.mark.ros
def test_guard_turns_any_exception_into_an_answer():
    """The one guard, on a real node over DDS: a service callback raising anything answers
    success=false naming the service and the error; subscription and timer callbacks that raise
    are logged and counted; the node keeps serving.
    """
    pytest.importorskip("rclpy")
    from rclpy.node import Node
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from cosarad_ros.ros.node_utils import GuardedCallbacks
    from ros_utils import RosHarness

    class Probe(GuardedCallbacks, Node):
        def __init__(self, **kw):
            super().__init__("guard_probe", **kw)
            self.calls = 0
            self.create_service(Trigger, "~/poke", self._poke)
            self.texts = 0
            self.create_subscription(String, "~/text", self._text, 10)
            self.ticks = 0
            self.create_timer(0.05, self._tick)

        def _poke(self, req, resp):
            self.calls += 1
            if self.calls == 1:
                return {}[self.calls]          # KeyError: a bug, not bad input
            if self.calls == 2:
                return None                    # no response at all
            resp.success, resp.message = True, "fine"
            return resp

        def _text(self, msg):
            self.texts += 1
            int(msg.data)                      # ValueError for a bad message

        def _tick(self):
            self.ticks += 1
            if self.ticks == 1:
                raise RuntimeError("timer went wrong")

    with RosHarness() as ros:
        node = ros.add(Probe(context=ros.context))
        r = ros.call(Trigger, "/guard_probe/poke", Trigger.Request())
        assert not r.success and r.message.startswith("/guard_probe/poke failed: KeyError"), r.message
        r = ros.call(Trigger, "/guard_probe/poke", Trigger.Request())
        assert not r.success and "returned NoneType" in r.message, r.message
        pub = ros.client.create_publisher(String, "/guard_probe/text", 10)
        ros.wait_until(lambda: pub.get_subscription_count() > 0, what="subscriber")
        # published until received: the first message can go before the subscriber side has matched
        for _ in range(80):
            pub.publish(String(data="not a number"))
            time.sleep(0.25)
            if node.texts:
                break
        assert node.texts, "the bad message never arrived"
        ros.wait_until(lambda: node.ticks > 3, what="timer keeps running")
        assert node.error_count == 3 + node.texts  # service twice, timer once, each bad message
        r = ros.call(Trigger, "/guard_probe/poke", Trigger.Request())
        assert r.success and r.message == "fine"


def test_every_node_class_is_guarded():
    pytest.importorskip("rclpy")
    import importlib

    from cosarad_ros.ros.node_utils import GuardedCallbacks

    for module, cls in [("anomaly_node", "AnomalyNode"), ("registration_node", "RegistrationNode"),
                        ("cad_classifier_node", "CadClassifierNode"),
                        ("viewpoint_planner_node", "ViewpointPlannerNode"), ("scanner_node", "ScannerNode"),
                        ("inspection_manager", "InspectionManager")]:
        node_cls = getattr(importlib.import_module(f"cosarad_ros.ros.{module}"), cls)
        assert issubclass(node_cls, GuardedCallbacks), cls
        assert node_cls.__mro__.index(GuardedCallbacks) < [c.__name__ for c in node_cls.__mro__].index("Node"), cls


# ------------------------------------------------------------------------------------------------
# a node that stops answering
# ------------------------------------------------------------------------------------------------
@pytest.mark.ros
def test_manager_notices_a_scanner_that_stops_answering(corpus_root):
    """The scanner relays a topic; once it has answered, a scan that hangs (no cloud arrives) or
    whose scanner is killed mid-scan fails within max(min_service_timeout, factor x its longest
    answer) -- seconds, not the 120 s service_timeout.
    """
    pytest.importorskip("rclpy")
    from rclpy.node import Node
    from sensor_msgs.msg import PointCloud2

    from cosarad_ros.ros.inspection_manager import InspectionManager, StageError
    from cosarad_ros.ros.node_utils import SENSOR_QOS
    from ros_utils import RosHarness

    work = corpus_root / "manager"
    work.mkdir()
    scanner = NodeProcess("scanner_node", {"sensor_type": "topic", "topic.input": "/hostile/points",
                                           "topic.timeout": 90.0, "autostart": True}, work / "scanner.log",
                          env=_env(ROS_LOG_DIR=work), namespace="/stalled")
    cloud = cloud_msg(box_points(2000) + np.array([0.0, 0.0, 0.3]), frame_id="camera")
    try:
        with RosHarness() as ros:
            mgr = ros.add(InspectionManager(**ros.node_kwargs(min_service_timeout=3.0, timeout_factor=4.0,
                                                              wait_for_services=60.0,
                                                              scanner_ns="/stalled/scanner_node")))
            assert mgr.p.service_timeout == 120.0
            feeder = ros.add(Node("hostile_feeder", context=ros.context))
            pub = feeder.create_publisher(PointCloud2, "/hostile/points", SENSOR_QOS)
            feeding = threading.Event()
            feeding.set()
            timer = feeder.create_timer(0.1, lambda: feeding.is_set() and pub.publish(cloud))
            view = mgr.cell.scan(np.eye(4))  # answers: the scanner relays a cloud
            assert len(view.points) == 2000
            assert mgr.cell.answer_limit("/stalled/scanner_node/scan") == pytest.approx(3.0)
            feeding.clear()
            time.sleep(0.3)

            t0 = time.monotonic()  # 1. alive but silent: no cloud comes
            with pytest.raises(StageError, match="did not answer within 3 s"):
                mgr.cell.scan(np.eye(4))
            assert time.monotonic() - t0 < 6.0

            errors: list = []

            def scan():
                try:
                    mgr.cell.scan(np.eye(4))
                except StageError as exc:
                    errors.append((time.monotonic(), str(exc)))

            th = threading.Thread(target=scan)
            th.start()  # 2. killed while the scan is in flight
            time.sleep(1.0)
            scanner.proc.kill()
            t_kill = time.monotonic()
            th.join(timeout=30)
            assert errors, "the manager did not give up on a killed scanner"
            assert errors[0][0] - t_kill < 5.0, errors
            assert "scan" in errors[0][1], errors
            feeder.destroy_timer(timer)
    finally:
        scanner.stop()


# ------------------------------------------------------------------------------------------------
# Ctrl-C during the demo
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ros
def test_demo_ctrl_c_keeps_finished_inspections(corpus_root):
    """SIGINT while the demo inspects its second part (a good one: templates and plan are cached,
    the inspection itself takes seconds): out within seconds, exit 130, no traceback; results.json
    and the recording hold the first, finished part.
    """
    pytest.importorskip("rclpy")
    out = corpus_root / "demo"
    log = corpus_root / "demo.log"
    # a domain of its own: the corpus cell's nodes (same names) may still run in this process's domain
    domain = (int(os.environ.get("ROS_DOMAIN_ID", "0")) + 50) % 100 + 1
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "cosarad_ros", "demo", "--out", str(out), "--families",
                                 "bracket", "--defects", "hole", "--good-per-type", "1", "--tell-type"],
                                cwd=ROOT, env=_env(ROS_LOG_DIR=corpus_root, ROS_DOMAIN_ID=domain),
                                stdout=fh, stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + 400
            while b"[demo] 1/2" not in log.read_bytes():
                assert proc.poll() is None and time.monotonic() < end, log.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(0.5)  # the second inspection is under way
            proc.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            rc = proc.wait(timeout=30)
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text(errors="replace")
    assert rc == 130 and took < 10.0, (rc, took, text[-3000:])
    assert "Traceback" not in text, text[-3000:]
    doc = json.loads((out / "results.json").read_text())
    first = text.split("[demo] 1/2 ", 1)[1].split()[0]
    assert [p["part_id"] for p in doc["parts"]] == [first], doc
    assert "interrupted after 1 of 2 inspections" in text, text[-3000:]
    from mcap.reader import make_reader

    with open(out / "inspection_results" / "inspection_results_0.mcap", "rb") as fh:
        msgs = list(make_reader(fh).iter_messages())
    assert len(msgs) >= 1
