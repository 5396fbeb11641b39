"""Many files at once on dask.distributed: the per-file tasks of :mod:`.tasks` mapped over a
list of images, on a LocalCluster of this machine by default or on a running scheduler.

* one task per input; one output per input in ``out_dir`` (``<stem>.csv`` / ``.geojson`` for
  detect, ``<stem>.ome.tif`` for segment, instances and heatmap), written atomically by its task;
* one JSON record per output in ``out_dir/records/<output name>.json``, written atomically by
  the worker right after the output: the input file (path, size, mtime), status, seconds, the
  count (detect, segment, instances) or slide score (heatmap), the model and a digest of its
  weights, the options, the package version, and the one-line error of a file that failed;
* resumable: a file is skipped when its record says ``done`` for the same task, model (a
  digest of its config and weights, so a retrained model of the same name re-runs), options and
  input file (size, mtime), and the output it vouches for is still there unchanged (size,
  mtime); anything else re-runs it, so an interrupted batch resumes and a different model or
  options re-run everything (``overwrite`` re-runs regardless). Run-only options (``device``,
  ``batch_size``) and the package version do not count;
* ``summary.csv`` in ``out_dir``: one row per input (status ``done``, ``skipped`` or ``error``,
  the count or score, the pixel size used, seconds, the one-line error), rewritten atomically
  after every file, so a killed batch keeps what it finished;
* a file that fails (unreadable, wrong format, a worker that died on it) is one row with its
  one-line error; the others go on.

Workers: a LocalCluster runs ``workers`` processes of ``threads_per_worker`` threads each, one
file at a time per worker (a worker resource), and torch in that worker uses all its threads
(dask would set ``OMP_NUM_THREADS=1`` in workers: the cluster sets the OpenMP / BLAS variables to
the worker's threads instead, and :func:`run_one` calls ``torch.set_num_threads`` once torch is
imported).
On a running scheduler, files run one at a time per worker with ``nthreads`` torch threads when
its workers were started with ``--resources histoai-file=1``; otherwise a worker runs
``nthreads`` files at once with ``threads_per_worker`` (default 1) torch threads each. The
output folder must then be the same path on the workers (a shared file system).

Models are loaded once per worker process: :func:`run_one` wraps the loaders the tasks call
(:func:`~napari_histoai.methods.detection.registry.load_detector`,
:func:`~napari_histoai.methods.contrastive.load_model`,
:func:`~napari_histoai.methods.adaptation.load_adapted_model`,
:func:`~napari_histoai.methods.heatmap.load_heatmap_model`, and
:func:`~napari_histoai.models.load_checkpoint` for anything else) with a small per-process cache
keyed by (model folder, weights file size and mtime, device); a loaded model is lent to one file
at a time (models keep per-slide state such as a stain mapping) and returned when the file is
done. Each record says how many models its file loaded or reused. No task starts DataLoader
worker processes (the package has none; worker processes are daemonic and could not start
them).

From a Python script, call :func:`batch_run` under ``if __name__ == "__main__":``: the local
worker processes are spawned, and re-import the script that started them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

from .batch_models import MODEL_CACHE, install_model_cache
from .batch_records import (
    RECORDS,
    RUN_ONLY,
    SELF_TRAINED,
    _canonical_options,
    _finished,
    _jsonable,
    _model_identity,
    _read_record,
    _stat,
    _write_record,
    record_path,
)
from .errors import JobError
from .io.inputs import expand_inputs

__all__ = ["RECORDS", "SUMMARY", "TASKS", "batch_run", "expand_inputs", "record_path", "run_one"]

SUMMARY = "summary.csv"
# task name -> (function name in napari_histoai.tasks, default output suffix)
TASKS = {"detect": ("detect_file", ".csv"), "segment": ("segment_file", ".ome.tif"),
         "instances": ("instances_file", ".ome.tif"), "heatmap": ("heatmap_file", ".ome.tif")}
# the model a task runs when none is given (named here, so the resume check knows it without
# importing the method; detect asks its registry): methods.adaptation.BUNDLED
DEFAULT_MODELS = {"instances": "cycpdam-he"}
COLUMNS = ["image", "out", "status", "n", "score", "mpp", "mpp_source", "seconds", "error"]
# options that change how a file is run, not its result: not part of the resume check
RESOURCE = "histoai-file"  # worker resource: one file at a time per worker
CONNECT_TIMEOUT = 5.0  # s, for each of the two connection steps to a scheduler


# ---------------------------------------------------------------- inputs, outputs, records
def _output_for(image: Path, out_dir: Path, suffix: str) -> Path:
    name = image.name
    for s in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(s):
            return out_dir / (name[: -len(s)] + suffix)
    return out_dir / (Path(name).stem + suffix)


def _one_line(e: BaseException) -> str:
    if isinstance(e, JobError):
        return str(e).splitlines()[0] if str(e) else "failed"
    if isinstance(e, MemoryError):
        return "out of memory"
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}{': ' + first if first else ''}"


def _torch_threads(threads: int | None) -> int:
    """Torch's thread count in this worker: ``threads``, or the worker's own threads (dask sets
    OMP_NUM_THREADS=1 in its workers, which torch would otherwise follow). Torch is not imported
    for it: until a task imports torch, ``OMP_NUM_THREADS`` is set instead, which torch reads
    when it is imported (the classical models never import it)."""
    n = threads
    if n is None:
        try:
            from distributed import get_worker

            n = get_worker().state.nthreads
        except (ImportError, ValueError, AttributeError):
            n = 1
    n = max(1, int(n))
    torch = sys.modules.get("torch")
    if torch is None:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    elif torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def run_one(task: str, image: str, out: str, options: dict, meta: dict, threads: int | None = None) -> dict:
    """One file on a worker: the task, then its JSON record next to the output, and the summary
    row. A bad file (any exception) is a row, and a record, with its one-line error.

    ``meta``: what goes into the record besides the result (task, model, model_id, options,
    file_stat); ``threads``: torch threads (None: the worker's thread count)."""
    import dask

    from . import __version__, tasks

    t0 = time.perf_counter()
    row: dict = {"image": image, "out": out}
    record = {**meta, "file": image, "out": out, "version": __version__}
    try:
        record["threads"] = _torch_threads(threads)
        fn = getattr(tasks, TASKS[task][0], None)
        if fn is None:
            raise JobError(f"this napari-histoai has no {TASKS[task][0]}: the {task} task is not available")
        install_model_cache(task)
        # the lazy slide levels are read inside this worker (a distributed worker would otherwise
        # ship every read to the cluster, and the file handles behind them cannot travel), on as
        # many threads as the worker has
        with MODEL_CACHE.lending() as cache_counts, dask.config.set(scheduler="threads", num_workers=record["threads"]):
            s = fn(image, out, **options)
        torch = sys.modules.get("torch")
        record["torch_threads"] = None if torch is None else torch.get_num_threads()  # what the task ran with
        _torch_threads(record["threads"])  # torch imported by this task: its count for the next ones
        record["model_cache"] = dict(cache_counts)
        s = _jsonable(s)
        row.update(status="done", n=s.get("n"), score=s.get("score"), mpp=s.get("mpp"),
                   mpp_source=s.get("mpp_source"), seconds=s.get("seconds"))
        record.update(status="done", out_stat=_stat(out), n=s.get("n"), counts=s.get("counts"),
                      score=s.get("score"), mpp=s.get("mpp"), mpp_source=s.get("mpp_source"), result=s)
    except Exception as e:  # noqa: BLE001 - one bad file is one error row; the batch goes on
        row.update(status="error", error=_one_line(e))
        record.update(status="error", error=row["error"])
    if row.get("seconds") is None:
        row["seconds"] = round(time.perf_counter() - t0, 2)
    record.update(seconds=row["seconds"], finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:
        _write_record(record_path(out), record)
    except OSError as e:
        if row["status"] == "done":  # the next run does it again: without a record it cannot know
            row.update(status="error", error=f"{out} was written but its record could not be: {e.strerror or e}")
    return row


# ---------------------------------------------------------------- the batch
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


def _connect(scheduler: str, timeout: float = CONNECT_TIMEOUT):
    """A Client of the dask scheduler at ``scheduler``, or one line in a JobError within
    2 x ``timeout`` s (a refused or unresolvable address fails at once): the address is reached
    with a plain socket first, then asked who it is, before the Client (whose own failures retry
    for long and leave noise behind) is made."""
    import asyncio
    import socket

    from distributed import Client
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    async def identity():
        from distributed.core import rpc

        r = rpc(scheduler, timeout=timeout)
        try:
            return await r.identity()
        finally:
            await r.close_rpc()

    where = f"cannot reach the dask scheduler {scheduler}"
    try:
        proto, loc = parse_address(scheduler)
        get_backend(proto)  # an unknown scheme: one line now
        if proto in ("tcp", "tls"):
            host, port = parse_host_port(loc, default_port=8786)
            socket.create_connection((host, port), timeout=timeout).close()
    except TimeoutError:
        raise JobError(f"{where}: no answer in {timeout:g} s") from None
    except (OSError, ValueError, TypeError) as e:
        raise JobError(f"{where}: {getattr(e, 'strerror', None) or _one_line(e)}") from None
    try:
        who = asyncio.run(asyncio.wait_for(identity(), timeout))
    except (OSError, asyncio.TimeoutError, TimeoutError) as e:
        raise JobError(f"{where}: {getattr(e, 'strerror', None) or _one_line(e) or 'no answer'}") from None
    except Exception:  # noqa: BLE001 - garbage back: something else listens there
        raise JobError(f"{where}: something answers there, but not as a dask scheduler") from None
    if not isinstance(who, dict) or who.get("type") != "Scheduler":
        kind = who.get("type") if isinstance(who, dict) else None
        raise JobError(f"{where}: it is not a dask scheduler{f' (a {kind})' if kind else ''}")
    try:
        return Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
    except Exception as e:  # noqa: BLE001 - e.g. went away meanwhile
        raise JobError(f"{where}: {_one_line(e)}") from None


@contextmanager
def _quiet_distributed():
    """Connection retries and shutdown chatter of distributed in this process stay off stderr
    for the batch (its errors still show); the levels are restored after."""
    import logging

    loggers = [logging.getLogger(n) for n in ("distributed", "distributed.client", "distributed.comm",
                                              "distributed.core", "distributed.batched", "distributed.scheduler",
                                              "distributed.nanny", "distributed.worker", "distributed.deploy")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def batch_run(task: str, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
              options: dict | None = None, suffix: str | None = None, scheduler: str | None = None,
              workers: int | None = None, threads_per_worker: int | None = None, overwrite: bool = False,
              progress: bool = False, on_file: Callable[[dict, int, int], None] | None = None) -> list[dict]:
    """Run ``task`` (``detect``, ``segment``, ``instances`` or ``heatmap``) on every input, one
    dask task per file, in parallel on dask.distributed. Returns the summary rows (one per input).

    ``options``: keyword options of the task (model, mpp, device, ...); ``suffix``: the outputs'
    file ending (default per task); ``scheduler``: address of a running scheduler (default: a
    LocalCluster of ``workers`` processes, default half the CPU cores, at least 1, each with
    ``threads_per_worker`` threads, default 1, all of them torch's); ``overwrite``: re-run files
    whose record says they are done; ``progress``: a tqdm bar on stderr (files done / total) and
    one line per failed file; ``on_file(row, done, total)`` is called as each file finishes
    (``total``: files to run, skipped ones not counted).
    """
    from .io.outputs import check_output

    if task not in TASKS:
        raise JobError(f"unknown batch task {task!r}; choose one of {', '.join(TASKS)}")
    images = expand_inputs(inputs)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise JobError(f"--out {out_dir} is a file; give a folder for the results")
    check_output(out_dir / SUMMARY, (".csv",), what="--out")
    suffix = suffix or TASKS[task][1]
    options = dict(options or {})
    if not options.get("model") and task in DEFAULT_MODELS:
        options["model"] = DEFAULT_MODELS[task]
    if task == "segment" and not options.get("model"):
        options.setdefault("method", "selftrain")   # the default method is part of a record's identity
    model, model_id = _model_identity(task, options.get("model"))
    if model is not None:
        options["model"] = model
    canonical = _canonical_options(options)
    outs: dict[Path, Path] = {}
    for im in images:
        out = _output_for(im, out_dir, suffix)
        if out in outs:
            raise JobError(f"{outs[out].name} and {im.name} would both write {out.name}; process them into different --out folders")
        outs[out] = im
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RECORDS).mkdir(exist_ok=True)

    todo, rows = [], []
    for out, im in outs.items():
        meta = {"task": task, "model": model if model is not None else SELF_TRAINED, "model_id": model_id,
                "options": canonical, "file_stat": _stat(im),
                "run": _jsonable({k: options[k] for k in RUN_ONLY if options.get(k) is not None})}
        rec = None if overwrite else _read_record(record_path(out))
        if _finished(rec, meta, out):
            rows.append({"image": str(im), "out": str(out), "status": "skipped", "n": rec.get("n"),
                         "score": rec.get("score"), "mpp": rec.get("mpp"), "mpp_source": rec.get("mpp_source"),
                         "seconds": rec.get("seconds")})
        else:
            todo.append((str(im), str(out), meta))
    summary = out_dir / SUMMARY
    _write_summary(summary, rows)
    if not todo:
        return rows
    with _quiet_distributed(), _cluster(scheduler, workers, threads_per_worker, len(todo)) as (client, threads, resources):
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(images), initial=len(rows), unit="file", desc=f"histoai batch {task}",
                       file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        try:
            _run_todo(client, threads, resources, task, todo, options, rows, summary, bar, on_file)
        finally:
            if bar is not None:
                bar.close()
    return rows


@contextmanager
def _cluster(scheduler: str | None, workers: int | None, threads_per_worker: int | None, n_files: int):
    """(client, torch threads per file or None for the worker's own, task resources), closed after."""
    from distributed import Client, LocalCluster

    cluster = None
    if scheduler:
        client = _connect(scheduler)
        try:
            ws = client.scheduler_info().get("workers", {}).values()
            one_at_a_time = bool(ws) and all((w.get("resources") or {}).get(RESOURCE) for w in ws)
        except Exception:  # noqa: BLE001 - an older scheduler: files as the workers' threads allow
            one_at_a_time = False
        # one file at a time per worker: torch gets the worker's threads (None) unless told otherwise
        threads = threads_per_worker if one_at_a_time else (threads_per_worker or 1)
    else:
        n_workers = min(workers or max(1, (os.cpu_count() or 2) // 2), n_files)
        try:
            t = threads_per_worker or 1
            # native thread pools (OpenMP, BLAS, torch at import) sized to the worker's threads, not 1
            env = {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t}
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=t, processes=True, dashboard_address=None,
                                   resources={RESOURCE: 1}, env=env)
            client = Client(cluster, set_as_default=False)
        except Exception as e:  # noqa: BLE001 - cannot start processes / bind a port
            if cluster is not None:
                cluster.close()
            raise JobError(f"cannot start a local dask cluster: {_one_line(e)}") from None
        one_at_a_time, threads = True, None
    try:
        yield client, threads, ({RESOURCE: 1} if one_at_a_time else None)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_todo(client, threads, resources, task, todo, options, rows, summary, bar, on_file) -> None:
    from distributed import as_completed

    futures, info = [], {}
    for im, out, meta in todo:
        fut = client.submit(run_one, task, im, out, options, meta, threads, pure=False, resources=resources,
                            key=f"histoai-{task}-{Path(out).name}-{os.urandom(4).hex()}")
        futures.append(fut)
        info[fut.key] = (im, out, meta)
    for k, fut in enumerate(as_completed(futures, loop=client.loop), start=1):
        im, out, meta = info[fut.key]
        try:
            row = fut.result()
        except Exception as e:  # noqa: BLE001 - a worker died on it (out of memory, killed)
            row = {"image": im, "out": out, "status": "error", "error": f"the worker died: {_one_line(e)}"}
            try:
                _write_record(record_path(out), {**meta, "file": im, "out": out, "status": "error",
                                                 "error": row["error"]})
            except OSError:
                pass
        rows.append(row)
        _write_summary(summary, rows)
        if bar is not None:
            if row["status"] == "error":
                bar.write(f"{row['image']}: error: {row.get('error')}", file=sys.stderr)
            bar.update(1)
        if on_file is not None:
            on_file(row, k, len(todo))
