"""The training loop: one process or many under torchrun.

Everything random in a step is a pure function of ``(seed, step)`` or
``(seed, epoch, index)``: the data order, the window starts, the
reparameterisation noise and the teacher-forcing draw. With the model and
optimiser state in the checkpoint, a resumed run therefore continues exactly,
and the global batch is the same whatever the number of processes.

Loss (per optimiser step, eq. 3 of the assignment):

    mse  = sum over predicted steps t of mean over (batch, pixels) of (x_t - x^_t)^2
    kl   = sum over steps t of mean over batch of KL(q(z_t|.) || p(z_t|.)) summed over z dims
    loss = mse + beta * kl

These are SVG's reductions; logged values are divided by the number of steps
(per-frame averages), so they do not depend on the window length.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from vidpred.config import Config, flatten, save_config
from vidpred.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from vidpred.evaluation.metrics import motion_mask, psnr
from vidpred.data.layout import IMAGE_SIZE
from vidpred.models.svg import ACTION_DIM, SVG, _last_observed_index, rollout
from vidpred.runtime import CompiledOrEager
from vidpred.training import checkpoint as ckpt_io
from vidpred.training.distributed import Dist, all_reduce_sum, setup, teardown
from vidpred.training.schedules import kl_beta, learning_rate, teacher_forcing_ratio, use_teacher_forcing

METRICS = "metrics.jsonl"
TIMING_KEYS = ("seq_per_s", "time")  # the only fields of a log line that vary between identical runs


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True where the CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX-BF16, Arm BF16), read from
    /proc/cpuinfo; False where that cannot be read (then bf16 would be emulated: slower than fp32)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_amp(device: torch.device, amp: str) -> str:
    """``train.amp`` as it will run on ``device``: ``none`` or ``bf16`` (``auto`` decided here)."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    return "bf16" if cpu_has_native_bf16() else "none"


def autocast(device: torch.device, amp: str):
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def epoch_indices(n: int, batch: int, steps: int, seed: int, epoch: int) -> np.ndarray:
    """Dataset indices of one epoch's ``steps`` global batches: concatenated
    permutations seeded by (seed, epoch, k), as many as needed."""
    need = steps * batch
    perms = []
    k = 0
    while sum(len(p) for p in perms) < need:
        perms.append(np.random.default_rng([seed, epoch, k]).permutation(n))
        k += 1
    return np.concatenate(perms)[:need].reshape(steps, batch)


NOISE_TAG = 0x5EED  # step_noise's stream of the ELBO's reparameterisation noise
BEST_OF_TAG = 0xB0F  # and of the best-of-many term's prior samples


def step_noise(seed: int, step: int, shape: tuple[int, ...], tag: int = NOISE_TAG) -> torch.Tensor:
    """Reparameterisation noise of a global batch, a pure function of (seed, step, tag)."""
    g = torch.Generator().manual_seed(int(np.random.default_rng([seed, step, tag]).integers(2**62)))
    return torch.randn(shape, generator=g)


def compute_loss(net: torch.nn.Module, frames, conds, n_past: int, beta: float, teacher_forcing: bool, noise, amp_ctx,
                 motion_weight: float = 0.0, free_bits: float = 0.0, arm_weight: float = 0.0):
    """Returns (loss, per-frame mse, per-frame kl, kl per level) for one batch.

    ``net`` is the model or its DistributedDataParallel wrapper (whose forward is the rollout),
    or either through ``torch.compile`` (``train.compile``). ``motion_weight``: see
    ``train.motion_weight``; the returned mse is the unweighted one either way. ``free_bits``:
    see ``train.kl.free_bits``; the returned KL is the true one either way. ``arm_weight``: see
    ``train.arm_weight``.
    """
    with amp_ctx:
        out = net(frames, conds, n_past, teacher_forcing=teacher_forcing, noise=noise)
    steps = out.pred.shape[1]
    sq = (out.pred.float() - frames[:, 1:]) ** 2  # (B, T-1, 3, H, W)
    mse = sq.mean(dim=(0, 2, 3, 4)).sum()
    recon = mse
    if motion_weight > 0:
        recon = (sq * (1 + motion_weight * moving_pixels(frames, n_past))).mean(dim=(0, 2, 3, 4)).sum()
    kl_steps = out.kl.float().mean(0)  # (T-1, levels)
    kl_levels = kl_steps.sum(0)  # (levels,)
    kl = kl_levels.sum()
    loss = recon + beta * (kl_steps.clamp(min=free_bits).sum() if free_bits > 0 else kl)
    if arm_weight > 0:
        loss = loss + arm_weight * arm_error_px2(out.arm, conds)
    return loss, mse.detach() / steps, kl.detach() / steps, kl_levels.detach() / steps


