"""Retraining follows evidence, not noise: when a measured accuracy drop warrants training.

Training already follows new trusted labels: ``train_detector`` trains once a snapshot adds
``training.min_new_images`` labeled images (review labels count like any other). Drift alone never
trains: a drifting window says the traffic changed, not that the model is wrong about it, nor what
the right labels are; it opens a review campaign, whose labels then count. A *measured* accuracy drop
on labeled traffic (``retrain.accuracy_drop`` of ``include/monitor.yaml``: the Wilson interval's upper
end below the reference accuracy minus ``max_drop``, on at least ``min_labels`` labels) is evidence
that the champion is wrong now: it warrants training with fewer new images, as soon as the labels
that showed it are in a snapshot (``min_new_labels``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.monitor.config import MonitorConfig
    from tasks.settings import Settings

log = logging.getLogger(__name__)


def accuracy_drop_warrants_training(
    settings: Settings | None = None, snapshot: str = "latest", config: MonitorConfig | None = None
) -> bool:
    """True when the monitor's latest check (``monitor/accuracy.json``) found a drop on the current
    champion and ``snapshot`` has at least ``retrain.accuracy_drop.min_new_labels`` labeled images the
    last training did not have. Logs why, either way."""
    from tasks.monitor.config import load_monitor_config
    from tasks.monitor.run import ACCURACY_KEY
    from tasks.registry import CHAMPION, Registry
    from tasks.settings import Settings
    from tasks.storage import ObjectStore
    from tasks.train.launch import new_images_since_last_training

    settings = settings or Settings()
    config = config or load_monitor_config(settings)
    trigger = config.retrain.accuracy_drop
    if not trigger.enabled:
        log.info("accuracy-drop trigger off (retrain.accuracy_drop.enabled: false)")
        return False
    try:
        status = ObjectStore.from_settings(settings).read_json(ACCURACY_KEY)
    except FileNotFoundError:
        log.info("no accuracy check by the monitor yet: no accuracy drop to act on")
        return False
    if not status.get("dropped"):
        log.info("no accuracy drop: %s", status.get("reason"))
        return False
    champion = Registry(settings).version(CHAMPION)
    if champion is None or str(champion.version) != str(status.get("version")):
        log.info(
            "the accuracy drop was measured on %s version %s; the champion is now %s: not acting on it",
            status.get("model_name"),
            status.get("version"),
            None if champion is None else champion.version,
        )
        return False
    new, why = new_images_since_last_training(settings, snapshot or "latest")
    if new < trigger.min_new_labels:
        log.info(
            "accuracy drop on version %s (%s), but %s; at least %d needed "
            "(retrain.accuracy_drop.min_new_labels): waiting for the labels to be curated",
            status["version"],
            status.get("reason"),
            why,
            trigger.min_new_labels,
        )
        return False
    log.info("accuracy drop on version %s: %s; %s: training", status["version"], status.get("reason"), why)
    return True
