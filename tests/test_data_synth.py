"""The synthetic generator: determinism, atomic output, idempotence."""

import json

import numpy as np
import pytest

from vidpred.cli import main
from vidpred.data import open_split
from vidpred.data import synth
from vidpred.data.layout import read_sequence


def _all_sequences(root):
    return {p.relative_to(root): read_sequence(p) for p in sorted(root.glob("*/*/*")) if p.is_dir()}


def test_deterministic_by_seed_regardless_of_workers(tmp_path, synth_root):
    synth.generate(tmp_path / "w2", train=4, validate=2, test=2, seed=0, workers=2, quiet=True)
    one, two = _all_sequences(synth_root), _all_sequences(tmp_path / "w2")
    assert one.keys() == two.keys() and len(one) == 8
    for key in one:
        assert np.array_equal(one[key][0], two[key][0]) and np.array_equal(one[key][1], two[key][1])
    other = synth.simulate(1, "train", 0)
    assert not np.array_equal(other["frames"], one[next(iter(one))][0])


def test_sequences_move_and_positions_follow_actions(synth_root):
    ds = open_split(synth_root, "train", window=30)
    for i in range(len(ds)):
        frames, conds = ds[i]
        assert (frames[1:] - frames[:-1]).abs().mean() > 0  # something moves
        pos = conds[:, 4:6].numpy()
        assert ((pos > 0) & (pos < 1)).all()  # the effector stays on the table
    info = json.loads((synth_root / "synth.json").read_text())
    assert 0.0 <= info["pushed_fraction"] <= 1.0


def test_push_fraction_is_high():
    moved = [synth.simulate(0, "validate", i)["max_displacement"] for i in range(12)]
    assert np.mean(np.array(moved) > synth.PUSH_THRESHOLD_PX) >= 0.5


def test_synth_cli_idempotent_and_refuses_other_existing(tmp_path, capsys):
    dst = tmp_path / "d"
    args = ["data", "synth", str(dst), "--train", "1", "--validate", "1", "--test", "1", "--seed", "5"]
    assert main(args) == 0
    assert main(args) == 0  # same settings: kept
    capsys.readouterr()
    assert main(args[:-1] + ["6"]) != 0
    err = capsys.readouterr().err.strip()
    assert str(dst) in err and "\n" not in err
    assert main(args[:-1] + ["6", "--force"]) == 0
    assert json.loads((dst / "synth.json").read_text())["params"]["seed"] == 6


def test_synth_rejects_bad_counts(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "x"), "--train", "0"]) != 0
    assert "--train" in capsys.readouterr().err


def test_interrupted_synth_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synth._write_one

    def flaky(task):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(synth, "_write_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "d", train=2, validate=1, test=1, seed=0, workers=1, quiet=True)
    assert list(tmp_path.iterdir()) == []
