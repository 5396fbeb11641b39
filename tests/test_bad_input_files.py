"""Malformed project, GeoJSON, points and model files, as an adversarial user makes them: each
gives ONE clear line (a JobError with a one-line message; through the CLI, exit code 2 and one
line on stderr), never a traceback, and nothing is lost (the files stay as they were).
Bad arguments and outputs: test_bad_input.py."""

import json
import shutil

import numpy as np
import pytest
import tifffile

import napari_histoai.methods.detection.finetune.job  # noqa: F401 - imported once, not in a timed test
import napari_histoai.methods.detection.predict  # noqa: F401
import napari_histoai.tasks  # noqa: F401
from napari_histoai.bundled import resources_dir
from napari_histoai.cli import main
from napari_histoai.errors import JobError
from napari_histoai.io.points import read_points_csv, read_points_geojson
from napari_histoai.methods.contrastive import KIND as SEGMENTER
from napari_histoai.methods.contrastive import ContrastiveConfig, load_model
from napari_histoai.methods.contrastive.network import build
from napari_histoai.methods.detection.registry import load_detector
from napari_histoai.models import save_checkpoint
from napari_histoai.project import NO_TARGET, REVIEWED, Project, ProjectPoints


def one_line(fn, *args, match: str) -> str:
    """``fn(*args)`` raises a JobError whose one-line message matches ``match``."""
    with pytest.raises(JobError, match=match) as e:
        fn(*args)
    assert str(e.value) and "\n" not in str(e.value)
    return str(e.value)


def feature(geom, props=None, **extra) -> dict:
    return {"type": "Feature", "geometry": geom, "properties": props, **extra}


def fc(*features) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


def point(*xy) -> dict:
    return {"type": "Point", "coordinates": list(xy)}


SQUARE = [[0, 0], [50, 0], [50, 40], [0, 40], [0, 0]]  # x, y, closed
REVIEWED_PROPS = {"objectType": "annotation", "classification": {"name": "Reviewed", "color": [40, 200, 80]}}


def polygon(coords, props=REVIEWED_PROPS) -> dict:
    return feature({"type": "Polygon", "coordinates": coords}, props)


DEEP = "[" * 100_000 + "]" * 100_000

# text or bytes of a GeoJSON file -> what the one line says (shared by points and regions)
BAD_DOCUMENTS = [
    ("null", "the file holds null"), ("3", "the file holds a number"), ('"features"', "the file holds a string"),
    ("[1]", "feature 0 is a number"), ('{"type": "FeatureCollection", "features": null}', "'features' is null"),
    ('{"type": "FeatureCollection", "features": {"a": 1}}', "'features' is an object"),
    ('{"type": "FeatureCollection"}', "'features' is missing"), ("{not json", "not valid JSON"),
    (DEEP, "nested too deeply"), (b'{"features": ["\xff\xfe"]}', "not UTF-8"), ('["a"]', "feature 0 is a string"),
    (fc(feature("Point")), "geometry must be an object"), (fc(feature(point(1, 2), [1, 2])), "properties must be an object"),
]


def _write(path, content):
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


# ---------------------------------------------------------------------------------- GeoJSON points
@pytest.mark.parametrize("content,match", BAD_DOCUMENTS + [
    (fc(feature(point(1, 2), {"classification": {"name": ["Tumor"]}})), "class name must be a string, got a list"),
    (fc(feature(point(1, 2), {"classification": 5})), "class name must be a string"),
    (fc(feature({"type": "Point", "coordinates": "1,2"})), "a position must be"),
    (fc(feature(point(1))), "a position must be"),
    (fc(feature(point("1", "2"))), "finite numbers"),
    (fc(feature(point(True, 2))), "finite numbers"),
    (fc(feature({"type": "Point"})), "Point without coordinates"),
    (fc(feature({"type": "MultiPoint", "coordinates": 5})), "MultiPoint coordinates must be a list"),
    (fc(feature({"type": "MultiPoint", "coordinates": [[1, 2], None]})), "a position must be"),
    ('{"features": [{"geometry": {"type": "Point", "coordinates": [NaN, 1]}}]}', "finite"),
    ('{"features": [{"geometry": {"type": "Point", "coordinates": [1, -Infinity]}}]}', "finite"),
    ('{"features": [{"geometry": {"type": "Point", "coordinates": [1e400, 1]}}]}', "finite"),
    ('{"features": [{"geometry": {"type": "Point", "coordinates": [1' + "0" * 400 + ', 1]}}]}', "finite"),
    (fc(feature(point(1, 2), {"measurements": {"score": "high"}})), "score must be a finite number"),
    ('{"features": [{"geometry": {"type": "Point", "coordinates": [1, 2]}, '
     '"properties": {"measurements": {"score": NaN}}}]}', "score must be a finite number"),
    (fc(feature(point(1, 2), {"measurements": [{"name": "score", "value": [0.5]}]})), "score must be a finite number"),
])
def test_bad_geojson_points_give_one_line(tmp_path, content, match):
    path = _write(tmp_path / "p.geojson", content)
    before = path.read_bytes()
    assert "p.geojson" in one_line(read_points_geojson, path, match=match)
    assert path.read_bytes() == before


