"""Batch runner benchmark: ``histoai batch`` on a LocalCluster vs the same files one after
another in one process, and a batch killed with SIGKILL midway then resumed.

    python benchmarks/bench_batch.py                          # 6 slides 3072 x 3072, 2 workers (a few minutes)
    python benchmarks/bench_batch.py --n 4 --size 2048 --no-save   # quicker

(a) N pyramidal JPEG OME-TIFF slides (real CRCHistoPhenotypes tiles, 0.5 µm/px) are processed
by ``histoai batch TASK --workers W`` in a child process (wall clock from the command's start
to its exit: cluster start-up, imports in each worker and shutdown included) and by a child
process that calls the task function (``tasks.detect_file`` ...) on each file in a loop (its
imports not timed; torch at its default thread count). One run each; ratio = sequential /
batch.

(b) The same batch into a new folder, started as a child process and killed with SIGKILL (its
own pid only) as soon as the first record says ``done``; then the same command again. Reported:
files finished at the kill, what the re-run did (done / skipped / failed), whether every output
exists and opens (CSV / GeoJSON parsed, OME-TIFF read), and whether processes of the killed
batch were left running.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, SCRATCH, run_child, save, table

DEFAULT_MODEL = {"detect": "classical", "segment": None, "heatmap": None}


# ---------------------------------------------------------------- children
def child_sequential(task: str, slides: list[str], out_dir: str, model: str | None) -> dict:
    """The task on every slide, one after another in this process -> seconds per file."""
    from napari_histoai import tasks
    from napari_histoai.batch import TASKS

    fn_name, suffix = TASKS[task]
    fn = getattr(tasks, fn_name)
    opts = {} if model is None else {"model": model}
    import torch

    per_file, counts = [], []
    t0 = time.perf_counter()
    for s in slides:
        t = time.perf_counter()
        name = Path(s).name.split(".")[0] + suffix
        r = fn(s, str(Path(out_dir) / name), **opts)
        per_file.append(time.perf_counter() - t)
        counts.append(r.get("n", r.get("score")))
    return {"seconds": time.perf_counter() - t0, "per_file": per_file, "counts": counts,
            "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------- helpers
def make_slides(n: int, size: int) -> list[Path]:
    from napari_histoai.io.mosaic import crchisto_tiles, write_mosaic_slide

    folder = SCRATCH / f"batch_slides_{size}"
    folder.mkdir(parents=True, exist_ok=True)
    tiles = None
    out = []
    for i in range(n):
        p = folder / f"slide{i:02d}.ome.tif"
        if not p.exists():
            if tiles is None:
                tiles = crchisto_tiles(DATA, n=64)
            # a different real-tile arrangement per slide (rotated tile list), 0.5 µm/px
            k = (7 * i) % len(tiles)
            tmp = p.with_name(".tmp-" + p.name)
            write_mosaic_slide(tmp, tiles[k:] + tiles[:k], (size, size), mpp=0.5, period=8, quality=85)
            tmp.rename(p)
        out.append(p)
    return out


def batch_cmd(task: str, src: Path, out: Path, workers: int, model: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "napari_histoai.cli", "batch", task, str(src), "--out", str(out),
           "--workers", str(workers)]
    return cmd + (["--model", model] if model else [])


def read_summary(out: Path) -> dict:
    with open(out / "summary.csv", newline="") as fh:
        return {Path(r["image"]).name: r for r in csv.DictReader(fh)}


def output_opens(path: Path) -> bool:
    try:
        if path.suffix == ".csv":
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
            return len(rows) >= 1 and len(rows[0]) >= 3
        if path.suffix in (".geojson", ".json"):
            return "features" in json.loads(path.read_text())
        import tifffile

        with tifffile.TiffFile(path) as tf:
            a = tf.series[0].levels[-1].asarray()
        return a.size > 0
    except Exception:  # noqa: BLE001 - a broken output is the finding
        return False


def _state(pid: int) -> list[str] | None:
    """(parent pid, state letter) fields of /proc/PID/stat, None when gone."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return None


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for d in Path("/proc").iterdir():
        st = _state(int(d.name)) if d.name.isdigit() else None
        if st and int(st[1]) == pid and st[0] != "Z":
            kids.append(int(d.name))
    return kids


def alive(pid: int) -> bool:
    st = _state(pid)
    return bool(st) and st[0] != "Z"


