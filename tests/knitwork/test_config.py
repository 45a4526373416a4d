"""Config values are checked when the config is built: each error names the field by its
dotted name, the type it expects and the value it got."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from knitwork.config import Config, OptimConfig
from knitwork.fields import check_device
from knitwork.presets import from_yaml


@pytest.mark.parametrize(
    "text, field, value",
    [
        ("optim: {lr: 1e-3}", "lr", 0.001),  # PyYAML reads 1e-3 as the string "1e-3"
        ("optim: {lr: '2E-4'}", "lr", 2e-4),
        ("optim: {steps: 1e3}", "steps", 1000),
        ("optim: {steps: 12.0}", "steps", 12),
        ("optim: {max_memory: 4G}", "max_memory", "4G"),
        ("optim: {device: 'cuda:1'}", "device", "cuda:1"),
    ],
)
def test_yaml_values_of_a_looser_type_are_accepted(text, field, value):
    got = getattr(from_yaml(text).optim, field)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("optim: {steps: three}", r"optim\.steps must be a number \(int\); got 'three'"),
        ("optim: {steps: 3.5}", r"optim\.steps must be a whole number \(int\); got 3\.5"),
        ("optim: {steps: '1e400'}", r"optim\.steps must be a finite number \(int\); got '1e400'"),
        ("optim: {steps: .nan}", r"optim\.steps must be a finite number \(int\); got nan"),
        ("optim: {lr: .inf}", r"optim\.lr must be a finite number \(float\); got inf"),
        ("loss: {alpha: .nan}", r"loss\.alpha must be a finite number \(float\); got nan"),
        ("optim: {max_memory: 4}", r"optim\.max_memory must be text \(str\); got 4"),
        ("optim: {device: [cpu]}", r"optim\.device must be text \(str\); got \('cpu',\)"),
        ("optim: {device: gpu}", r"optim\.device must be auto, cpu, cuda or cuda:N; got 'gpu'"),
        ("optim: {device: 'cuda:x'}", r"optim\.device must be auto, cpu, cuda or cuda:N"),
        ("model: {patches: {blur: 1}}", r"model\.patches\.blur must be true or false; got 1"),
        ("model: {encoding: {scale: 0}}", r"model\.encoding\.scale must be > 0"),
        ("model: {encoding: {scale: -2}}", r"model\.encoding\.scale must be > 0"),
        ("model: {encoding: {unit: cm}}", r"model\.encoding\.unit must be one of image, pixel"),
        ("loss: {alpha_ramp: sigmoid, alpha_ramp_width: 0}", r"loss\.alpha_ramp_width must be > 0"),
        ("optim: {ema: 1}", r"optim\.ema must be in \[0, 1\)"),
        ("optim: {holdout: 0}", r"optim\.holdout must be in \(0, 1\)"),
        ("optim: {early_stop: late}", r"optim\.early_stop must be one of none, noise, holdout"),
    ],
)
def test_wrong_values_are_refused_naming_field_type_and_value(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        from_yaml(path.read_text(), str(path))
    assert str(path) in str(info.value)


def test_a_config_built_in_python_is_checked_too():
    with pytest.raises(ValueError, match=r"optim\.device must be auto, cpu, cuda or cuda:N"):
        Config().with_device("gpu")
    with pytest.raises(ValueError, match=r"optim\.steps must be a number \(int\); got 'x'"):
        dataclasses.replace(OptimConfig(), steps="x")


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices_pass(name):
    assert check_device(name) == name


@pytest.mark.parametrize("name", ["gpu", "GPU", "cuda:", "cuda:-1", "mps", "", " cpu", "cpu:0"])
def test_invalid_devices_name_the_option_and_the_choices(name):
    with pytest.raises(ValueError, match=r"^--device must be auto, cpu, cuda or cuda:N; got "):
        check_device(name, "--device")


def test_cosine_learning_rate_decays_from_one_to_the_floor():
    optim = OptimConfig(steps=101, lr_decay="cosine", lr_floor=0.1)
    factors = [optim.lr_factor(step) for step in range(101)]
    assert factors[0] == 1.0 and abs(factors[-1] - 0.1) < 1e-12
    assert abs(factors[50] - 0.55) < 1e-12  # half way: the mean of 1 and the floor
    assert all(a >= b for a, b in itertools.pairwise(factors))
    assert OptimConfig(steps=101).lr_factor(100) == 1.0
    with pytest.raises(ValueError, match="lr_floor"):
        OptimConfig(lr_floor=1.5)


@pytest.mark.parametrize("name", ["fast-denoise", "paper-sr", "fast-inpaint"])
def test_identity_holds_what_differs_from_the_defaults_and_rebuilds_the_config(name):
    from knitwork.presets import get_preset

    assert Config().identity() == {}
    config = get_preset(name)
    identity = config.identity()
    assert Config.from_dict(identity) == config
    defaults = Config().to_dict()
    for section, fields in identity.items():
        for key, value in fields.items():
            assert value != defaults[section][key]  # nothing at its default is kept
    # a field set explicitly to its default leaves the identity (and so result hashes) alone
    same = config.replace(optim=dataclasses.replace(config.optim, keep_best=False))
    assert same.identity() == identity
