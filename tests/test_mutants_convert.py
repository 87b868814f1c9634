"""Unit tests of ``data/convert.py`` written against `make mutation` (docs/testing.md).

Records are serialized here, by this file's own writer (``tfrecord``'s writer or an
``Example`` built field by field), in BAIR's key schema; every converted value is
compared with the bytes and floats that went in, every error with its whole message.
All run in well under a second each.
"""

import io
import multiprocessing
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from tfrecord import example_pb2

from vidpred.data import convert
from vidpred.data.layout import read_sequence
from vidpred.errors import ConfigError, DataError

from test_data_convert import _write_records as write_records  # the TFRecord writer of the converter tests


def sequence(seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8),
            rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=(30, 3)).astype(np.float32))


def example(frames, actions, positions, edit=None):
    """One serialized Example, feature by feature; ``edit(features)`` may change it first."""
    ex = example_pb2.Example()
    feats = ex.features.feature
    for i in range(30):
        feats[f"{i}/image_aux1/encoded"].bytes_list.value.append(frames[i].tobytes())
        feats[f"{i}/action"].float_list.value.extend(actions[i].tolist())
        feats[f"{i}/endeffector_pos"].float_list.value.extend(positions[i].tolist())
    if edit is not None:
        edit(feats)
    return ex.SerializeToString()


def test_record_count_hint():
    from pathlib import Path

    assert convert._record_count_hint(Path("x/traj_0_to_255.tfrecords")) == 256
    assert convert._record_count_hint(Path("traj_256_to_511.tfrecords")) == 256
    assert convert._record_count_hint(Path("traj_7_to_7.tfrecords")) == 1
    assert convert._record_count_hint(Path("traj_3_to_9.part.tfrecords")) == 7
    assert convert._record_count_hint(Path("traj_a_to_b.tfrecords")) == 0
    assert convert._record_count_hint(Path("traj_0.tfrecords")) == 0
    assert convert._record_count_hint(Path("other.tfrecords")) == 0


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_plan_conversion_order_and_splits(tmp_path):
    src = tmp_path / "softmotion30_44k"
    names = ["traj_512_to_767", "traj_0_to_255", "traj_2560_to_2815", "traj_256_to_511", "traj_768_to_1023"]
    for name in names:
        touch(src / "train" / f"{name}.tfrecords")
    touch(src / "train" / "notes.txt")
    touch(src / "test" / "traj_256_to_511.tfrecords")
    touch(src / "test" / "traj_0_to_255.tfrecords")
    want = [(src / "train" / "traj_0_to_255.tfrecords", "train"),
            (src / "train" / "traj_256_to_511.tfrecords", "validate"),
            (src / "train" / "traj_512_to_767.tfrecords", "train"),
            (src / "train" / "traj_768_to_1023.tfrecords", "train"),
            (src / "train" / "traj_2560_to_2815.tfrecords", "train"),
            (src / "test" / "traj_0_to_255.tfrecords", "test"),
            (src / "test" / "traj_256_to_511.tfrecords", "test")]  # every test file stays in test
    assert convert.plan_conversion(src) == want
    assert convert.plan_conversion(tmp_path) == want  # the folder above softmotion30_44k
    other = convert.plan_conversion(src, "traj_512_to_767.tfrecords")
    assert [s for _, s in other] == ["train", "train", "validate", "train", "train", "test", "test"]


