"""Unit tests of ``training/trainer.py`` written against `make mutation` (docs/testing.md).

The loop runs on a stand-in dataset (``open_split`` and ``condition_stats`` replaced: a
static random table with a bright square moving across it) with a model a few channels
wide, for a handful of steps. Everything it does is recomputed here, independently: the
data order from the documented permutations, the noise from its documented seeding, the
loss from the rollout's terms with the scheduled beta, the teacher-forcing draw and the
motion weight, Adam and the gradient clip step by step, the validation PSNR by its
formula; the log lines, the checkpoints, the TensorBoard scalars and the progress bar
are compared with those numbers. Under torchrun only the sharding is reachable on a CPU
(a fake two-process ``Dist``, ``barrier`` and all-reduce; DDP itself replaced). Every
error is checked with its whole message. All tests together take a few seconds.
"""

import contextlib
import json
import math
import re
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import tqdm

import vidpred.data
from vidpred.config import KLConfig, load_config
from vidpred.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from vidpred.models.svg import SVG, rollout
from vidpred.training import checkpoint as ckpt_io
from vidpred.training import trainer
from vidpred.training.distributed import Dist
from vidpred.training.schedules import kl_beta, learning_rate, teacher_forcing_ratio, use_teacher_forcing

TINY = ["model.width=2", "model.g_dim=4", "model.z_dim=2", "model.rnn_size=4", "model.cond_embed=2",
        "model.predictor_layers=1", "model.decoder=pixel", "model.coords=false", "model.pose_map=false",
        "model.arm_shift=false",
        "model.condition=lab", "train.device=cpu", "train.amp=none", "data.num_workers=0"]  # the cheapest model
STATS = (np.arange(7, dtype=np.float32) / 10, np.full(7, 2.0, dtype=np.float32))  # condition mean, std


def config(*extra):
    return load_config("synth-cpu", ["data.root=/fake/data", *TINY, *extra])


class Windows(torch.utils.data.Dataset):
    """Stand-in for VideoWindows: ``n`` windows of a static random table (values <= 0.5) with a
    bright 8x8 square moving 3 px right per frame, from a different place in each sequence."""

    def __init__(self, n, window, key):
        g = torch.Generator().manual_seed(key)
        self.frames = (torch.rand(n, 1, 3, 64, 64, generator=g) * 0.5).repeat(1, window, 1, 1, 1)
        for i in range(n):
            x0, y0 = 4 + 7 * i, 10 + 5 * i
            for t in range(window):
                self.frames[i, t, :, y0 : y0 + 8, x0 + 3 * t : x0 + 3 * t + 8] = 1.0
        self.conds = torch.randn(n, window, 7, generator=g)
        self.epochs = []

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return self.frames[i], self.conds[i]

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


@pytest.fixture
def data(monkeypatch):
    """Replace the dataset functions that ``_train`` imports; ``data.calls`` records them in order."""
    state = types.SimpleNamespace(calls=[], sizes={"train": 4, "validate": 3}, splits={})

    def open_split(root, split, **kwargs):
        state.calls.append(("open_split", str(root), split, kwargs))
        ds = Windows(state.sizes[split], kwargs["window"], key=1 if split == "train" else 2)
        state.splits[split] = ds
        return ds

    def condition_stats(root):
        state.calls.append(("condition_stats", str(root)))
        return STATS

    monkeypatch.setattr(vidpred.data, "open_split", open_split)
    monkeypatch.setattr(vidpred.data, "condition_stats", condition_stats)
    return state


class Spy:
    """Wraps ``trainer.compute_loss``: records what each step passed and got back."""

    def __init__(self, monkeypatch, poison_at=None):
        real = trainer.compute_loss
        self.calls, self.real, self.poison_at = [], getattr(real, "real", real), poison_at
        monkeypatch.setattr(trainer, "compute_loss", self)

    def __call__(self, net, frames, conds, n_past, beta, teacher_forcing, noise, amp_ctx, motion_weight=0.0,
                 free_bits=0.0, arm_weight=0.0):
        got = self.real(net, frames, conds, n_past, beta, teacher_forcing, noise, amp_ctx, motion_weight, free_bits,
                        arm_weight=arm_weight)
        if self.poison_at == len(self.calls):
            got = (got[0] * float("nan"), got[1] * float("nan"), got[2], got[3])
        self.calls.append(dict(frames=frames.clone(), conds=conds.clone(), n_past=n_past, beta=beta,
                               tf=teacher_forcing, noise=noise.clone(), amp_ctx=amp_ctx, motion_weight=motion_weight,
                               free_bits=free_bits, arm_weight=arm_weight,
                               out=[x.detach().clone() for x in got]))
        return got


class FakeWriter:
    def __init__(self):
        self.scalars, self.flushes, self.closed = [], 0, False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


# -- an independent implementation of the documented loop ------------------------------------


