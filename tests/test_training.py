"""Training: schedules, the loop, checkpoints, exact resume after SIGKILL, DDP, the non-finite guard."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vidpred.cli import main
from vidpred.config import KLConfig, TeacherForcingConfig, load_config
from vidpred.errors import CheckpointError, ConfigError, NonFiniteLossError
from vidpred.training import checkpoint as ckpt_io
from vidpred.training import trainer
from vidpred.training.schedules import kl_beta, learning_rate, teacher_forcing_ratio, use_teacher_forcing

TINY = [
    "model.width=4", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "model.cond_embed=8",
    "train.batch_size=2", "train.n_past=2", "train.n_future=4", "train.log_every=1",
]


def tiny_cfg(root, *extra):
    return load_config("synth-cpu", [f"data.root={root}", *TINY, *extra])


def cli_args(root, *extra):
    return ["--config", "synth-cpu", f"data.root={root}", *TINY, *extra]


def strip_timing(lines):
    return [{k: v for k, v in json.loads(ln).items() if k not in trainer.TIMING_KEYS} for ln in lines]


# -- schedules ------------------------------------------------------------------------


def test_monotonic_kl_ramps_then_stays():
    cfg = KLConfig(schedule="monotonic", beta_max=0.5, ratio=0.25)
    betas = [kl_beta(cfg, s, 100) for s in range(100)]
    assert betas[0] == 0.0
    assert betas[12] == pytest.approx(0.5 * 12 / 25)
    assert all(b == 0.5 for b in betas[25:])
    assert all(a <= b for a, b in zip(betas, betas[1:]))


def test_cyclical_kl_restarts_each_cycle():
    cfg = KLConfig(schedule="cyclical", beta_max=1.0, cycles=4, ratio=0.5)
    betas = [kl_beta(cfg, s, 100) for s in range(100)]
    assert [betas[i] for i in (0, 25, 50, 75)] == [0.0] * 4
    assert betas[12] == pytest.approx(12 / 12.5)
    assert betas[13:25] == [1.0] * 12 and betas[24] == 1.0
    assert max(betas) == 1.0 and min(betas) == 0.0


def test_kl_delay_holds_beta_at_zero_then_ramps():
    cfg = KLConfig(schedule="monotonic", beta_max=0.5, ratio=0.25, delay=0.3)
    betas = [kl_beta(cfg, s, 100) for s in range(100)]
    assert betas[:30] == [0.0] * 30 and betas[31] > 0
    assert betas[42] == pytest.approx(0.5 * 12 / 25)  # the ramp of the undelayed schedule, 30 steps later
    assert all(b == 0.5 for b in betas[55:]) and betas[54] < 0.5
    cyc = KLConfig(schedule="cyclical", beta_max=1.0, cycles=4, ratio=0.5, delay=0.2)
    betas = [kl_beta(cyc, s, 100) for s in range(100)]
    for start in (0, 25, 50, 75):  # every cycle: 5 steps at 0, then the ramp over 12.5
        assert betas[start : start + 5] == [0.0] * 5 and betas[start + 11] == pytest.approx(6 / 12.5)
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ConfigError, match="delay"):
            KLConfig(delay=bad)


def test_constant_kl():
    assert {kl_beta(KLConfig(schedule="constant", beta_max=1e-4), s, 10) for s in range(10)} == {1e-4}


def test_cosine_learning_rate_falls_from_lr_to_its_final_fraction():
    """A half cosine from lr at step 0 to lr * final at the last planned step (and after),
    written out as lr * final + lr * (1 - final) * (1 + cos(pi * step / (total - 1))) / 2."""
    import math

    lrs = [learning_rate(0.002, "cosine", 0.1, s, 11) for s in range(14)]
    want = [0.0002 + 0.0018 * (1 + math.cos(math.pi * s / 10)) / 2 for s in range(11)] + [0.0002] * 3
    assert lrs == pytest.approx(want, rel=1e-12, abs=0)
    assert lrs[0] == 0.002 and lrs[5] == pytest.approx(0.0011) and lrs[10] == pytest.approx(0.0002)
    assert all(a > b for a, b in zip(lrs[:10], lrs[1:11]))  # strictly falling over the plan
    assert learning_rate(0.002, "cosine", 0.0, 10, 11) == pytest.approx(0.0, abs=1e-18)
    assert learning_rate(0.002, "cosine", 1.0, 4, 11) == pytest.approx(0.002)
    assert learning_rate(0.5, "cosine", 0.1, 0, 1) == 0.5 and learning_rate(0.5, "cosine", 0.1, 3, 1) == pytest.approx(0.05)
    # a plan of one or two steps: the final rate from the second step on
    assert learning_rate(0.5, "cosine", 0.1, 1, 1) == pytest.approx(0.05)
    assert [learning_rate(0.5, "cosine", 0.1, s, 2) for s in range(3)] == pytest.approx([0.5, 0.05, 0.05])
    assert {learning_rate(0.003, "constant", 0.1, s, 11) for s in range(20)} == {0.003}


def test_training_follows_the_cosine_schedule_and_resumes_it_exactly(synth_root, tmp_path, capsys):
    """The optimiser's rate at each step is the schedule's over the planned steps; an extended
    run stays at the final rate; the schedule cannot change on --resume."""
    out = tmp_path / "run"
    cfg = tiny_cfg(synth_root, "train.epochs=2", "train.lr_schedule=cosine", "train.lr_final=0.25")
    trainer.train(cfg, out, progress=False)  # 4 steps
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=3"]) == 0
    logged = {r["step"]: r["lr"] for r in trainer.read_metrics(out) if r["kind"] == "step"}
    assert sorted(logged) == list(range(1, 7))
    for step, lr in logged.items():  # logged after step `step`: the rate of 0-based step - 1
        assert lr == pytest.approx(learning_rate(0.002, "cosine", 0.25, step - 1, 4)), step
    assert logged[1] == pytest.approx(0.002) and logged[4] == logged[6] == pytest.approx(0.0005)
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=4",
                 "train.lr_final=0.5"]) == 2
    assert f"cannot resume {out / 'last.pt'} with train.lr_final=0.5" in capsys.readouterr().err


@pytest.mark.parametrize("override,message", [
    ("train.lr_schedule=linear", "train.lr_schedule must be constant or cosine, got 'linear'"),
    ("train.lr_final=1.5", "train.lr_final must be in [0, 1], got 1.5"),
    ("train.lr_final=-0.1", "train.lr_final must be in [0, 1], got -0.1"),
])
def test_learning_rate_schedule_settings_are_checked(override, message):
    from vidpred.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config("synth-cpu", [override])
    assert str(err.value) == message


def test_teacher_forcing_ratio_decays_to_its_floor():
    cfg = TeacherForcingConfig(start=1.0, decay_start_epoch=2, step=0.3, floor=0.2)
    assert [teacher_forcing_ratio(cfg, e) for e in range(6)] == pytest.approx([1.0, 1.0, 0.7, 0.4, 0.2, 0.2])


def test_teacher_forcing_draw_is_a_pure_function_with_the_right_rate():
    draws = [use_teacher_forcing(0.3, seed=5, step=s) for s in range(4000)]
    assert draws == [use_teacher_forcing(0.3, seed=5, step=s) for s in range(4000)]
    assert 0.27 < sum(draws) / len(draws) < 0.33
    assert all(use_teacher_forcing(1.0, 1, s) for s in range(50))
    assert not any(use_teacher_forcing(0.0, 1, s) for s in range(50))


def test_epoch_indices_cover_the_split_and_repeat_when_asked_for_more():
    idx = trainer.epoch_indices(10, batch=3, steps=3, seed=1, epoch=0)
    assert idx.shape == (3, 3) and len(set(idx.ravel())) == 9
    more = trainer.epoch_indices(10, batch=4, steps=5, seed=1, epoch=0)
    assert more.shape == (5, 4) and set(more.ravel()) == set(range(10))
    assert not (trainer.epoch_indices(10, 3, 3, 1, 1) == idx).all()


# -- the loop ----------------------------------------------------------------------------


def test_training_writes_logs_checkpoints_and_config(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, "train.epochs=3", "train.teacher_forcing.decay_start_epoch=1",
                   "train.teacher_forcing.step=1.0")
    out = tmp_path / "run"
    summary = trainer.train(cfg, out, progress=False)
    assert summary["steps"] == 6  # 4 train sequences / batch 2 = 2 steps per epoch
    records = trainer.read_metrics(out)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [r["teacher_forcing"] for r in steps] == [True, True, False, False, False, False]
    assert all(set(r) >= {"loss", "mse", "kl", "beta", "tf_ratio", "lr", "seq_per_s"} for r in steps)
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and all("val_psnr" in r for r in epochs)
    assert summary["best_val_psnr"] == max(r["val_psnr"] for r in epochs)
    assert (out / "config.yaml").is_file() and (out / "tb").is_dir()
    last = ckpt_io.load(out / "last.pt")
    assert last["step"] == 6 and last["config_obj"] == cfg
    model, loaded_cfg, path = ckpt_io.load_model(out)
    assert path.name == "best.pt" and loaded_cfg == cfg and not model.training
    # condition statistics travel with the model
    assert not torch.equal(model.cond_std, torch.ones(7))


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(synth_root, tmp_path):
    """A run killed in the middle of an epoch (SIGKILL, no chance to clean up) and resumed ends
    bit-identical to an uninterrupted one: weights, and the metrics log but for timings."""
    args = cli_args(synth_root, "train.epochs=4", "train.ckpt_every=1", "train.teacher_forcing.decay_start_epoch=1",
                    "train.teacher_forcing.step=0.5")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, cut = tmp_path / "full", tmp_path / "cut"
    cmd = [sys.executable, "-m", "vidpred", "train", "--no-progress"]
    subprocess.run(cmd + ["--out", str(full)] + args, check=True, env=env, capture_output=True)

    proc = subprocess.Popen(cmd + ["--out", str(cut)] + args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Kill provably mid-epoch (2 steps per epoch: a checkpoint of an odd step is one): freeze the
    # process, read its last checkpoint (written atomically, so whole), and kill it only if that
    # checkpoint is mid-epoch; otherwise let it run on and look again.
    deadline = time.time() + 120
    killed_at = None
    while killed_at is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
        proc.send_signal(signal.SIGSTOP)
        last = cut / "last.pt"
        step = ckpt_io.load(last)["step"] if last.exists() else 0
        if step % 2 == 1 and step > 1:
            proc.send_signal(signal.SIGKILL)
            killed_at = step
        else:
            proc.send_signal(signal.SIGCONT)
    proc.wait()
    assert killed_at is not None, "the run ended before a mid-epoch checkpoint could be caught"
    assert ckpt_io.load(cut / "last.pt")["step"] == killed_at and killed_at in (3, 5, 7)
    subprocess.run(cmd + ["--out", str(cut), "--resume"], check=True, env=env, capture_output=True)

    a, b = ckpt_io.load(full / "last.pt"), ckpt_io.load(cut / "last.pt")
    assert a["step"] == b["step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    lines = lambda run: (run / "metrics.jsonl").read_text().splitlines()  # noqa: E731
    assert strip_timing(lines(full)) == strip_timing(lines(cut))


def test_resume_needs_a_good_checkpoint(synth_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--resume", *cli_args(synth_root)]) == 2
    assert "last.pt not found" in capsys.readouterr().err
    out.mkdir()
    (out / "last.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--out", str(out), "--resume", *cli_args(synth_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt" in err and "last.pt" in err and len(err.splitlines()) == 1


def test_resume_refuses_a_different_model(synth_root, tmp_path, capsys):
    out = tmp_path / "run"
    trainer.train(tiny_cfg(synth_root, "train.epochs=1"), out, progress=False)
    assert main(["train", "--out", str(out), *cli_args(synth_root)]) == 2  # no --resume: refuse to overwrite
    assert "already holds a run" in capsys.readouterr().err
    rc = main(["train", "--out", str(out), "--resume", "--config", "synth-cpu", f"data.root={synth_root}",
               *TINY, "model.z_dim=8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "with model.z_dim=8: the run was trained with 4" in err and len(err.splitlines()) == 1
    # extending a run: its own config, more epochs
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=2"]) == 0
    assert ckpt_io.load(out / "last.pt")["step"] == 4


def test_extending_a_run_keeps_its_kl_schedule_and_refuses_schedule_changes(synth_root, tmp_path, capsys):
    """Resumed with more epochs, the KL ramp keeps the length planned at the start: the steps
    already planned get the same beta, later ones continue the schedule (monotonic: flat)."""
    out = tmp_path / "run"
    cfg = tiny_cfg(synth_root, "train.epochs=3", "train.log_every=1", "train.kl.beta_max=1.0",
                   "train.kl.ratio=1.0")  # 6 steps, beta ramps over all of them
    trainer.train(cfg, out, progress=False)
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=5"]) == 0
    steps = {r["step"]: r["beta"] for r in trainer.read_metrics(out) if r["kind"] == "step"}
    assert sorted(steps) == list(range(1, 11))
    for step, beta in steps.items():  # logged after step `step`, i.e. beta of 0-based step - 1
        assert beta == pytest.approx(kl_beta(cfg.train.kl, step - 1, 6)), step
    assert steps[10] == 1.0 and steps[3] == pytest.approx(2 / 6)
    assert ckpt_io.load(out / "last.pt")["schedule_steps"] == 6
    for override, key in (("train.batch_size=4", "train.batch_size"), ("train.lr=0.01", "train.lr"),
                          ("train.kl.ratio=0.5", "train.kl.ratio"), ("train.seed=3", "train.seed")):
        assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=6", override]) == 2
        err = capsys.readouterr().err.strip()
        assert f"cannot resume {out / 'last.pt'} with {key}=" in err and len(err.splitlines()) == 1, err
    assert ckpt_io.load(out / "last.pt")["step"] == 10  # nothing was trained or written


@pytest.mark.slow
def test_checkpoints_from_before_the_transformation_decoder_still_load_and_resume(synth_root, tmp_path):
    """A checkpoint written before model.decoder/kernels/kernel_size/skip_frame, schedule_steps and
    steps_per_epoch existed: evaluation and resume read it as the pixel decoder it was."""
    from vidpred.evaluation.evaluate import evaluate_run

    out = tmp_path / "run"
    cfg = tiny_cfg(synth_root, "train.epochs=1", "model.decoder=pixel", "model.skip_frame=last", "model.coords=false",
                   "model.arm_shift=false")
    trainer.train(cfg, out, progress=False)
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(out / name, weights_only=False)
        for key in ("decoder", "kernels", "kernel_size", "skip_frame", "coords", "arm_shift"):
            del ckpt["config"]["model"][key]
        ckpt.pop("schedule_steps")
        ckpt.pop("steps_per_epoch")
        torch.save(ckpt, out / name)
    res = evaluate_run(out, split="test", samples=1, progress=False)
    assert res["model"]["psnr"]["mean"]["average"] > 10
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "train.epochs=2"]) == 0
    resumed = ckpt_io.load(out / "last.pt")
    assert resumed["step"] == 4 and resumed["schedule_steps"] == 2  # the old plan: 1 epoch of 2 steps
    assert resumed["config_obj"].model.decoder == "pixel"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(synth_root, tmp_path, monkeypatch, capsys):
    real = trainer.compute_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, mse, kl, levels = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            return loss * float("nan"), mse * float("nan"), kl, levels
        return loss, mse, kl, levels

    monkeypatch.setattr(trainer, "compute_loss", poisoned)
    out = tmp_path / "run"
    rc = main(["train", "--out", str(out), "--no-progress", *cli_args(synth_root, "train.epochs=3", "train.ckpt_every=1")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "non-finite loss at step 3" in err and "mse=nan" in err and "last.pt" in err
    last = ckpt_io.load(out / "last.pt")
    assert last["step"] == 3
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    calls["n"] = 0
    with pytest.raises(NonFiniteLossError):
        trainer.train(tiny_cfg(synth_root, "train.epochs=3"), tmp_path / "run2", progress=False)


def test_missing_checkpoint_for_evaluation_is_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ckpt_io.load_model(tmp_path / "nope")


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_on_the_whole_batch(synth_root, tmp_path):
    """torchrun, gloo, 2 processes x 2 sequences == 1 process x 4 sequences (per-sample norm).

    With every extra switched on, so DDP also checks that each parameter gets a gradient every step.
    """
    args = cli_args(synth_root, "train.epochs=3", "train.batch_size=4", "model.norm=group", "train.amp=none",
                    "model.levels=2", "model.align=true", "model.cond_conv=both",
                    "train.teacher_forcing.decay_start_epoch=1", "train.teacher_forcing.step=1.0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "vidpred", "train", "--no-progress", "--out", str(one), *args],
                   check=True, env=env, capture_output=True)
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vidpred",
         "train", "--no-progress", "--out", str(two), *args],
        env=env, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = ckpt_io.load(one / "last.pt"), ckpt_io.load(two / "last.pt")
    assert a["step"] == b["step"] == 3
    # Summation order differs between one process and an all-reduce, and Adam's first
    # steps (m / sqrt(v) ~ sign(g)) magnify that where a gradient is ~0 (e.g. one output
    # pixel of a channel that group norm and dead ReLUs leave without gradient): allow 5% of
    # one step (lr 0.002) everywhere but on at most 1% of a tensor's elements, and never more
    # than 3 steps. Anything wrong in the sharding or the averaging moves most elements.
    for k in a["model"]:
        diff = (a["model"][k].float() - b["model"][k].float()).abs()
        assert float(diff.max()) <= 3 * 0.002, k
        assert int((diff > 1e-4).sum()) <= max(1, diff.numel() // 100), (k, int((diff > 1e-4).sum()))
    ra, rb = trainer.read_metrics(one), trainer.read_metrics(two)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        for key in ("loss", "mse", "kl", "val_psnr"):
            if key in x:
                tol = 0.01 if key == "val_psnr" else 0.0  # dB; logged rounded to 3 decimals
                assert x[key] == pytest.approx(y[key], rel=1e-4, abs=tol), (key, x, y)


def test_bf16_autocast_trains_on_cpu(synth_root, tmp_path, monkeypatch):
    from vidpred.models.svg import SVG

    seen = []
    original = SVG.forward

    def spy(self, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SVG, "forward", spy)
    cfg = tiny_cfg(synth_root, "train.epochs=1", "train.amp=bf16", "train.teacher_forcing.start=0.0")
    summary = trainer.train(cfg, tmp_path / "run", progress=False)
    records = trainer.read_metrics(tmp_path / "run")
    steps = [r for r in records if r["kind"] == "step"]
    assert summary["steps"] == 2 and all(r["loss"] == r["loss"] and r["loss"] > 0 for r in steps)
    assert all(r["kl"] >= 0 for r in steps)  # the KL is computed in fp32
    assert 0 < summary["best_val_psnr"] < 100
    assert seen == [True, True]  # both training steps ran under bf16 autocast
    assert [r["amp"] for r in records if r["kind"] == "epoch"] == ["bf16"]


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "none")])
def test_amp_auto_uses_bf16_only_on_cpus_with_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: native)
    assert trainer.resolve_amp(torch.device("cpu"), "auto") == expected
    assert trainer.resolve_amp(torch.device("cpu"), "none") == "none"
    assert trainer.resolve_amp(torch.device("cpu"), "bf16") == "bf16"


def test_loss_is_the_summed_per_step_mse_plus_the_scheduled_beta_times_the_kl():
    """The training loss recomputed from its terms: per-pixel MSE averaged over the batch and
    summed over the predicted frames, plus beta (from the KL schedule at that step) times the KL
    summed over latent levels and steps and averaged over the batch; teacher forcing as drawn."""
    from contextlib import nullcontext

    from vidpred.config import ModelConfig
    from vidpred.models.svg import SVG, rollout

    torch.manual_seed(0)
    model = SVG(ModelConfig(width=4, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8, levels=2))
    frames, conds = torch.rand(3, 5, 3, 64, 64), torch.randn(3, 5, 7)
    noise = torch.randn(3, 4, 8)
    beta = kl_beta(KLConfig(schedule="cyclical", beta_max=0.3, cycles=2, ratio=0.5), step=7, total_steps=40)
    assert 0 < beta < 0.3  # inside a ramp: a beta of 0 or 1 would hide a dropped factor
    for forced in (True, False):
        loss, mse, kl, kl_levels = trainer.compute_loss(model, frames, conds, 2, beta, forced, noise, nullcontext())
        out = rollout(model, frames, conds, 2, teacher_forcing=forced, noise=noise)
        want_mse = sum(((out.pred[:, t] - frames[:, t + 1]) ** 2).mean() for t in range(4))
        want_kl = out.kl.sum((1, 2)).mean()
        assert want_kl > 0
        torch.testing.assert_close(loss, want_mse + beta * want_kl)
        torch.testing.assert_close(mse, want_mse / 4)
        torch.testing.assert_close(kl, want_kl / 4)
        torch.testing.assert_close(kl_levels, out.kl.sum(1).mean(0) / 4)
    free = trainer.compute_loss(model, frames, conds, 2, beta, False, noise, nullcontext())[1]
    forced = trainer.compute_loss(model, frames, conds, 2, beta, True, noise, nullcontext())[1]
    assert (free - forced).abs() > 1e-7  # the draw reaches the rollout


def test_val_every_and_best_pt_hold_the_best_validated_epoch(synth_root, tmp_path):
    """Validation runs every val_every epochs (and at the end); best.pt is the checkpoint of the
    validated epoch with the highest PSNR, last.pt the end of training."""
    cfg = tiny_cfg(synth_root, "train.epochs=5", "train.val_every=2")
    out = tmp_path / "run"
    trainer.train(cfg, out, progress=False)
    epochs = [r for r in trainer.read_metrics(out) if r["kind"] == "epoch"]
    validated = [r for r in epochs if "val_psnr" in r]
    assert [r["epoch"] for r in validated] == [1, 3, 4]  # every 2nd epoch, and the last one
    best = max(validated, key=lambda r: r["val_psnr"])  # the first of equal maxima is kept
    assert ckpt_io.load(out / "best.pt")["step"] == best["step"]
    assert ckpt_io.load(out / "last.pt")["step"] == epochs[-1]["step"] == 10


def test_grad_clip_bounds_the_gradient_norm_the_optimiser_sees(synth_root, tmp_path, monkeypatch):
    """train.grad_clip clips the global gradient norm of all parameters before each optimiser
    step; 0 leaves the gradients alone."""
    real = torch.nn.utils.clip_grad_norm_
    seen = []

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        before = real(params, float("inf"))  # the norm, without clipping
        real(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        seen.append((max_norm, float(before), float(after), len(params)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    cfg = tiny_cfg(synth_root, "train.epochs=1", "train.grad_clip=2e-5")
    n_params = len(list(trainer.SVG(cfg.model).parameters()))
    trainer.train(cfg, tmp_path / "clip", progress=False)
    assert len(seen) == 2  # one call per step (2 steps)
    for max_norm, before, after, count in seen:
        assert max_norm == 2e-5 and before > 2e-5
        assert after == pytest.approx(2e-5 * before / (before + 1e-6), rel=1e-3)  # torch's eps of 1e-6
        assert count == n_params  # every parameter, one global norm
    seen.clear()
    trainer.train(tiny_cfg(synth_root, "train.epochs=1"), tmp_path / "free", progress=False)
    assert seen == []


def test_moving_pixels_mark_changes_from_the_last_observed_frame():
    """A 4x4 square moves one pixel right per frame: while observed the mask compares with the
    previous frame, after that with the last observed one (as the evaluation's moving region)."""
    frames = torch.zeros(1, 5, 3, 16, 16)
    for t in range(5):
        frames[0, t, 1, 4:8, 2 + t : 6 + t] = 0.8
    m = trainer.moving_pixels(frames, n_past=2)
    assert m.shape == (1, 4, 1, 16, 16) and m.dtype == torch.float32
    want = torch.zeros(4, 16, 16)
    for t in range(1, 5):
        ref = min(t - 1, 1)  # the last observed frame before t
        want[t - 1] = ((frames[0, t] - frames[0, ref]).abs().amax(0) > 0.1).float()
    torch.testing.assert_close(m[0, :, 0], want)
    assert m[0, 0, 0].sum() == 8 and m[0, 3, 0].sum() == 2 * 4 * 3  # columns left and entered


def test_motion_weight_weighs_the_moving_pixels_in_the_loss_only():
    from contextlib import nullcontext

    from vidpred.config import ModelConfig
    from vidpred.models.svg import SVG, rollout

    torch.manual_seed(0)
    model = SVG(ModelConfig(width=4, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8))
    frames, conds, noise = torch.rand(2, 5, 3, 64, 64), torch.randn(2, 5, 7), torch.randn(2, 4, 4)
    frames[:, 3:, :, 10:20] = frames[:, 1:2, :, 10:20]  # some pixels do not move after the last observed frame
    beta = 0.01
    plain = trainer.compute_loss(model, frames, conds, 2, beta, True, noise, nullcontext())
    weighted = trainer.compute_loss(model, frames, conds, 2, beta, True, noise, nullcontext(), motion_weight=3.0)
    out = rollout(model, frames, conds, 2, noise=noise)
    sq = (out.pred - frames[:, 1:]) ** 2
    w = 1 + 3.0 * trainer.moving_pixels(frames, 2)
    assert 0 < trainer.moving_pixels(frames, 2).mean() < 1
    want = sum((w[:, t] * sq[:, t]).mean() for t in range(4)) + beta * out.kl.sum((1, 2)).mean()
    torch.testing.assert_close(weighted[0], want)
    assert weighted[0] > plain[0]
    for a, b in zip(plain[1:], weighted[1:]):  # the logged mse and kl are the plain ones
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("value,message", [("-1", "must be >= 0, got -1"), ("nan", "must be a finite number, got nan")])
def test_motion_weight_must_be_a_non_negative_number(value, message):
    from vidpred.errors import ConfigError

    with pytest.raises(ConfigError, match=f"train.motion_weight {message}"):
        load_config("synth-cpu", [f"train.motion_weight={value}"])
