"""Settings come from env and include/vigil.yaml; bad values name the field."""

import pytest
from pydantic import BaseModel

from tasks.settings import ConfigError, Settings, load_yaml


def test_env_overrides_nested_section(monkeypatch, tmp_path):
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path))
    monkeypatch.setenv("VIGIL_CURATION__MAX_FAILURE_RATIO", "0.2")
    settings = Settings()
    assert settings.curation.max_failure_ratio == 0.2
    assert settings.store_url == (tmp_path / "store").as_uri()


def test_bad_env_value_names_field(monkeypatch):
    monkeypatch.setenv("VIGIL_CURATION__MAX_FAILURE_RATIO", "2")
    with pytest.raises(ValueError, match="max_failure_ratio"):
        Settings()


def test_yaml_file_is_read(monkeypatch, tmp_path):
    (tmp_path / "vigil.yaml").write_text("model_name: other-detector\nimages:\n  min_side: 64\n")
    monkeypatch.setenv("VIGIL_INCLUDE_DIR", str(tmp_path))
    settings = Settings()
    assert settings.model_name == "other-detector" and settings.images.min_side == 64


def test_mlflow_uri_uses_standard_env_name(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert Settings().mlflow_tracking_uri == "http://127.0.0.1:5999"


class Item(BaseModel):
    name: str
    size: int


class Doc(BaseModel):
    items: list[Item]


def test_load_yaml_error_names_item_and_field(tmp_path):
    path = tmp_path / "doc.yaml"
    path.write_text("items:\n  - {name: ok, size: 1}\n  - {name: broken, size: big}\n")
    with pytest.raises(ConfigError, match=r"doc.yaml: items\[1\] \(name='broken'\).size: .*got: 'big'"):
        load_yaml(path, Doc)