def epoch_order(n, batch, steps, seed, epoch):
    """The documented data order: permutations seeded (seed, epoch, k), concatenated, cut."""
    perms = [np.random.default_rng([seed, epoch, k]).permutation(n) for k in range(steps * batch // n + 1)]
    return np.concatenate(perms)[: steps * batch].reshape(steps, batch)


def noise_of(seed, step, shape):
    key = int(np.random.default_rng([seed, step, 0x5EED]).integers(2**62))
    return torch.randn(shape, generator=torch.Generator().manual_seed(key))


def moving(frames, n_past):
    """(B, T-1, 1, H, W): frame t moved by more than 0.1 in some channel from the last observed frame before it."""
    T = frames.shape[1]
    ref = [min(t - 1, n_past - 1) for t in range(1, T)]
    return ((frames[:, 1:] - frames[:, ref]).abs().amax(2, keepdim=True) > 0.1).float()


def frame_psnr(pred, truth):
    return 10 * torch.log10(1 / ((pred.double() - truth.double()) ** 2).mean(dim=(-3, -2, -1)))


def replay(cfg, train_ds, val_ds, plan=None):
    """Train the documented way, step by step; ``plan(step)``: the KL schedule's length at that step
    (default: the run's). Returns (model, [per-step terms], {epoch: val psnr})."""
    tc, mc = cfg.train, cfg.model
    torch.manual_seed(tc.seed)
    model = SVG(mc)
    model.set_condition_stats(*STATS)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(tc.beta1, 0.999), fused=True)
    spe = tc.steps_per_epoch or len(train_ds) // tc.batch_size
    total = tc.epochs * spe
    plan = plan or (lambda step: total)
    terms, vals = [], {}
    model.train()
    for step in range(total):
        epoch = step // spe
        idx = epoch_order(len(train_ds), tc.batch_size, spe, tc.seed, epoch)[step % spe]
        frames = torch.stack([train_ds[i][0] for i in idx])
        conds = torch.stack([train_ds[i][1] for i in idx])
        beta = kl_beta(tc.kl, step, plan(step))
        for group in opt.param_groups:
            group["lr"] = learning_rate(tc.lr, tc.lr_schedule, tc.lr_final, step, plan(step))
        tf = use_teacher_forcing(teacher_forcing_ratio(tc.teacher_forcing, epoch), tc.seed, step)
        noise = noise_of(tc.seed, step, (tc.batch_size, tc.window - 1, mc.noise_dim))
        out = rollout(model, frames, conds, tc.n_past, teacher_forcing=tf, noise=noise)
        # the sums in the trainer's order, so that Adam, which magnifies rounding where a gradient
        # is near 0, takes the same steps: mean over batch and pixels per step, summed over steps
        sq = (out.pred - frames[:, 1:]) ** 2
        weighted = sq * (1 + tc.motion_weight * moving(frames, tc.n_past))
        steps = tc.window - 1
        recon = weighted.mean(dim=(0, 2, 3, 4)).sum()
        kl = out.kl.mean(0).sum(0).sum()
        loss = recon + beta * out.kl.mean(0).clamp(min=tc.kl.free_bits).sum()  # free bits per (step, level)
        opt.zero_grad()
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        mse = sq.mean(dim=(0, 2, 3, 4)).sum() / steps
        terms.append(dict(loss=loss.item(), mse=mse.item(), kl=kl.item() / steps, beta=beta, tf=tf))
        if (step + 1) % spe == 0 and ((epoch + 1) % tc.val_every == 0 or step + 1 == total):
            vals[epoch] = validation(model, val_ds, tc.n_past, tc.seed, epoch, mc)
    return model, terms, vals


def validation(model, val_ds, n_past, seed, epoch, mc):
    model.eval()
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    frames, conds = val_ds.frames, val_ds.conds  # one batch: the split is smaller than 16
    noise = torch.randn(len(frames), frames.shape[1] - 1, mc.noise_dim, generator=g)
    with torch.no_grad():
        out = rollout(model, frames[:, :n_past], conds, n_past, use_posterior=False, noise=noise)
    model.train()
    return float(frame_psnr(out.pred[:, n_past - 1 :], frames[:, n_past:]).mean(1).mean())


def assert_same_weights(state, model):
    want = model.state_dict()
    assert list(state) == list(want)
    for k in want:
        torch.testing.assert_close(state[k], want[k], rtol=1e-4, atol=1e-5, msg=k)


def bar_tail(err):
    """The last state of a tqdm bar written to a non-terminal stream, without the spaces tqdm pads
    it with to cover a longer state before it (a faster rate string: the test failed now and then)."""
    return err.replace("\n", "\r").strip("\r").split("\r")[-1].rstrip(" ")


# -- the whole loop against the replay ----------------------------------------------------------


MAIN = ["train.epochs=3", "train.steps_per_epoch=3", "train.batch_size=2", "train.n_past=2", "train.n_future=2",
        "train.log_every=4", "train.ckpt_every=2", "train.val_every=2", "train.seed=4", "train.lr=0.01",
        "train.beta1=0.8", "train.grad_clip=0.5", "train.motion_weight=2.0", "model.levels=2",
        "train.kl.schedule=monotonic", "train.kl.beta_max=0.5", "train.kl.ratio=0.5", "train.kl.free_bits=0.5",
        "train.teacher_forcing.start=1.0", "train.teacher_forcing.decay_start_epoch=1",
        "train.teacher_forcing.step=0.4", "train.teacher_forcing.floor=0.1",
        "data.random_start=true", "data.use_cache=false"]


def test_a_run_is_the_documented_loop_step_by_step(data, monkeypatch, tmp_path, capsys):
    cfg = config(*MAIN)
    out = tmp_path / "runs" / "run"  # its parent is made too
    spy = Spy(monkeypatch)
    saves, writers, compiled = [], [], []
    real_save = ckpt_io.save_atomic

    def save(state, path):
        saves.append((Path(path).name, state["step"], state["epoch_acc"].clone(), state["best_psnr"],
                      [dict(h) for h in state["history"]]))
        real_save(state, path)

    def tensorboard(folder, step):
        writers.append((folder, step, FakeWriter()))
        return writers[-1][2]

    class Compiled(trainer.CompiledOrEager):
        def __init__(self, fn, enabled, device, what):
            compiled.append((fn, enabled, device, what))
            super().__init__(fn, enabled, device, what)

    clock = iter([0, 0, 1, 3])  # perf_counter at the start and at each step line
    monkeypatch.setattr(ckpt_io, "save_atomic", save)
    monkeypatch.setattr(trainer, "_tensorboard", tensorboard)
    monkeypatch.setattr(trainer, "CompiledOrEager", Compiled)
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. pin_memory on a CPU
        summary = trainer.train(cfg, out, progress=True)
    rng_after = torch.get_rng_state()
    err = capsys.readouterr().err

    train_ds, val_ds = data.splits["train"], data.splits["validate"]
    assert data.calls == [
        ("open_split", "/fake/data", "train", dict(window=4, random_start=True, use_cache=False, seed=4)),
        ("open_split", "/fake/data", "validate", dict(window=4, random_start=False, use_cache=False)),
        ("condition_stats", "/fake/data")]
    assert train_ds.epochs == [0, 1, 2]
    # the cheap checks first (most mutants fail one of them), the replay of the training last
    tc = cfg.train
    sched = [{"beta": kl_beta(tc.kl, s, 9),
              "tf": use_teacher_forcing(teacher_forcing_ratio(tc.teacher_forcing, s // 3), 4, s)} for s in range(9)]

    # what each step fed the loss: the documented batch, beta, draw, noise and motion weight
    assert len(spy.calls) == 9
    for step, call in enumerate(spy.calls):
        epoch = step // 3
        idx = epoch_order(4, 2, 3, 4, epoch)[step % 3]
        torch.testing.assert_close(call["frames"], train_ds.frames[idx], rtol=0, atol=0)
        torch.testing.assert_close(call["conds"], train_ds.conds[idx], rtol=0, atol=0)
        torch.testing.assert_close(call["noise"], noise_of(4, step, (2, 3, 4)), rtol=0, atol=0)
        assert (call["n_past"], call["beta"], call["tf"], call["motion_weight"], call["free_bits"]) == (
            2, sched[step]["beta"], sched[step]["tf"], 2.0, 0.5)
        assert type(call["amp_ctx"]) is contextlib.nullcontext
    assert [t["beta"] for t in sched[:5]] == pytest.approx([0.0, 0.5 / 4.5, 1 / 4.5, 1.5 / 4.5, 2 / 4.5])
    assert sched[5]["beta"] == 0.5
    assert {t["tf"] for t in sched[3:]} == {True, False}  # the draw matters in this run
    assert compiled == [(compiled[0][0], False, torch.device("cpu"), "train run")]
    assert isinstance(compiled[0][0], SVG)

    # the log: step lines every 4th step and at the end, one line per epoch
    records = trainer.read_metrics(out)
    seconds = {4: 1e-9, 8: 1, 9: 2}  # step -> time since the previous line (none at all: 1e-9)
    want_records = []
    since = 0
    for step in range(1, 10):
        if step in seconds:
            o = spy.calls[step - 1]["out"]
            want_records.append({
                "kind": "step", "step": step, "epoch": (step - 1) // 3, "loss": o[0].double().item(),
                "mse": o[1].double().item(), "kl": o[2].double().item(), "beta": sched[step - 1]["beta"],
                "tf_ratio": teacher_forcing_ratio(cfg.train.teacher_forcing, (step - 1) // 3),
                "teacher_forcing": sched[step - 1]["tf"],
                "lr": learning_rate(0.01, cfg.train.lr_schedule, cfg.train.lr_final, step - 1, 9),
                "seq_per_s": 2 * (step - since) / seconds[step], "kl_levels": o[3].double().tolist()})
            since = step
        if step % 3 == 0:
            epoch = step // 3 - 1
            outs = [c["out"] for c in spy.calls[step - 3 : step]]
            rec = {"kind": "epoch", "step": step, "epoch": epoch,
                   "loss": sum(o[0].double().item() for o in outs) / 3, "mse": sum(o[1].double().item() for o in outs) / 3,
                   "kl": sum(o[2].double().item() for o in outs) / 3, "beta": kl_beta(cfg.train.kl, step - 1, 9),
                   "tf_ratio": teacher_forcing_ratio(cfg.train.teacher_forcing, epoch), "amp": "none",
                   "compiled": False}
            if epoch in (1, 2):  # every 2nd epoch, and the last
                rec["val_psnr"] = records[len(want_records)]["val_psnr"]
                assert rec["val_psnr"] == round(rec["val_psnr"], 3)
            want_records.append(rec)
    assert [list(r) for r in records] == [list(r) for r in want_records]
    for got, want in zip(records, want_records):
        for k, v in want.items():
            assert got[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, (float, list)) else v), (k, got, want)
            assert type(got[k]) is type(v) or isinstance(v, float), (k, got, want)
    # checkpoints: mid-epoch every 2nd step (not at an epoch's end), last.pt each epoch, best.pt on a new best
    val1, val2 = records[2]["val_psnr"], records[-1]["val_psnr"]
    hist = [{"epoch": 1, "step": 6, "val_psnr": val1}]
    acc = lambda a, b: torch.tensor([sum(c["out"][i].double().item() for c in spy.calls[a:b]) for i in range(3)]  # noqa: E731
                                    + [b - a], dtype=torch.float64)
    zero = torch.zeros(4, dtype=torch.float64)
    want_saves = [("last.pt", 2, acc(0, 2), -math.inf, []), ("last.pt", 3, zero, -math.inf, []),
                  ("last.pt", 4, acc(3, 4), -math.inf, []), ("best.pt", 6, zero, val1, hist),
                  ("last.pt", 6, zero, val1, hist), ("last.pt", 8, acc(6, 8), val1, hist)]
    hist2 = hist + [{"epoch": 2, "step": 9, "val_psnr": val2}]
    best = max(val1, val2)
    if val2 > val1:
        want_saves.append(("best.pt", 9, zero, val2, hist2))
    want_saves.append(("last.pt", 9, zero, best, hist2))
    assert [s[:2] for s in saves] == [s[:2] for s in want_saves]
    for got, want in zip(saves, want_saves):
        torch.testing.assert_close(got[2], want[2])
        assert got[3:] == want[3:]
    last = ckpt_io.load(out / "last.pt")
    assert set(last) == {"format", "config", "model", "optimizer", "step", "epoch_acc", "best_psnr", "history", "rng",
                         "schedule_steps", "steps_per_epoch", "config_obj"}
    assert last["format"] == ckpt_io.FORMAT and last["config"] == cfg.to_dict() and last["config_obj"] == cfg
    assert (last["step"], last["schedule_steps"], last["steps_per_epoch"]) == (9, 9, 3)
    group = last["optimizer"]["param_groups"][0]
    # the rate of the last step: the preset's cosine schedule ends at lr * lr_final
    assert cfg.train.lr_schedule == "cosine"
    assert (group["lr"], group["betas"], group["fused"]) == (pytest.approx(0.01 * cfg.train.lr_final), (0.8, 0.999), True)
    assert all(float(s["step"]) == 9 for s in last["optimizer"]["state"].values())
    torch.testing.assert_close(last["rng"]["torch"], rng_after)
    assert summary == {"steps": 9, "best_val_psnr": best, "last_val_psnr": val2, "out": str(out)}

    # TensorBoard: every number of every line, under its kind, at its step
    [(folder, start, tb)] = writers
    assert (folder, start, tb.closed, tb.flushes) == (out, 0, True, len(records))
    want_scalars = [(f"{r['kind']}/{k}", float(v), r["step"]) for r in records for k, v in r.items()
                    if k not in ("kind", "step", "epoch") and isinstance(v, (int, float))]
    assert tb.scalars == want_scalars
    assert ("epoch/compiled", 0.0, 3) in tb.scalars and ("step/teacher_forcing", float(sched[3]["tf"]), 4) in tb.scalars

    # the progress bar, at its end: the last step's loss, beta, draw and the validation shown then
    want = (f"beta={sched[8]['beta']:.3g}, loss={spy.calls[-1]['out'][0].double().item():.4f}, "
            f"tf={int(sched[8]['tf'])}, val={tqdm.tqdm.format_num(val1)}")  # tqdm sorts the names
    assert re.fullmatch(r"train run: 100%\|.*\| 9/9 \[.*(step/s|s/step), " + re.escape(want) + r"\]", bar_tail(err))

    # the replay: the same weights, losses and validation PSNRs from the documented loop
    model, terms, vals = replay(cfg, train_ds, val_ds)
    assert list(vals) == [1, 2] and [t["tf"] for t in terms] == [t["tf"] for t in sched]
    assert (val1, val2) == (pytest.approx(vals[1], abs=2e-3), pytest.approx(vals[2], abs=2e-3))
    for step, call in enumerate(spy.calls):
        assert call["out"][0].item() == pytest.approx(terms[step]["loss"], rel=1e-3)
    for got, t in zip([r for r in records if r["kind"] == "step"], [terms[3], terms[7], terms[8]]):
        assert (got["loss"], got["mse"], got["kl"]) == pytest.approx((t["loss"], t["mse"], t["kl"]), rel=1e-3)

    assert_same_weights(last["model"], model)


def test_config_yaml_is_the_run_config(data, tmp_path, capsys):
    from vidpred.config import save_config

    cfg = config("train.epochs=1", "train.batch_size=4", "train.n_past=1", "train.n_future=1")
    trainer.train(cfg, tmp_path / "run", progress=False)
    assert capsys.readouterr().err == ""  # no bar
    save_config(cfg, tmp_path / "want.yaml")
    assert (tmp_path / "run" / "config.yaml").read_text() == (tmp_path / "want.yaml").read_text()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "config.yaml", "last.pt",
                                                                   "metrics.jsonl", "tb"]


RESUME = ["train.batch_size=2", "train.n_past=1", "train.n_future=2", "train.seed=5",
          "train.kl.schedule=monotonic", "train.kl.beta_max=0.5", "train.kl.ratio=1.0",
          "train.teacher_forcing.start=0.5", "train.log_every=1"]


def crashed_run(data, monkeypatch, out, cfg, at):
    """A run stopped by a non-finite loss at step ``at`` (0-based), with a checkpoint every step."""
    spy = Spy(monkeypatch, poison_at=at)
    with pytest.raises(NonFiniteLossError):
        trainer.train(cfg, out, progress=False)
    return spy


def test_resume_continues_the_run_it_extends(data, monkeypatch, tmp_path, capsys):
    """A run stopped in its second epoch, resumed with a KL plan of 3 steps in its checkpoint: the
    result is the uninterrupted run (with that plan from the resumed step on); log lines past the
    checkpoint are dropped, the epoch's means count the steps before the stop, the bar starts at
    the checkpoint's step and shows its last validation."""
    out = tmp_path / "run"
    cfg = config(*RESUME, "train.epochs=2", "train.ckpt_every=1")
    before = crashed_run(data, monkeypatch, out, cfg, at=3)
    first = trainer.read_metrics(out)
    assert [(r["kind"], r["step"]) for r in first] == [("step", 1), ("step", 2), ("epoch", 2), ("step", 3)]
    ckpt = ckpt_io.load(out / "last.pt")
    assert ckpt["step"] == 3
    ckpt.pop("config_obj")
    ckpt["schedule_steps"] = 3  # kept on resume, whatever epochs gives now
    torch.save(ckpt, out / "last.pt")
    with (out / "metrics.jsonl").open("a") as f:  # lines a killed run wrote after its checkpoint
        f.write(json.dumps({"kind": "step", "step": 4}) + "\n" + '{"kind": "st')
    writers = []
    monkeypatch.setattr(trainer, "_tensorboard", lambda o, s: writers.append((o, s)) or None)
    spy = Spy(monkeypatch)
    capsys.readouterr()
    summary = trainer.train(config(*RESUME, "train.epochs=2", "train.log_every=2"), out, resume=True, progress=True)
    err = capsys.readouterr().err
    records = trainer.read_metrics(out)
    assert records[:4] == first
    assert [(r["kind"], r["step"]) for r in records[4:]] == [("step", 4), ("epoch", 4)]
    assert "kl_levels" not in records[4]  # one latent level
    assert writers == [(out, 3)]
    model, terms, vals = replay(cfg, data.splits["train"], data.splits["validate"], plan=lambda s: 4 if s < 3 else 3)
    assert [c["beta"] for c in before.calls[:3] + spy.calls] == [t["beta"] for t in terms]
    assert [t["beta"] for t in terms] == pytest.approx([0.0, 0.125, 0.25, 0.5])
    last = ckpt_io.load(out / "last.pt")
    assert_same_weights(last["model"], model)
    assert [h["epoch"] for h in last["history"]] == [0, 1] and last["history"][0] == {
        "epoch": 0, "step": 2, "val_psnr": first[2]["val_psnr"]}
    assert (last["step"], last["schedule_steps"], last["steps_per_epoch"]) == (4, 3, 2)
    assert last["history"][1]["val_psnr"] == pytest.approx(vals[1], abs=2e-3)
    assert summary["best_val_psnr"] == max(h["val_psnr"] for h in last["history"])
    assert summary["last_val_psnr"] == last["history"][1]["val_psnr"]
    want = f"val={tqdm.tqdm.format_num(first[2]['val_psnr'])}]"  # the checkpoint's last validation
    assert re.fullmatch(r"train run: 100%\|.*\| 4/4 \[.*(step/s|s/step), beta=0.5, loss=.*" + re.escape(want), bar_tail(err)), err[-300:]
    steps = [before.calls[2]["out"], spy.calls[0]["out"]]  # the epoch: one step before the stop, one after
    for i, k in enumerate(("loss", "mse", "kl")):
        assert records[5][k] == pytest.approx(sum(o[i].double().item() for o in steps) / 2, rel=1e-12)


def test_resume_of_a_checkpoint_without_a_recorded_plan(data, monkeypatch, tmp_path):
    """Checkpoints written before the plan was stored: the plan is the old config's epochs x steps."""
    out = tmp_path / "run"
    cfg = config(*RESUME, "train.epochs=2", "train.ckpt_every=1")
    crashed_run(data, monkeypatch, out, cfg, at=1)
    ckpt = ckpt_io.load(out / "last.pt")
    for k in ("config_obj", "schedule_steps", "steps_per_epoch"):
        ckpt.pop(k)
    torch.save(ckpt, out / "last.pt")
    spy = Spy(monkeypatch)
    trainer.train(config(*RESUME, "train.epochs=3", "train.ckpt_every=1"), out, resume=True, progress=False)
    assert [c["beta"] for c in spy.calls] == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5])  # a plan of 4 steps
    assert ckpt_io.load(out / "last.pt")["schedule_steps"] == 4


def test_resume_refuses_a_split_with_another_number_of_steps_per_epoch(data, tmp_path):
    out = tmp_path / "run"
    trainer.train(config(*RESUME, "train.epochs=1"), out, progress=False)
    ckpt = ckpt_io.load(out / "last.pt")
    ckpt.pop("config_obj")
    ckpt["steps_per_epoch"] = 7
    torch.save(ckpt, out / "last.pt")
    with pytest.raises(ConfigError) as err:
        trainer.train(config(*RESUME, "train.epochs=2"), out, resume=True, progress=False)
    assert str(err.value) == (f"cannot resume {out}/last.pt: the train split of /fake/data gives 2 steps per epoch, "
                              f"the run was trained with 7 (a different dataset?)")


def test_best_pt_is_the_first_of_equal_validations(data, monkeypatch, tmp_path):
    """validate() scripted: 5.12345 twice, then more. best.pt is written when the PSNR, rounded to 3
    decimals, beats the best so far, not when it equals it."""
    scores = iter([5.12345, 5.1234, 6.0])
    monkeypatch.setattr(trainer, "validate", lambda *args: next(scores))
    saves = []
    monkeypatch.setattr(ckpt_io, "save_atomic", lambda state, path: saves.append((Path(path).name, state["step"],
                                                                                  state["best_psnr"])))
    summary = trainer.train(config("train.epochs=3", "train.batch_size=4", "train.n_past=1", "train.n_future=1"),
                            tmp_path / "run", progress=False)
    assert saves == [("best.pt", 1, 5.123), ("last.pt", 1, 5.123), ("last.pt", 2, 5.123), ("best.pt", 3, 6.0),
                     ("last.pt", 3, 6.0)]
    assert summary == {"steps": 3, "best_val_psnr": 6.0, "last_val_psnr": 6.0, "out": str(tmp_path / "run")}
    assert [r.get("val_psnr") for r in trainer.read_metrics(tmp_path / "run") if r["kind"] == "epoch"] == [
        5.123, 5.123, 6.0]


# -- two processes (torchrun), as far as a CPU without a process group reaches ---------------------


@pytest.mark.parametrize("rank", [0, 1])
def test_each_process_trains_its_share_of_the_global_batch(data, monkeypatch, tmp_path, capsys, rank):
    """Rank r of 2 takes rows [2r, 2r + 2) of each global batch of 4 and of its noise, opens the
    splits after (rank 1) or before (rank 0) the barrier, validates every 2nd sequence; only rank 0
    writes; logged terms are the all-reduced sums divided by the number of processes."""
    events, wrapped, reduced = [], [], []
    spy = Spy(monkeypatch)
    real_open = vidpred.data.open_split
    monkeypatch.setattr(vidpred.data, "open_split", lambda *a, **k: events.append(a[1]) or real_open(*a, **k))
    monkeypatch.setattr(torch.distributed, "barrier", lambda: events.append("barrier"))

    def ddp(net, device_ids):
        wrapped.append((net, device_ids))
        return net

    def all_reduce(d, values):  # the other process had the same numbers
        reduced.append(values.clone())
        return values * 2

    monkeypatch.setattr(trainer, "DistributedDataParallel", ddp)
    monkeypatch.setattr(trainer, "all_reduce_sum", all_reduce)
    monkeypatch.setattr(trainer, "_tensorboard", lambda o, s: None)
    cfg = config("train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=4", "train.n_past=1",
                 "train.n_future=2", "model.levels=2", "train.seed=2")
    data.sizes["train"], data.sizes["validate"] = 5, 4  # a shard of one sequence would not group-norm a 1x1 map
    out = tmp_path / "run"
    summary = trainer._train(cfg, out, False, None, torch.device("cpu"), Dist(rank=rank, world=2))
    err = capsys.readouterr().err
    assert events == (["train", "validate", "barrier"] if rank == 0 else ["barrier", "train", "validate"])
    assert len(wrapped) == 1 and isinstance(wrapped[0][0], SVG) and wrapped[0][1] is None
    [call] = spy.calls
    rows = epoch_order(5, 4, 1, 2, 0)[0][2 * rank : 2 * rank + 2]
    torch.testing.assert_close(call["frames"], data.splits["train"].frames[rows], rtol=0, atol=0)
    torch.testing.assert_close(call["noise"], noise_of(2, 0, (4, 2, 4))[2 * rank : 2 * rank + 2], rtol=0, atol=0)
    val = validation(wrapped[0][0], types.SimpleNamespace(frames=data.splits["validate"].frames[rank::2],
                                                             conds=data.splits["validate"].conds[rank::2]),
                     1, 2, 0, cfg.model)
    assert summary["best_val_psnr"] == summary["last_val_psnr"] == pytest.approx(val, abs=2e-3)
    loss, mse, kl, levels = call["out"]
    torch.testing.assert_close(reduced[0], torch.stack([loss, mse, kl]).double())
    if rank == 1:
        assert not out.exists() and err == ""
        return
    assert "train run: 100%" in err  # progress None: a bar on rank 0
    [step, epoch] = trainer.read_metrics(out)
    assert (step["loss"], step["mse"], step["kl"]) == (loss.double().item(), mse.double().item(), kl.double().item())
    assert step["kl_levels"] == pytest.approx(levels.double().tolist(), rel=1e-12)
    assert epoch["loss"] == step["loss"]
    assert ckpt_io.load(out / "last.pt")["steps_per_epoch"] == 1


def test_the_validation_shard_of_each_process():
    ds = list(range(7))
    assert [list(trainer._Shard(ds, Dist(rank=r, world=3))) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert len(trainer._Shard(ds, Dist(rank=1, world=3))) == 2
    assert list(trainer._Shard(ds, Dist())) == ds


# -- errors, with their whole messages -------------------------------------------------------------


def test_a_non_finite_loss_stops_before_the_step_with_its_numbers(data, monkeypatch, tmp_path):
    spy = Spy(monkeypatch, poison_at=1)
    out = tmp_path / "run"
    cfg = config("train.epochs=2", "train.batch_size=2", "train.n_past=1", "train.n_future=1", "train.ckpt_every=1",
                 "train.kl.beta_max=0.7", "train.kl.ratio=0.5")
    with pytest.raises(NonFiniteLossError) as err:
        trainer.train(cfg, out, progress=False)
    _, mse, kl, _ = spy.calls[1]["out"]
    beta = kl_beta(cfg.train.kl, 1, 4)
    assert beta > 0
    assert str(err.value) == (f"non-finite loss at step 1 (epoch 0): loss=nan mse=nan kl={kl.double().item():.4g} "
                              f"beta={beta:.4g}; last good checkpoint kept at {out}/last.pt")
    assert ckpt_io.load(out / "last.pt")["step"] == 1


def test_errors_before_training(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as err:
        trainer.train(config(), out, resume=True)
    assert str(err.value) == f"cannot resume: {out}/last.pt not found"
    out.mkdir()
    (out / "last.pt").write_bytes(b"")
    with pytest.raises(ConfigError) as err:
        trainer.train(config(), out)
    assert str(err.value) == (f"run folder {out} already holds a run; pass --resume to continue it or "
                              "choose another --out")
    with pytest.raises(ConfigError) as err:
        trainer._train(config("train.batch_size=4"), tmp_path / "b", False, False, torch.device("cpu"), Dist(0, 3))
    assert str(err.value) == "train.batch_size 4 must divide evenly over 3 processes"
    assert data.calls == []
    data.sizes["train"] = 3
    with pytest.raises(DataError) as err:
        trainer.train(config("train.batch_size=4"), tmp_path / "c")
    assert str(err.value) == "train split of /fake/data has 3 sequences, fewer than train.batch_size 4"
    trainer.train(config("train.batch_size=3", "train.epochs=1", "train.n_past=1", "train.n_future=1"),
                  tmp_path / "d", progress=False)  # as many sequences as the batch: one step


def test_a_causal_model_checks_the_data_s_action_lag_first(data, monkeypatch, tmp_path):
    import vidpred.data.synth

    seen = []

    def check(root, lag):
        seen.append((str(root), lag))
        raise ConfigError("lag")

    monkeypatch.setattr(vidpred.data.synth, "check_action_lag", check)
    with pytest.raises(ConfigError, match="^lag$"):
        trainer.train(config("model.condition=causal", "model.action_lag=0"), tmp_path / "run")
    assert seen == [("/fake/data", 0)] and data.calls == []
    trainer.train(config("train.epochs=1", "train.batch_size=4", "train.n_past=1", "train.n_future=1",
                         "model.condition=lab"), tmp_path / "lab", progress=False)
    assert seen == [("/fake/data", 0)]  # a lab model does not


def test_resume_names_the_first_changed_setting_in_full():
    old = config("train.epochs=2")
    trainer._check_resume_changes(old, config("train.epochs=9", "train.compile=true", "train.log_every=3",
                                              "train.val_every=2", "train.ckpt_every=5", "train.device=auto",
                                              "data.root=/other", "data.num_workers=2", "data.use_cache=false"),
                                  Path("r/last.pt"))
    allowed = ("data.num_workers, data.root, data.use_cache, train.ckpt_every, train.compile, train.device, "
               "train.epochs, train.log_every, train.val_every")
    with pytest.raises(ConfigError) as err:
        trainer._check_resume_changes(old, config("train.lr=0.5", "model.z_dim=3"), Path("r/last.pt"))
    assert str(err.value) == (f"cannot resume r/last.pt with model.z_dim=3: the run was trained with 2 "
                              f"(--resume may change only {allowed}); start a new run instead")
    with pytest.raises(ConfigError) as err:
        trainer._check_resume_changes(old, config("train.lr=0.5"), Path("r/last.pt"))
    assert str(err.value).startswith("cannot resume r/last.pt with train.lr=0.5: the run was trained with 0.002 ")


# -- the pieces ---------------------------------------------------------------------------------


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer.resolve_device("auto") == torch.device("cpu")
    assert trainer.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError) as err:
        trainer.resolve_device("cuda")
    assert str(err.value) == "train.device is cuda but no CUDA device is available"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trainer.resolve_device("auto") == torch.device("cuda")
    assert trainer.resolve_device("cuda") == torch.device("cuda")
    assert trainer.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("text,native", [
    ("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\nbugs\t\t: spectre\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse amx_bf16 amx_tile\n", True),
    ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", True),  # Arm
    ("processor\t: 0\nflags\t\t: fpu sse avx512f\nbugs\t\t: bf16 avx512_bf16\n", False),  # not a flags line
    ("model name\t: avx512_bf16 bf16\nflags\t\t: fpu\n", False),
    ("flags\t\t: fpu sse\nflags\t\t: avx512_bf16\n", True),  # every flags line counts
    ("flags: x:bf16\n", False),
    ("flags bf16\t: fpu\n", False),  # the name before the colon is no flag
    ("processor\t: 0\nflags\n", False),  # a flags line without a colon
    ("", False),
])
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, text, native):
    class FakePath:
        def __init__(self, name):
            assert name == "/proc/cpuinfo"

        def read_text(self):
            return text

    monkeypatch.setattr(trainer, "Path", FakePath)
    assert trainer.cpu_has_native_bf16() is native


def test_native_bf16_is_false_where_cpuinfo_cannot_be_read(monkeypatch):
    class Unreadable:
        def __init__(self, name):
            pass

        def read_text(self):
            raise PermissionError("no")

    monkeypatch.setattr(trainer, "Path", Unreadable)
    assert trainer.cpu_has_native_bf16() is False


def test_amp_on_cuda_follows_the_device_s_bf16_support(monkeypatch):
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: pytest.fail("a CPU question for a GPU"))
    for supported, want in ((True, "bf16"), (False, "none")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
        assert trainer.resolve_amp(torch.device("cuda"), "auto") == want
        assert trainer.resolve_amp(torch.device("cuda"), "none") == "none"


def test_autocast_is_bf16_on_the_device_or_nothing():
    with trainer.autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with trainer.autocast(torch.device("cpu"), "none"):
        assert not torch.is_autocast_enabled("cpu")
    assert type(trainer.autocast(torch.device("cpu"), "none")) is contextlib.nullcontext


def test_epoch_indices_are_the_documented_permutations():
    got = trainer.epoch_indices(5, batch=3, steps=4, seed=7, epoch=2)  # 12 indices: 3 permutations, cut
    perms = [np.random.default_rng([7, 2, k]).permutation(5) for k in range(3)]
    np.testing.assert_array_equal(got, np.concatenate(perms)[:12].reshape(4, 3))
    np.testing.assert_array_equal(trainer.epoch_indices(6, 2, 3, 7, 2),
                                  np.random.default_rng([7, 2, 0]).permutation(6).reshape(3, 2))
    np.testing.assert_array_equal(trainer.epoch_indices(6, 2, 2, 1, 0),
                                  np.random.default_rng([1, 0, 0]).permutation(6)[:4].reshape(2, 2))


def test_step_noise_is_keyed_by_seed_and_step():
    torch.testing.assert_close(trainer.step_noise(4, 11, (2, 3, 5)), noise_of(4, 11, (2, 3, 5)), rtol=0, atol=0)
    assert trainer.step_noise(4, 11, (2, 3, 5)).shape == (2, 3, 5)


def tiny_model(levels=2):
    from vidpred.config import ModelConfig

    torch.manual_seed(0)
    return SVG(ModelConfig(width=2, g_dim=4, z_dim=2, rnn_size=4, cond_embed=2, predictor_layers=1, levels=levels))


def test_compute_loss_from_the_rollout_s_terms():
    model = tiny_model()
    ds = Windows(3, 5, key=9)
    frames, conds = ds.frames, ds.conds
    noise = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(1))
    for tf, mw in ((True, 0.0), (False, 0.5)):
        loss, mse, kl, levels = trainer.compute_loss(model, frames, conds, 2, 0.3, tf, noise, contextlib.nullcontext(), mw)
        out = rollout(model, frames, conds, 2, teacher_forcing=tf, noise=noise)
        sq = (out.pred - frames[:, 1:]) ** 2
        w = 1 + mw * moving(frames, 2)
        assert 0 < moving(frames, 2).mean() < 0.5
        torch.testing.assert_close(loss, sum((w * sq)[:, t].mean() for t in range(4)) + 0.3 * out.kl.sum((1, 2)).mean())
        torch.testing.assert_close(mse, sum(sq[:, t].mean() for t in range(4)) / 4)
        torch.testing.assert_close(kl, out.kl.sum((1, 2)).mean() / 4)
        torch.testing.assert_close(levels, out.kl.sum(1).mean(0) / 4)
        assert levels.shape == (2,) and loss.requires_grad
        assert not mse.requires_grad and not kl.requires_grad and not levels.requires_grad
    # a zero motion weight is the plain loss
    a = trainer.compute_loss(model, frames, conds, 2, 0.3, True, noise, contextlib.nullcontext(), 0.0)
    b = trainer.compute_loss(model, frames, conds, 2, 0.3, True, noise, contextlib.nullcontext())
    torch.testing.assert_close(a[0], b[0])


def test_compute_loss_runs_the_net_under_the_context_it_is_given():
    seen = []

    class Net(torch.nn.Module):
        def forward(self, frames, conds, n_past, teacher_forcing, noise):
            seen.append((n_past, teacher_forcing, torch.is_autocast_enabled("cpu")))
            pred = frames[:, 1:] * 0 + 0.5
            kl = torch.arange(1.0, 9.0).view(2, 2, 2)  # (B, steps, levels)
            return types.SimpleNamespace(pred=pred.to(torch.bfloat16), kl=kl.to(torch.bfloat16))

    frames = torch.zeros(2, 3, 3, 4, 4)
    frames[0, 2] = 0.9
    loss, mse, kl, levels = trainer.compute_loss(Net(), frames, None, 1, 0.5, False, None,
                                                 trainer.autocast(torch.device("cpu"), "bf16"))
    assert seen == [(1, False, True)]
    # every pixel is off by 0.5 (0.25), but frame 2 of sequence 0 by 0.4 (0.16): per step 0.25 and 0.205;
    # the KL averaged over the batch, [[3, 4], [5, 6]], summed over steps: [8, 10]
    assert mse.item() == pytest.approx((0.25 + 0.205) / 2)
    assert (kl.item(), levels.tolist()) == (9.0, [4.0, 5.0])
    assert loss.item() == pytest.approx(0.455 + 0.5 * 18)
    assert loss.dtype == mse.dtype == kl.dtype == levels.dtype == torch.float32


def test_free_bits_floor_each_step_and_level_s_batch_mean_kl_in_the_loss_only():
    class Net(torch.nn.Module):
        def forward(self, frames, conds, n_past, teacher_forcing, noise):
            kl = torch.tensor([[[1.0, 8.0], [3.0, 2.0]], [[5.0, 0.0], [5.0, 6.0]]])  # (B, steps, levels)
            return types.SimpleNamespace(pred=frames[:, 1:] * 0 + 0.5, kl=kl)

    frames = torch.zeros(2, 3, 3, 4, 4)
    plain = trainer.compute_loss(Net(), frames, None, 1, 0.5, True, None, contextlib.nullcontext())
    floored = trainer.compute_loss(Net(), frames, None, 1, 0.5, True, None, contextlib.nullcontext(), 0.0, 3.5)
    # batch means per (step, level): [[3, 4], [4, 4]], sum 15; floored at 3.5 cell by cell: [[3.5, 4], [4, 4]],
    # sum 15.5 (a floor on the total, max(15, 4 * 3.5), would leave 15; the per-sequence KLs 1 and 0 stay below)
    assert plain[0].item() == pytest.approx(2 * 0.25 + 0.5 * 15)
    assert floored[0].item() == pytest.approx(2 * 0.25 + 0.5 * 15.5)
    for a, b in zip(plain[1:], floored[1:]):  # the logged mse and KL are the true ones
        torch.testing.assert_close(a, b)
    assert floored[2].item() == 7.5
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ConfigError, match="free_bits"):
            KLConfig(free_bits=bad)


