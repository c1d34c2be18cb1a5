import numpy as np
import pytest

from jaxinterp import data


def test_read_ts_parses_channels_labels_and_missing_values(tmp_path):
    path = tmp_path / "toy.ts"
    path.write_text("# comment\n@problemName toy\n@classLabel true up down\n@data\n1,2,3:4,5,6:up\n7,?,9:1,1,1:down\n")
    series, labels, classes = data.read_ts(path)
    assert series.shape == (2, 2, 3) and classes == ("up", "down")
    np.testing.assert_array_equal(labels, [0, 1])
    assert np.isnan(series[1, 0, 1]) and series[0, 1, 2] == 6.0


@pytest.mark.parametrize(
    "body, message",
    [("1,2:3:up\n", "unequal length"), ("1,2:3,4:sideways\n", "not one of"), ("1,2:up\n1,2:3,4:up\n", "shape")],
)
def test_read_ts_rejects_malformed_cases(tmp_path, body, message):
    path = tmp_path / "bad.ts"
    path.write_text("@classLabel true up down\n@data\n" + body)
    with pytest.raises(ValueError, match=message):
        data.read_ts(path)


def test_uea_problems_load_from_their_packages():
    series, labels, classes = data.uea("basic-motions", "test")
    assert series.shape == (40, 6, 100) and len(classes) == 4
    np.testing.assert_array_equal(np.bincount(labels), [10, 10, 10, 10])
    with pytest.raises(ValueError, match="unknown UEA problem"):
        data.uea("basic_motion")


def test_fields_data():
    points = data.pixel_grid(2, 3)
    assert points.shape == (6, 2) and np.allclose(points[1], [0.25, 0.5])
    assert data.sample_image("camera", 16).shape == (16, 16, 1)
    assert data.sample_image("astronaut", 8).shape == (8, 8, 3)
    on_tube = np.array([[0.8, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.9, 0.6]])
    np.testing.assert_allclose(data.torus_distance(on_tube), [-0.1, 0.2, np.sqrt(0.1**2 + 0.1**2) - 0.1], atol=1e-6)
