"""The synthetic benchmark generator: read-back through the readers, masks vs geometry,
determinism, both layouts, the CLI.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import open3d as o3d
import pytest

from cosarad_ros.cli.main import main as cli_main
from cosarad_ros.core.data.datasets import index_benchmark, read_benchmark
from cosarad_ros.core.data.defects import refine_mesh_near
from cosarad_ros.core.data.synth import SynthConfig, generate_benchmark, synth_parts
from cosarad_ros.core.geometry import transform_points

SMALL = dict(n_classes=2, n_templates=2, n_tests=8, template_points=3000, test_points=3000, gallery=3)


@pytest.fixture(scope="module")
def real3d(tmp_path_factory):
    out = tmp_path_factory.mktemp("r3d")
    cfg = SynthConfig(layout="real3d", seed=5, **SMALL)
    res = generate_benchmark(out, cfg, progress=False)
    return out, cfg, res


def _scene(mesh):
    V, F = refine_mesh_near(mesh.vertices, mesh.faces, lambda x: np.full(len(x), -1.0), radius=0.0,
                            max_edge=2e-3)
    s = o3d.t.geometry.RaycastingScene()
    s.add_triangles(o3d.core.Tensor(V.astype(np.float32)), o3d.core.Tensor(F.astype(np.uint32)))
    return s


def test_benchmark_reads_back(real3d):
    out, cfg, res = real3d
    man = json.loads((out / "manifest.json").read_text())
    bench = read_benchmark(out)
    assert bench.layout == "real3d" and bench.units == "mm" and len(bench) == 2
    parts = synth_parts(cfg)
    assert {p.name for p in parts} == set(bench.class_names)
    assert sum(p.is_procedural for p in parts) == 1  # half procedural, half package meshes
    for name in bench.class_names:
        bc, entry = bench[name], man["classes"][name]
        assert len(bc.templates) == 2 and len(bc.tests) == 8 and bc.n_bad == 4
        assert all(len(t) == 3000 for t in bc.templates)
        for t, m in zip(bc.tests, entry["tests"]):
            assert t.path.endswith(m["file"]) and t.is_anomalous == m["is_anomalous"]
            assert t.n_anomalous == m["n_anomalous"] and t.gt_matched == len(t.points) == m["n_points"]
            if t.is_anomalous:
                assert t.n_anomalous >= cfg.min_visible and t.defect_type == m["defect_type"]
                assert set(m["defect"]) >= {"type", "centre", "size", "footprint"}
            else:
                assert t.n_anomalous == 0 and t.defect_type == "good"
    assert res.n_tests == 16 and res.n_defective == 8
    assert (out / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "classes.png").is_file()


def test_masks_match_geometry(real3d):
    """Back in the part frame: unmasked points lie on the good part (within noise), masked
    points of moved defects are off it, masked points of removal defects sit at the defect.
    """
    out, cfg, _ = real3d
    man = json.loads((out / "manifest.json").read_text())
    bench = read_benchmark(out)
    noise_bound = cfg.min_shift + 6 * cfg.noise
    for part in synth_parts(cfg):
        scene = _scene(part.mesh)
        for t, m in zip(bench[part.name].tests, man["classes"][part.name]["tests"]):
            T = np.asarray(m["pose"]).reshape(4, 4)
            pts = transform_points(np.linalg.inv(T), t.points * 1e-3)  # mm -> m, part frame
            d = scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()
            assert np.quantile(d[~t.mask], 0.999) < noise_bound, (part.name, t.name)
            if not t.is_anomalous:
                continue
            rec = m["defect_part_frame_m"]
            if t.defect_type in ("bulge", "sink", "scratch", "bend"):
                assert np.mean(d[t.mask] > 3 * cfg.noise) > 0.3, (part.name, t.name)
            else:
                r = np.linalg.norm(pts[t.mask] - np.asarray(rec["centre"]), axis=1)
                assert r.max() < rec["footprint"] / 2 + 0.5 * max(rec["size"].values()) + 2e-3, t.name


def test_same_seed_same_files(tmp_path):
    cfg = SynthConfig(n_classes=2, n_templates=1, n_tests=3, template_points=1500, test_points=1500,
                      gallery=0, seed=11)
    a, b = tmp_path / "a", tmp_path / "b"
    generate_benchmark(a, cfg, progress=False)
    generate_benchmark(b, SynthConfig(**{**cfg.__dict__, "workers": 2}), progress=False)  # in parallel

    def digest(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    da, db = digest(a), digest(b)
    assert da == db and len(da) == 2 * (1 + 3 * 2) + 1
    generate_benchmark(b, SynthConfig(**{**cfg.__dict__, "seed": 12, "n_tests": 2}), progress=False)
    dc = digest(b)  # rewritten in place: the earlier benchmark's files are gone, not mixed in
    assert len(dc) == 2 * (1 + 2 * 2) + 1
    assert any(da.get(k) != dc[k] for k in dc if k.endswith(".pcd"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate_benchmark(tmp_path / "other", cfg, progress=False)


def test_anomaly_shapenet_layout(tmp_path):
    cfg = SynthConfig(layout="anomaly-shapenet", n_classes=2, n_templates=1, n_tests=4,
                      template_points=2000, test_points=2000, gallery=0, seed=2,
                      defect_types=("hole_diameter", "sink", "crack"))
    generate_benchmark(tmp_path, cfg, progress=False)
    idx = index_benchmark(tmp_path)
    assert idx.layout == "anomaly-shapenet" and idx.units == "normalised"
    man = json.loads((tmp_path / "manifest.json").read_text())
    for part in synth_parts(cfg):
        c = idx.load_class(part.name)
        assert c.scale_to_metres == pytest.approx(float(np.max(part.extents)), rel=1e-6)
        # normalised units: the part's longest side is 1
        pts = c.templates[0]
        assert 0.95 < np.linalg.norm(pts.max(0) - pts.min(0)) / np.linalg.norm(part.extents / part.extents.max()) < 1.6
        names = [t.name for t in c.tests]
        assert all(n.startswith(part.name + "_") for n in names)
        kinds = {m["defect_type"] for m in man["classes"][part.name]["tests"]}
        if not part.is_procedural:
            assert "hole_diameter" not in kinds  # CAD deviations only on procedural parts
        assert any("positive" in n for n in names)
        assert all(t.n_anomalous > 0 for t in c.tests if t.is_anomalous)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(["synth", "--out", str(out), "--classes", "2", "--templates", "1", "--tests", "2",
                   "--points", "1500", "--template-points", "1500", "--gallery", "0", "--quiet"])
    assert rc == 0
    assert "wrote 2 classes" in capsys.readouterr().out
    assert (out / "manifest.json").is_file()
    rc = cli_main(["synth", "--out", str(tmp_path / "bad"), "--defects", "rust", "--quiet"])
    assert rc == 2
    assert "unknown defect type 'rust'" in capsys.readouterr().err
