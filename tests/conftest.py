"""Shared fixtures. Data fixtures are tiny so the whole suite stays fast on 2 cores."""

import shutil

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic dataset (train 4, validate 2, test 2, seed 0). Treat as read-only;
    use ``synth_copy`` to modify files."""
    from vidpred.data.synth import generate

    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, train=4, validate=2, test=2, seed=0, workers=1, quiet=True)
    return root


@pytest.fixture
def synth_copy(synth_root, tmp_path):
    """A private, writable copy of ``synth_root`` (without any cache)."""
    dst = tmp_path / "data"
    shutil.copytree(synth_root, dst, ignore=shutil.ignore_patterns(".cache"))
    return dst


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: the module ``benchmarks/NAME.py`` (benchmarks/ is not a package:
    loaded by path)."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def stand_in_model():
    """A module for ``evaluate`` to hold where a test fakes every rollout: it carries the
    default model config, as a loaded model does (``evaluate`` reads ``model.cfg``)."""
    import torch

    from vidpred.config import ModelConfig

    model = torch.nn.Linear(1, 1)
    model.cfg = ModelConfig()
    return model