def arm_error_px2(arm: torch.Tensor, conds: torch.Tensor) -> torch.Tensor:
    """Squared distance (px^2 of the 64 px frame, x and y) of the predicted arm positions ``arm``
    (B, T-1, 3) from the recorded ones of frames 1..T-1 in ``conds``, averaged over the batch and
    summed over frames (``train.arm_weight``)."""
    return arm_sq_error_px2(arm, conds[:, 1:, ACTION_DIM:]).mean(0).sum()


def arm_sq_error_px2(arm: torch.Tensor, recorded: torch.Tensor) -> torch.Tensor:
    """Per frame: squared distance in px^2 of the 64 px frame (x and y) of the arm positions
    ``arm`` (..., 3) from ``recorded`` (..., 3), both in table fractions -> (...)."""
    return (((arm[..., :2].float() - recorded[..., :2]) * IMAGE_SIZE) ** 2).sum(-1)


def best_of_many_loss(net: torch.nn.Module, frames, conds, n_past: int, samples: int, noise, amp_ctx,
                      motion_weight: float = 0.0) -> torch.Tensor:
    """The best-of-many term (``train.best_of``) of a batch ``frames`` (B, T, ...): ``samples``
    free runs from the prior per sequence (``noise`` (B * samples, T-1, noise_dim), the runs of
    sequence i in rows i * samples ..), each scored like the ELBO's reconstruction term on the
    predicted frames (squared error, moving pixels weighted by ``motion_weight``, mean per frame,
    summed over frames); the mean over sequences of each one's lowest score. Only the winning
    run gets a gradient."""
    B = frames.shape[0]
    with amp_ctx:
        out = net(frames[:, :n_past].repeat_interleave(samples, 0), conds.repeat_interleave(samples, 0), n_past,
                  use_posterior=False, noise=noise)
    target = frames[:, n_past:].repeat_interleave(samples, 0)
    sq = (out.pred[:, n_past - 1 :].float() - target) ** 2  # (B * samples, T - n_past, 3, H, W)
    if motion_weight > 0:
        sq = sq * (1 + motion_weight * moving_pixels(frames, n_past)[:, n_past - 1 :].repeat_interleave(samples, 0))
    score = sq.mean(dim=(2, 3, 4)).sum(1).view(B, samples)
    return score.min(1).values.mean()


def moving_pixels(frames: torch.Tensor, n_past: int) -> torch.Tensor:
    """(B, T-1, 1, H, W) 1.0 where frame t (t = 1..T-1) differs by more than the evaluation's
    motion threshold, in some channel, from the last observed frame before it (x_{t-1} while
    observed, then x_{n_past-1}), else 0.0."""
    last = _last_observed_index(frames.shape[1], n_past, frames.device)
    return motion_mask(frames[:, 1:], frames[:, last]).unsqueeze(2).float()


@torch.no_grad()
def validate(model: SVG, loader, n_past: int, seed: int, epoch: int, device, d: Dist, amp: str) -> float:
    """Mean PSNR over the predicted frames (n_past -> rest of the window) of the whole
    validation split, one prior sample per sequence (all-reduced over processes)."""
    model.eval()
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    total = torch.zeros(2, dtype=torch.float64)
    for frames, conds in loader:
        frames, conds = frames.to(device), conds.to(device)
        B, T = conds.shape[:2]
        noise = torch.randn(B, T - 1, model.cfg.noise_dim, generator=g).to(device)
        with autocast(device, amp):
            out = rollout(model, frames[:, :n_past], conds, n_past, use_posterior=False, noise=noise)
        p = psnr(out.pred[:, n_past - 1 :].float(), frames[:, n_past:])  # (B, n_future)
        total += torch.tensor([p.mean(1).sum().item(), B], dtype=torch.float64)
    total = all_reduce_sum(d, total)
    model.train()
    return float(total[0] / max(total[1], 1))