def test_plan_conversion_errors(tmp_path):
    src = tmp_path / "src"
    touch(src / "train" / "traj_0_to_0.tfrecords")
    with pytest.raises(DataError) as err:
        convert.plan_conversion(src)
    assert str(err.value) == f"{src / 'test'}: directory not found (expected SRC/{{train,test}}/*.tfrecords)"
    (src / "test").mkdir()
    with pytest.raises(DataError) as err:
        convert.plan_conversion(src)
    assert str(err.value) == f"{src / 'test'}: no *.tfrecords files found"
    touch(src / "test" / "traj_0_to_0.tfrecords")
    with pytest.raises(DataError) as err:
        convert.plan_conversion(src)
    assert str(err.value) == (f"{src / 'train' / 'traj_256_to_511.tfrecords'}: file not found (the validation "
                              "split is carved from this train record; choose another with --validate-record)")
    with pytest.raises(DataError) as err:
        convert.plan_conversion(src, "traj_0_to_0.tfrecords")
    assert str(err.value) == (f"{src / 'train'}: no train records left after carving traj_0_to_0.tfrecords "
                              "for validation")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        convert.plan_conversion(empty)
    assert str(err.value) == f"{empty / 'train'}: no *.tfrecords files found"


def test_parse_record_returns_the_bytes_and_floats_written():
    frames, actions, positions = sequence(0)
    got = convert.parse_record(example(frames, actions, positions), "here")
    assert [g.dtype for g in got] == [np.uint8, np.float32, np.float32]
    assert [g.shape for g in got] == [(30, 64, 64, 3), (30, 4), (30, 3)]
    np.testing.assert_array_equal(got[0], frames)
    np.testing.assert_array_equal(got[1], actions)
    np.testing.assert_array_equal(got[2], positions)
    # the record as the reader yields it (a memoryview of the file's bytes)
    got = convert.parse_record(memoryview(example(frames, actions, positions)), "here")
    np.testing.assert_array_equal(got[0], frames)
    f = convert._floats(example_pb2.Feature(float_list=example_pb2.FloatList(value=[1.5, -2.25])))
    assert f.dtype == np.float32 and f.tolist() == [1.5, -2.25]


def set_floats(key, values):
    def edit(feats):
        del feats[key].float_list.value[:]
        feats[key].float_list.value.extend(values)
    return edit


def set_image(values):
    def edit(feats):
        del feats["3/image_aux1/encoded"].bytes_list.value[:]
        feats["3/image_aux1/encoded"].bytes_list.value.extend(values)
    return edit


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.pop("29/endeffector_pos"), "missing key '29/endeffector_pos' (expected 30 steps)"),
    (lambda f: f.pop("0/image_aux1/encoded"), "missing key '0/image_aux1/encoded' (expected 30 steps)"),
    (lambda f: f.pop("5/action"), "missing key '5/action' (expected 30 steps)"),
    (set_image([b"\x00" * 100]), "3/image_aux1/encoded expected 12288 raw RGB bytes, got 100"),
    (set_image([b"\x00" * 12288, b"\x01" * 5]), "3/image_aux1/encoded expected 12288 raw RGB bytes, got 12293"),
    (set_image([]), "3/image_aux1/encoded expected 12288 raw RGB bytes, got 0"),
    (set_floats("4/action", [1.0, 2.0, 3.0]), "4/action expected 4 finite floats, got [1.0, 2.0, 3.0]"),
    (set_floats("4/action", [1.0, 2.0, float("inf"), 0.5]), "4/action expected 4 finite floats, got [1.0, 2.0, inf, 0.5]"),
    (set_floats("6/endeffector_pos", [0.5, float("nan"), 0.0]),
     "6/endeffector_pos expected 3 finite floats, got [0.5, nan, 0.0]"),
    (set_floats("6/endeffector_pos", [0.5, 0.25, 0.0, 1.0]),
     "6/endeffector_pos expected 3 finite floats, got [0.5, 0.25, 0.0, 1.0]"),
])
def test_parse_record_errors_name_the_record_and_key(edit, message):
    record = example(*sequence(1), edit=edit)
    with pytest.raises(DataError) as err:
        convert.parse_record(record, "f.tfrecords record 2")
    assert str(err.value) == f"f.tfrecords record 2: {message}"


def test_parse_record_of_bytes_that_are_no_example():
    with pytest.raises(DataError) as err:
        convert.parse_record(b"\xff\xff\xff", "f record 0")
    assert re.fullmatch(r"f record 0: cannot parse record \(.+\)", str(err.value)), str(err.value)