def kill_and_resume(task: str, src: Path, out: Path, workers: int, model: str | None, n: int) -> dict:
    from napari_histoai.batch import RECORDS

    shutil.rmtree(out, ignore_errors=True)
    cmd = batch_cmd(task, src, out, workers, model)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    records = out / RECORDS
    kids: list[int] = []
    while proc.poll() is None:
        done = [p for p in records.glob("*.json") if json.loads(p.read_text()).get("status") == "done"] \
            if records.is_dir() else []
        if done:
            break
        kids = children_of(proc.pid) or kids
        time.sleep(0.05)
    if proc.poll() is not None:
        raise RuntimeError(f"the batch finished before it could be killed: {proc.stderr.read().decode()[-2000:]}")
    kids = children_of(proc.pid) or kids
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.perf_counter() - t0
    recs = [json.loads(p.read_text()) for p in records.glob("*.json")]
    finished_at_kill = sum(r.get("status") == "done" for r in recs)
    time.sleep(3)  # the killed batch's worker processes exit when they see their parent gone
    orphans = [k for k in kids if alive(k)]
    t1 = time.perf_counter()
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    rerun_s = time.perf_counter() - t1
    summary = read_summary(out)
    status = [row["status"] for row in summary.values()]
    outs = [Path(row["out"]) for row in summary.values()]
    return {"killed_after_s": killed_at, "finished_at_kill": finished_at_kill, "records_at_kill": len(recs),
            "orphans_after_3s": len(orphans), "rerun_rc": r.returncode, "rerun_s": rerun_s,
            "rerun_done": status.count("done"), "rerun_skipped": status.count("skipped"),
            "rerun_failed": status.count("error"), "files": n, "outputs_exist": sum(p.exists() for p in outs),
            "outputs_open": sum(output_opens(p) for p in outs),
            "stray_temporaries": len([p for p in out.rglob(".*histoai-*")]),
            "rerun_stderr_tail": r.stderr.strip().splitlines()[-1:] if r.stderr else []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6, help="slides (default 6)")
    ap.add_argument("--size", type=int, default=3072, help="slide side in px at 0.5 µm/px (default 3072)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    ap.add_argument("--task", choices=["detect", "segment", "heatmap"], default="detect")
    ap.add_argument("--model", default=None, help="model (default: classical for detect; heatmap needs one)")
    ap.add_argument("--no-save", action="store_true", help="print the table only")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        task, out_dir, model, *slides = a.child
        print(json.dumps(child_sequential(task, slides, out_dir, None if model == "-" else model)))
        return
    model = a.model or DEFAULT_MODEL[a.task]
    if a.task == "heatmap" and not model:
        ap.error("--task heatmap needs --model")
    me = str(Path(__file__).resolve())
    t = time.perf_counter()
    slides = make_slides(a.n, a.size)
    make_s = time.perf_counter() - t
    src = SCRATCH / f"batch_in_{a.size}_{a.n}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for s in slides:
        os.symlink(s, src / s.name)
    work = SCRATCH / "batch_work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "seq").mkdir(parents=True)

    seq = run_child([me, "--child", a.task, str(work / "seq"), model or "-", *map(str, slides)])
    t = time.perf_counter()
    r = subprocess.run(batch_cmd(a.task, src, work / "batch", a.workers, model), check=False, capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    batch_s = time.perf_counter() - t
    summ = read_summary(work / "batch")
    if r.returncode != 0 or any(row["status"] != "done" for row in summ.values()):
        raise RuntimeError(f"batch failed ({r.returncode}): {r.stderr[-2000:]}")
    in_worker = sum(float(row["seconds"]) for row in summ.values())
    same = [str(x) for x in seq["counts"]] == [summ[s.name]["n" if a.task != "heatmap" else "score"] for s in slides]
    k = kill_and_resume(a.task, src, work / "killed", a.workers, model, a.n)

    what = f"{a.n} slides {a.size} x {a.size} px (0.5 µm/px, real tiles), `{a.task}` with {model or 'default'}"
    rows = [
        ["files", what],
        ["one after another, one process (tasks loop)", f"{seq['seconds']:.1f} s (torch {seq['torch_threads']} threads)"],
        [f"`histoai batch {a.task} --workers {a.workers}` (wall, incl. cluster start + imports)",
         f"{batch_s:.1f} s (sum of per-file task seconds {in_worker:.1f} s)"],
        ["speed-up (sequential / batch)", f"{seq['seconds'] / batch_s:.2f}x"],
        ["same counts both ways", "yes" if same else "NO"],
        ["killed with SIGKILL after", (f"{k['killed_after_s']:.1f} s, {k['finished_at_kill']} of {a.n} files "
                                       f"finished ({k['records_at_kill']} records)")],
        ["worker processes left running 3 s after the kill", str(k["orphans_after_3s"])],
        ["re-run", (f"{k['rerun_s']:.1f} s, exit {k['rerun_rc']}: {k['rerun_done']} done, {k['rerun_skipped']} "
                    f"skipped, {k['rerun_failed']} failed")],
        ["outputs after the re-run: exist / open", f"{k['outputs_exist']} / {k['outputs_open']} of {a.n}"],
        ["temporary or lock files left in the output folder", str(k["stray_temporaries"])],
    ]
    md = table(["measure", "value"], rows)
    md += (f"\n\n{os.cpu_count()} CPU cores; making the slides took {make_s:.0f} s (kept in {SCRATCH} for the next run); "
           "one run each. "
           f"Command: `python benchmarks/bench_batch.py --n {a.n} --size {a.size} --workers {a.workers} --task {a.task}`")
    print(md)
    payload = {"args": vars(a), "model": model, "sequential": seq, "batch_seconds": batch_s,
               "batch_task_seconds": in_worker, "speedup": seq["seconds"] / batch_s, "same_counts": same,
               "kill_resume": k, "cpu_count": os.cpu_count()}
    if not a.no_save:
        save("batch", payload, md)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    main()
