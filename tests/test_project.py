"""The correction project store: round trip, atomic saves survive a kill."""

import signal
import subprocess
import sys
import time

import numpy as np

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
    from napari_histoai.io.points import read_points_csv

    assert read_points_csv(q.points_path).classes == ["epithelial", "unlabeled"]
    q.add_model("mine", "/x/mine", {"f_d": 0.5})
    assert Project(p.root).meta["models"][0]["name"] == "mine"


SAVER = """
import os, sys, time, numpy as np
from napari_histoai.project import Project, ProjectPoints
_fsync = os.fsync
def slow_fsync(fd):  # a slow disk: the temporary file exists for a while before the rename
    time.sleep(0.15)
    _fsync(fd)
os.fsync = slow_fsync
p = Project(sys.argv[1])
rng = np.random.default_rng(0)
i = 0
while True:
    n = 20000 + i
    yx = rng.random((n, 2)) * 1000
    p.save(ProjectPoints(yx, ["epithelial"] * n, np.ones(n), ["user"] * n), reviewed=[np.array([[0, 0], [0, 9], [9, 9]]) + i])
    print("saved", i, flush=True)
    i += 1
"""


def test_a_killed_save_leaves_valid_files(tmp_path):
    root = tmp_path / "img.tif.histoai"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(root)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith(b"saved 0")
        t0 = time.time()
        while not list(root.glob(".points.csv.*")) and time.time() - t0 < 30:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # in the middle of writing points.csv
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(root.glob(".points.csv.*")), "the kill did not hit a save"
    p = Project(root)
    pts = p.load_points()
    assert len(pts) >= 20000 and len(pts.classes) == len(pts) and set(pts.sources) == {"user"}
    assert len(p.load_regions()[REVIEWED]) == 1 and p.meta.get("updated")
