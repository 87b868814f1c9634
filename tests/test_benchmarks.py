"""Helpers of the benchmark scripts (benchmarks/ is not a package: loaded by path, the
``load_benchmark`` fixture)."""


def test_a_failed_configuration_is_reported_by_its_exception_line(load_benchmark):
    """A child's traceback that ends with torch's advice line is reported by the error itself
    (seen on an H200: vgg64 under torch.compile printed only 'See https://...opcheck')."""
    failure_line = load_benchmark("bench_train_step").failure_line
    stderr = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
              "torch._inductor.exc.InductorError: RuntimeError: a fake kernel disagrees\n\n"
              "See https://pytorch.org/docs/stable/library.html#torch.library.opcheck\n")
    assert failure_line(stderr) == "torch._inductor.exc.InductorError: RuntimeError: a fake kernel disagrees"
    assert failure_line("Killed\n") == "Killed"
    assert failure_line("") == "no output"
    assert failure_line("SystemExit: 2\nlater text\n") == "SystemExit: 2"


def test_demo_training_rate_is_the_harmonic_mean_of_the_step_lines(tmp_path, load_benchmark):
    """Equal sequences per log line: the run's rate is total sequences over total time."""
    import json

    import pytest

    rate = load_benchmark("bench_demo_training").harmonic_seq_per_s
    lines = [{"kind": "step", "seq_per_s": 10.0}, {"kind": "epoch", "val_psnr": 28.0},
             {"kind": "step", "seq_per_s": 30.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert rate(tmp_path) == pytest.approx(15.0)  # 2 lines of n sequences in n/10 + n/30 s
    (tmp_path / "metrics.jsonl").write_text(json.dumps(lines[1]) + "\n")
    with pytest.raises(SystemExit, match="no step lines"):
        rate(tmp_path)


def test_arm_error_is_the_squared_pixel_distance_summed_over_frames(load_benchmark):
    import torch

    err = load_benchmark("arm_error").arm_error_px2
    recorded = torch.tensor([[0.5, 0.5, 0.02], [0.5, 0.5, 0.02]])
    arm = torch.stack([recorded, recorded + torch.tensor([3 / 64, 4 / 64, 1.0])])  # 5 px off in both frames
    torch.testing.assert_close(err(arm, recorded), torch.tensor([0.0, 50.0]))  # z does not count