def test_odd_but_valid_geojson_points_are_read(tmp_path):
    text = fc(feature(point(1, 2), []),                                   # [] written for {}
              feature(point(3, 4), {"classification": "Tumor"}),           # older QuPath: a string
              feature({"type": "MultiPoint", "coordinates": [[5, 6]]},
                      {"objectType": "annotation", "classification": {"name": "Stroma", "colorRGB": -6895466},
                       "measurements": [{"name": "Area", "value": 3}]}),  # QuPath 0.2 list, no score
              feature(point(7, 8), {"measurements": [{"name": "score", "value": 0.25}]}),
              feature(point(9, 10, 0.5), {"measurements": {"score": 0.9}}),  # ours; a z coordinate
              feature({"type": "Point", "coordinates": []}), feature(None, {"classification": "x"}),
              polygon([SQUARE]))
    t = read_points_geojson(_write(tmp_path / "p.geojson", "\ufeff" + text))
    assert t.yx.tolist() == [[2, 1], [4, 3], [6, 5], [8, 7], [10, 9]]
    assert t.classes == ["nucleus", "Tumor", "Stroma", "nucleus", "nucleus"]
    assert t.scores.tolist() == [1, 1, 1, 0.25, 0.9]


# ---------------------------------------------------------------------------------- CSV points
@pytest.mark.parametrize("content,match", [
    ("y,x,score\n1,2,nan\n", "line 2: y, x and score must be finite"),
    ("y,x\n1,inf\n", "finite"), ("y,x\n-inf,1\n", "finite"), ("y,x\n1e400,1\n", "finite"),
    ("y,x,score\n1,2,1e400\n", "finite"), ("y,x\n1,abc\n", "line 2: expected numbers"),
    ("a,b\n1,2\n", "header with 'y' and 'x'"), (b"y,x\n1,\xff\n", "cannot read"),
    ("y,x\n1," + "9" * 200_000 + "\n", "not a readable CSV"),
])
def test_bad_points_csv_gives_one_line_also_from_a_project(tmp_path, content, match):
    path = _write(tmp_path / "points.csv", content)
    before = path.read_bytes()
    one_line(read_points_csv, path, match=match)
    one_line(Project(tmp_path).load_points, match=match)  # a project folder written by hand
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------------- project regions
@pytest.mark.parametrize("content,match", BAD_DOCUMENTS + [
    (fc(polygon(None) | {"geometry": {"type": "Polygon"}}), "Polygon without coordinates"),
    (fc(polygon("abc")), "must be nested lists"),
    (fc(polygon([SQUARE, "hole"])), None),  # holes are ignored: this one is read
    (fc(polygon(["abc"])), "polygon ring must be a list"),
    (fc(polygon([[["a", "b"], [1, 2], [3, 4]]])), "finite numbers"),
    (fc(polygon([[[0, 0], [1, 2], [3]]])), "a position must be"),
    (fc(feature({"type": "MultiPolygon", "coordinates": [1, 2]}, REVIEWED_PROPS)), "must be nested lists"),
    ('{"features": [{"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [NaN, 1], [2, 2]]]}, '
     '"properties": {"kind": "reviewed"}}]}', "finite"),
    ('{"features": [{"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1e400, 1], [2, 2]]]}, '
     '"properties": {"kind": "reviewed"}}]}', "finite"),
    (fc(polygon([SQUARE], {"classification": {"name": ["Reviewed"]}})), "class name must be a string, got a list"),
    (fc(polygon([SQUARE], {"kind": ["reviewed"]})), "'kind' must be a string, got a list"),
])
def test_bad_regions_give_one_line_and_stay_as_they_were(tmp_path, content, match):
    path = _write(tmp_path / "regions.geojson", content)
    before = path.read_bytes()
    if match is None:
        assert len(Project(tmp_path).load_regions()[REVIEWED]) == 1
    else:
        assert "regions.geojson" in one_line(Project(tmp_path).load_regions, match=match)
    assert path.read_bytes() == before


