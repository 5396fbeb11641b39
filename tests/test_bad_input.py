"""Bad arguments, bad outputs and corrupt data, tried as an adversarial user would, through the
CLI: exit code 2, one line on stderr, and the previous output untouched (or the finished work
kept somewhere safe). Malformed project, GeoJSON and model files: test_bad_input_files.py."""

import os
import stat

import pytest

from napari_histoai.cli import main


def _one_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def previous(tmp_path):
    """An output file from an earlier run, which a failing run must leave as it was."""
    p = tmp_path / "nuclei.csv"
    p.write_text("y,x,class,score\n1,2,nucleus,1\n")
    return p


def _detect(image, out, *extra):
    return main(["detect", str(image), "--out", str(out), "--model", "classical", *map(str, extra)])


@pytest.mark.parametrize("option", [
    ["--batch-size", "-1"], ["--batch-size", "0"], ["--min-score", "nan"], ["--min-score", "2"],
    ["--region", "0,0,nan,10"], ["--region", "0,0,inf,10"], ["--region", "1,2,3"], ["--mpp", "0"],
])
def test_nonsense_numbers_are_refused_before_any_work(sample_path, previous, capsys, option):
    before = previous.read_bytes()
    assert _detect(sample_path, previous, *option) == 2
    line = _one_line(capsys)
    assert "error" in line and (option[0].lstrip("-") in line or "region" in line)
    assert previous.read_bytes() == before


@pytest.mark.parametrize("cmd,option", [
    ("segment", ["--downsample", "0"]), ("segment", ["--steps", "0"]), ("segment", ["--min-size", "-3"]),
    ("convert", ["--tile", "100"]), ("train-detector", ["--steps", "-5"]),
    ("train-detector", ["--val-fraction", "1.5"]), ("train-detector", ["--pseudo-t", "nan"]),
])
def test_every_command_validates_its_numbers(sample_path, tmp_path, capsys, cmd, option):
    out = {"segment": tmp_path / "l.tif", "convert": tmp_path / "c.ome.tif", "train-detector": tmp_path / "m"}[cmd]
    args = [cmd] + ([] if cmd == "train-detector" else [str(sample_path)]) + ["--out", str(out), *option]
    assert main(args) == 2
    assert option[0] in _one_line(capsys)
    assert not out.exists()