def test_convert_file_writes_every_record_in_order(tmp_path):
    seqs = [sequence(s) for s in (2, 3, 4)]
    path = tmp_path / "in" / "traj_0_to_2.tfrecords"
    write_records(path, seqs)
    out = tmp_path / "out"
    assert convert.convert_file((str(path), "validate", str(out))) == 3
    assert sorted(p.name for p in (out / "validate" / "traj_0_to_2.tfrecords").iterdir()) == ["0", "1", "2"]
    for k, (frames, actions, positions) in enumerate(seqs):
        got_frames, got_conds = read_sequence(out / "validate" / "traj_0_to_2.tfrecords" / str(k))
        np.testing.assert_array_equal(got_frames, frames)
        np.testing.assert_array_equal(got_conds, np.concatenate([actions, positions], 1))


def test_convert_file_errors(tmp_path):
    empty = touch(tmp_path / "traj_0_to_0.tfrecords")
    with pytest.raises(DataError) as err:
        convert.convert_file((str(empty), "train", str(tmp_path / "o")))
    assert str(err.value) == f"{empty}: no records (expected at least one)"
    path = tmp_path / "traj_1_to_2.tfrecords"
    write_records(path, [sequence(5), sequence(6)])
    path.write_bytes(path.read_bytes()[:-3000])  # the second record cut short
    with pytest.raises(DataError) as err:
        convert.convert_file((str(path), "train", str(tmp_path / "o")))
    assert re.fullmatch(re.escape(f"{path}: cannot read TFRecord after 1 records (") + r".+\)", str(err.value)), \
        str(err.value)
    bad = tmp_path / "traj_3_to_3.tfrecords"
    frames, actions, positions = sequence(7)
    write_records(bad, [(frames, actions, positions), (frames, actions[:, :3].copy(), positions)])
    with pytest.raises(DataError) as err:
        convert.convert_file((str(bad), "test", str(tmp_path / "o")))
    assert str(err.value).startswith(f"{bad} record 1: 0/action expected 4 finite floats")


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "softmotion30_44k"
    data = {"train/traj_0_to_1.tfrecords": [sequence(10), sequence(11)],
            "train/traj_256_to_511.tfrecords": [sequence(12)],
            "train/traj_512_to_514.tfrecords": [sequence(13), sequence(14), sequence(15)],
            "test/traj_0_to_255.tfrecords": [sequence(16), sequence(17)]}
    for name, seqs in data.items():
        write_records(src / name, seqs)
    return src, data


@pytest.mark.parametrize("workers", [1, 2])
def test_convert_counts_splits_and_bytes(source, tmp_path, capsys, workers):
    src, data = source
    dst = tmp_path / "a" / "processed"  # parents are made
    counts = convert.convert(src, dst, workers=workers)
    assert counts == {"train": 5, "validate": 1, "test": 2} and list(counts) == ["train", "validate", "test"]
    assert capsys.readouterr().err.strip() == f"{dst}: train 5, validate 1, test 2 sequences"
    where = {"train/traj_0_to_1.tfrecords": "train", "train/traj_256_to_511.tfrecords": "validate",
             "train/traj_512_to_514.tfrecords": "train", "test/traj_0_to_255.tfrecords": "test"}
    for name, seqs in data.items():
        folder = dst / where[name] / name.split("/")[1]
        assert sorted(p.name for p in folder.iterdir()) == [str(k) for k in range(len(seqs))]
        for k, (frames, actions, positions) in enumerate(seqs):
            got_frames, got_conds = read_sequence(folder / str(k))
            np.testing.assert_array_equal(got_frames, frames)
            np.testing.assert_array_equal(got_conds, np.concatenate([actions, positions], 1))
    assert sorted(p.name for p in dst.iterdir()) == ["test", "train", "validate"]
    assert sorted(p.name for p in dst.parent.iterdir()) == ["processed"]  # no temp folder left


