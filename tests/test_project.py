"""The correction project store: round trip, saves are one atomic step (kills at random moments
always leave one generation), torn projects are reported, QuPath's annotations are read."""

import json
import os
import random
import signal
import threading
import time

import numpy as np
import pytest

from napari_histoai.errors import JobError
from napari_histoai.io.points import read_points_csv
from napari_histoai.project import (
    NO_TARGET,
    REVIEWED,
    Project,
    ProjectPoints,
    project_dir_for,
)


def test_points_and_regions_round_trip(tmp_path):
    img = tmp_path / "slide.svs"
    img.write_bytes(b"")
    p = Project.for_image(img)
    assert p.root == tmp_path / "slide.svs.histoai" == project_dir_for(img) and not p.exists()
    pts = ProjectPoints(np.array([[1.5, 2.25], [10, 20]]), ["epithelial", "unlabeled"], np.array([0.9, 1.0]),
                        ["model", "user"])
    sq = np.array([[0, 0], [0, 50], [40, 50], [40, 0]], float)
    p.save(pts, reviewed=[sq], no_target=[sq + 100], classes=["epithelial"], model="m")
    q = Project(p.root)
    assert q.exists() and q.image_path == str(img.resolve()) and q.meta["model"] == "m"
    back = q.load_points()
    assert np.allclose(back.yx, pts.yx) and back.classes == pts.classes and back.sources == pts.sources
    assert np.allclose(back.scores, pts.scores)
    reg = q.load_regions()
    assert len(reg[REVIEWED]) == 1 and np.allclose(reg[REVIEWED][0], sq) and np.allclose(reg[NO_TARGET][0], sq + 100)
    # QuPath sees annotations with a classification; the CSV is readable by the foundation reader
    text = q.regions_path.read_text()
    assert '"Reviewed"' in text and '"No target"' in text
    assert read_points_csv(q.points_path).classes == ["epithelial", "unlabeled"]
    q.add_model("mine", "/x/mine", {"f_d": 0.5})
    assert Project(p.root).meta["models"][0]["name"] == "mine"


def _save_step(p, i):
    """Generation ``i``: every file says i (points' y, the region's corner, project.json's step)."""
    n = 30 + i % 7
    yx = np.column_stack([np.full(n, float(i)), np.arange(n, dtype=float)])
    tri = np.array([[0, 0], [0, 9], [9, 9]], float) + i
    p.save(ProjectPoints(yx, ["epithelial"] * n, np.ones(n), ["user"] * n), reviewed=[tri], step=i)


def _saver(root, first):
    """Child process: save generations first, first + 1, ... until killed, on a slow disk (every
    fsync and rename takes a few ms, so a kill lands in every phase of a save)."""
    try:
        fsync, replace = os.fsync, os.replace
        os.fsync = lambda fd: (time.sleep(0.003), fsync(fd))[1]
        os.replace = lambda a, b: (time.sleep(0.003), replace(a, b))[1]
        p, i = Project(root), first
        while True:
            _save_step(p, i)
            i += 1
    finally:
        os._exit(1)


def _pending(root):
    return {q.name for q in root.glob(".*") if q.name.startswith((".points.csv.", ".regions.geojson."))}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_saves_killed_at_random_moments_leave_one_generation(tmp_path):
    root = tmp_path / "img.tif.histoai"
    _save_step(Project(root), 0)
    rng, t_end = random.Random(0), time.time() + 20
    before_commit = after_commit = 0
    for k in range(1, 31):
        before = _pending(root)
        pid = os.fork()
        if pid == 0:
            _saver(root, 1000 * k)
        time.sleep(rng.uniform(0.0, 0.06))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        gen = json.loads((root / "project.json").read_text())["generation"]
        new = _pending(root) - before
        after_commit += any(n.endswith("." + gen) for n in new)   # committed, not yet in place
        before_commit += any(not n.endswith("." + gen) for n in new)  # written, never committed
        p = Project(root)
        step = p.meta["step"]
        pts, reg = p.load_points(), p.load_regions()
        assert len(pts) == 30 + step % 7 and (pts.yx[:, 0] == step).all() and set(pts.sources) == {"user"}
        assert len(reg[REVIEWED]) == 1 and reg[REVIEWED][0][0].tolist() == [step, step]
        # what QuPath and the CSV reader see on disk is that generation too
        assert (read_points_csv(p.points_path).yx[:, 0] == step).all()
        assert json.loads(p.regions_path.read_text())["features"][0]["geometry"]["coordinates"][0][0] == [step, step]
        if time.time() > t_end:
            break
    assert before_commit and after_commit, (before_commit, after_commit)


