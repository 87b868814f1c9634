"""Data layer: synth -> check -> load round trips, the cache, the Dataset contract."""

import json
import pickle

import numpy as np
import pytest
import torch

from vidpred.cli import main
from vidpred.data import VideoWindows, condition_stats, open_split, read_condition_csv
from vidpred.data import cache as cache_mod
from vidpred.data.layout import read_sequence
from vidpred.errors import ConfigError, DataError


def test_synth_check_load_round_trip(synth_copy, capsys):
    assert main(["data", "check", str(synth_copy)]) == 0
    assert "all sequences valid" in capsys.readouterr().out
    png = open_split(synth_copy, "train", use_cache=False)
    cached = open_split(synth_copy, "train")
    assert isinstance(cached, VideoWindows)
    assert len(png) == len(cached) == 4
    assert cached.seq_len == 30
    assert cached.sequence_name(3) == "traj_0_to_3/3"
    for i in range(len(png)):
        (f1, c1), (f2, c2) = png[i], cached[i]
        assert f1.shape == (12, 3, 64, 64) and f1.dtype == torch.float32
        assert c1.shape == (12, 7) and c1.dtype == torch.float32
        assert torch.equal(f1, f2) and torch.equal(c1, c2)
        assert 0.0 <= f1.min() and f1.max() <= 1.0
    # The window is the first 12 steps of the stored sequence, channel-first.
    frames, conds = read_sequence(synth_copy / "train" / "traj_0_to_3.tfrecords" / "0")
    f, c = cached[0]
    assert torch.equal(f, torch.from_numpy(frames[:12]).permute(0, 3, 1, 2).float() / 255)
    assert np.array_equal(c.numpy(), conds[:12])
    assert (synth_copy / ".cache" / "train" / "manifest.json").exists()


def test_condition_stats_from_train(synth_copy):
    mean, std = condition_stats(synth_copy)
    assert mean.shape == std.shape == (7,)
    assert mean.dtype == std.dtype == np.float32
    assert (std >= 1e-6).all()
    ds = open_split(synth_copy, "train", window=30, use_cache=False)
    allc = np.concatenate([ds[i][1].numpy() for i in range(len(ds))]).astype(np.float64)
    np.testing.assert_allclose(mean, allc.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, np.maximum(allc.std(0), 1e-6), rtol=1e-5, atol=1e-6)


def test_random_start_is_pure_function_of_seed_epoch_index(synth_root):
    a = open_split(synth_root, "train", window=5, random_start=True, seed=3)
    b = open_split(synth_root, "train", window=5, random_start=True, seed=3)
    full = open_split(synth_root, "train", window=30)
    starts = {}
    for epoch in range(4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in reversed(range(len(a))):  # order must not matter
            assert a.start(i) == b.start(i)
            assert 0 <= a.start(i) <= 25
            starts[(epoch, i)] = a.start(i)
            f, c = a[i]
            s = a.start(i)
            assert torch.equal(f, full[i][0][s:s + 5]) and torch.equal(c, full[i][1][s:s + 5])
    assert len(set(starts.values())) > 1
    fixed = open_split(synth_root, "train", window=5, random_start=False, seed=3)
    fixed.set_epoch(7)
    assert all(fixed.start(i) == 0 for i in range(len(fixed)))


def test_dataset_pickles_small_and_batches(synth_root):
    ds = open_split(synth_root, "validate")
    ds[0]  # opens the memmap; pickling must not copy it
    assert len(pickle.dumps(ds)) < 100_000
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    frames, conds = next(iter(loader))
    assert frames.shape == (2, 12, 3, 64, 64) and conds.shape == (2, 12, 7)


@pytest.mark.parametrize("window", [0, 31, 2.5])
def test_bad_window_is_config_error(synth_root, window):
    with pytest.raises(ConfigError):
        open_split(synth_root, "train", window=window)


def test_missing_or_empty_split_is_data_error(tmp_path):
    with pytest.raises(DataError, match="train"):
        open_split(tmp_path, "train")
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="empty split"):
        open_split(tmp_path, "test", use_cache=False)


