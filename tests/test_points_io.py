"""Points CSV / GeoJSON round trips and clear errors on malformed files."""

import json

import numpy as np
import pytest

from napari_histoai.errors import JobError
from napari_histoai.io.points import (
    read_points,
    read_points_csv,
    read_points_geojson,
    write_points_csv,
    write_points_geojson,
)


def test_csv_round_trip_with_micrometres(tmp_path):
    yx = np.array([[1.5, 2.25], [100.0, 7.0]])
    p = write_points_csv(tmp_path / "p.csv", yx, ["epithelial", "fibroblast"], [0.9, 0.4], mpp=0.5)
    lines = p.read_text().splitlines()
    assert lines[0] == "y,x,class,score,y_um,x_um,mpp"  # the pixel size used is stated
    assert lines[1].split(",")[4:] == ["0.750", "1.125", "0.5"]
    t = read_points_csv(p)
    np.testing.assert_allclose(t.yx, yx)
    assert t.classes == ["epithelial", "fibroblast"]
    np.testing.assert_allclose(t.scores, [0.9, 0.4])


def test_geojson_is_qupath_style_and_round_trips(tmp_path):
    yx = np.array([[10.0, 20.0]])
    p = write_points_geojson(tmp_path / "p.geojson", yx, ["inflammatory"], [0.7])
    doc = json.loads(p.read_text())
    f = doc["features"][0]
    assert doc["type"] == "FeatureCollection"
    assert f["geometry"] == {"type": "Point", "coordinates": [20.0, 10.0]}  # x, y
    assert f["properties"]["classification"]["name"] == "inflammatory"
    assert len(f["properties"]["classification"]["color"]) == 3
    t = read_points(p)
    np.testing.assert_allclose(t.yx, yx)
    assert t.classes == ["inflammatory"]


@pytest.mark.parametrize("text,match", [
    ("a,b\n1,2\n", "header with 'y' and 'x'"),
    ("y,x,class\n1,2,epi\n3,oops,epi\n", "line 3"),
    ("y,x\n1,nan\n", "finite"),
])
def test_malformed_csv_gives_one_line(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(JobError, match=match) as e:
        read_points_csv(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["{not json", '{"type": "FeatureCollection", "features": [{"geometry": 3}]}', "[1]"])
def test_malformed_geojson_gives_one_line(tmp_path, text):
    p = tmp_path / "bad.geojson"
    p.write_text(text)
    with pytest.raises(JobError):
        read_points_geojson(p)


def test_real_crchisto_points_load(data_dir):
    t = read_points_csv(data_dir / "crchisto" / "train" / "points" / "img1.csv")
    assert len(t) == 29 and set(t.classes) <= {"epithelial", "inflammatory", "fibroblast", "others", "unlabeled"}