def test_output_location_is_checked_before_the_job(sample_path, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    adir = tmp_path / "adir.csv"
    adir.mkdir()
    for out, words in [(afile / "sub" / "n.csv", "is a file"), (adir, "is a folder"), (tmp_path / "n.txt", "must end")]:
        assert _detect(sample_path, out) == 2
        assert words in _one_line(capsys)
    assert main(["train-detector", "--images", str(tmp_path), "--points", str(tmp_path), "--out", str(afile)]) == 2
    assert "is a file" in _one_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_unwritable_folder_is_refused(sample_path, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert _detect(sample_path, ro / "n.csv") == 2
        assert "not writable" in _one_line(capsys)
    finally:
        ro.chmod(0o700)


def test_output_that_is_the_input_is_refused_also_through_a_link(tmp_path, sample_path, capsys):
    import shutil

    img = tmp_path / "slide.tif"
    shutil.copy(sample_path, img)
    link = tmp_path / "link.tif"
    link.symlink_to(img)
    before = img.read_bytes()
    assert main(["segment", str(img), "--out", str(link)]) == 2
    assert "is the input" in _one_line(capsys)
    assert main(["convert", str(link), "--out", str(tmp_path / "slide.ome.tif")]) == 0  # a new file is fine
    capsys.readouterr()
    assert img.read_bytes() == before


def test_a_second_writer_of_the_same_output_is_refused(sample_path, previous, capsys):
    from napari_histoai.io.outputs import output_lock

    before = previous.read_bytes()
    with output_lock(previous):  # another process is writing it
        assert _detect(sample_path, previous) == 2
        assert "another histoai process is writing" in _one_line(capsys)
    assert previous.read_bytes() == before
    assert _detect(sample_path, previous) == 0  # the lock went with its holder


def test_outputs_keep_the_umask_mode_and_an_existing_files_mode(sample_path, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert _detect(sample_path, tmp_path / "new.csv") == 0
        assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o644
        shared = tmp_path / "shared.csv"
        shared.write_text("y,x\n")
        shared.chmod(0o664)
        assert _detect(sample_path, shared) == 0
        assert stat.S_IMODE(shared.stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_temporaries_left_by_a_killed_run_are_cleaned(sample_path, tmp_path, capsys):
    out = tmp_path / "n.csv"
    dead = tmp_path / ".n.csv.histoai-999999999-abc123.tmp"  # no such process
    live = tmp_path / f".n.csv.histoai-{os.getpid()}-zzz.tmp"  # a writer still running
    dead.write_text("partial")
    live.write_text("partial")
    assert _detect(sample_path, out) == 0
    assert not dead.exists() and live.exists() and out.exists()


def test_a_failed_final_write_keeps_the_result_and_says_where(sample_path, tmp_path, capsys, monkeypatch):
    import errno

    import napari_histoai.io.points as P

    real = P.atomic_write_text
    calls = []

    def full_disk(path, text):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(P, "atomic_write_text", full_disk)
    out = tmp_path / "n.csv"
    assert _detect(sample_path, out) == 2
    line = _one_line(capsys)
    assert "No space left on device" in line and "the result was saved to" in line
    rescued = calls[1]
    assert str(rescued) in line and len(P.read_points_csv(rescued)) > 300 and not out.exists()


def _corrupt_tiles(path, fraction: float):
    """Zero the bytes of the first ``fraction`` of level 0's JPEG tiles (the file stays valid)."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        n = max(1, int(len(page.dataoffsets) * fraction))
        spans = list(zip(page.dataoffsets[:n], page.databytecounts[:n]))
    with open(path, "r+b") as fh:
        for off, cnt in spans:
            fh.seek(off)
            fh.write(b"\0" * cnt)
    return n


@pytest.fixture
def small_slide(tmp_path, real_tiles):
    from napari_histoai.io.mosaic import write_mosaic_slide

    return write_mosaic_slide(tmp_path / "slide.ome.tif", real_tiles, (1536, 1536), mpp=0.5, period=2)


def test_corrupt_tiles_are_skipped_and_reported(small_slide, tmp_path, capsys):
    """Policy: a tile that cannot be decoded is skipped, the run goes on and says how many and
    where; the output is complete for the rest."""
    n_bad = _corrupt_tiles(small_slide, 0.2)
    out = tmp_path / "n.csv"
    assert _detect(small_slide, out, "--all-tiles") == 0
    err = capsys.readouterr().err
    assert "could not be read" in err and "skipped" in err and "Traceback" not in err
    assert out.exists() and n_bad >= 1


def test_all_tiles_corrupt_is_one_line_and_writes_nothing(small_slide, tmp_path, capsys):
    _corrupt_tiles(small_slide, 1.0)
    out = tmp_path / "n.csv"
    assert _detect(small_slide, out, "--all-tiles") == 2
    assert "could be read" in _one_line(capsys) and not out.exists()


def test_converting_a_slide_with_corrupt_tiles_is_one_line(small_slide, tmp_path, capsys):
    _corrupt_tiles(small_slide, 0.5)
    out = tmp_path / "out.ome.tif"
    assert main(["convert", str(small_slide), "--out", str(out)]) == 2
    assert "cannot read pixels of slide.ome.tif" in _one_line(capsys) and not out.exists()
    assert not list(tmp_path.glob(".out.ome.tif.*"))  # no temporary left behind


def test_truncated_slide_is_one_line(small_slide, tmp_path, capsys):
    data = small_slide.read_bytes()
    small_slide.write_bytes(data[: len(data) // 3])
    out = tmp_path / "n.csv"
    assert _detect(small_slide, out) == 2
    line = _one_line(capsys)
    assert "slide.ome.tif" in line and not out.exists()


def test_internal_errors_are_one_line_not_a_traceback(sample_path, tmp_path, capsys, monkeypatch):
    import napari_histoai.tasks as T

    def bug(*a, **k):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(T, "detect_file", bug)
    monkeypatch.delenv("HISTOAI_DEBUG", raising=False)
    assert _detect(sample_path, tmp_path / "n.csv") == 1
    assert "internal error: TypeError: unsupported operand" in _one_line(capsys)
