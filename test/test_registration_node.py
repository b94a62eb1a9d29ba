"""registration_node over real DDS: register against a named reference file, against a target in
the request, with scale; malformed and unknown requests get clear errors and the node keeps
serving.
"""
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from cosarad_ros.core.io import sample_mesh, write_points  # noqa: E402
from cosarad_ros.core.registration.trials import make_trial, pose_error  # noqa: E402
from cosarad_ros.ros import conversions as cv  # noqa: E402
from cosarad_ros.ros.node_utils import RELIABLE_QOS  # noqa: E402
from cosarad_ros.ros.registration_node import RegistrationNode  # noqa: E402
from cosarad_ros.srv import RegisterCloud  # noqa: E402
from ros_utils import RosHarness  # noqa: E402

pytestmark = pytest.mark.ros
SRV = "/registration_node/register"


@pytest.fixture(scope="module")
def duck(tmp_path_factory):
    from cosarad_ros.core.data.package_meshes import load_package_mesh

    folder = tmp_path_factory.mktemp("reg_node")
    mesh = load_package_mesh("duck", size=0.07).mesh
    dense, _ = sample_mesh(mesh, 16000, seed=1)
    ref, _ = sample_mesh(mesh, 8000, seed=2)
    ref_file = write_points(folder / "duck_ref.pcd", ref, dtype="float64")
    stl = folder / "duck.stl"
    mesh.export(stl)
    return folder, dense, ref, ref_file, stl


def _request(points, *, target=None, reference="", allow_scale=False):
    req = RegisterCloud.Request(reference=reference, allow_scale=allow_scale)
    req.source = cv.xyz_to_pointcloud2(points.astype(np.float32), frame_id="sensor_optical_frame")
    if target is not None:
        req.target = cv.xyz_to_pointcloud2(target.astype(np.float32), frame_id="part")
    return req


def test_register_service_references_and_errors(duck):
    folder, dense, ref, ref_file, stl = duck
    rng = np.random.default_rng(5)
    trial = make_trial(dense, ref, rng, noise=5e-5)
    with RosHarness() as ros:
        node = ros.add(RegistrationNode(**ros.node_kwargs(references=[f"duck={ref_file}"], reference_dir=str(folder))))
        aligned_msgs = ros.collect(PointCloud2, "/registration_node/aligned", RELIABLE_QOS)

        # 1. named reference from the 'references' parameter
        r = ros.call(RegisterCloud, SRV, _request(trial.source, reference="duck"), timeout=120)
        assert r.success, r.message
        T = np.array(r.transform).reshape(4, 4)
        err, ang = pose_error(T, trial.transform, trial.source.astype(np.float32).astype(np.float64))
        assert err < 1e-3 and ang < 0.5
        assert r.scale == 1.0 and r.fitness > 0.9 and 0 < r.chamfer < 1e-3 and r.attempts >= 1
        aligned = cv.pointcloud2_to_xyz(r.aligned).astype(np.float64)
        assert aligned.shape == trial.source.shape and r.aligned.header.frame_id == "part"
        ros.wait_until(lambda: len(aligned_msgs) >= 1, what="aligned cloud published")

        # 2. malformed cloud: data shorter than width * point_step -> clear error, node alive
        bad = PointCloud2(height=1, width=100, point_step=12, row_step=1200, is_dense=True,
                          fields=[PointField(name=c, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                                  for i, c in enumerate("xyz")])
        bad.data = bytes(120)
        req = RegisterCloud.Request(reference="duck")
        req.source = bad
        r = ros.call(RegisterCloud, SRV, req)
        assert not r.success and r.message.startswith("bad request:")
        # a cloud without z
        noz = cv.xyz_to_pointcloud2(trial.source.astype(np.float32), frame_id="x")
        noz.fields = [f for f in noz.fields if f.name != "z"]
        req.source = noz
        r = ros.call(RegisterCloud, SRV, req)
        assert not r.success and "z" in r.message
        # unknown reference, no reference at all, too few points
        r = ros.call(RegisterCloud, SRV, _request(trial.source, reference="nope"))
        assert not r.success and "unknown reference 'nope'" in r.message
        r = ros.call(RegisterCloud, SRV, _request(trial.source))
        assert not r.success and "no reference name" in r.message
        r = ros.call(RegisterCloud, SRV, _request(trial.source[:5], reference="duck"))
        assert not r.success and "need at least 10" in r.message
        assert node.error_count == 5

        # 3. still serving: target cloud in the request, and a mesh found in reference_dir
        r = ros.call(RegisterCloud, SRV, _request(trial.source, target=ref), timeout=120)
        assert r.success, r.message
        r = ros.call(RegisterCloud, SRV, _request(trial.source, reference="duck"), timeout=120)
        assert r.success
        bunny_points = sample_mesh(__import__("cosarad_ros.core.data.package_meshes", fromlist=["x"])
                                   .load_package_mesh("bunny", size=0.07).mesh, 4000, seed=3)[0]
        r = ros.call(RegisterCloud, SRV, _request(bunny_points, reference="duck"), timeout=120)
        assert not r.success and r.message  # a different part is reported, not aligned


def test_register_service_scale_and_mesh_reference(duck):
    folder, dense, ref, ref_file, stl = duck
    rng = np.random.default_rng(6)
    trial = make_trial(dense, ref, rng, noise=5e-5, scale=1.03)
    with RosHarness() as ros:
        ros.add(RegistrationNode(**ros.node_kwargs(reference_dir=str(folder), default_reference="duck",
                                                   reference_points=12000)))
        r = ros.call(RegisterCloud, SRV, _request(trial.source, allow_scale=True), timeout=180)
        assert r.success, r.message
        assert abs(r.scale / 1.03 - 1.0) < 0.002
        T = np.array(r.transform).reshape(4, 4)
        err, ang = pose_error(T, trial.transform, trial.source.astype(np.float32).astype(np.float64))
        assert err < 1e-3 and ang < 0.5


def test_bad_parameters_are_refused():
    from cosarad_ros.ros.node_utils import ParameterError

    with RosHarness() as ros:
        with pytest.raises(ParameterError, match="min_fitness"):
            RegistrationNode(**ros.node_kwargs(min_fitness=1.5))
        with pytest.raises(ParameterError, match="references"):
            RegistrationNode(**ros.node_kwargs(references=["no_equals_sign"]))
        with pytest.raises(ParameterError, match="global_method"):
            RegistrationNode(**ros.node_kwargs(global_method="magic"))
