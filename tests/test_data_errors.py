"""Bad input through the CLI: non-zero exit, one stderr line naming the file."""

import numpy as np
import pytest
from PIL import Image

from vidpred.cli import main

SEQ = "train/traj_0_to_3.tfrecords/1"


def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code != 0
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    for needle in needles:
        assert str(needle) in err, (needle, err)


def _missing_png(root):
    path = root / SEQ / "7.png"
    path.unlink()
    return path, "not found"


def _corrupt_png(root):
    path = root / SEQ / "7.png"
    path.write_bytes(path.read_bytes()[:60])
    return path, "decode"


def _wrong_size_png(root):
    path = root / SEQ / "7.png"
    Image.new("RGB", (32, 48)).save(path)
    return path, "expected a 64x64 RGB image, got 32x48"


def _short_csv(root):
    path = root / SEQ / "actions.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:20]) + "\n")
    return path, "expected 30 rows x 4 columns, got 20x4"


def _nan_csv(root):
    path = root / SEQ / "endeffector_positions.csv"
    lines = path.read_text().splitlines()
    lines[5] = "0.5,nan,0.1"
    path.write_text("\n".join(lines) + "\n")
    return path, "finite"


def _empty_split(root):
    import shutil

    path = root / "validate"
    shutil.rmtree(path)
    path.mkdir()
    return path, "empty split"


CASES = [_missing_png, _corrupt_png, _wrong_size_png, _short_csv, _nan_csv, _empty_split]


@pytest.mark.parametrize("damage", CASES, ids=lambda f: f.__name__.strip("_"))
def test_check_reports_bad_input(synth_copy, capsys, damage):
    path, detail = damage(synth_copy)
    code, err = run_cli(["data", "check", str(synth_copy)], capsys)
    assert_one_line_error(code, err, path, detail)


@pytest.mark.parametrize("damage", CASES, ids=lambda f: f.__name__.strip("_"))
def test_cache_build_reports_bad_input_and_leaves_no_cache(synth_copy, capsys, damage):
    path, detail = damage(synth_copy)
    code, err = run_cli(["data", "cache", str(synth_copy)], capsys)
    assert_one_line_error(code, err, path, detail)
    assert not (synth_copy / ".cache" / path.relative_to(synth_copy).parts[0] / "manifest.json").exists()


def test_truncated_cache(synth_copy, capsys):
    assert main(["data", "cache", str(synth_copy), "--splits", "test"]) == 0
    frames = synth_copy / ".cache" / "test" / "frames.u8"
    size = frames.stat().st_size
    with open(frames, "r+b") as f:
        f.truncate(size - 100)
    code, err = run_cli(["data", "cache", str(synth_copy), "--splits", "test"], capsys)
    assert_one_line_error(code, err, frames, f"expected {size} bytes, got {size - 100}")


def test_corrupt_manifest(synth_copy, capsys):
    assert main(["data", "cache", str(synth_copy), "--splits", "test"]) == 0
    manifest = synth_copy / ".cache" / "test" / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])
    code, err = run_cli(["data", "cache", str(synth_copy), "--splits", "test"], capsys)
    assert_one_line_error(code, err, manifest, "corrupt")


def test_stale_cache_on_verify(synth_copy, capsys):
    assert main(["data", "cache", str(synth_copy), "--splits", "test"]) == 0
    csv = synth_copy / "test" / "traj_0_to_1.tfrecords" / "1" / "actions.csv"
    table = np.loadtxt(csv, delimiter=",")
    np.savetxt(csv, table + 1.0, delimiter=",")
    code, err = run_cli(["data", "cache", str(synth_copy), "--splits", "test", "--verify"], capsys)
    assert_one_line_error(code, err, synth_copy / ".cache" / "test" / "manifest.json", "stale")
    # Without --verify the stale cache is simply rebuilt.
    assert main(["data", "cache", str(synth_copy), "--splits", "test"]) == 0


def test_missing_root(tmp_path, capsys):
    code, err = run_cli(["data", "check", str(tmp_path / "nope")], capsys)
    assert_one_line_error(code, err, tmp_path / "nope")
