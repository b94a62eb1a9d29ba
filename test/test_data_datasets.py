"""Real3D-AD / Anomaly-ShapeNet layouts: write, detect, read back, GT transfer, bad folders."""
from __future__ import annotations

import numpy as np
import pytest

from cosarad_ros.core.data.datasets import (
    detect_layout,
    index_benchmark,
    read_benchmark,
    sample_stem,
    transfer_labels,
    write_template,
    write_test_sample,
)
from cosarad_ros.core.io import write_labelled_points, write_points


def _cloud(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(-20, 20, size=(n, 3))  # file units


def _write_layout(root, layout):
    data = {}
    for cls in ("gear", "shaft"):
        tmpl = [_cloud(300, k) for k in range(2)]
        for i, t in enumerate(tmpl):
            write_template(root, layout, cls, i, t)
        tests = []
        for j, kind in enumerate(["good", "bulge", "sink", "good", "crack"]):
            pts = _cloud(200, 10 + j)
            mask = np.zeros(200, bool) if kind == "good" else (np.arange(200) % 7 == 0)
            write_test_sample(root, layout, cls, j, kind, pts, mask)
            tests.append((sample_stem(layout, cls, j, kind), pts, mask, kind))
        data[cls] = (tmpl, tests)
    return data


@pytest.mark.parametrize("layout", ["real3d", "anomaly-shapenet"])
def test_written_layout_reads_back(tmp_path, layout):
    data = _write_layout(tmp_path, layout)
    assert detect_layout(tmp_path) == layout
    bench = read_benchmark(tmp_path)
    assert bench.layout == layout and set(bench.class_names) == {"gear", "shaft"}
    assert bench.units == ("mm" if layout == "real3d" else "normalised")
    assert bench.scale_to_metres == (1e-3 if layout == "real3d" else None)
    for cls, (tmpl, tests) in data.items():
        bc = bench[cls]
        assert len(bc.templates) == 2
        for got, want in zip(bc.templates, tmpl):
            np.testing.assert_array_equal(got, want.astype(np.float32).astype(np.float64))
        assert [t.name for t in bc.tests] == [t[0] for t in tests]
        for sample, (name, pts, mask, kind) in zip(bc.tests, tests):
            np.testing.assert_array_equal(sample.points, pts.astype(np.float32).astype(np.float64))
            np.testing.assert_array_equal(sample.mask, mask)
            assert sample.is_anomalous == (kind != "good")
            assert sample.gt_matched == sample.gt_total == len(pts)
        assert bc.n_good == 2 and bc.n_bad == 3
    names = {t.name for t in bench["gear"].tests}
    if layout == "real3d":
        assert {"0_good", "1_bulge", "2_sink"} <= names
        assert (tmp_path / "gear" / "gt" / "1_bulge.txt").read_text().split("\n")[0].count(" ") == 3
    else:
        assert {"gear_positive0", "gear_bulge1", "gear_concavity2"} <= names
        assert (tmp_path / "gear" / "GT" / "gear_bulge1.txt").read_text().split("\n")[0].count(",") == 3
        assert {t.defect_type for t in bench["gear"].tests} == {"good", "bulge", "concavity", "crack"}


def test_real3d_names_with_variants_and_foreign_gt(tmp_path):
    """Real3D-AD style files written by someone else: _cut / _copy variants, prototypes, GT
    points that do not coincide with the scan points.
    """
    cls = tmp_path / "duck"
    write_points(cls / "train" / "1_prototype.pcd", _cloud(100, 0), binary=False)
    pts = _cloud(500, 1)
    write_points(cls / "test" / "3_bulge_cut.pcd", pts)
    write_points(cls / "test" / "7_good_copy.pcd", _cloud(50, 2))
    rng = np.random.default_rng(5)
    gt_pts = pts + rng.normal(0, 0.01, size=pts.shape)  # jittered copies
    gt_lab = pts[:, 0] > 10
    keep = rng.random(len(pts)) > 0.1  # 10 % of the scan points have no GT
    write_labelled_points(cls / "gt" / "3_bulge_cut.txt", gt_pts[keep], gt_lab[keep])
    idx = index_benchmark(tmp_path, "real3d")
    c = idx.load_class("duck", gt_radius=0.1)
    s = {t.name: t for t in c.tests}
    bulge = s["3_bulge_cut"]
    assert bulge.defect_type == "bulge" and bulge.is_anomalous
    assert bulge.gt_total == keep.sum() and bulge.gt_matched == keep.sum()
    np.testing.assert_array_equal(bulge.mask[keep], gt_lab[keep])
    assert not bulge.mask[~keep].any()
    good = s["7_good_copy"]
    assert good.defect_type == "good" and not good.is_anomalous and good.gt_path is None
    assert not good.mask.any()
    assert c.template_paths[0].endswith("1_prototype.pcd")


def test_transfer_labels_radius():
    gt = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    lab = np.array([0, 1, 0])
    pts = np.array([[1.05, 0, 0], [0.9, 0, 0], [5.0, 0, 0], [1.6, 0, 0]])
    mask, matched = transfer_labels(pts, gt, lab, radius=0.2)
    np.testing.assert_array_equal(mask, [True, True, False, False])
    assert matched == 2
    mask, matched = transfer_labels(pts, gt, lab)  # default radius = 2 x spacing = 2
    np.testing.assert_array_equal(mask, [True, True, False, False])
    assert matched == 3
    with pytest.raises(ValueError, match="gt_labels"):
        transfer_labels(pts, gt, lab[:2])


def test_bad_benchmark_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        index_benchmark(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class folders"):
        index_benchmark(tmp_path, "real3d")
    _write_layout(tmp_path, "real3d")
    with pytest.raises(ValueError, match="unknown layout"):
        index_benchmark(tmp_path, "mvtec")
    # a defective sample without GT
    (tmp_path / "gear" / "gt" / "1_bulge.txt").unlink()
    idx = index_benchmark(tmp_path)
    with pytest.raises(ValueError, match="without a ground-truth"):
        idx.load_class("gear")
    assert not idx.load_class("gear", require_gt=False).tests[1].mask.any()
    # a corrupt scan file
    (tmp_path / "shaft" / "test" / "2_sink.pcd").write_bytes(b"VERSION 0.7\nFIELDS x y z\nDATA binary\n\x00")
    with pytest.raises(ValueError, match="2_sink.pcd"):
        idx.load_class("shaft")
    with pytest.raises(KeyError):
        idx.load_class("nope")
    with pytest.raises(ValueError, match="mask"):
        write_test_sample(tmp_path, "real3d", "gear", 9, "bulge", _cloud(10, 0), np.zeros(3, bool))
    with pytest.raises(ValueError, match="class name"):
        write_template(tmp_path, "real3d", "../evil", 0, _cloud(10, 0))