def test_regions_it_cannot_use_are_skipped_and_the_rest_kept(tmp_path):
    text = fc(polygon([SQUARE]),
              polygon([]), polygon([[[0, 0], [5, 5], [0, 0]]]), polygon([[]]),        # empty; 2 points; empty ring
              feature(None, REVIEWED_PROPS), feature(point(1, 2), REVIEWED_PROPS),  # no geometry; a point
              feature({"type": "LineString", "coordinates": [[0, 0], [5, 5]]}, REVIEWED_PROPS),
              polygon([SQUARE], {"objectType": "detection", "classification": {"name": "Reviewed"}}),
              polygon([SQUARE], {"classification": {"name": "Tumor"}}), polygon([SQUARE], {"kind": "other"}),
              polygon([SQUARE], {"classification": "No target"}))                   # older QuPath: a string
    reg = Project(_write(tmp_path / "regions.geojson", text).parent).load_regions()
    assert [r.tolist() for r in reg[REVIEWED]] == [[[y, x] for x, y in SQUARE[:-1]]]
    assert len(reg[NO_TARGET]) == 1


def test_regions_round_trip_exactly(tmp_path):
    p = Project(tmp_path / "prj")
    rev = [np.array([[0.25, 1.5], [0, 50.75], [40, 50], [40, 0]]), np.array([[1, 1], [1, 9], [9, 9.5]])]
    neg = [np.array([[100, 100], [100, 150], [140, 150.25]])]
    p.save_regions(rev, neg)
    reg = Project(p.root).load_regions()
    assert [r.tolist() for r in reg[REVIEWED]] == [r.tolist() for r in rev]
    assert [r.tolist() for r in reg[NO_TARGET]] == [r.tolist() for r in neg]


# ---------------------------------------------------------------------------------- project.json, torn projects
@pytest.mark.parametrize("content,match", [
    ("{oops", "project.json is not valid JSON"), ("[]", "must hold a JSON object, got a list"),
    ("null", "must hold a JSON object, got null"), ('{"image": 5}', "'image' must be a string, got a number"),
    ('{"model": ["m"]}', "'model' must be a string, got a list"), ('{"files": []}', "'files' must be an object"),
    ('{"models": {"a": 1}}', "'models' must be a list"), (DEEP, "nested too deeply"), (b'{"image": "\xff"}', "not UTF-8"),
])
def test_a_broken_project_json_is_reported_not_overwritten(tmp_path, content, match):
    path = _write(tmp_path / "project.json", content)
    one_line(Project, tmp_path, match=match)
    assert path.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def _saved_project(tmp_path, step: int = 1) -> Project:
    img = tmp_path / "img.tif"
    if not img.exists():
        tifffile.imwrite(img, np.full((64, 64, 3), 200, np.uint8), photometric="rgb")
    p = Project.for_image(img)
    p.save(ProjectPoints(np.array([[float(step), 2.0]]), ["epithelial"], np.ones(1), ["user"]),
           reviewed=[np.array([[0, 0], [0, 9], [9, 9]]) + step])
    return p


def _snapshot(root) -> dict:
    return {f.name: f.read_bytes() for f in sorted(root.iterdir())}