def test_convert_refuses_or_replaces_an_existing_destination(source, tmp_path, capsys):
    src, _ = source
    dst = tmp_path / "out"
    (dst / "mine").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        convert.convert(src, dst, quiet=True)
    assert str(err.value) == f"{dst}: already exists (expected a new path, or pass --force to replace it)"
    assert (dst / "mine").is_dir()
    counts = convert.convert(src, dst, validate_record="traj_0_to_1.tfrecords", overwrite=True, quiet=True)
    assert counts == {"train": 4, "validate": 2, "test": 2}
    assert capsys.readouterr().err == ""
    assert not (dst / "mine").exists() and (dst / "validate" / "traj_0_to_1.tfrecords" / "1").is_dir()


def test_convert_argument_errors_leave_nothing(source, tmp_path):
    src, _ = source
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        convert.convert(missing, tmp_path / "o", quiet=True)
    assert str(err.value) == f"{missing}: directory not found (expected softmotion30_44k with train/ and test/)"
    with pytest.raises(ConfigError):
        convert.convert(src, tmp_path / "o", workers=0, quiet=True)
    bad = src / "train" / "traj_512_to_514.tfrecords"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DataError) as err:
        convert.convert(src, tmp_path / "o", quiet=True)
    assert str(err.value).startswith(f"{bad}: cannot read TFRecord after 2 records")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["softmotion30_44k"]


