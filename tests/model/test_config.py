"""The training setup files validate before any work, and every error names the offending field."""

from __future__ import annotations

import pytest
import yaml

from tasks.model.config import VLMConfig, config_path, load_config, parse_config
from tasks.settings import ConfigError, Settings, load_yaml


def test_repository_setups_load():
    settings = Settings()
    tiny = load_config(None, settings, "tiny")
    production = load_config(None, settings, "qwen2.5-vl-3b")
    assert (tiny.profile, tiny.method, tiny.resolved_base_model) == ("tiny", "full", None)
    assert (production.profile, production.method) == ("qwen2.5-vl-3b", "lora")
    assert production.resolved_base_model == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert config_path(settings, "tiny").name == "model_config.tiny.yaml"
    assert config_path(settings, "probe").name == "model_config.yaml"


def test_every_field_of_the_reviewed_files_is_commented():
    settings = Settings()
    for name in ("model_config.yaml", "model_config.tiny.yaml", "model_config.qwen2.5-vl-3b.yaml"):
        lines = settings.include(name).read_text().splitlines()
        keys = [
            i
            for i, line in enumerate(lines)
            if line.strip() and not line.lstrip().startswith("#") and ":" in line
        ]
        for i in keys:
            line = lines[i]
            commented = "#" in line or lines[i - 1].lstrip().startswith("#") or line.rstrip().endswith(":")
            assert commented, f"{name}:{i + 1}: {line.strip()!r} has no comment"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"train": {"learning_rate": -1}}, "train.learning_rate"),
        ({"lora": {"targets": "everything"}}, "lora.targets"),
        ({"continual": {"replay_budget": -1}}, "continual.replay_budget"),
        ({"data": {"snapshot": "yesterday"}}, "data.snapshot"),
        ({"images": {"min_pixels": 9999, "max_pixels": 3136}}, "images"),
        ({"train": {"epochs": 3, "epoch": 4}}, "train.epoch"),
        ({"method": "qlora"}, "method"),
        ({"profile": "qwen2.5-vl-72b"}, "profile"),
    ],
)
def test_bad_values_name_the_field(tmp_path, patch, field):
    data = yaml.safe_load(Settings().include("model_config.tiny.yaml").read_text())
    for key, value in patch.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "model_config.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_yaml(path, parse_config)
    assert str(path) in str(err.value) and field in str(err.value)


def test_tiny_profile_refuses_a_hub_base_model():
    with pytest.raises(ValueError, match="base_model must be null"):
        VLMConfig(profile="tiny", base_model="Qwen/Qwen2.5-VL-3B-Instruct")


def test_overrides_are_validated_like_the_file():
    config = load_config(None, Settings(), profile="tiny")
    changed = config.with_overrides(
        {"train.epochs": 2, "lora.r": 8, "data.snapshot": None, "train.learning_rate": ""}
    )
    assert (changed.train.epochs, changed.lora.r, changed.data.snapshot) == (2, 8, config.data.snapshot)
    assert changed.digest() != config.digest()
    with pytest.raises(ConfigError, match="train.epochs"):
        config.with_overrides({"train.epochs": 0})
    with pytest.raises(ConfigError, match="unknown config field 'train.epoch'"):
        config.with_overrides({"train.epoch": 3})


def test_profile_with_another_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="profile is 'probe'"):
        load_config(Settings().include("model_config.yaml"), profile="qwen2.5-vl-3b")


def test_the_embedded_default_is_the_probe_and_each_profile_finds_its_file():
    settings = Settings()
    assert load_config(None, settings).family == "probe"
    for profile, family in (("probe", "probe"), ("tiny", "vlm"), ("qwen2.5-vl-3b", "vlm")):
        config = load_config(None, settings, profile=profile)
        assert (config.profile, config.family) == (profile, family)
    probe = load_config(None, settings, profile="probe")
    with pytest.raises(ConfigError, match="unknown config field 'lora.r' for profile 'probe'"):
        probe.with_overrides({"lora.r": 8})  # the form's LoRA rank does not apply to the probe