def test_a_torn_project_is_reported_with_one_line(tmp_path):
    p = _saved_project(tmp_path, 1)
    old_regions = p.regions_path.read_bytes()
    _saved_project(tmp_path, 2)
    p.regions_path.write_bytes(old_regions)  # regions.geojson of generation 1 beside points of 2
    before = _snapshot(p.root)
    one_line(Project(p.root).load_regions, match=r"torn: regions\.geojson is not the file its last save wrote")
    assert Project(p.root).load_points().yx.tolist() == [[2, 2]]
    p.points_path.unlink()
    one_line(Project(p.root).load_points, match=r"torn: points\.csv is missing")
    assert _snapshot(p.root) == {k: v for k, v in before.items() if k != "points.csv"}


# ---------------------------------------------------------------------------------- model configs
@pytest.fixture
def detector_folder(tmp_path):
    """A copy of the bundled AC-Former model; ``edit(**architecture)`` rewrites its config."""
    folder = tmp_path / "det"
    shutil.copytree(resources_dir() / "models" / "acformer-crc", folder)

    def edit(arch=None, **fields):
        cfg = json.loads((folder / "config.json").read_text())
        cfg["architecture"] = arch if arch is not None else {**cfg["architecture"], **fields}
        (folder / "config.json").write_text(json.dumps(cfg))
        return folder

    return edit


@pytest.mark.parametrize("fields,match", [
    ({"d_model": "abc"}, "'d_model' must be a positive int, got 'abc'"),
    ({"n_heads": 0}, "'n_heads' must be a positive int, got 0"),
    ({"n_heads": 5}, "'n_heads' must divide d_model"),
    ({"d_model": 98, "n_heads": 2, "gn_groups": 2}, "'d_model' must be a multiple of 4"),
    ({"score_threshold": "0.5"}, r"'score_threshold' must be a number in \[0, 1\], got '0.5'"),
    ({"score_threshold": 1.5}, r"'score_threshold' must be a number in \[0, 1\]"),
    ({"tile_size": -128}, "'tile_size' must be a positive int, got -128"),
    ({"overlap": 500}, "'overlap' must be smaller than tile_size"),
    ({"backbone": "vgg16"}, "'backbone' must be one of resnet18"),
    ({"lr": [0.001]}, "'lr' must be a positive number, got"),
    ({"mpp": float("inf")}, "'mpp' must be a positive number, got inf"),
    ({"dropout": None}, "'dropout' must be a number in"),
    ({"windowed": "yes"}, "'windowed' must be a boolean"),
    ({"steps": True}, "'steps' must be a positive int, got True"),
    ({"backbone_stages": 3}, "'backbone_stages' must be a non-empty list of backbone stages"),
    ({"backbone_stages": [2, 7]}, "'backbone_stages'"),
    ({"classes": []}, "'classes' must be a non-empty list of distinct class names"),
    ({"stain_target": [[1, 2, 3]]}, "'stain_target'"),
    ({"stain_spread": [[0.1, 0.1, -0.1], [0.1, 0.1, 0.1]]}, "'stain_spread' must be null or two rows"),
    ({"stain_radius": -1.0}, "'stain_radius' must be null or a non-negative number"),
    ({"dense_class_weights": [1, -2]}, "'dense_class_weights' must be null or a list of non-negative numbers"),
    ({"dense_class_weights": [1, 2]}, "'dense_class_weights' needs one weight per class"),
    ({"bogus": 1}, "unknown AC-Former config keys: bogus"),
])
def test_a_mistyped_detector_config_names_the_field(detector_folder, fields, match):
    folder = detector_folder(**fields)
    before = _snapshot(folder)
    one_line(load_detector, str(folder), match=match)
    assert _snapshot(folder) == before


def test_a_detector_config_without_an_architecture_object(detector_folder):
    one_line(load_detector, str(detector_folder(arch=[1, 2])), match="architecture")


@pytest.fixture
def segmenter_folder(tmp_path):
    """A saved (untrained) contrastive segmenter; ``edit(**fields)`` rewrites its config."""
    net, _ = build({"n_channels": 4, "width": 8})
    cfg = {"kind": SEGMENTER, "architecture": {"n_channels": 4, "width": 8}, "nuclei_channel": 1,
           "threshold": "auto", "downsample": 1.0, "mpp": 0.5, "training": ContrastiveConfig().__dict__}
    folder = save_checkpoint(tmp_path / "seg", {f"net.{k}": v for k, v in net.state_dict().items()}, cfg)

    def edit(**fields):
        c = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**c, **fields}))
        return folder

    return edit


