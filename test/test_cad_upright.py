"""A part as tall as it is wide, classified from a fused survey of the cell: the pose must keep it
upright (its top where the views saw it), not turned over about a horizontal axis.
"""
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data" / "sh1_survey_scan.npz"


@pytest.fixture(scope="module")
def sh1_library(tmp_path_factory):
    from cosarad_ros.core.cad import CadLibrary
    from cosarad_ros.core.cad.evaluation import write_catalogue
    from cosarad_ros.core.inspection.production import make_part_type

    try:
        part = make_part_type("sh1", seed=0, label="sh1_7")
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"the sh1 mesh of Debian's occt-misc is not installed: {exc}")
    folder = tmp_path_factory.mktemp("sh1_lib")
    write_catalogue(folder, [part])
    return CadLibrary(folder)


def test_a_tube_as_tall_as_it_is_wide_is_classified_upright(sh1_library):
    """The recorded survey (top ring and sides of the 81 x 90 x 90 mm ``sh1`` housing, part
    frame, 15000 points) fits the model turned over about a horizontal axis almost as well as
    upright; ranked by residual alone the round-part spin search picked the turned pose, which
    covers 9 % of the surface seen from above, and the part was left unconfirmed.
    """
    from cosarad_ros.core.cad.classifier import CadClassifier

    scan = np.load(DATA)["points_10um"] / 1e5
    res = CadClassifier(sh1_library).classify(scan, prior=np.eye(4))
    assert res.label == "sh1_7", res.reason
    T = np.asarray(res.transform)
    assert T[2, 2] > 0.99 and abs(T[2, 3]) < 0.002, T
