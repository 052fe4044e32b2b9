"""include/monitor.yaml: the shipped file is valid, and a bad one names the file and the field."""

from __future__ import annotations

import pytest

from tasks.monitor.config import MonitorConfig, load_monitor_config
from tasks.settings import ConfigError, Settings


def test_the_shipped_policy_loads_with_its_documented_values():
    config = load_monitor_config(Settings())
    assert config.schedule == "*/30 * * * *"
    assert config.alert.consecutive_windows == 2
    assert set(config.alert.signals) == {"score", "verdict", "embedding", "estimated_accuracy"}
    assert config.drift.score.ks_p_value == 0.05 and config.drift.score.wasserstein == 0.1
    assert config.retrain.accuracy_drop.labels_from == ("audit",)
    assert config == MonitorConfig()  # the file states the defaults, no hidden difference


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("window:\n  min_rows: 0\n", "window.min_rows"),
        ("alert:\n  consecutive_window: 2\n", "alert.consecutive_window"),
        ("alert:\n  signals: [score, vibes]\n", "alert.signals[1]"),
        ("schedule: every hour\n", "schedule"),
        (
            "retrain:\n  accuracy_drop:\n    labels_from: [everything]\n",
            "retrain.accuracy_drop.labels_from[0]",
        ),
        ("drift:\n  embedding:\n    roc_auc: 0.4\n", "drift.embedding.roc_auc"),
    ],
)
def test_a_bad_value_names_the_file_and_the_field(tmp_path, text, names):
    path = tmp_path / "monitor.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_monitor_config(Settings(), path)
    assert str(path) in str(error.value) and names in str(error.value)


def test_manual_only_schedule(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text("schedule: null\n")
    assert load_monitor_config(Settings(), path).schedule is None
