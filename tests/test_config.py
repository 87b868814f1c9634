"""Config: presets, ``base:`` inheritance, YAML files, dotted overrides and their type checks."""

import pytest

from vidpred.config import Config, load_config, parse_override, replace, save_config
from vidpred.errors import ConfigError


def test_override_reaches_the_nested_field_with_its_type():
    cfg = load_config("synth-cpu", ["train.kl.beta_max=0.5", "train.lr=1e-3", "model.width=8",
                                    "model.align=false", "train.epochs=12.0"])
    assert cfg.train.kl.beta_max == 0.5
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.model.width == 8
    assert cfg.train.epochs == 12 and isinstance(cfg.train.epochs, int)
    assert cfg.model.align is False
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}


def test_base_inheritance_and_yaml_numbers_in_exponent_notation(tmp_path):
    path = tmp_path / "mine.yaml"
    # YAML 1.1 reads 1e-3 as a string: the config reads it as the number it is
    path.write_text("base: synth-cpu\ntrain:\n  lr: 1e-3\n  kl: {beta_max: 2e-4}\nmodel:\n  width: 8\n")
    cfg = load_config(str(path))
    base = load_config("synth-cpu")
    assert cfg.train.lr == 0.001 and cfg.train.kl.beta_max == 0.0002
    assert cfg.model.width == 8
    # everything else comes from the base preset, nested sections merged key by key
    assert cfg.model.decoder == base.model.decoder == "cdna"
    assert cfg.train.kl.schedule == base.train.kl.schedule
    assert cfg.train.teacher_forcing == base.train.teacher_forcing


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config("synth-cpu-cyclical", ["model.width=8"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(str(tmp_path / "config.yaml"))
    assert again == cfg and isinstance(again, Config)
    assert replace(cfg, model={"width": 4}).model.width == 4


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.batch_size=abc", "train.batch_size must be an integer, got 'abc'"),
        ("train.epochs=1.5", "train.epochs must be an integer, got 1.5"),
        ("model.align=maybe", "model.align must be true or false, got 'maybe'"),
        ("train.kl=3", "train.kl is a section"),
        ("train.kl.beta_max=abc", "train.kl.beta_max must be a number, got 'abc'"),
        ("model.codec=5", "model.codec must be a string, got 5"),
        ("model.kernel_size=4", "model.kernel_size must be an odd number"),
        ("model.decoder=flow", "model.decoder must be one of"),
        ("model.nope=1", "unknown key model.nope"),
        ("train.kl.beta_max=nan", "train.kl.beta_max must be a finite number, got nan"),
        ("train.grad_clip=inf", "train.grad_clip must be a finite number, got inf"),
        ("train", "must look like key.sub=value"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_was_expected(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("synth-cpu", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_unknown_preset_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "none.yaml"))
    with pytest.raises(ConfigError, match="unknown config 'nope'"):
        load_config("nope")