def test_convert_progress_total_is_the_record_count_hint(source, tmp_path, monkeypatch):
    src, _ = source
    totals = []
    real = convert.tqdm

    def spy(*args, **kwargs):
        totals.append((kwargs["total"], kwargs["disable"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(convert, "tqdm", spy)
    convert.convert(src, tmp_path / "o", quiet=True)
    convert.convert(src, tmp_path / "p")
    assert totals == [(2 + 256 + 3 + 256, True), (2 + 256 + 3 + 256, None)]
    names = tmp_path / "n"  # no traj_<a>_to_<b> name: no total (an open-ended bar)
    for name in ("train/a.tfrecords", "train/c.tfrecords", "test/b.tfrecords"):
        write_records(names / name, [sequence(20)])
    assert convert.convert(names, tmp_path / "q", validate_record="a.tfrecords", quiet=True) == \
        {"train": 1, "validate": 1, "test": 1}
    assert totals[-1] == (None, True)


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so tqdm draws the bar (``disable=None``)."""

    def isatty(self):
        return True


def last_bar_before(text: str, summary: str) -> str:
    """The last state of a tqdm bar (drawn by ``close()``) in ``text``, checking that the bar
    is closed before the ``summary`` line that ends the text."""
    assert text.endswith(summary), repr(text[-200:])
    return text[:-len(summary)].split("\r")[-1]


@pytest.mark.parametrize("workers", [1, 2])
def test_convert_draws_the_progress_bar_on_a_terminal_stderr(source, tmp_path, monkeypatch, workers):
    src, _ = source
    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    convert.convert(src, tmp_path / "o", workers=workers)
    dst = tmp_path / "o"
    summary = f"{dst}: train 5, validate 1, test 2 sequences\n"
    bar = last_bar_before(err.getvalue(), summary)
    # 8 sequences of the 2 + 256 + 3 + 256 that the file names promise
    assert re.fullmatch(r"convert:\s+2%\|.*\| 8/517 \[[^]]*,\s+([\d.]+seq/s|[\d.]+s/seq)\]\n", bar), repr(bar)
    err.truncate(0)
    err.seek(0)
    convert.convert(src, tmp_path / "q", workers=workers, quiet=True)
    assert err.getvalue() == ""


class Pools:
    """``convert.get_context`` that records the size of every pool started."""

    def __init__(self):
        self.sizes = []

    def __call__(self, *args, **kwargs):
        context = multiprocessing.get_context(*args, **kwargs)
        sizes = self.sizes

        class Context:
            def Pool(self, processes):
                sizes.append(processes)
                return context.Pool(processes)

        return Context()


def tree(root):
    """Every file under root as {relative path: bytes}."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_convert_starts_a_pool_only_for_more_than_one_worker(source, tmp_path, monkeypatch):
    src, _ = source
    pools = Pools()
    monkeypatch.setattr(convert, "get_context", pools)
    convert.convert(src, tmp_path / "default", quiet=True)  # the default is one worker: no pool
    convert.convert(src, tmp_path / "one", workers=1, quiet=True)
    assert pools.sizes == []
    convert.convert(src, tmp_path / "two", workers=2, quiet=True)
    convert.convert(src, tmp_path / "three", workers=3, quiet=True)
    assert pools.sizes == [2, 3]
    one = tree(tmp_path / "one")
    assert len(one) == 8 * 32  # 30 PNGs and two CSVs per sequence
    assert tree(tmp_path / "default") == one and tree(tmp_path / "two") == one and tree(tmp_path / "three") == one


def test_convert_builds_in_a_temp_folder_beside_a_destination_two_folders_deep(source, tmp_path, monkeypatch):
    src, _ = source
    dst = tmp_path / "x" / "y" / "processed"  # neither x nor y exists yet
    seen = []
    real = convert.convert_file

    def spy(task):
        seen.append((Path(task[2]), sorted(p.name for p in dst.parent.iterdir())))
        return real(task)

    monkeypatch.setattr(convert, "convert_file", spy)
    assert convert.convert(src, dst, quiet=True) == {"train": 5, "validate": 1, "test": 2}
    tmp = seen[0][0]
    assert tmp.parent == dst.parent and tmp.name.startswith("processed.tmp-"), tmp
    assert seen == [(tmp, [tmp.name])] * 4  # one temp folder for all four files, and nothing else there
    assert sorted(p.name for p in dst.parent.iterdir()) == ["processed"]
    assert sorted(p.name for p in dst.iterdir()) == ["test", "train", "validate"]

    fail = tmp_path / "f" / "g" / "processed"
    calls = []

    def fail_on_the_third(task):
        calls.append(Path(task[2]))
        if len(calls) == 3:
            assert sorted(p.name for p in calls[0].iterdir()) == ["train", "validate"]
            raise DataError("stop")
        return real(task)

    monkeypatch.setattr(convert, "convert_file", fail_on_the_third)
    with pytest.raises(DataError, match="^stop$"):
        convert.convert(src, fail, quiet=True)
    assert calls[0].parent == fail.parent and calls[0].name.startswith("processed.tmp-")
    assert list(fail.parent.iterdir()) == []  # the temp folder is removed; the parents stay


def test_an_interrupt_after_the_swap_is_the_error_raised(source, tmp_path, monkeypatch):
    """The temp folder is gone once renamed; removing it again must not replace the error."""
    src, _ = source
    dst = tmp_path / "out"

    class Interrupt(BaseException):
        pass

    real = convert.replace_dir

    def swap_then_interrupt(new, target):
        real(new, target)
        raise Interrupt

    monkeypatch.setattr(convert, "replace_dir", swap_then_interrupt)
    with pytest.raises(Interrupt):
        convert.convert(src, dst, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "softmotion30_44k"]
    assert sorted(p.name for p in dst.iterdir()) == ["test", "train", "validate"]


def test_floats_are_float32_from_either_protobuf_backend():
    """protobuf 7's containers give numpy float32 themselves (``__array__``); a plain sequence of
    Python floats (a container without ``__array__``) would become float64 without the dtype."""
    from types import SimpleNamespace

    for value in ([1.5, -2.25, 0.1], example_pb2.FloatList(value=[1.5, -2.25, 0.1]).value):
        f = convert._floats(SimpleNamespace(float_list=SimpleNamespace(value=value)))
        assert f.dtype == np.float32 and f.shape == (3,)
        assert f.tolist() == [1.5, -2.25, float(np.float32(0.1))]
