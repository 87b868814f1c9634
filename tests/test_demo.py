"""vidpred demo --quick: every stage end to end, tiny; a second call reuses what is there."""

import json

import pytest

from vidpred.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--workers", "1", "--no-progress"]) == 0
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
    assert main(["demo", "--quick", "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "runs" / "monotonic" / "last.pt").stat().st_mtime_ns == stamp


def test_demo_refuses_other_data(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "other data" in err and "\n" not in err
