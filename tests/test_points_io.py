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


QUPATH_04 = {"type": "FeatureCollection", "features": [
    # the Points tool: a MultiPoint annotation of one class
    {"type": "Feature", "id": "4f6e", "geometry": {"type": "MultiPoint", "coordinates": [[10.5, 20.25], [30, 40]]},
     "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]},
                    "isLocked": False}},
    # a cell: polygon outline, skipped by the points reader
    {"type": "Feature", "id": "77aa", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 5], [5, 5], [0, 0]]]},
     "nucleusGeometry": {"type": "Polygon", "coordinates": [[[1, 1], [1, 2], [2, 2], [1, 1]]]},
     "properties": {"objectType": "cell", "classification": {"name": "Immune cells", "color": [160, 90, 160]},
                    "measurements": {"Nucleus: Area": 30.2}}},
    # a detection with QuPath 0.2-style list measurements and a colorRGB classification
    {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 6, 0]},
     "properties": {"objectType": "detection", "classification": {"name": "Stroma", "colorRGB": -6895466},
                    "measurements": [{"name": "Area", "value": 12.0}, {"name": "score", "value": 0.8}]}},
    # no class, no measurements, a null geometry (skipped)
    {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": None},
    {"type": "Feature", "geometry": None, "properties": {"classification": {"name": "Tumor"}}},
]}

# QuPath 0.2: a bare list, object type in the id, classification as a string in old scripts
QUPATH_02 = [
    {"type": "Feature", "id": "PathDetectionObject", "geometry": {"type": "Point", "coordinates": [7, 8]},
     "properties": {"classification": "Other", "isLocked": False, "measurements": []}},
    {"type": "Feature", "id": "PathAnnotationObject", "geometry": {"type": "MultiPoint", "coordinates": []},
     "properties": []},
]


def test_qupath_exports_read(tmp_path):
    p = tmp_path / "q.geojson"
    p.write_text(json.dumps(QUPATH_04))
    t = read_points_geojson(p)
    np.testing.assert_allclose(t.yx, [[20.25, 10.5], [40, 30], [6, 5], [2, 1]])
    assert t.classes == ["Tumor", "Tumor", "Stroma", "nucleus"]
    np.testing.assert_allclose(t.scores, [1, 1, 0.8, 1])
    p.write_text(json.dumps(QUPATH_02))
    t = read_points_geojson(p)
    assert t.classes == ["Other"] and t.yx.tolist() == [[8, 7]] and t.scores.tolist() == [1.0]


def test_geojson_round_trip_is_exact(tmp_path):
    yx = np.array([[10.25, 20.5], [0.0, 3.75], [1e6, 2e6]])
    classes, scores = ["epithelial", "fibroblast", "epithelial"], np.array([0.125, 1.0, 0.5])
    t = read_points_geojson(write_points_geojson(tmp_path / "p.geojson", yx, classes, scores, mpp=0.5, model="m"))
    assert t.yx.tolist() == yx.tolist() and t.classes == classes and t.scores.tolist() == scores.tolist()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_non_finite_points_are_refused_by_both_codecs(tmp_path, value):
    csv = tmp_path / "p.csv"
    csv.write_text(f"y,x,score\n1,2,0.5\n{value},2,0.5\n")
    gj = tmp_path / "p.geojson"
    js = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "1e400": "1e400"}[value]
    gj.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
                  f'{{"type": "Point", "coordinates": [{js}, 1]}}, "properties": {{}}}}]}}')
    for read, p in ((read_points_csv, csv), (read_points_geojson, gj)):
        with pytest.raises(JobError, match="finite") as e:
            read(p)
        assert "\n" not in str(e.value)
