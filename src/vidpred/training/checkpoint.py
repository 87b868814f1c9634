"""Checkpoints: state dicts + resolved config + position, written atomically.

A checkpoint is a plain dict saved with ``torch.save`` (no pickled modules):
``format``, ``config`` (the resolved :class:`~vidpred.config.Config` as a dict),
``model``, ``optimizer``, ``step``, ``epoch_acc`` (running sums of the current
epoch), ``best_psnr``, ``history`` (validation PSNR per epoch) and ``rng``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from vidpred.config import Config
from vidpred.errors import CheckpointError, ConfigError

FORMAT = "vidpred-checkpoint-1"
LAST = "last.pt"
BEST = "best.pt"


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """``write(f)`` into a temporary file in the same folder, fsync, then rename over
    ``path``: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def rewrite_lines(path: str | Path, lines: list[str]) -> Path:
    """Replace ``path`` with these text lines (each ended with a newline) through
    :func:`write_atomic`: a kill leaves the old file whole."""
    text = "".join(line + "\n" for line in lines).encode()
    return write_atomic(path, lambda f: f.write(text))


def complete_lines(path: Path) -> list[str]:
    """Lines of a JSON-lines file, without a last line cut short by a killed process."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    return lines


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`write_atomic`."""
    write_atomic(path, lambda f: torch.save(obj, f))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint, failing with one line naming the file when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"checkpoint {path} is corrupt or not a vidpred checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a vidpred checkpoint (expected format {FORMAT})")
    try:
        ckpt["config_obj"] = Config.from_dict(ckpt["config"])
    except (ConfigError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} holds an incompatible config: {err}") from None
    return ckpt


def find_checkpoint(run: Path, which: str = "best") -> Path:
    """``run`` may be a checkpoint file or a run folder (best.pt, else last.pt)."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} not found")
    names = [BEST, LAST] if which == "best" else [LAST]
    for name in names:
        if (run / name).is_file():
            return run / name
    raise CheckpointError(f"run folder {run} holds no checkpoint ({' or '.join(names)})")


def load_model(run: Path, device: str | torch.device = "cpu", which: str = "best"):
    """Rebuild the model of a run for evaluation: returns ``(model (eval mode), config, checkpoint path)``."""
    from vidpred.models.svg import SVG

    path = find_checkpoint(run, which)
    ckpt = load(path, map_location=device)
    cfg = ckpt["config_obj"]
    model = SVG(cfg.model)
    load_state(model, ckpt["model"], path)
    return model.to(device).eval(), cfg, path


def load_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(f"checkpoint {path} does not fit the model config: {detail}") from None
