"""The TFRecord converter, on records written here in BAIR's key schema."""

import numpy as np
import pytest
from tfrecord.writer import TFRecordWriter

from vidpred.cli import main
from vidpred.data import open_split
from vidpred.data.layout import read_sequence


def _sequence(rng):
    frames = rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    actions = rng.normal(size=(30, 4)).astype(np.float32)
    positions = rng.normal(size=(30, 3)).astype(np.float32)
    return frames, actions, positions


def _write_records(path, sequences, drop_key=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = TFRecordWriter(str(path))
    for frames, actions, positions in sequences:
        datum = {}
        for i in range(30):
            datum[f"{i}/image_aux1/encoded"] = (frames[i].tobytes(), "byte")
            datum[f"{i}/action"] = (actions[i].tolist(), "float")
            datum[f"{i}/endeffector_pos"] = (positions[i].tolist(), "float")
        datum.pop(drop_key, None)
        writer.write(datum)
    writer.close()


@pytest.fixture
def bair_src(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "softmotion30_44k"
    data = {
        "train/traj_0_to_1.tfrecords": [_sequence(rng) for _ in range(2)],
        "train/traj_256_to_511.tfrecords": [_sequence(rng) for _ in range(1)],
        "train/traj_512_to_513.tfrecords": [_sequence(rng) for _ in range(2)],
        "test/traj_0_to_255.tfrecords": [_sequence(rng) for _ in range(2)],
    }
    for name, seqs in data.items():
        _write_records(src / name, seqs)
    return src, data


def test_convert_round_trip(bair_src, tmp_path, capsys):
    src, data = bair_src
    dst = tmp_path / "processed"
    assert main(["data", "convert", str(src), str(dst)]) == 0
    expected = {
        "train/traj_0_to_1.tfrecords": "train/traj_0_to_1.tfrecords",
        "train/traj_512_to_513.tfrecords": "train/traj_512_to_513.tfrecords",
        "train/traj_256_to_511.tfrecords": "validate/traj_256_to_511.tfrecords",
        "test/traj_0_to_255.tfrecords": "test/traj_0_to_255.tfrecords",
    }
    for name, out in expected.items():
        for k, (frames, actions, positions) in enumerate(data[name]):
            got_frames, got_conds = read_sequence(dst / out / str(k))
            assert np.array_equal(got_frames, frames)
            assert np.array_equal(got_conds, np.concatenate([actions, positions], 1))
    assert main(["data", "check", str(dst)]) == 0
    train = open_split(dst, "train")
    assert len(train) == 4 and train.sequence_name(2) == "traj_512_to_513/0"


def test_convert_truncated_record_file(bair_src, tmp_path, capsys):
    src, _ = bair_src
    bad = src / "train" / "traj_512_to_513.tfrecords"
    bad.write_bytes(bad.read_bytes()[:-5000])
    dst = tmp_path / "processed"
    assert main(["data", "convert", str(src), str(dst)]) != 0
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and "\n" not in err
    assert not dst.exists() and not list(tmp_path.glob("processed.tmp-*"))


def test_convert_missing_key(tmp_path, capsys):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    _write_records(src / "train/traj_256_to_511.tfrecords", [_sequence(rng)])
    _write_records(src / "train/traj_0_to_0.tfrecords", [_sequence(rng)], drop_key="7/action")
    _write_records(src / "test/traj_0_to_255.tfrecords", [_sequence(rng)])
    assert main(["data", "convert", str(src), str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert "traj_0_to_0.tfrecords record 0" in err and "7/action" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_convert_needs_validation_record(tmp_path, capsys):
    rng = np.random.default_rng(2)
    src = tmp_path / "src"
    _write_records(src / "train/traj_0_to_0.tfrecords", [_sequence(rng)])
    _write_records(src / "test/traj_0_to_0.tfrecords", [_sequence(rng)])
    assert main(["data", "convert", str(src), str(tmp_path / "out")]) != 0
    assert "traj_256_to_511.tfrecords" in capsys.readouterr().err
    assert main(["data", "convert", str(src), str(tmp_path / "out"), "--validate-record",
                 "traj_0_to_0.tfrecords"]) != 0  # nothing left for train


def _tree(root):
    """{relative path: bytes} of every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_convert_workers_parent_folder_and_force(bair_src, tmp_path, capsys):
    """--workers 2 writes the same bytes as one worker; the folder above softmotion30_44k is
    accepted as SRC; an existing DST is refused (one line, untouched) unless --force replaces it."""
    src, _ = bair_src
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["data", "convert", str(src), str(one)]) == 0
    assert main(["data", "convert", str(src.parent), str(two), "--workers", "2"]) == 0  # the parent of SRC
    assert _tree(one) == _tree(two) and len(_tree(one)) > 0
    capsys.readouterr()

    marker = two / "keep.txt"
    marker.write_text("mine")
    assert main(["data", "convert", str(src), str(two)]) != 0
    err = capsys.readouterr().err.strip()
    assert str(two) in err and "--force" in err and "\n" not in err
    assert marker.read_text() == "mine"  # nothing replaced
    assert main(["data", "convert", str(src), str(two), "--force"]) == 0
    assert not marker.exists() and _tree(two) == _tree(one)
    assert not list(tmp_path.glob("two.tmp-*"))


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_convert_bad_workers(bair_src, tmp_path, capsys, workers):
    src, _ = bair_src
    dst = tmp_path / "out"
    assert main(["data", "convert", str(src), str(dst), "--workers", workers]) != 0
    err = capsys.readouterr().err.strip()
    assert f"--workers must be a positive integer, got {workers}" in err and "\n" not in err
    assert not dst.exists() and not list(tmp_path.glob("out.tmp-*"))