def test_saves_and_loads_from_two_threads_take_turns(tmp_path):
    """The GUI autosaves while a training run reads the project and then records its model."""
    root = tmp_path / "prj"
    _save_step(Project(root), 0)
    errors = []

    def gui():
        q = Project(root)
        for i in range(1, 40):
            _save_step(q, i)

    def trainer():
        q = Project(root)
        try:
            for _ in range(40):
                pts, reg = q.load_points(), q.load_regions()
                assert len(pts) == 30 + int(pts.yx[0, 0]) % 7 and len(reg[REVIEWED]) == 1
            q.add_model("mine", "/x/mine")
        except (JobError, AssertionError) as e:
            errors.append(e)

    threads = [threading.Thread(target=gui), threading.Thread(target=trainer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p = Project(root)
    assert not errors and p.meta["models"][0]["name"] == "mine" and p.meta["step"] == 39
    assert (p.load_points().yx[:, 0] == 39).all()


def test_a_save_killed_after_its_commit_is_finished_by_the_next_load(tmp_path, monkeypatch):
    p = Project(tmp_path / "prj")
    _save_step(p, 1)
    monkeypatch.setattr(Project, "_roll_forward", lambda self, record: None)  # killed right after the commit
    _save_step(p, 2)
    assert _pending(p.root) and json.loads(p.regions_path.read_text())["features"][0]["geometry"]["coordinates"][0][0] == [1, 1]
    monkeypatch.undo()
    q = Project(p.root)
    assert q.meta["step"] == 2 and q.load_regions()[REVIEWED][0][0].tolist() == [2, 2]
    assert (q.load_points().yx[:, 0] == 2).all() and not _pending(p.root)


def test_a_torn_project_is_reported_in_one_line(tmp_path):
    p = Project(tmp_path / "prj")
    _save_step(p, 1)
    old = p.points_path.read_bytes()
    _save_step(p, 2)
    p.points_path.write_bytes(old)  # points.csv of another generation (copied apart)
    with pytest.raises(JobError, match=r"torn: points\.csv is not the file") as e:
        Project(p.root).load_points()
    assert "\n" not in str(e.value)
    assert Project(p.root).load_regions()[REVIEWED][0][0].tolist() == [2, 2]
    p.regions_path.unlink()
    with pytest.raises(JobError, match=r"regions\.geojson is missing"):
        Project(p.root).load_regions()


def test_points_autosave_alone_keeps_regions_and_fields_of_other_writers(tmp_path):
    gui, cli = Project(tmp_path / "prj", "/img.tif"), Project(tmp_path / "prj")
    _save_step(gui, 1)
    cli.add_model("mine", "/x/mine", {"f_d": 0.5})   # another writer, e.g. train-detector --project
    gui.save_points(np.array([[5.0, 6.0]]), ["user"], sources=["user"])
    q = Project(gui.root)
    assert q.meta["models"][0]["name"] == "mine" and q.meta["model"] == "mine" and q.image_path == "/img.tif"
    assert q.load_points().yx.tolist() == [[5, 6]] and q.load_regions()[REVIEWED][0][0].tolist() == [1, 1]
    gui.update_meta(classes=["a"])
    assert Project(gui.root).load_points().sources == ["user"]


def test_projects_without_generations_still_load(tmp_path):
    root = tmp_path / "old.histoai"
    root.mkdir()
    (root / "points.csv").write_text("y,x,class,score,source\n1.00,2.00,epithelial,0.9000,user\n")
    (root / "project.json").write_text('{"image": "/a.tif", "model": "m"}')
    p = Project(root)
    assert p.exists() and p.load_points().classes == ["epithelial"] and p.load_regions() == {REVIEWED: [], NO_TARGET: []}


def test_non_finite_points_or_regions_are_not_saved(tmp_path):
    p = Project(tmp_path / "prj")
    _save_step(p, 1)
    before = {f: (p.root / f).read_bytes() for f in ("points.csv", "regions.geojson", "project.json")}
    with pytest.raises(JobError, match="finite"):
        p.save(ProjectPoints(np.array([[np.nan, 1.0]]), ["a"], np.ones(1), ["user"]))
    with pytest.raises(JobError, match="finite"):
        p.save_regions(reviewed=[np.array([[0, 0], [0, np.inf], [5, 5]])])
    assert {f: (p.root / f).read_bytes() for f in before} == before


def test_qupath_annotations_become_regions(tmp_path):
    root = tmp_path / "prj"
    root.mkdir()
    sq = [[0, 0], [50, 0], [50, 40], [0, 40], [0, 0]]  # x, y
    doc = [  # QuPath 0.2 style: a bare list, the object type in the id
        {"type": "Feature", "id": "PathAnnotationObject", "geometry": {"type": "Polygon", "coordinates": [sq]},
         "properties": {"classification": {"name": "Reviewed", "colorRGB": -14169264}, "isLocked": False}},
        {"type": "Feature", "id": "PathAnnotationObject",
         "geometry": {"type": "MultiPolygon", "coordinates": [[[[x + 100, y] for x, y in sq]], [[[x, y + 100] for x, y in sq]]]},
         "properties": {"classification": {"name": "No target"}}},
        {"type": "Feature", "id": "PathDetectionObject", "geometry": {"type": "Polygon", "coordinates": [sq]},
         "properties": {"classification": {"name": "Reviewed"}}},   # a detection: not a region
        {"type": "Feature", "id": "PathAnnotationObject", "geometry": {"type": "Polygon", "coordinates": [sq]},
         "properties": {"classification": {"name": "Tumor"}}},      # another class: not a region
    ]
    (root / "regions.geojson").write_text(json.dumps(doc))
    reg = Project(root).load_regions()
    assert len(reg[REVIEWED]) == 1 and reg[REVIEWED][0].tolist() == [[y, x] for x, y in sq[:-1]]
    assert [r[0].tolist() for r in reg[NO_TARGET]] == [[0, 100], [100, 0]]