def test_moving_pixels_against_the_last_observed_frame():
    frames = torch.zeros(1, 4, 3, 2, 3)
    frames[0, 1, 2, 0, 0] = 0.5    # frame 1 moves at (0, 0) from frame 0
    frames[0, 2, 0, 1, 2] = 0.1    # not more than the threshold
    frames[0, 3, 1, 0, 1] = 0.11   # frame 3 against frame 1 (n_past 2): (0, 1), and (0, 0) back to 0
    m = trainer.moving_pixels(frames, 2)
    assert m.shape == (1, 3, 1, 2, 3) and m.dtype == torch.float32
    want = torch.zeros(3, 2, 3)
    want[0, 0, 0] = 1
    want[1, 0, 0] = 1  # frame 2 against frame 1
    want[2, 0, 0] = want[2, 0, 1] = 1
    torch.testing.assert_close(m[0, :, 0], want)


def test_validate_is_the_mean_psnr_of_one_prior_sample_per_sequence():
    model = tiny_model(levels=1)
    model.train()
    ds = Windows(3, 4, key=4)
    loader = [(ds.frames[:2], ds.conds[:2]), (ds.frames[2:], ds.conds[2:])]
    got = trainer.validate(model, loader, 2, 6, 4, torch.device("cpu"), Dist(), "none")
    assert model.training
    model.eval()
    g = torch.Generator().manual_seed(6 * 1000003 + 4)
    scores = []
    with torch.no_grad():
        for frames, conds in loader:
            noise = torch.randn(len(frames), 3, 2, generator=g)
            out = rollout(model, frames[:, :2], conds, 2, use_posterior=False, noise=noise)
            scores += frame_psnr(out.pred[:, 1:], frames[:, 2:]).mean(1).tolist()
    assert len(scores) == 3
    assert got == pytest.approx(sum(scores) / 3, rel=1e-6)
    assert trainer.validate(model, [], 2, 6, 4, torch.device("cpu"), Dist(), "none") == 0.0


