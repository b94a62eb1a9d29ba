"""cad_classifier_node over real DDS: classify, register a model at run time, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from cosarad_ros.core.cad import CadLibrary  # noqa: E402
from cosarad_ros.core.cad.evaluation import multi_view_scan, write_catalogue  # noqa: E402
from cosarad_ros.core.data.parts import part_catalogue  # noqa: E402
from cosarad_ros.ros import conversions as cv  # noqa: E402
from cosarad_ros.ros.cad_classifier_node import CadClassifierNode  # noqa: E402
from cosarad_ros.srv import ClassifyPart, RegisterCadModel  # noqa: E402
from ros_utils import RosHarness  # noqa: E402

pytestmark = pytest.mark.ros
CLASSIFY = "/cad_classifier_node/classify"
REGISTER = "/cad_classifier_node/register_cad_model"


def _req(points):
    return ClassifyPart.Request(cloud=cv.xyz_to_pointcloud2(np.asarray(points, np.float32), frame_id="part"))


def test_classify_register_and_errors(tmp_path):
    parts = part_catalogue(8, seed=3)
    lib_dir, spare_dir = tmp_path / "lib", tmp_path / "spare"
    write_catalogue(lib_dir, parts[:6])
    write_catalogue(spare_dir, parts[6:])        # not yet in the library
    rng = np.random.default_rng(0)
    known, newcomer = parts[1], parts[7]
    scan_known, _, _ = multi_view_scan(known.mesh, rng, points_per_view=4000)
    scan_new, _, _ = multi_view_scan(newcomer.mesh, rng, points_per_view=4000)

    with RosHarness() as ros:
        node = ros.add(CadClassifierNode(**ros.node_kwargs(library_dir=str(lib_dir), quality_points=5000)))
        r = ros.call(ClassifyPart, CLASSIFY, _req(scan_known), timeout=120)
        assert r.success, r.message
        assert r.label == known.name and r.score > 90
        assert r.candidates[0].label == known.name and r.candidates[0].registration_rmse < 1e-4
        # the pose of the scan on the chosen model, to seed the inspection's registration
        assert r.reference_label == known.name and r.fitness > 0.99 and 0 < r.rmse < 1e-4
        T = np.asarray(r.transform, dtype=np.float64).reshape(4, 4)
        on_model = scan_known @ T[:3, :3].T + T[:3, 3]
        assert np.median(CadLibrary(lib_dir).get(known.name).distance(on_model)) < 1e-4
        assert 0.0 < r.quality.completeness < 1.0 and r.quality.grade in "ABCDEF"
        assert r.quality.total == pytest.approx(0.1 * r.quality.accuracy + 0.3 * r.quality.consistency
                                                + 0.2 * r.quality.completeness + 0.2 * r.quality.validity
                                                + 0.2 * r.quality.uniqueness, abs=1e-5)

        r = ros.call(ClassifyPart, CLASSIFY, _req(scan_new), timeout=120)
        assert r.success and r.label == "unknown" and r.message
        assert len(r.candidates) >= 1

        # register the new type through the service: the next call knows it
        meta = (spare_dir / f"{newcomer.name}.yaml").read_text()
        reg = ros.call(RegisterCadModel, REGISTER, RegisterCadModel.Request(
            mesh_path=str(spare_dir / f"{newcomer.name}.stl"), metadata_yaml=meta), timeout=60)
        assert reg.success, reg.message
        assert (lib_dir / f"{newcomer.name}.stl").is_file()
        r = ros.call(ClassifyPart, CLASSIFY, _req(scan_new), timeout=120)
        assert r.success and r.label == newcomer.name, r.message

        # duplicate label and unreadable file: clear refusals
        dup = ros.call(RegisterCadModel, REGISTER, RegisterCadModel.Request(
            mesh_path=str(spare_dir / f"{newcomer.name}.stl"), metadata_yaml=meta))
        assert not dup.success and "already exists" in dup.message
        bad = tmp_path / "bad.stl"
        bad.write_bytes(b"\x00\x01 not a mesh")
        r2 = ros.call(RegisterCadModel, REGISTER, RegisterCadModel.Request(mesh_path=str(bad)))
        assert not r2.success and "bad.stl" in r2.message
        r3 = ros.call(RegisterCadModel, REGISTER, RegisterCadModel.Request(mesh_path=str(tmp_path / "none.stl")))
        assert not r3.success and "not found" in r3.message

        # malformed clouds: no z field, too few points, all NaN
        no_z = PointCloud2(height=1, width=2, point_step=8, row_step=16, data=bytes(16),
                           fields=[PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
                                   PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1)])
        r = ros.call(ClassifyPart, CLASSIFY, ClassifyPart.Request(cloud=no_z))
        assert not r.success and "z" in r.message
        r = ros.call(ClassifyPart, CLASSIFY, _req(scan_known[:5]))
        assert not r.success and "at least" in r.message
        r = ros.call(ClassifyPart, CLASSIFY, _req(np.full((100, 3), np.nan)))
        assert not r.success and "0 finite points" in r.message
        assert node.error_count >= 5

        # still serving after the errors
        r = ros.call(ClassifyPart, CLASSIFY, _req(scan_known), timeout=120)
        assert r.success and r.label == known.name


def test_bad_library_parameter_is_refused(tmp_path):
    from cosarad_ros.ros.node_utils import ParameterError

    with RosHarness() as ros:
        with pytest.raises(ParameterError, match="dim_tolerance"):
            CadClassifierNode(**ros.node_kwargs(library_dir=str(tmp_path), dim_tolerance=-1.0))
        with pytest.raises(FileNotFoundError):
            CadClassifierNode(**ros.node_kwargs(library_dir=str(tmp_path / "missing"), create_library=False))
