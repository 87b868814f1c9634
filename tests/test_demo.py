"""vidpred demo --quick: every stage end to end, tiny; a second call reuses what is there."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from vidpred import demo
from vidpred.cli import main
from vidpred.errors import VidpredError


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--workers", "1", "--no-progress", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert stage in printed
    report = out / "report" / "index.html"
    assert f"report: {report}" in printed.strip().splitlines()[-1]
    assert report.is_file()
    for name in ("monotonic", "cyclical"):
        run = out / "runs" / name
        assert (run / "best.pt").is_file() and (run / "eval_test.json").is_file()
    cyc = json.loads((out / "runs" / "cyclical" / "eval_test.json").read_text())
    assert cyc["n_sequences"] == 2 and cyc["n_samples"] == 2
    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["runs"]) == {"monotonic", "cyclical"}
    assert summary["runs"]["monotonic"]["margin_db"] == json.loads(
        (out / "runs" / "monotonic" / "eval_test.json").read_text())["psnr_margin_db"]

    # again: data and finished runs are reused, not regenerated or retrained
    stamp = (out / "runs" / "monotonic" / "last.pt").stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(out), "--workers", "1", "--no-progress", "--jobs", "1"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "runs" / "monotonic" / "last.pt").stat().st_mtime_ns == stamp


def test_demo_refuses_other_data(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "other data" in err and "\n" not in err


@pytest.mark.slow
def test_parallel_runs_report_a_failed_run(tmp_path, capsys):
    """--jobs 2 trains both runs side by side; a run that fails in its process gives the CLI's
    one-line error naming its file, the finished run is left as it is, and a second call after
    the fix trains only what is missing."""
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(out), "--workers", "1", "--no-progress", "--jobs", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 at a time" in printed
    for name in ("monotonic", "cyclical"):
        assert f"      {name}: 4 steps in " in printed
    summary = json.loads((out / "demo_summary.json").read_text())
    assert {"train_monotonic", "train_cyclical", "train"} <= set(summary["stages"])

    finished = out / "runs" / "monotonic" / "last.pt"
    stamp = finished.stat().st_mtime_ns
    corrupt = out / "runs" / "cyclical" / "last.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert str(corrupt) in err and "\n" not in err
    assert finished.stat().st_mtime_ns == stamp

    shutil.rmtree(out / "runs" / "cyclical")  # the fix: train that run again
    assert main(args) == 0
    assert finished.stat().st_mtime_ns == stamp
    assert json.loads((out / "runs" / "cyclical" / "eval_test.json").read_text())["n_sequences"] == 2


def _ends_without_a_word(queue, name, run, preset, overrides, threads):
    os._exit(3)


def test_a_run_process_that_ends_without_a_result_is_a_one_line_error(synth_copy, tmp_path):
    run = tmp_path / "runs" / "monotonic"
    with pytest.raises(VidpredError) as err:
        demo._train_parallel((("monotonic", "synth-cpu"),), [run], [f"data.root={synth_copy}"], 1, 1, False, 4,
                             child=_ends_without_a_word)
    assert str(err.value) == (f"training {run} ended (exit code 3) without a result; its last checkpoint is kept: "
                              "the same command resumes it")


PARENT = """
import multiprocessing, os, sys, time
from vidpred.demo import _exit_with_parent

def child(path):
    _exit_with_parent()
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)

if __name__ == "__main__":
    multiprocessing.get_context("spawn").Process(target=child, args=(sys.argv[1],)).start()
    time.sleep(60)
"""


def test_a_run_process_ends_when_the_demo_is_killed(tmp_path):
    """A SIGKILL runs no cleanup in the demo's process: its training processes end by themselves."""
    script, pid_file = tmp_path / "parent.py", tmp_path / "child.pid"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    """Running (a zombie that nobody has reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False