class JsonlLog:
    """metrics.jsonl, rank 0 only; on resume, lines past the checkpoint's step are dropped."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None) -> None:
        self.path, self.enabled = path, enabled
        if enabled and keep_until_step is not None and path.exists():
            kept = [ln for ln in ckpt_io.complete_lines(path) if json.loads(ln)["step"] <= keep_until_step]
            ckpt_io.rewrite_lines(path, kept)  # a kill here leaves the old file whole

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _check_out_dir(out: Path, resume: bool) -> None:
    has_run = (out / ckpt_io.LAST).exists()
    if resume and not has_run:
        raise CheckpointError(f"cannot resume: {out / ckpt_io.LAST} not found")
    if not resume and has_run:
        raise ConfigError(f"run folder {out} already holds a run; pass --resume to continue it or choose another --out")


def train(cfg: Config, out: Path, resume: bool = False, progress: bool | None = None) -> dict:
    """Train (or resume) a run in ``out``. Returns a summary dict (steps, best and last validation PSNR)."""
    out = Path(out)
    device = resolve_device(cfg.train.device)
    d = setup(device.type)
    try:
        return _train(cfg, out, resume, progress, device, d)
    finally:
        teardown(d)


# What --resume may change: how long to train, where the data is, how to log. Anything else
# would change the steps already taken or planned (data order, schedules, optimiser), so a
# resumed run would no longer be the run it continues.
RESUMABLE = {"train.epochs", "train.compile", "train.log_every", "train.val_every", "train.ckpt_every", "train.device",
             "data.root", "data.num_workers", "data.use_cache"}


def _check_resume_changes(old: Config, new: Config, path: Path) -> None:
    a, b = flatten(old.to_dict()), flatten(new.to_dict())
    for key in sorted(a):
        if key not in RESUMABLE and a[key] != b.get(key):
            raise ConfigError(
                f"cannot resume {path} with {key}={b.get(key)!r}: the run was trained with {a[key]!r} "
                f"(--resume may change only {', '.join(sorted(RESUMABLE))}); start a new run instead"
            )


def _train(cfg: Config, out: Path, resume: bool, progress, device: torch.device, d: Dist) -> dict:
    from vidpred.data import condition_stats, open_split

    tc = cfg.train
    if device.type == "cuda" and d.enabled:
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    _check_out_dir(out, resume)
    start_ckpt = ckpt_io.load(out / ckpt_io.LAST) if resume else None
    if start_ckpt is not None:  # before anything is read or built: refuse what would change the run
        _check_resume_changes(start_ckpt["config_obj"], cfg, out / ckpt_io.LAST)
    if tc.best_of.samples and d.enabled:  # a second forward per step through the DDP wrapper: not supported
        raise ConfigError("train.best_of runs on one process only: train without torchrun, "
                          "or set train.best_of.samples=0")
    if tc.batch_size % d.world:
        raise ConfigError(f"train.batch_size {tc.batch_size} must divide evenly over {d.world} processes")
    if cfg.model.condition == "causal":
        from vidpred.data.synth import check_action_lag

        check_action_lag(cfg.data.root, cfg.model.action_lag)
    local_batch = tc.batch_size // d.world

    # Rank 0 opens the splits first so that only it builds a missing cache.
    if d.enabled and not d.main:
        torch.distributed.barrier()
    train_ds = open_split(cfg.data.root, "train", window=tc.window, random_start=cfg.data.random_start,
                          use_cache=cfg.data.use_cache, seed=tc.seed)
    val_ds = open_split(cfg.data.root, "validate", window=tc.window, random_start=False, use_cache=cfg.data.use_cache)
    if d.enabled and d.main:
        torch.distributed.barrier()
    if len(train_ds) < tc.batch_size:
        raise DataError(f"train split of {cfg.data.root} has {len(train_ds)} sequences, fewer than train.batch_size {tc.batch_size}")
    steps_per_epoch = tc.steps_per_epoch or len(train_ds) // tc.batch_size
    total_steps = tc.epochs * steps_per_epoch
    # The KL and learning-rate schedules' length is the plan the run started with: extending a run
    # (more epochs on --resume) must not re-time the steps already planned.
    schedule_steps = total_steps
    if start_ckpt is not None:
        schedule_steps = start_ckpt.get("schedule_steps", start_ckpt["config_obj"].train.epochs * steps_per_epoch)
        if start_ckpt.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
            raise ConfigError(
                f"cannot resume {out / ckpt_io.LAST}: the train split of {cfg.data.root} gives {steps_per_epoch} "
                f"steps per epoch, the run was trained with {start_ckpt['steps_per_epoch']} (a different dataset?)"
            )

    torch.manual_seed(tc.seed)
    model = SVG(cfg.model)
    model.set_condition_stats(*condition_stats(cfg.data.root))
    model.to(device)
    # fused: one kernel for all parameters instead of a loop of small ops (3-5% of a CPU step)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(tc.beta1, 0.999), fused=True)
    step, best_psnr, history = 0, -math.inf, []
    epoch_acc = torch.zeros(4, dtype=torch.float64)  # sums of loss, mse, kl and the number of steps
    if start_ckpt is not None:
        ckpt_io.load_state(model, start_ckpt["model"], out / ckpt_io.LAST)
        optimizer.load_state_dict(start_ckpt["optimizer"])
        step, best_psnr, history = start_ckpt["step"], start_ckpt["best_psnr"], start_ckpt["history"]
        epoch_acc = start_ckpt["epoch_acc"].clone()
        ckpt_io.set_rng_state(start_ckpt["rng"])
    net: torch.nn.Module = model
    if d.enabled:
        if device.type == "cuda":
            # Batch norm statistics over the whole global batch. SyncBatchNorm pools the
            # teacher-forced path's steps (B*S frames), unlike StepBatchNorm2d's per-step
            # statistics: under multi-GPU training the two rollout paths differ slightly
            # in training mode (evaluation uses the running averages and is unaffected).
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log = JsonlLog(out / METRICS, d.main, start_ckpt["step"] if start_ckpt else None)
    tb = _tensorboard(out, step) if d.main else None

    def save(name: str) -> None:
        if not d.main:
            return
        state = {
            "format": ckpt_io.FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "step": step, "epoch_acc": epoch_acc,
            "best_psnr": best_psnr, "history": history, "rng": ckpt_io.rng_state(),
            "schedule_steps": schedule_steps, "steps_per_epoch": steps_per_epoch,
        }
        ckpt_io.save_atomic(state, out / name)

    val_loader = DataLoader(
        _Shard(val_ds, d), batch_size=max(local_batch, 16), shuffle=False, num_workers=cfg.data.num_workers
    )
    bar = tqdm(total=total_steps, initial=step, disable=not d.main if progress is None else not (progress and d.main),
               desc=f"train {out.name}", unit="step", dynamic_ncols=True)
    model.train()
    amp = resolve_amp(device, tc.amp)
    amp_ctx = lambda: autocast(device, amp)  # noqa: E731
    forward = CompiledOrEager(net, tc.compile, device, f"train {out.name}")
    noise_shape = (tc.batch_size, tc.window - 1, cfg.model.noise_dim)
    bo = tc.best_of  # one process only (refused under torchrun above)
    bo_batch = min(bo.batch, tc.batch_size)
    bo_shape = (bo_batch * bo.samples, tc.window - 1, cfg.model.noise_dim)
    bo_start = math.ceil(bo.start * schedule_steps) if bo.samples else None
    last_val = history[-1]["val_psnr"] if history else None
    t_last, seqs_since = time.perf_counter(), 0
    while step < total_steps:
        epoch = step // steps_per_epoch
        train_ds.set_epoch(epoch)
        batches = epoch_indices(len(train_ds), tc.batch_size, steps_per_epoch, tc.seed, epoch)
        done = step - epoch * steps_per_epoch
        mine = batches[done:, d.rank * local_batch : (d.rank + 1) * local_batch]
        loader = DataLoader(train_ds, batch_sampler=mine.tolist(), num_workers=cfg.data.num_workers,
                            pin_memory=device.type == "cuda")
        tf_ratio = teacher_forcing_ratio(tc.teacher_forcing, epoch)
        for frames, conds in loader:
            frames, conds = frames.to(device, non_blocking=True), conds.to(device, non_blocking=True)
            beta = kl_beta(tc.kl, step, schedule_steps)
            for group in optimizer.param_groups:  # a pure function of the step: exact on resume
                group["lr"] = learning_rate(tc.lr, tc.lr_schedule, tc.lr_final, step, schedule_steps)
            tf = use_teacher_forcing(tf_ratio, tc.seed, step)
            noise = step_noise(tc.seed, step, noise_shape)[d.rank * local_batch : (d.rank + 1) * local_batch]
            loss, mse, kl, kl_levels = compute_loss(forward, frames, conds, tc.n_past, beta, tf, noise.to(device), amp_ctx(),
                                                     tc.motion_weight, tc.kl.free_bits,
                                                     arm_weight=tc.arm_weight)
            best_of = None
            if bo_start is not None and step >= bo_start:
                bo_noise = step_noise(tc.seed, step, bo_shape, BEST_OF_TAG).to(device)
                best_of = best_of_many_loss(forward, frames[:bo_batch], conds[:bo_batch], tc.n_past, bo.samples,
                                            bo_noise, amp_ctx(), tc.motion_weight)
                loss = loss + bo.weight * best_of
            terms = all_reduce_sum(d, torch.stack([loss.detach(), mse, kl]).double().cpu()) / d.world
            if not torch.isfinite(terms).all():
                raise NonFiniteLossError(
                    f"non-finite loss at step {step} (epoch {epoch}): loss={terms[0]:.4g} mse={terms[1]:.4g} "
                    f"kl={terms[2]:.4g} beta={beta:.4g}; last good checkpoint kept at {out / ckpt_io.LAST}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            step += 1
            seqs_since += tc.batch_size
            epoch_acc += torch.cat([terms, torch.ones(1, dtype=torch.float64)])
            bar.update(1)
            bar.set_postfix(loss=f"{terms[0]:.4f}", beta=f"{beta:.3g}", tf=int(tf), val=last_val)
            if step % tc.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                levels = (all_reduce_sum(d, kl_levels.double().cpu()) / d.world).tolist()
                record = {
                    "kind": "step", "step": step, "epoch": epoch, "loss": terms[0].item(), "mse": terms[1].item(),
                    "kl": terms[2].item(), "beta": beta, "tf_ratio": tf_ratio, "teacher_forcing": tf,
                    "lr": optimizer.param_groups[0]["lr"], "seq_per_s": seqs_since / max(now - t_last, 1e-9),
                }
                if len(levels) > 1:
                    record["kl_levels"] = levels
                if best_of is not None:  # this step's winning runs' score (train.best_of), before its weight
                    record["best_of"] = best_of.item()
                log.write(record)
                _tb_scalars(tb, record, step)
                t_last, seqs_since = now, 0
            if tc.ckpt_every and step % tc.ckpt_every == 0 and step % steps_per_epoch:
                save(ckpt_io.LAST)
        # end of epoch
        n = max(epoch_acc[3].item(), 1)
        record = {"kind": "epoch", "step": step, "epoch": epoch, "loss": epoch_acc[0].item() / n,
                  "mse": epoch_acc[1].item() / n, "kl": epoch_acc[2].item() / n,
                  "beta": kl_beta(tc.kl, step - 1, schedule_steps), "tf_ratio": tf_ratio,
                  "amp": amp,  # the precision train.amp resolved to on this device
                  "compiled": forward.active}  # train.compile on and not fallen back to eager
        epoch_acc.zero_()
        if (epoch + 1) % tc.val_every == 0 or step == total_steps:
            last_val = round(validate(model, val_loader, tc.n_past, tc.seed, epoch, device, d, amp), 3)
            record["val_psnr"] = last_val
            history.append({"epoch": epoch, "step": step, "val_psnr": last_val})
            if last_val > best_psnr:
                best_psnr = last_val
                save(ckpt_io.BEST)
        log.write(record)
        _tb_scalars(tb, record, step)
        save(ckpt_io.LAST)
    bar.close()
    if tb is not None:
        tb.close()
    return {"steps": step, "best_val_psnr": best_psnr, "last_val_psnr": last_val, "out": str(out)}


class _Shard(torch.utils.data.Dataset):
    """Every world-th sequence of a split, for sharded validation."""

    def __init__(self, ds, d: Dist) -> None:
        self.ds, self.idx = ds, list(range(d.rank, len(ds), d.world))

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i):
        return self.ds[self.idx[i]]


def _tensorboard(out: Path, step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but keep training if it is broken
        return None
    return SummaryWriter(str(out / "tb"), purge_step=step or None)


def _tb_scalars(tb, record: dict, step: int) -> None:
    if tb is None:
        return
    prefix = record["kind"]
    for k, v in record.items():
        if k in ("kind", "step", "epoch") or not isinstance(v, (int, float)):
            continue
        tb.add_scalar(f"{prefix}/{k}", float(v), step)
    tb.flush()


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / METRICS
    if not path.is_file():
        raise DataError(f"{path} not found: is {run} a vidpred run folder?")
    return [json.loads(ln) for ln in ckpt_io.complete_lines(path)]