def test_jsonl_log_keeps_lines_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [json.dumps({"step": s}) for s in (1, 2, 3, 2)]
    path.write_text("\n".join(lines) + "\n\n" + '{"step": 1')
    trainer.JsonlLog(path, True, 2)
    assert path.read_text() == "\n".join([lines[0], lines[1], lines[3]]) + "\n"
    log = trainer.JsonlLog(path, True, None)
    log.write({"step": 9, "x": [1.5]})
    assert path.read_text().endswith('\n{"step": 9, "x": [1.5]}\n')
    text = path.read_text()
    off = trainer.JsonlLog(path, False, 0)
    off.write({"step": 10})
    assert path.read_text() == text
    trainer.JsonlLog(tmp_path / "none.jsonl", True, 5)
    assert not (tmp_path / "none.jsonl").exists()
    trainer.JsonlLog(path, True, 0)
    assert path.read_text() == ""


def test_complete_lines_and_read_metrics(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(DataError) as err:
        trainer.read_metrics(run)
    assert str(err.value) == f"{run}/metrics.jsonl not found: is {run} a vidpred run folder?"
    (run / "metrics.jsonl").write_text('{"a": 1}\n  \n{"a": 2}\n{"a": ')
    assert trainer.read_metrics(run) == [{"a": 1}, {"a": 2}]
    (run / "metrics.jsonl").write_text('{"a": 1}\n{"a": 2}')
    assert trainer.read_metrics(str(run)) == [{"a": 1}, {"a": 2}]
    (run / "metrics.jsonl").write_text("\n")
    assert ckpt_io.complete_lines(run / "metrics.jsonl") == []


def test_tensorboard_scalars_of_a_record():
    tb = FakeWriter()
    trainer._tb_scalars(tb, {"kind": "epoch", "step": 5, "epoch": 1, "loss": 2, "on": True, "amp": "none",
                             "levels": [1.0], "val": None, "psnr": 7.5}, 5)
    assert tb.scalars == [("epoch/loss", 2.0, 5), ("epoch/on", 1.0, 5), ("epoch/psnr", 7.5, 5)]
    assert all(type(v) is float for _, v, _ in tb.scalars) and tb.flushes == 1
    trainer._tb_scalars(None, {"kind": "step"}, 1)


def test_tensorboard_writer_folder_and_purge_step(tmp_path, monkeypatch):
    made = []

    class Writer:
        def __init__(self, log_dir, purge_step=None):
            made.append((log_dir, purge_step))

    import torch.utils.tensorboard

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", Writer)
    assert isinstance(trainer._tensorboard(tmp_path, 0), Writer)
    assert isinstance(trainer._tensorboard(tmp_path, 7), Writer)
    assert made == [(str(tmp_path / "tb"), None), (str(tmp_path / "tb"), 7)]
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)
    assert trainer._tensorboard(tmp_path, 3) is None