@pytest.mark.parametrize("fields,match", [
    ({"architecture": {"n_channels": 0, "width": 8}}, "'n_channels' must be a positive int, got 0"),
    ({"architecture": {"n_channels": 4, "width": "abc"}}, "'width' must be a positive int, got 'abc'"),
    ({"architecture": [4, 8]}, "'architecture' must be an object"),
    ({"architecture": {"n_channels": 4, "width": 8, "depth": 3}}, "'architecture' must be an object"),
    ({"threshold": 2}, r"'threshold' must be 'auto' or a number in \(0, 1\), got 2"),
    ({"threshold": "high"}, "'threshold'"), ({"threshold": [0.5]}, "'threshold'"),
    ({"downsample": -1}, "'downsample' must be a positive number"), ({"downsample": "2"}, "'downsample'"),
    ({"nuclei_channel": 4}, r"'nuclei_channel' must be an int in \[0, 4\)"), ({"nuclei_channel": "0"}, "'nuclei_channel'"),
    ({"mpp": -0.5}, "'mpp' must be null or a positive number"), ({"mpp": "0.5"}, "'mpp'"),
])
def test_a_mistyped_segmenter_config_names_the_field(segmenter_folder, fields, match):
    folder = segmenter_folder(**fields)
    assert one_line(load_model, str(folder), match=match).startswith("model seg: ")


def test_the_segmenter_config_is_checked_before_training():
    one_line(ContrastiveConfig(patch_size="50").validate, match="'patch_size' must be a positive int")
    one_line(ContrastiveConfig(similarity="l1").validate, match="'similarity' must be one of mse, ce, cosine")
    one_line(ContrastiveConfig(crop_min=20).validate, match="need 8 <= patch_size")


# ---------------------------------------------------------------------------------- through the CLI
@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(*args)`` -> (exit code, the one stderr line); an internal error raises (no hiding)."""
    monkeypatch.setenv("HISTOAI_DEBUG", "1")

    def run(*args):
        code = main([str(a) for a in args])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1, err
        return code, err[0]

    return run


def _train_on(cli, project, out="from-bad"):
    from napari_histoai.models import user_models_dir

    before = _snapshot(project.root)
    code, line = cli("train-detector", "--project", project.root, "--out", out, "--device", "cpu")
    assert code == 2 and "error" in line
    assert _snapshot(project.root) == before and not (user_models_dir() / out).exists()
    return line


def test_cli_train_detector_refuses_a_torn_project(tmp_path, cli):
    p = _saved_project(tmp_path, 1)
    old = p.points_path.read_bytes()
    _saved_project(tmp_path, 2)
    p.points_path.write_bytes(old)
    assert "torn: points.csv" in _train_on(cli, p)


def test_cli_train_detector_refuses_a_malformed_project(tmp_path, cli):
    p = _saved_project(tmp_path)
    p.meta_path.write_text('{"image": ["img.tif"]}')
    assert "'image' must be a string" in _train_on(cli, p)
    p.meta_path.write_text(json.dumps({"image": str(tmp_path / "img.tif")}))  # a project without generations
    p.regions_path.write_text(fc(polygon("abc")))
    assert "regions.geojson: feature 0: Polygon coordinates must be nested lists" in _train_on(cli, p)
    p.regions_path.write_text(fc())
    p.points_path.write_text("y,x\n1,nan\n")
    assert "points.csv line 2" in _train_on(cli, p)


def test_cli_detect_with_a_broken_model_writes_nothing(tmp_path, cli, detector_folder, sample_path):
    out = tmp_path / "nuclei.csv"
    code, line = cli("detect", sample_path, "--model", detector_folder(n_heads=0), "--out", out, "--device", "cpu")
    assert code == 2 and "error" in line and "'n_heads' must be a positive int, got 0" in line
    assert not out.exists()


def test_cli_segment_with_a_broken_model_writes_nothing(tmp_path, cli, segmenter_folder, sample_path):
    out = tmp_path / "labels.tif"
    code, line = cli("segment", sample_path, "--model", segmenter_folder(threshold="high"), "--out", out,
                     "--device", "cpu")
    assert code == 2 and "error" in line and "model seg: segmenter config field 'threshold'" in line
    assert not out.exists()
