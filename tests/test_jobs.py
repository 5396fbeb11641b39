"""The job pattern: progress, results, cooperative cancel, device choice."""

import pytest

from napari_histoai.engine.devices import pick_device
from napari_histoai.engine.jobs import Progress, run_job
from napari_histoai.errors import CancelFlag, Cancelled, JobError


def counting_job(n, log):
    try:
        for i in range(n):
            log.append(i)
            yield Progress(i + 1, n, f"step {i + 1}")
        return "finished"
    finally:
        log.append("cleanup")


def test_run_job_returns_result_and_reports_progress():
    log, seen = [], []
    assert run_job(counting_job(3, log), seen.append) == "finished"
    assert [p.done for p in seen] == [1, 2, 3]
    assert log[-1] == "cleanup"


def test_cancel_stops_at_next_step_and_cleans_up():
    log = []
    flag = CancelFlag()

    def on_progress(p):
        if p.done == 2:
            flag.set()

    with pytest.raises(Cancelled):
        run_job(counting_job(100, log), on_progress, flag)
    assert log == [0, 1, "cleanup"]


def test_device_auto_is_cpu_here_and_bad_device_is_one_line():
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(JobError, match="unknown device"):
        pick_device("tpu")
