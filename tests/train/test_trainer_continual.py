"""The VLM family's continual terms: the logit distilled in training is the one the detector scores
with, and augmented views exist in the training dataset only."""

from __future__ import annotations

import numpy as np
import torch

from tasks.model.processing import answer_for
from tasks.model.vlm import score_images
from tasks.train.trainer import AnswerDataset, answer_logits, collator


def test_the_logit_distilled_in_training_is_the_logit_the_detector_scores_with(tiny_base, demo_frames):
    model, preprocessor = tiny_base
    frame = demo_frames["test"]
    images, answers = frame.images()[:6], [answer_for(label) for label in frame.table["label"][:6]]
    model.eval()
    with torch.no_grad():
        batch = preprocessor.encode(images, answers)
        logits = model(**batch, use_cache=False).logits
        trained = answer_logits(logits, batch["labels"], preprocessor.yes_id, preprocessor.no_id)
    scored = score_images(model, preprocessor, images)
    np.testing.assert_allclose(torch.sigmoid(trained).numpy(), scored, atol=1e-4)
    assert np.ptp(scored) > 0  # six different images, six different scores: the test can tell them apart


def test_augmented_views_are_added_to_the_training_dataset_only(tiny_config, demo_frames, tiny_base):
    _, preprocessor = tiny_base
    frame = demo_frames["train"]
    config = tiny_config.with_overrides({"augment.views": 2})
    train = AnswerDataset(frame, config.augment, config.seed, teacher_logits=np.arange(len(frame.table)))
    again = AnswerDataset(frame, config.augment, config.seed)
    plain = AnswerDataset(demo_frames["val"])
    n = len(frame.table)
    assert len(train) == 3 * n and len(plain) == len(demo_frames["val"].table)
    original, view = np.asarray(train[0]["image"]), np.asarray(train[n]["image"])
    assert original.shape == view.shape and np.abs(original.astype(int) - view).mean() > 0.5
    np.testing.assert_array_equal(view, np.asarray(again[n]["image"]))  # the same view every epoch and run
    assert train[n]["answer"] == train[0]["answer"]
    # A view is distilled toward the champion's logit on its clean image.
    assert train[n]["teacher_logit"] == train[0]["teacher_logit"] == 0.0
    batch = collator(preprocessor)([train[i] for i in (1, n + 1, 2 * n + 1)])
    assert batch["teacher_logits"].tolist() == [1.0, 1.0, 1.0]
    assert "teacher_logits" not in collator(preprocessor)([plain[0]])
