"""Foundation benchmarks: classical detection quality, slide opening, tiled throughput, GUI
responsiveness. Prints one markdown table and saves it to benchmarks/results/foundation.md.

    python benchmarks/bench_foundation.py            # full (generates a 100k x 100k slide, ~5 GB in /tmp)
    python benchmarks/bench_foundation.py --smoke    # small sizes, for CI

Each measurement that reports memory runs in its own process (honest peak RSS).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, SCRATCH, peak_rss_mb, rss_mb, run_child, save, table  # noqa: E402


# ---------------------------------------------------------------- children
def child_open_napari(path: str) -> dict:
    """Time from ``viewer.open(path)`` to the first canvas frame drawn after the layer exists:
    cold (first file of the session: includes importing dask/zarr/tifffile) and warm (again)."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
    rss_before = rss_mb()
    draws, inserted = [], []
    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(lambda e: draws.append(time.perf_counter()))
    viewer.layers.events.inserted.connect(lambda e: inserted.append(time.perf_counter()))

    def open_once() -> tuple[float, float, object]:
        draws.clear()
        inserted.clear()
        t0 = time.perf_counter()
        layer = viewer.open(path, plugin="napari-histoai")[0]
        t_open = time.perf_counter() - t0
        while time.perf_counter() < t0 + 60:
            app.processEvents()
            if inserted and any(d > inserted[0] for d in draws) and getattr(layer, "loaded", True):
                break
            time.sleep(0.001)
        first = min(d for d in draws if d > inserted[0])
        return first - t0, t_open, layer

    cold, cold_open, layer = open_once()
    for _ in range(10):
        app.processEvents()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    viewer.layers.clear()
    warm, _, layer = open_once()
    out = {
        "first_frame_s": cold, "open_call_s": cold_open, "first_frame_warm_s": warm,
        "levels": len(layer.data), "shape": list(layer.data[0].shape),
        "frame_std": float(shot[..., :3].std()),  # > 0: the frame shows tissue, not a blank canvas
        "rss_before_mb": rss_before, "rss_after_mb": rss_mb(), "peak_rss_mb": peak_rss_mb(),
    }
    viewer.close()
    return out


def child_detect(path: str, model: str) -> dict:
    """Whole-slide tiled detection (tissue only): MP/s over level-0 pixels processed."""
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.io import open_image
    from napari_histoai.methods.detection.job import detect_image_job

    img = open_image(path)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    res = run_job(detect_image_job(img, model=model, device="cpu"))
    dt = time.perf_counter() - t0
    h, w = img.shape[:2]
    return {"seconds": dt, "megapixels": h * w / 1e6, "mp_per_s": h * w / 1e6 / dt, "n_points": len(res),
            "tiles": res.n_tiles, "skipped": res.n_tiles_skipped, "rss_before_mb": rss0, "peak_rss_mb": peak_rss_mb()}


