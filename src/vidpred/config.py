"""Typed configuration: dataclasses with a docstring per field, YAML presets, dotted overrides.

The resolved config is the record of a run: it is saved as ``config.yaml`` in the
run folder and inside every checkpoint.

Presets live in ``vidpred/configs/*.yaml`` and name only what differs from the
defaults below; ``--config`` takes a preset name or a YAML file, and
``key.sub=value`` overrides apply last (values parsed as YAML).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vidpred.errors import ConfigError


@dataclass
class DataConfig:
    root: str = "data/synth"
    """Dataset root in the processed layout (``{train,validate,test}/<traj>/<k>/``)."""
    random_start: bool = True
    """Training windows start at a random step of the 30 (validation always starts at 0)."""
    use_cache: bool = True
    """Read the packed uint8 cache (built on first use) instead of PNG folders."""
    num_workers: int = 0
    """DataLoader worker processes (0 loads in the main process)."""

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class ModelConfig:
    codec: str = "dcgan64"
    """Frame codec: ``dcgan64`` or ``vgg64`` (SVG's two 64x64 architectures)."""
    width: int = 64
    """Base channel count of the codec (64 is the paper's; smaller for CPU runs)."""
    norm: str = "batch"
    """Codec normalisation: ``batch`` (SVG) or ``group`` (per-sample, batch-size independent)."""
    g_dim: int = 128
    """Frame embedding size (output of the encoder and of the predictor)."""
    z_dim: int = 64
    """Latent size per time step (per level when hierarchical)."""
    rnn_size: int = 256
    """Hidden size of all LSTMs."""
    predictor_layers: int = 2
    """LSTM layers of the frame predictor."""
    posterior_layers: int = 1
    """LSTM layers of the posterior q(z_t | x_{1:t})."""
    prior_layers: int = 1
    """LSTM layers of the learned prior p(z_t | x_{1:t-1})."""
    prior: str = "learned"
    """``learned`` (SVG-LP, the assignment's extra (a)) or ``fixed`` N(0, I) (SVG-FP), for z_t
    (``arm_latent``'s prior is learned either way)."""
    cond_dim: int = 7
    """Numbers per step in the condition: action (4) + end-effector position (3)."""
    cond_embed: int = 32
    """Size of the condition embedding fed to the predictor (0 disables conditioning)."""
    condition: str = "lab"
    """What the prediction of frame t may read of the conditions. ``lab`` (the assignment's
    model): (c_{t-1}, c_t), where c_t holds the end-effector position *of frame t*, future
    information a planner does not have. ``causal``: the action that leads to frame t and the
    end-effector positions of frames t-1 and t by dead reckoning (the last observed position
    plus the displacement commands given since; no position of a future frame is read)."""
    action_lag: int = 1
    """Step convention of the data, for ``condition=causal``: frame t follows action
    ``t - action_lag``. 1 on BAIR (action[t] acts between frames t and t+1); 0 in the
    synthetic world (action t produces frame t, recorded in its ``synth.json``)."""
    cond_conv: str = "none"
    """Conditional convolution (Choi et al. 2019): ``none``, ``decoder`` or ``both`` (encoder too)."""
    levels: int = 1
    """Latent levels; 2 or more gives the hierarchical model (after HAF-SVG)."""
    seq_z: int = 0
    """Size of a sequence latent w (0: none): one draw per sequence, fed to the frame predictor at
    every step beside z_t, for what stays fixed over a sequence but cannot be seen in its first
    frames (the synthetic world's hidden friction and mass; on BAIR an object's weight).
    Posterior q(w | last observed frame, last frame of the window), prior N(0, I); its KL is
    the last column of the per-level KL."""
    align: bool = False
    """Hierarchical model only: warp the last observed frame's skips with a predicted flow."""
    decoder: str = "pixel"
    """``pixel``: the decoder paints every pixel of the frame (SVG, the lab's model);
    ``cdna``: it moves the previous frame's pixels with predicted kernels and composites
    them with observed backgrounds and a generated image through softmax masks
    (Finn et al. 2016; ``models/transform.py``)."""
    kernels: int = 4
    """``decoder=cdna``: number of transformation kernels."""
    kernel_size: int = 5
    """``decoder=cdna``: kernel size (odd); a kernel moves pixels by up to ``kernel_size // 2``
    px per frame."""
    coords: bool = False
    """``decoder=cdna``: move source coordinates instead of colours (one interpolation of an
    observed frame per prediction, however many steps the model has run free)."""
    flow: bool = False
    """``decoder=cdna``: one more moved candidate, the previous frame (or its coordinates) warped
    by a per-pixel flow field the decoder predicts (up to ``transform.FLOW_MAX_PX`` px per frame;
    SAVP's appearance flow), so an object can move farther than a kernel reaches and in its own
    direction. Zero flow at initialisation."""
    arm_shift: bool = False
    """``decoder=cdna`` with ``pose_map``: one more moved candidate, the previous frame (or its
    coordinates) shifted as a whole by the arm's displacement in the image over the step, from
    the two end-effector positions the pose maps draw (through their learned position-to-pixel
    map). The arm, and an object it pushes, moves by what the commands say without a kernel
    having to learn each direction; the masks choose where it applies."""
    arm_gate: bool = False
    """With ``arm_shift``: one more moved candidate, the arm's shift applied only beside or ahead
    of the gripper along its move; from a learned margin (initially the gripper's radius) behind
    its centre it keeps the previous frame. The masks can then move a pushed object with the arm
    without dragging one that the arm pulls away from."""
    momentum: bool = False
    """With ``coords``: one more moved candidate, the last predicted step's motion repeated (the
    source-coordinate map extrapolated at constant velocity, ``2 * coords_{t-1} - coords_{t-2}``).
    An object the arm pushed and let go can then keep moving in a free run: the masks choose
    where the motion goes on, and mixing it with the previous frame's coordinates slows it down.
    After a ground-truth frame the last motion is unknown and the candidate is the previous
    frame."""
    arm_progress: bool = False
    """With ``pose_map``: the arm's positions that the pose maps draw (and the arm shift moves by)
    come from a prediction instead of dead reckoning alone. A linear head on the predictor's
    output g_t and the latent z_t scales each predicted step's commanded move by a factor in
    (0, 2), about 1 at initialisation (small random weights on z_t only), and the positions
    accumulate those scaled moves from the last observed frame. An arm that stalls against an
    object too heavy to push, or catches up after sliding around it, is then something a latent
    draw can show. Needs ``condition=causal``.
    The condition's embedding (the predictor's and the encoder's input) keeps the reckoned
    positions: what the commands say."""
    arm_latent: bool = False
    """With ``arm_progress``: the factor on each commanded move is a one-number latent of its own
    (``models/arm.py``) instead of a head on (g_t, z_t): a posterior that reads the recorded move
    (training, posterior runs and observed frames only) and a learned prior, an LSTM on the previous
    frame's encoding, the commanded move and whether the arm was stalled at the step before giving
    a mixture of two Gaussians (a free arm, a stalled one), that a free run samples.
    Its KL joins the loss and the reported KL as one more entry after the levels."""
    pose_map: bool = False
    """Draw the end-effector positions of frames t-1 and t that the condition holds (dead
    reckoned under ``condition=causal``) as heat maps added to the decoder's features at every
    scale, so it knows where in the image the arm goes (``models/pose.py``). Positions map to
    pixels through a learned affine map initialised to the synthetic world's table units."""
    skip_frame: str = "last"
    """Frame whose encoder features feed the decoder's skips: ``last`` observed (SVG) or
    ``previous`` (x_{t-1}, observed or predicted: the decoder sees where things are now)."""
    memory_format: str = "auto"
    """Conv memory layout: ``channels_last``, ``contiguous`` (NCHW) or ``auto`` (channels_last
    for vgg64, where it measured 1.4x faster on CPU; NCHW for dcgan64, where it was slower)."""

    def __post_init__(self) -> None:
        choices = {
            "codec": ("dcgan64", "vgg64"),
            "norm": ("batch", "group"),
            "prior": ("learned", "fixed"),
            "cond_conv": ("none", "decoder", "both"),
            "memory_format": ("auto", "contiguous", "channels_last"),
            "decoder": ("pixel", "cdna"),
            "skip_frame": ("last", "previous"),
            "condition": ("lab", "causal"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("width", "g_dim", "z_dim", "rnn_size", "predictor_layers", "posterior_layers",
                     "prior_layers", "cond_dim", "levels", "kernels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.action_lag not in (0, 1):
            raise ConfigError(f"model.action_lag must be 0 (action t produces frame t) or 1 (action t acts "
                              f"between frames t and t+1), got {self.action_lag!r}")
        if self.condition == "causal" and self.cond_dim != 7:
            raise ConfigError(f"model.condition=causal reads actions (4 numbers) and end-effector positions "
                              f"(3): model.cond_dim must be 7, got {self.cond_dim}")
        if self.pose_map and self.cond_dim != 7:
            raise ConfigError(f"model.pose_map draws end-effector positions (condition numbers 5-7): "
                              f"model.cond_dim must be 7, got {self.cond_dim}")
        if self.coords and self.decoder != "cdna":
            raise ConfigError("model.coords needs the transformation decoder (model.decoder=cdna)")
        if self.flow and self.decoder != "cdna":
            raise ConfigError("model.flow needs the transformation decoder (model.decoder=cdna)")
        if self.arm_shift and (self.decoder != "cdna" or not self.pose_map):
            raise ConfigError("model.arm_shift needs the transformation decoder and pose maps "
                              "(model.decoder=cdna, model.pose_map=true), or set model.arm_shift=false")
        if self.arm_progress and not self.pose_map:
            raise ConfigError("model.arm_progress moves the pose maps' positions: it needs model.pose_map=true")
        if self.arm_progress and self.condition != "causal":
            raise ConfigError("model.arm_progress predicts the positions that dead reckoning gives: it needs "
                              f"model.condition=causal (under {self.condition!r} the pose maps read recorded "
                              "positions)")
        if self.arm_latent and not self.arm_progress:
            raise ConfigError("model.arm_latent is the factor of model.arm_progress: it needs model.arm_progress=true")
        if self.arm_gate and not self.arm_shift:
            raise ConfigError("model.arm_gate gates the arm shift: it needs model.arm_shift=true")
        if self.momentum and (self.decoder != "cdna" or not self.coords):
            raise ConfigError("model.momentum repeats the last step's coordinate motion: it needs "
                              "model.decoder=cdna and model.coords=true, or set model.momentum=false")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size must be an odd number >= 1, got {self.kernel_size}")
        if self.seq_z < 0:
            raise ConfigError(f"model.seq_z must be >= 0 (0: no sequence latent), got {self.seq_z}")
        if self.cond_embed < 0:
            raise ConfigError(f"model.cond_embed must be >= 0, got {self.cond_embed}")
        if self.cond_conv != "none" and self.cond_embed == 0:
            raise ConfigError("model.cond_conv needs model.cond_embed > 0")
        if self.align and self.levels < 2:
            raise ConfigError("model.align needs the hierarchical model (model.levels >= 2)")

    @property
    def noise_dim(self) -> int:
        """Standard normal numbers per step of a rollout's reparameterisation noise: z_t at every
        level, then (read at the first step only) the sequence latent w, then with
        ``arm_latent`` two for the arm's latent u_t (its prior's mixture component, its draw)."""
        return self.levels * self.z_dim + self.seq_z + 2 * int(self.arm_latent)


@dataclass
class KLConfig:
    schedule: str = "monotonic"
    """``monotonic``, ``cyclical`` (Fu et al. 2019) or ``constant`` beta."""
    beta_max: float = 1.0
    """Largest KL weight (the assignment's range is 0..1; SVG used 1e-4)."""
    cycles: int = 4
    """Number of cycles over the whole run (cyclical only)."""
    ratio: float = 0.5
    """Fraction of each cycle (or of the run, monotonic) spent ramping 0 -> beta_max."""
    delay: float = 0.0
    """Fraction of the run (monotonic) or of each cycle (cyclical) with beta exactly 0 before the
    ramp starts (0: the ramp starts at once), so the posterior can become useful before the KL
    term pulls it onto the prior."""
    free_bits: float = 0.0
    """Free bits (Kingma et al. 2016), in nats per predicted frame and latent level: the
    batch-mean KL of a level at a step counts as at least this much in the loss, so a posterior
    may carry that much information at no cost (0: off). The logged KL is the true one. With
    several processes each floors the mean of its own share of the batch. ``model.arm_latent``'s
    KL counts as one more level here: a step whose KL is under the floor gives its prior no
    gradient (as none comes while beta is 0 under ``delay``)."""

    def __post_init__(self) -> None:
        if self.schedule not in ("monotonic", "cyclical", "constant"):
            raise ConfigError(f"train.kl.schedule must be monotonic, cyclical or constant, got {self.schedule!r}")
        if self.beta_max < 0:
            raise ConfigError(f"train.kl.beta_max must be >= 0, got {self.beta_max}")
        if not 0 <= self.free_bits < float("inf"):  # NaN fails too
            raise ConfigError(f"train.kl.free_bits must be a finite number >= 0 (nats), got {self.free_bits}")
        if self.cycles < 1:
            raise ConfigError(f"train.kl.cycles must be >= 1, got {self.cycles}")
        if not 0.0 <= self.delay < 1.0:  # NaN fails too
            raise ConfigError(f"train.kl.delay must be in [0, 1), got {self.delay}")
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"train.kl.ratio must be in (0, 1], got {self.ratio}")


@dataclass
class BestOfConfig:
    """A best-of-many term (Bhattacharyya et al. 2018; the winner-takes-all loss of multiple
    choice learning): for a few sequences of each batch, ``samples`` free runs from the prior,
    and only the run closest to the truth is scored. A model that hedges between outcomes
    (an object that glides or stops, an arm that stalls or not) loses nothing in the ELBO's
    posterior-driven term; here it gains by letting different latent draws show different
    outcomes. Added to the ELBO as ``weight`` times the winning run's reconstruction error
    (summed over the predicted frames, moving pixels weighted as ``train.motion_weight``)."""

    samples: int = 0
    """Prior samples per sequence (0: off; else >= 2)."""
    batch: int = 4
    """Sequences of each batch that get the term: its first ones (at most the batch). One process
    only: ``torchrun`` training refuses the term."""
    weight: float = 1.0
    """Weight of the term beside the ELBO (> 0)."""
    start: float = 0.0
    """Fraction of the planned steps before the term starts (it costs ``samples`` x ``batch``
    free runs per step)."""

    def __post_init__(self) -> None:
        if self.samples == 1 or self.samples < 0:
            raise ConfigError(f"train.best_of.samples must be 0 (off) or >= 2, got {self.samples}")
        if self.batch < 1:
            raise ConfigError(f"train.best_of.batch must be >= 1, got {self.batch}")
        if not 0 < self.weight < float("inf"):  # NaN fails too
            raise ConfigError(f"train.best_of.weight must be a finite number > 0 (train.best_of.samples=0 "
                              f"switches the term off), got {self.weight}")
        if not 0.0 <= self.start < 1.0:  # NaN fails too
            raise ConfigError(f"train.best_of.start must be in [0, 1), got {self.start}")


@dataclass
class TeacherForcingConfig:
    start: float = 1.0
    """Probability of feeding ground truth during the first epochs."""
    decay_start_epoch: int = 10
    """First epoch (0-based) at which the ratio has dropped by one step."""
    step: float = 0.1
    """Decrease per epoch from ``decay_start_epoch`` on."""
    floor: float = 0.0
    """Lowest ratio."""

    def __post_init__(self) -> None:
        for name in ("start", "step", "floor"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"train.teacher_forcing.{name} must be in [0, 1], got {v}")
        if self.decay_start_epoch < 0:
            raise ConfigError(f"train.teacher_forcing.decay_start_epoch must be >= 0, got {self.decay_start_epoch}")


@dataclass
class TrainConfig:
    epochs: int = 300
    """Passes over the training split."""
    steps_per_epoch: int = 0
    """Optimiser steps per epoch; 0 = one pass over the split (len // batch_size)."""
    batch_size: int = 12
    """Global batch (split across processes under torchrun)."""
    lr: float = 0.002
    """Adam learning rate (the start of ``lr_schedule``)."""
    lr_schedule: str = "constant"
    """``constant``, or ``cosine``: from ``lr`` down to ``lr * lr_final`` along a half cosine
    over the steps the run planned (``epochs`` x steps per epoch when it started; an extended
    run stays at the final rate)."""
    lr_final: float = 0.1
    """Fraction of ``lr`` that ``lr_schedule: cosine`` reaches at the last planned step."""
    beta1: float = 0.9
    """Adam beta1."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0 disables)."""
    motion_weight: float = 0.0
    """Extra weight of the moving pixels in the reconstruction term: each pixel's squared
    error counts ``1 + motion_weight`` times where the true frame differs from the last
    observed frame before it (the evaluation's moving-region mask, threshold 0.1), once
    elsewhere. 0 is the plain ELBO's MSE. The logged ``mse`` stays the plain MSE."""
    arm_weight: float = 0.0
    """With ``model.arm_progress``: weight of the predicted arm positions' squared distance from
    the recorded ones (x and y, summed over the predicted frames) beside the ELBO, in px^2 of the
    64 px frame where positions are in table fractions as in the synthetic world (BAIR's are metres:
    64 x metres there). The recorded positions are targets only, never inputs, so the condition stays
    causal; this tells the progress head where the arm really went (stalled, or not). With
    ``model.arm_latent`` the posterior reads the recorded moves and starts close to them, so this
    only sharpens it. 0: off."""
    n_past: int = 2
    """Conditioning frames."""
    n_future: int = 10
    """Predicted frames; training windows are n_past + n_future long."""
    amp: str = "auto"
    """``none`` (fp32), ``bf16`` autocast, or ``auto``: bf16 on CUDA devices that support it
    and on CPUs with native bf16 instructions (AVX512-BF16 / AMX, or Arm BF16), fp32 elsewhere
    (emulated bf16 is slower than fp32). The loss, the KL and the pixel compositing stay fp32."""
    compile: bool = False
    """Run the training rollout through ``torch.compile`` (inductor; a C++ compiler on CPU). Off by
    default: on the 2-core CPU machine it measured slower than eager (``benchmarks/RESULTS.md``).
    Where it cannot compile, one warning line and the eager path. Results agree with eager up to
    rounding; it may be switched on ``--resume``."""
    seed: int = 1
    """Seed of parameters, data order, window starts, noise and teacher forcing."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    log_every: int = 10
    """Write a step log line every N optimiser steps."""
    val_every: int = 1
    """Validation PSNR every N epochs (and after the last)."""
    ckpt_every: int = 0
    """Also checkpoint every N steps mid-epoch (0: end of epoch only)."""
    kl: KLConfig = field(default_factory=KLConfig)
    teacher_forcing: TeacherForcingConfig = field(default_factory=TeacherForcingConfig)
    best_of: BestOfConfig = field(default_factory=BestOfConfig)

    def __post_init__(self) -> None:
        if isinstance(self.kl, dict):
            self.kl = _build(KLConfig, self.kl, "train.kl")
        if isinstance(self.best_of, dict):
            self.best_of = _build(BestOfConfig, self.best_of, "train.best_of")
        if isinstance(self.teacher_forcing, dict):
            self.teacher_forcing = _build(TeacherForcingConfig, self.teacher_forcing, "train.teacher_forcing")
        for name in ("epochs", "batch_size", "n_past", "n_future", "log_every", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "ckpt_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.n_past + self.n_future > 30:
            raise ConfigError(f"train.n_past + train.n_future must be <= 30 (sequence length), got {self.n_past + self.n_future}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"train.lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_final <= 1.0:  # also rejects NaN
            raise ConfigError(f"train.lr_final must be in [0, 1], got {self.lr_final}")
        if self.amp not in ("none", "bf16", "auto"):
            raise ConfigError(f"train.amp must be none, bf16 or auto, got {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0, got {self.grad_clip}")
        if not self.motion_weight >= 0:  # also rejects NaN
            raise ConfigError(f"train.motion_weight must be >= 0, got {self.motion_weight}")
        if not self.arm_weight >= 0:  # also rejects NaN
            raise ConfigError(f"train.arm_weight must be >= 0, got {self.arm_weight}")

    @property
    def window(self) -> int:
        return self.n_past + self.n_future


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, _build(cls, getattr(self, name), name))
        if self.train.best_of.samples and self.model.norm == "batch":
            raise ConfigError("train.best_of runs a few sequences many times over: with model.norm=batch those "
                              "copies would set the batch statistics; use model.norm=group")
        if self.train.arm_weight > 0 and not self.model.arm_progress:
            raise ConfigError("train.arm_weight scores the arm positions that model.arm_progress predicts: "
                              "set model.arm_progress=true, or train.arm_weight=0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        return _build(cls, d, "config")


def _build(cls, d: Any, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known: {', '.join(sorted(known))})")
    types = {f.name: f.type for f in fields(cls)}  # strings: annotations are postponed
    d = {k: _typed(v, types[k], f"{where}.{k}") for k, v in d.items()}
    try:
        return cls(**d)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def _typed(value: Any, kind: str, key: str) -> Any:
    """``value`` checked (and, for numbers written as text, converted) against the field's type.

    YAML 1.1 reads ``1e-3`` as a string and ``12.0`` as a float; a user means numbers.
    A nested section (a dataclass) is checked by its own ``_build``.
    """
    if kind.endswith("Config"):  # a nested section
        if not isinstance(value, dict) and type(value).__name__ != kind:
            raise ConfigError(f"{key} is a section: set its fields ({key}.<field>=...), got {value!r}")
        return value
    if kind not in ("int", "float", "str", "bool"):
        return value
    ok = {
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }[kind]
    if kind in ("int", "float") and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None:
            value = int(number) if kind == "int" and number.is_integer() else number
    if kind == "int" and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind == "float" and ok(value) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if not ok(value):
        expected = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}[kind]
        raise ConfigError(f"{key} must be {expected}, got {value!r}")
    return value


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def preset_names() -> list[str]:
    folder = resources.files("vidpred") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path_or_preset: str) -> dict:
    path = Path(path_or_preset)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        text = path.read_text()
        source = str(path)
    else:
        res = resources.files("vidpred") / "configs" / f"{path_or_preset}.yaml"
        if not res.is_file():
            raise ConfigError(
                f"unknown config {path_or_preset!r}: not a file, nor a preset ({', '.join(preset_names())})"
            )
        text = res.read_text()
        source = f"preset {path_or_preset}"
    try:
        d = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    base = d.pop("base", None)
    if base is not None:
        d = _merge(_read_yaml(base), d)
    return d


def parse_override(text: str) -> dict:
    """``train.kl.beta_max=0.5`` -> ``{"train": {"kl": {"beta_max": 0.5}}}``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; numbers are numbers here
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(config: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- preset or YAML file <- dotted overrides, validated."""
    d: dict = _read_yaml(config) if config else {}
    for o in overrides:
        d = _merge(d, parse_override(o))
    return Config.from_dict(d)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def replace(cfg: Config, **sections: dict) -> Config:
    """A copy of ``cfg`` with some fields of some sections replaced."""
    d = cfg.to_dict()
    for name, upd in sections.items():
        d[name] = _merge(d[name], upd)
    return Config.from_dict(d)


__all__ = [
    "Config", "DataConfig", "ModelConfig", "TrainConfig", "KLConfig", "TeacherForcingConfig",
    "load_config", "save_config", "parse_override", "preset_names", "replace", "flatten",
]
