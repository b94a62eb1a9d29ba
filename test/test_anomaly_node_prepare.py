"""The anomaly node prepares part types at start-up (real rclpy node): banks fitted and hole
allowances measured in the background, so a part type's first detection does no preparation;
bad ``prepare_part_types`` values are refused at start, naming the parameter.
"""
from __future__ import annotations

import pytest

from cosarad_ros.cli.main import main
from cosarad_ros.core.cad import CadLibrary
from ros_utils import RosHarness


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = tmp_path_factory.mktemp("prep") / "lib"
    assert main(["cad", "catalogue", "--library", str(lib), "--types", "1", "--seed", "5"]) == 0
    return lib


def test_part_types_are_prepared_in_the_background_at_start(library, tmp_path):
    from cosarad_ros.ros.anomaly_node import AnomalyNode

    label = CadLibrary(library).labels[0]
    cache = tmp_path / "banks"
    with RosHarness() as ros:
        node = ros.add(AnomalyNode(**ros.node_kwargs(cad_library=str(library), cache_dir=str(cache),
                                                     prepare_part_types=["all"])))
        assert node.preparation is not None
        node.preparation.join(timeout=300)
        assert not node.preparation.is_alive()
        assert node.prepared == [label]
        assert node.inspector.detector.has_part(label)
        assert len(list(cache.glob("plan_*.npz"))) == 1 and len(list(cache.glob("templates_*.npz"))) == 1
        model = CadLibrary(library).get(label)
        if model.holes:
            assert label in node.inspector._hole_allowances
        # the first detection of the prepared type does no preparation: it never asks for templates
        src = node.inspector.sources[0]
        pts = src.templates(label)[0]

        class NoTemplates:
            def has(self, t):
                return src.has(t)

            def mesh(self, t):
                return src.mesh(t)

            def model(self, t):
                return src.model(t)

            def templates(self, t):
                raise AssertionError(f"templates of {t} asked for after preparation")

        node.inspector.sources[0] = NoTemplates()
        first = node.detect(pts, label, "p1")
        assert first.verdict_text == "PASS", first.reason


def test_a_type_that_cannot_be_prepared_is_logged_and_the_node_runs_on(library, tmp_path):
    from cosarad_ros.ros.anomaly_node import AnomalyNode

    label = CadLibrary(library).labels[0]
    with RosHarness() as ros:
        node = ros.add(AnomalyNode(**ros.node_kwargs(cad_library=str(library), cache_dir=str(tmp_path / "b"),
                                                     prepare_part_types=["not_in_library", label])))
        node.preparation.join(timeout=300)
        assert node.prepared == [label]
        assert node.get_parameter("prepare_part_types").value == ["not_in_library", label]


def test_bad_prepare_part_types_are_refused_naming_the_parameter(library, tmp_path):
    from cosarad_ros.ros.anomaly_node import AnomalyNode
    from cosarad_ros.ros.node_utils import ParameterError

    with RosHarness() as ros:
        with pytest.raises(ParameterError, match="prepare_part_types"):
            AnomalyNode(**ros.node_kwargs(cad_library=str(library), cache_dir=str(tmp_path / "b"),
                                          prepare_part_types=["../etc"]))
        with pytest.raises(ParameterError, match="prepare_part_types.*cad_library"):
            AnomalyNode(**ros.node_kwargs(cache_dir=str(tmp_path / "b"), prepare_part_types=["all"]))
