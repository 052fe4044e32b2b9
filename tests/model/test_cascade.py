"""The cascade: the probe scores every image, the VLM decides the ones in the uncertain band."""

from __future__ import annotations

import numpy as np

from tasks.model.cascade import Cascade, choose_band
from tasks.model.detector import Detector


def test_images_in_the_band_are_decided_by_the_second_stage(probe_dir, trained_dir, demo_frames):
    probe, vlm = Detector.load(probe_dir), Detector.load(trained_dir)
    images = demo_frames["test"].images()
    first = probe.score(images)
    low, high = np.quantile(first, [0.25, 0.75])
    decision = Cascade(probe, vlm, (low, high)).decide(images)
    routed = (first >= low) & (first < high)
    assert routed.any() and not routed.all()
    assert decision.stage == ["vlm" if r else "probe" for r in routed]
    np.testing.assert_allclose(
        decision.p_fake[routed], vlm.score([images[i] for i in np.flatnonzero(routed)])
    )
    np.testing.assert_allclose(decision.p_fake[~routed], first[~routed])
    assert set(decision.threshold[routed]) == {vlm.threshold} and set(decision.threshold[~routed]) == {
        probe.threshold
    }
    assert decision.embeddings.shape == (len(images), probe.card.embedding_dims)  # one embedding space


def test_without_a_second_stage_the_first_decides_everything(probe_dir, demo_frames):
    probe = Detector.load(probe_dir)
    decision = Cascade(probe, None, (0.0, 1.0)).decide(demo_frames["test"].images()[:5])
    assert decision.stage == ["probe"] * 5


def test_the_band_is_the_least_load_within_the_auc_loss():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(500), np.ones(500)]
    second = np.clip(labels * 0.8 + rng.normal(0.1, 0.1, 1000), 0, 1)  # strong everywhere
    first = np.clip(labels * 0.5 + rng.normal(0.25, 0.2, 1000), 0, 1)  # weak near the middle
    chosen = choose_band(labels, first, second, max_share=0.6, max_auc_loss=0.02)
    assert chosen["band"] is not None and chosen["share"] <= 0.6
    assert chosen["auc"] >= chosen["second_auc"] - 0.02 > chosen["first_auc"]
    strict = choose_band(labels, first, second, max_share=0.05, max_auc_loss=0.0)
    assert strict["share"] <= 0.05  # the share bound holds even when the AUC target cannot be met