def test_read_condition_csv(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("1,2,3\n4,5,6\n")
    table = read_condition_csv(good, 3)
    assert table.dtype == np.float32 and table.shape == (2, 3)
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\n3,4\n")
    with pytest.raises(DataError, match="bad.csv.*3 columns"):
        read_condition_csv(bad, 3)
    nan = tmp_path / "nan.csv"
    nan.write_text("1,2,3\n4,nan,6\n")
    with pytest.raises(DataError, match="nan.csv.*finite"):
        read_condition_csv(nan, 3)


def test_stale_cache_is_rebuilt_on_load(synth_copy):
    ds = open_split(synth_copy, "test")
    before = ds[0][1].clone()
    csv = synth_copy / "test" / "traj_0_to_1.tfrecords" / "0" / "actions.csv"
    table = np.loadtxt(csv, delimiter=",")
    table[0, 0] = 123.0
    np.savetxt(csv, table, delimiter=",")
    after = open_split(synth_copy, "test")[0][1]
    assert after[0, 0] == 123.0 and before[0, 0] != 123.0


def test_read_only_root_falls_back_to_user_cache(synth_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "_is_writable", lambda path: False)
    monkeypatch.setenv("VIDPRED_CACHE", str(tmp_path / "usercache"))
    ds = open_split(synth_copy, "validate")
    assert len(ds) == 2
    assert not (synth_copy / ".cache").exists()
    assert list((tmp_path / "usercache").glob("*/validate/manifest.json"))


def test_interrupted_cache_build_leaves_nothing(synth_copy, monkeypatch):
    calls = {"n": 0}
    real = cache_mod.read_sequence

    def flaky(seq_dir):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(seq_dir)

    monkeypatch.setattr(cache_mod, "read_sequence", flaky)
    with pytest.raises(KeyboardInterrupt):
        open_split(synth_copy, "train")
    cache_parent = synth_copy / ".cache"
    assert not (cache_parent / "train").exists()
    assert list(cache_parent.iterdir()) == []  # no temp folder left either
    monkeypatch.setattr(cache_mod, "read_sequence", real)
    assert len(open_split(synth_copy, "train")) == 4


def test_a_second_build_of_one_cache_keeps_the_first(synth_copy):
    """Another process that finished the same cache first keeps its folder (a reader of it
    never has its files moved away); ours is dropped, and no temp folder stays. A stale
    cache, or --rebuild, is replaced."""
    first = cache_mod.ensure_cache(synth_copy, "validate", quiet=True)
    inode = first.stat().st_ino
    sequences = cache_mod.list_sequences(synth_copy, "validate")
    fp = cache_mod.fingerprint(synth_copy, "validate")
    cache_mod.build_cache(sequences, first, "validate", fp, workers=1, quiet=True)
    assert first.stat().st_ino == inode
    assert sorted(p.name for p in first.parent.iterdir()) == ["validate"]
    assert len(open_split(synth_copy, "validate")) == 2
    cache_mod.build_cache(sequences, first, "validate", fp, workers=1, quiet=True, rebuild=True)
    assert first.stat().st_ino != inode
    inode = first.stat().st_ino
    manifest = json.loads((first / "manifest.json").read_text())
    (first / "manifest.json").write_text(json.dumps({**manifest, "fingerprint": "an older source"}))
    cache_mod.build_cache(sequences, first, "validate", fp, workers=1, quiet=True)
    assert first.stat().st_ino != inode and json.loads((first / "manifest.json").read_text())["fingerprint"] == fp
    assert sorted(p.name for p in first.parent.iterdir()) == ["validate"]


def test_cache_command(synth_copy, capsys):
    assert main(["data", "cache", str(synth_copy)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "validate" in out and "test" in out
    manifest = json.loads((synth_copy / ".cache" / "train" / "manifest.json").read_text())
    assert manifest["n"] == 4 and len(manifest["cond_mean"]) == 7
    assert main(["data", "cache", str(synth_copy), "--verify"]) == 0


def _cache_files(root):
    return {p.relative_to(root).as_posix(): p for p in sorted((root / ".cache").rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_cache_rebuild_and_parallel_build_write_the_same_bytes(tmp_path, capsys):
    """A parallel build (64 sequences and more use the worker pool) writes the bytes of a
    one-process build; a fresh cache is left alone unless --rebuild rewrites it (same bytes)."""
    import shutil

    from vidpred.data.synth import generate

    one = tmp_path / "one"
    generate(one, train=64, validate=1, test=1, seed=3, workers=2, quiet=True)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    assert main(["data", "cache", str(one), "--splits", "train", "--workers", "1"]) == 0
    assert main(["data", "cache", str(two), "--splits", "train", "--workers", "2"]) == 0
    files_one, files_two = _cache_files(one), _cache_files(two)
    assert files_one.keys() == files_two.keys() and files_one
    for name in files_one:
        if name.endswith("manifest.json"):  # may record when and how it was built; compare the content keys
            a, b = json.loads(files_one[name].read_text()), json.loads(files_two[name].read_text())
            assert a["n"] == b["n"] == 64 and a["cond_mean"] == b["cond_mean"] and a["cond_std"] == b["cond_std"]
        else:
            assert files_one[name].read_bytes() == files_two[name].read_bytes(), name

    stamps = {n: p.stat().st_mtime_ns for n, p in files_one.items()}
    assert main(["data", "cache", str(one), "--splits", "train"]) == 0  # fresh: nothing rewritten
    assert {n: p.stat().st_mtime_ns for n, p in _cache_files(one).items()} == stamps
    before = {n: p.read_bytes() for n, p in _cache_files(one).items() if not n.endswith("manifest.json")}
    assert main(["data", "cache", str(one), "--splits", "train", "--rebuild"]) == 0
    after = _cache_files(one)
    assert all(after[n].stat().st_mtime_ns != stamps[n] for n in before)  # rewritten
    assert {n: after[n].read_bytes() for n in before} == before  # to the same bytes
    capsys.readouterr()
    assert main(["data", "cache", str(one), "--workers", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--workers must be a positive integer, got 0" in err and "\n" not in err
