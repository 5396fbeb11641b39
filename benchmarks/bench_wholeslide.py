"""Whole-slide results in napari: a nuclei store seen by level of detail vs a plain Points layer.

A synthetic 100k x 100k slide (0.5 µm/px) with 5·10⁶ nuclei (``devdata.synthetic_nuclei``) is
written to a nuclei store; each viewer runs in its own process under Xvfb with a shown 1280 x 900
window and the same small overview image of the (virtual) slide underneath, and measures:

- open: from opening the store (or adding the Points layer) to the first frame drawn;
- stall: while the camera pans (20 steps of 1/5 of the view, one step per 60 ms) at five zooms
  and sweeps through the zooms, a 5 ms QTimer records its ticks; a step's stall is its longest
  gap between ticks minus 5 ms (drawing, layer updates and loaded regions all show up in it);
  p95 and max over the steps;
- RSS: peak resident memory of the viewer process;
- correction: a point re-classed and one deleted on the zoomed-in layer (as the correction dock
  does), then the time until another reader of the store sees both; then the viewer process is
  killed with SIGKILL and the store reopened: both edits must be there.

The plain Points layer gets 10⁶ of the same nuclei (every 5th; 5·10⁶ takes minutes per redraw) and
fewer pan steps. Prints a markdown table; saves benchmarks/results/wholeslide.{json,md}.
``--n`` and ``--plain-n`` change the sizes (a quick run: ``--n 500000 --plain-n 100000``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCRATCH, peak_rss_mb, rss_mb, save, table  # noqa: E402

SHAPE, MPP = (100_000, 100_000), 0.5
ZOOMS = {"whole slide": 1.0, "1/8 width": 1 / 8, "1/25 width": 1 / 25, "1/60 width": 1 / 60, "1/250 width": 1 / 250}
TICK_MS, STEP_MS = 5, 60


# ---------------------------------------------------------------------------------- the viewer side
def _viewer():
    import napari

    from napari_histoai.devdata.synthetic_nuclei import GRID, tissue_overview

    v = napari.Viewer(show=True)
    v.window._qt_window.resize(1280, 900)
    f = SHAPE[0] / GRID  # the same cheap slide image under both viewers: what is timed is the nuclei
    v.add_image(tissue_overview(), rgb=True, scale=(MPP * f, MPP * f), translate=((f - 1) / 2 * MPP,) * 2,
                units=("µm", "µm"), name="slide (overview)", metadata={"mpp": MPP})
    return v


class _Ticks:
    def __init__(self):
        from qtpy.QtCore import QTimer

        self.t = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.t.append(time.perf_counter()))
        self.timer.start()

    def stall_ms(self, t0: float, t1: float) -> float:
        """Longest gap between ticks that ends in (t0, t1] (plus the one spanning t0), minus the interval."""
        import numpy as np

        t = np.asarray(self.t)
        i0 = max(1, int(np.searchsorted(t, t0)))
        i1 = int(np.searchsorted(t, t1, side="right"))
        if i1 <= i0:
            return (t1 - t0) * 1e3
        return float(max(0.0, np.diff(t[i0 - 1:i1]).max() * 1e3 - TICK_MS))


def _wait(ms: int) -> None:
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _dense_center(store) -> tuple[float, float]:
    """(y, x) µm of the density bin with the most nuclei (where a pathologist would look)."""
    import numpy as np

    tot = store.density_counts().sum(0)
    by, bx = np.unravel_index(int(np.argmax(tot)), tot.shape)
    return ((by + 0.5) * store.bin * MPP, (bx + 0.5) * store.bin * MPP)


def _camera_script(viewer, ticks, steps: int, budget_s: float, center) -> dict:
    """Pan at each zoom (from ``center`` µm), then a zoom sweep; -> {zoom name: [stall ms per step]}."""
    cam = viewer.scene.camera
    h_px, w_px = viewer.canvas.size
    width_um = SHAPE[1] * MPP
    out, t_end = {}, time.perf_counter() + budget_s
    cy0, cx0 = center
    for name, frac in ZOOMS.items():
        cam.zoom = w_px / (width_um * frac)
        cam.center = (cy0, cx0)
        _wait(800)  # settle (and load) before measuring
        view_um = w_px / cam.zoom
        stalls = []
        for i in range(steps):
            if time.perf_counter() > t_end:
                break
            t0 = time.perf_counter()
            cam.center = (cy0, cx0 + (i + 1) * 0.2 * view_um * (1 if frac < 1 else 0.1))
            _wait(STEP_MS)
            stalls.append(ticks.stall_ms(t0, time.perf_counter()))
        out[name] = stalls
    stalls = []
    z0 = w_px / width_um
    for i in list(range(14)) + list(range(13, -1, -1)):
        if time.perf_counter() > t_end:
            break
        t0 = time.perf_counter()
        cam.zoom = z0 * 1.5 ** i
        _wait(STEP_MS)
        stalls.append(ticks.stall_ms(t0, time.perf_counter()))
    out["zoom sweep"] = stalls
    return out


def _first_frame(viewer) -> None:
    from qtpy.QtWidgets import QApplication

    viewer.window._qt_viewer.canvas.native.update()
    QApplication.processEvents()
    QApplication.processEvents()


def child_lod(store_path: str) -> None:
    import numpy as np

    from napari_histoai.io.point_store import PointStore
    from napari_histoai.widgets._lod import LodController

    viewer = _viewer()
    viewer.reset_view()
    _wait(500)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    ctl = LodController(viewer, PointStore(store_path))  # placed by the store's µm/px
    _first_frame(viewer)
    t_open = time.perf_counter() - t0
    ticks = _Ticks()
    center = _dense_center(ctl.store)
    stalls = _camera_script(viewer, ticks, steps=20, budget_s=400, center=center)
    # a correction at high zoom
    cam = viewer.scene.camera
    cam.zoom = viewer.canvas.size[1] / (SHAPE[1] * MPP / 60)
    cam.center = center
    deadline = time.perf_counter() + 20
    while (ctl.mode != "in" or ctl.busy or ctl.loaded_box is None) and time.perf_counter() < deadline:
        _wait(50)
    layer = ctl.points_layer
    n_before = int(np.sum(ctl.store.class_counts()))
    ids = layer.features["store_id"].to_numpy()
    f = layer.features
    new_cls = "others" if str(f["class"].iloc[0]) != "others" else "fibroblast"
    t_edit = time.perf_counter()
    f.loc[0, "class"], f.loc[0, "source"] = new_cls, "user"  # what the palette / hotkeys do
    layer.features = f
    layer.refresh_colors(update_color_mapping=False)
    layer.selected_data = {1}
    layer.remove_selected()
    latency = None
    while time.perf_counter() - t_edit < 10:
        s = PointStore(store_path)  # another reader: what a crash would leave
        p = s.get(ids[:2])
        s.close()
        _wait(10)
        if s.classes[p.cls[0]] == new_cls and int(ids[1]) not in set(_ids_near(store_path, p.yx[1])):
            latency = time.perf_counter() - t_edit
            break
    print(json.dumps({"open_s": t_open, "stall_ms": stalls, "rss_mb": peak_rss_mb(), "rss_now_mb": rss_mb(),
                      "rss_before_open_mb": rss0, "edit_latency_s": latency,
                      "edited": {"reclassed": int(ids[0]), "class": new_cls, "deleted": int(ids[1])},
                      "loaded_points": int(len(layer.data)), "n": n_before}), flush=True)
    time.sleep(120)  # the parent kills this process with SIGKILL now


def _ids_near(store_path, yx):
    from napari_histoai.io.point_store import PointStore

    s = PointStore(store_path)
    q = s.query(yx[0] - 1, yx[1] - 1, yx[0] + 1, yx[1] + 1)
    s.close()
    return q.ids.tolist()


def child_plain(store_path: str, n: int) -> None:
    import numpy as np
    import pandas as pd

    from napari_histoai.classes import color_map
    from napari_histoai.io.point_store import Points, PointStore

    s = PointStore(store_path)
    pts = Points.concat(list(s.iter_points()))
    step = max(1, len(pts) // n)
    pts = pts.take(np.arange(0, len(pts), step)[:n])
    viewer = _viewer()
    viewer.reset_view()
    _wait(500)
    classes = list(s.classes)
    t0 = time.perf_counter()
    viewer.add_points(pts.yx.astype(np.float64), name="nuclei (plain)", face_color="class",
                      features=pd.DataFrame({"class": pd.Categorical.from_codes(pts.cls.astype(int), categories=classes),
                                             "score": pts.score.astype(float)}),
                      face_color_cycle={c: (*rgb, 1.0) for c, rgb in color_map(classes).items()},
                      border_color="black", border_width=0.05, size=10, scale=(MPP, MPP), units=("µm", "µm"))
    _first_frame(viewer)
    t_open = time.perf_counter() - t0
    ticks = _Ticks()
    stalls = _camera_script(viewer, ticks, steps=6, budget_s=240, center=_dense_center(s))
    print(json.dumps({"open_s": t_open, "stall_ms": stalls, "rss_mb": peak_rss_mb(), "n": int(len(pts))}), flush=True)


# ---------------------------------------------------------------------------------- the parent
def _xvfb(args: list) -> list:
    cmd = [sys.executable, __file__] + args
    return cmd if os.environ.get("DISPLAY") else ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"] + cmd


def _p95(v):
    import numpy as np

    return float(np.percentile(v, 95)) if len(v) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5_000_000)
    ap.add_argument("--plain-n", type=int, default=1_000_000)
    ap.add_argument("--child", choices=["lod", "plain"])
    ap.add_argument("--store")
    a = ap.parse_args()
    if a.child == "lod":
        return child_lod(a.store)
    if a.child == "plain":
        return child_plain(a.store, a.plain_n)

    from napari_histoai.devdata.synthetic_nuclei import CLASSES, synthetic_nuclei
    from napari_histoai.io.point_store import PointStore
    from napari_histoai.widgets import _lod

    load_start = os.getloadavg()
    store_path = SCRATCH / "wholeslide" / "nuclei.points"
    t0 = time.perf_counter()
    yx, cls, sc = synthetic_nuclei(a.n, SHAPE)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    PointStore.create(store_path, yx, cls, CLASSES, sc, shape=SHAPE, mpp=MPP)
    t_write = time.perf_counter() - t0
    del yx, cls, sc
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # level of detail, then kill -9
    proc = subprocess.Popen(_xvfb(["--child", "lod", "--store", str(store_path)]), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    lod = None
    for line in proc.stdout:
        if line.startswith("{"):
            lod = json.loads(line)
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if lod is None:
        raise SystemExit("the level-of-detail viewer failed; run it alone to see why: "
                         + " ".join(_xvfb(["--child", "lod", "--store", str(store_path)])))
    s = PointStore(store_path)
    e = lod["edited"]
    gone = s.get([e["deleted"]]).yx[0]
    survived = bool(s.classes[s.get([e["reclassed"]]).cls[0]] == e["class"]
                    and e["deleted"] not in _ids_near(store_path, gone) and len(s) == lod["n"] - 1)
    r = subprocess.run(_xvfb(["--child", "plain", "--store", str(store_path), "--plain-n", str(a.plain_n)]),
                       capture_output=True, text=True, env=env, timeout=1200)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    plain = json.loads(lines[-1]) if lines else None

    def row(name, res, n):
        if res is None:
            return [name, n, "failed", "", "", "", "", ""]
        allst = [v for st in res["stall_ms"].values() for v in st]
        per = " / ".join(f"{_p95(v):.0f}" for v in res["stall_ms"].values())
        return [name, f"{n:,}", f"{res['open_s']:.2f}", f"{_p95(allst):.0f}", f"{max(allst):.0f}", per,
                f"{res['rss_mb']:.0f}",
                (f"{res['edit_latency_s']:.2f} s, kept after kill -9: {'yes' if survived else 'NO'}"
                 if "edit_latency_s" in res and res["edit_latency_s"] is not None else "n/a")]

    heads = ["viewer", "nuclei", "open (s)", "stall p95 (ms)", "stall max (ms)",
             "p95 per zoom: " + " / ".join(list(ZOOMS) + ["zoom sweep"]) + " (ms)", "peak RSS (MB)",
             "correction in store"]
    md = table(heads, [row("nuclei store, level of detail", lod, lod["n"]),
                       row("plain Points layer", plain, plain["n"] if plain else a.plain_n)])
    load_end = os.getloadavg()
    note = (f"\nSynthetic 100k x 100k slide at 0.5 µm/px; store written in {t_write:.1f} s "
            f"(nuclei generated in {t_gen:.1f} s); {os.cpu_count()} CPU cores, Xvfb (software OpenGL), "
            f"machine load (1-min average) {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end. "
            f"Level of detail: points when the view holds <= {_lod.VISIBLE_MAX:,} nuclei, at most "
            f"{_lod.LOAD_MAX:,} loaded ({lod.get('loaded_points', 0):,} at the correction, 1/60 width). Targets: open < 2 s, stall p95 < 100 ms, RSS < 2 GB, "
            "correction in the store < 2 s and kept after kill -9.")
    print(md + "\n" + note)
    save("wholeslide", {"n": a.n, "plain_n": a.plain_n, "store_write_s": t_write, "generate_s": t_gen,
                        "lod": lod, "plain": plain, "survived_kill9": survived,
                        "load": load_end, "load_start": load_start, "cores": os.cpu_count(),
                        "lod_settings": {"visible_max": _lod.VISIBLE_MAX, "load_max": _lod.LOAD_MAX},
                        "p95": {"lod": _p95([v for st in lod["stall_ms"].values() for v in st]),
                                "plain": _p95([v for st in plain["stall_ms"].values() for v in st]) if plain else None},
                        "stderr_plain_tail": r.stderr[-2000:] if plain is None else ""}, md + "\n" + note)


if __name__ == "__main__":
    main()
