"""vidpred demo --quick: every stage end to end, tiny; a second call reuses what is there."""

import json

import pytest

from vidpred.cli import main


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
    one-line error naming its file, and a second call after the fix resumes only what is left."""
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(out), "--workers", "1", "--no-progress", "--jobs", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 at a time" in printed
    for name in ("monotonic", "cyclical"):
        assert f"      {name}: 4 steps in " in printed
    summary = json.loads((out / "demo_summary.json").read_text())
    assert {"train_monotonic", "train_cyclical", "train"} <= set(summary["stages"])

    corrupt = out / "runs" / "cyclical" / "last.pt"
    corrupt.write_bytes(b"not a checkpoint")
    (out / "runs" / "cyclical" / "eval_test.json").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert str(corrupt) in err and "\n" not in err
    assert (out / "runs" / "monotonic" / "eval_test.json").is_file()  # the finished run is untouched