def child_segment(path: str) -> dict:
    """Whole-slide instance labels (classical segmenter, tissue only) streamed by the engine into
    a zarr store on disk, then written as a pyramidal OME-TIFF: time and peak RSS."""
    import shutil
    import tempfile

    from napari_histoai.engine.inference import infer
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.io import open_image
    from napari_histoai.io.writers import write_labels_ometiff
    from napari_histoai.methods.classical import ClassicalSegmenter

    img = open_image(path)
    work = Path(tempfile.mkdtemp(prefix="histoai-bench-"))
    try:
        t0 = time.perf_counter()
        res = run_job(infer(img, ClassicalSegmenter(), store=work / "labels.zarr"))
        t1 = time.perf_counter()
        write_labels_ometiff(work / "labels.ome.tif", res.labels, mpp=img.mpp, max_id=res.n_objects)
        t2 = time.perf_counter()
        h, w = img.shape[:2]
        return {"seconds": t1 - t0, "write_seconds": t2 - t1, "megapixels": h * w / 1e6, "n_objects": res.n_objects,
                "tiles": res.n_tiles, "skipped": res.n_tiles_skipped, "streamed": res.store is not None,
                "labels_bytes_in_ram_if_numpy": h * w * 4, "peak_rss_mb": peak_rss_mb()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def child_stall(path: str, model: str, seconds: float) -> dict:
    """Largest gap between 10-ms QTimer ticks while the Detect widget's job runs."""
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_histoai.widgets.detect_widget import DetectWidget

    viewer = napari.Viewer(show=True)
    viewer.open(path, plugin="napari-histoai")
    w = DetectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_combo.setCurrentText(model)
    app = QApplication.instance()
    for _ in range(50):
        app.processEvents()
    ticks, shown = [], []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    show = w._show
    w._show = lambda result: (shown.append(time.perf_counter()), show(result))  # the job has returned
    timer.start()
    t0 = time.perf_counter()
    w.start()
    while w.panel.running and time.perf_counter() - t0 < seconds:
        app.processEvents()
        time.sleep(0.002)
    finished = not w.panel.running
    if w.panel.running:
        w.panel.cancel()
        while w.panel.running:
            app.processEvents()
    t1 = time.perf_counter()
    while time.perf_counter() - t1 < 1.0:  # the result is added and drawn
        app.processEvents()
        time.sleep(0.002)
    timer.stop()
    import numpy as np

    gaps = np.diff(ticks) * 1000 - 10
    worst = np.argsort(gaps)[-5:][::-1]
    # stalls that began before the result arrived happened while detecting; the rest is napari
    # adding and first drawing the Points layer
    t_done = shown[0] if shown else ticks[-1]
    ends = np.asarray(ticks[1:])
    during, after = gaps[ends <= t_done], gaps[ends > t_done]
    out = {"max_stall_ms": float(during.max()), "p99_stall_ms": float(np.percentile(during, 99)),
           "show_stall_ms": float(after.max()) if len(after) else 0.0,
           "worst_at_s": [[round(ticks[i] - t0, 2), round(float(gaps[i]))] for i in worst],
           "seconds": time.perf_counter() - t0, "finished": finished, "ticks": len(ticks)}
    viewer.close()
    return out


# ---------------------------------------------------------------- in-process
def classical_val(radius: float = 6.0) -> dict:
    import numpy as np
    from PIL import Image

    from napari_histoai.io.points import read_points_csv
    from napari_histoai.methods.classical import ClassicalDetector
    from napari_histoai.metrics import detection_scores

    root = DATA / "crchisto" / "val"
    det = ClassicalDetector()
    per, tp, fp, fn = [], 0, 0, 0
    for p in sorted((root / "images").glob("*.png")):
        img = np.asarray(Image.open(p).convert("RGB"))
        gt = read_points_csv(root / "points" / f"{p.stem}.csv").yx
        s = detection_scores(det.detect(img)[0], gt, radius)
        per.append(s["f1"])
        tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["fn"]
    return {"f_d_pooled": 2 * tp / (2 * tp + fp + fn), "f_d_mean": float(np.mean(per)), "images": len(per)}


def make_slide(size: int, name: str, background: bool = False) -> Path:
    """A size x size mosaic of real CRCHistoPhenotypes tiles; with ``background`` the lower half
    of every 2048-px period is blank glass (like a real slide, half of it is not tissue)."""
    import numpy as np

    from napari_histoai.io.mosaic import crchisto_tiles, write_mosaic_slide

    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / name
    if not path.exists():
        t = time.perf_counter()
        tmp = path.with_name(".partial-" + name)
        tiles = crchisto_tiles(DATA, n=64)
        if background:
            glass = np.full_like(tiles[0], 242)
            tiles = tiles[:32] + [glass] * 32
        write_mosaic_slide(tmp, tiles, (size, size), mpp=0.5, quality=80)
        tmp.rename(path)
        print(f"generated {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="small slides, short runs (CI)")
    ap.add_argument("--model", default="classical", help="detector for throughput/stall rows")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        fn = {"open": lambda: child_open_napari(rest[0]), "detect": lambda: child_detect(rest[0], rest[1]),
              "stall": lambda: child_stall(rest[0], rest[1], float(rest[2])),
              "segment": lambda: child_segment(rest[0])}[kind]
        print(json.dumps(fn()))
        return
    me = str(Path(__file__).resolve())
    big = make_slide(4096 if a.smoke else 100_000, "smoke_4k.ome.tif" if a.smoke else "mosaic_100k.ome.tif")
    mid = make_slide(2048 if a.smoke else 20_000, "smoke_2k_bg.ome.tif" if a.smoke else "mosaic_20k_bg.ome.tif", background=True)
    rows, payload = [], {"smoke": a.smoke}
    q = classical_val()
    payload["classical_val"] = q
    rows.append(["Classical detector F_d, crchisto/val (10 images, 6 px, pooled)", f"{q['f_d_pooled']:.3f}", "-"])
    o = run_child([me, "--child", "open", str(big)], xvfb=True)
    payload["open"] = o
    side = o["shape"][1]
    rows.append([f"First frame, {side / 1000:g}k x {side / 1000:g}k px pyramid ({o['levels']} levels) in napari, "
                 "cold (first file: includes imports) / warm", f"{o['first_frame_s']:.2f} s / {o['first_frame_warm_s']:.2f} s",
                 "< 2 s"])
    rows.append(["Peak RSS of the napari process with that slide open", f"{o['peak_rss_mb']:.0f} MB "
                 f"(+{o['rss_after_mb'] - o['rss_before_mb']:.0f} MB for the slide)", "< 500 MB"])
    d = run_child([me, "--child", "detect", str(mid), a.model])
    payload["detect"] = d
    msize = (d["megapixels"] * 1e6) ** 0.5 / 1000
    rows.append([f"Tiled whole-slide detection ({a.model}), {msize:.3g}k x {msize:.3g}k px slide, half glass, 2 CPU threads",
                 f"{d['mp_per_s']:.2f} MP/s of slide ({d['seconds']:.0f} s, {d['tiles']} tissue tiles, {d['skipped']} "
                 f"background tiles skipped, {d['n_points']} nuclei)", "-"])
    rows.append(["Peak RSS during that detection", f"{d['peak_rss_mb']:.0f} MB", "-"])
    g = run_child([me, "--child", "segment", str(mid)])
    payload["segment"] = g
    rows.append(["Whole-slide instance labels (classical segmenter), same slide, streamed to zarr then OME-TIFF",
                 f"{g['megapixels'] / g['seconds']:.2f} MP/s of slide ({g['seconds']:.0f} s + {g['write_seconds']:.0f} s "
                 f"writing, {g['n_objects']} nuclei); labels would be {g['labels_bytes_in_ram_if_numpy'] / 1e9:.1f} GB in RAM",
                 "-"])
    rows.append(["Peak RSS during that segmentation", f"{g['peak_rss_mb']:.0f} MB", "< 3 GB"])
    s = run_child([me, "--child", "stall", str(mid), a.model, "10" if a.smoke else "30"], xvfb=True)
    payload["stall"] = s
    rows.append([f"Largest GUI event-loop stall while detecting ({s['seconds']:.0f} s, 10-ms QTimer; from the "
                 "click, including the start of the job)",
                 f"{s['max_stall_ms']:.0f} ms (p99 {s['p99_stall_ms']:.0f} ms)", "< 100 ms"])
    if s["finished"]:
        rows.append(["Largest stall while napari adds and first draws the result's Points layer",
                     f"{s['show_stall_ms']:.0f} ms", "-"])
    md = table(["measure", "value", "target"], rows)
    print(md)
    if not a.smoke:
        save("foundation", payload, md)


if __name__ == "__main__":
    main()
