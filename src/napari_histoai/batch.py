"""Many files at once on dask.distributed: the per-file tasks of :mod:`.tasks` mapped over a
list of images, on a LocalCluster of this machine by default or on a running scheduler.

* one output per input in ``out_dir`` (``<stem>.csv`` / ``.geojson`` for detect,
  ``<stem>.ome.tif`` for segment), each written atomically by its task;
* ``summary.csv`` in ``out_dir``: one row per input (status ``done``, ``skipped`` or ``error``,
  the count, the pixel size used, seconds, the one-line error), rewritten atomically after every
  file, so a killed batch keeps what it finished;
* resumable: an input whose output already exists is skipped (``overwrite`` re-runs it);
* a file that fails (unreadable, wrong format) is one row with its one-line error; the others go on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import JobError

__all__ = ["TASKS", "batch_run", "expand_inputs", "SUMMARY"]

SUMMARY = "summary.csv"
IMAGE_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".scn", ".mrxs", ".bif", ".png", ".jpg", ".jpeg", ".zarr")
# task name -> (function name in napari_histoai.tasks, default output suffix)
TASKS = {"detect": ("detect_file", ".csv"), "segment": ("segment_file", ".ome.tif")}
COLUMNS = ["image", "out", "status", "n", "mpp", "mpp_source", "seconds", "error"]


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expand to the images directly inside them (sorted). Inputs that do
    not exist raise one line."""
    out: list[Path] = []
    for i in inputs:
        p = Path(i)
        if p.is_dir() and not p.name.lower().endswith(".zarr"):
            out += sorted(q for q in p.iterdir() if q.name.lower().endswith(IMAGE_SUFFIXES) and not q.name.startswith("."))
        elif p.exists():
            out.append(p)
        else:
            raise JobError(f"no such file or folder: {p}")
    if not out:
        raise JobError("no images to process")
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _output_for(image: Path, out_dir: Path, suffix: str) -> Path:
    name = image.name
    for s in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(s):
            return out_dir / (name[: -len(s)] + suffix)
    return out_dir / (Path(name).stem + suffix)


def run_one(task: str, image: str, out: str, options: dict, threads: int = 1) -> dict:
    """One file on a worker: the task, its summary as a row; a bad file is a row with its error."""
    import dask
    import torch

    from . import tasks

    torch.set_num_threads(max(1, int(threads)))
    t0 = time.perf_counter()
    try:
        # the lazy slide levels are read inside this worker (a distributed worker would otherwise
        # ship every read to the cluster, and the file handles behind them cannot travel)
        with dask.config.set(scheduler="threads"):
            s = getattr(tasks, TASKS[task][0])(image, out, **options)
    except JobError as e:
        return {"image": image, "out": out, "status": "error", "error": str(e).splitlines()[0],
                "seconds": round(time.perf_counter() - t0, 2)}
    return {"image": image, "out": out, "status": "done", "n": s.get("n"), "mpp": s.get("mpp"),
            "mpp_source": s.get("mpp_source"), "seconds": s.get("seconds")}


def _write_summary(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from .io.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in sorted(rows, key=lambda r: r["image"]):
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    atomic_write_text(path, buf.getvalue())


def batch_run(task: str, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
              options: Optional[dict] = None, suffix: Optional[str] = None, scheduler: Optional[str] = None,
              workers: Optional[int] = None, threads_per_worker: int = 1, overwrite: bool = False,
              on_file: Optional[Callable[[dict, int, int], None]] = None) -> list[dict]:
    """Run ``task`` (``detect`` or ``segment``) on every input, in parallel on dask.distributed.

    ``options``: keyword options of the task (model, mpp, ...); ``suffix``: the outputs' file
    ending (default per task); ``scheduler``: address of a running scheduler (default: a
    LocalCluster of ``workers`` processes, default half the CPU cores, at least 1);
    ``on_file(row, done, total)`` is called as each file finishes. Returns the summary rows.
    """
    from distributed import Client, LocalCluster, as_completed

    from .io.outputs import check_output

    if task not in TASKS:
        raise JobError(f"unknown batch task {task!r}; choose one of {', '.join(TASKS)}")
    images = expand_inputs(inputs)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise JobError(f"--out {out_dir} is a file; give a folder for the results")
    check_output(out_dir / SUMMARY, (".csv",), what="--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = suffix or TASKS[task][1]
    todo, rows = [], []
    for im in images:
        out = _output_for(im, out_dir, suffix)
        if out.exists() and not overwrite:
            rows.append({"image": str(im), "out": str(out), "status": "skipped", "error": "output exists"})
        else:
            todo.append((str(im), str(out)))
    summary = out_dir / SUMMARY
    _write_summary(summary, rows)
    if not todo:
        return rows
    n_workers = workers or max(1, (os.cpu_count() or 2) // 2)
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="20s")
        else:
            cluster = LocalCluster(n_workers=min(n_workers, len(todo)), threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
    except OSError as e:
        raise JobError(f"cannot reach the dask scheduler {scheduler or ''}: {e}") from None
    try:
        futures = [client.submit(run_one, task, im, out, dict(options or {}), threads_per_worker, pure=False)
                   for im, out in todo]
        for k, fut in enumerate(as_completed(futures), start=1):
            try:
                row = fut.result()
            except Exception as e:  # a worker died (out of memory, killed): the file is an error row
                row = {"image": "?", "status": "error", "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                for (im, out), f in zip(todo, futures):
                    if f is fut:
                        row.update(image=im, out=out)
            rows.append(row)
            _write_summary(summary, rows)
            if on_file is not None:
                on_file(row, k, len(todo))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return rows
