"""Evaluation: metrics a user would check, slices that never crash, robustness, report files, `vigil evaluate`."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from tasks.cli import main
from tasks.data.frames import folder_frame
from tasks.evaluate import compare, evaluate_detector
from tasks.evaluate.metrics import binary_metrics, expected_calibration_error, threshold_at_fpr
from tasks.model.card import VLMCard
from tasks.model.detector import Detector
from tasks.model.vlm import save_detector


def test_threshold_flags_at_most_the_target_share_of_real_images():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 200 + [1] * 50)
    scores = np.concatenate([rng.random(200) * 0.8, 0.5 + rng.random(50) * 0.5])
    threshold = threshold_at_fpr(labels, scores, 0.05)
    flagged_real = (scores[labels == 0] >= threshold).mean()
    assert flagged_real <= 0.05
    assert (
        scores[labels == 0] >= np.nextafter(threshold, -1)
    ).mean() >= 0.05 - 1 / 200  # the lowest such threshold
    assert threshold_at_fpr(np.array([1, 1]), np.array([0.2, 0.9]), 0.05) == 0.5


def test_metrics_of_a_one_class_slice_are_defined_or_none():
    only_real = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.7, 0.2]), 0.5)
    assert only_real["roc_auc"] is None and only_real["average_precision"] is None
    assert only_real["recall"] is None and only_real["f1"] is None and only_real["balanced_accuracy"] is None
    assert only_real["tnr"] == pytest.approx(2 / 3) and only_real["accuracy"] == pytest.approx(2 / 3)
    assert only_real["confusion"] == {"tn": 2, "fp": 1, "fn": 0, "tp": 0}
    both = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.4, 0.6]), 0.5)
    assert both["roc_auc"] == 0.75 and both["recall"] == 0.5 and both["balanced_accuracy"] == 0.5
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def always_no(tiny_base, dest):
    """A real tiny model whose weights make every input produce the same logits, with "No" far on top.

    Zero token embeddings and a zero vision merger output make every position's input zero; the first
    layer's value bias then writes the same vector everywhere, so the final hidden state h is one
    constant vector. The lm_head rows of No and Yes are set to +/-h, so "No" wins for every image.
    """
    base, preprocessor = tiny_base
    model = copy.deepcopy(base)
    with torch.no_grad():
        model.model.language_model.embed_tokens.weight.zero_()
        last = model.model.visual.merger.mlp[-1]
        last.weight.zero_()
        last.bias.zero_()
        model.model.language_model.layers[0].self_attn.v_proj.bias.normal_(
            0, 1, generator=torch.Generator().manual_seed(0)
        )
        batch = preprocessor.encode([__import__("PIL.Image").Image.new("RGB", (56, 56))])
        hidden = model.model(**batch).last_hidden_state[0, -1]
        direction = hidden / hidden.norm() ** 2
        model.lm_head.weight[preprocessor.no_id] = 20 * direction
        model.lm_head.weight[preprocessor.yes_id] = -20 * direction
    card = VLMCard(
        profile="tiny",
        method="full",
        images={"min_pixels": 3136, "max_pixels": 3136},
        threshold=0.5,
        name="always-no",
    )
    return save_detector(dest, model, preprocessor, card)


def test_vigil_evaluate_on_an_imagefolder_prints_the_metrics(trained_dir, demo_root, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--model",
            str(trained_dir),
            "--data",
            str(demo_root / "demo_a"),
            "--split",
            "test",
            "--out",
            str(tmp_path / "report"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for needle in (
        "| roc_auc |",
        "| average_precision |",
        "| accuracy |",
        "| balanced_accuracy |",
        "| f1 |",
        "| ece |",
        "Confusion matrix",
        "## By generator",
        "| A |",
        "## Robustness",
        "jpeg_q75",
        "resize_0.5x",
    ):
        assert needle in out, needle
    for name in ("report.json", "report.md", "roc.png", "reliability.png", "confusion.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert (tmp_path / "report" / "roc.png").read_bytes()[:4] == b"\x89PNG"

    assert (
        main(
            [
                "evaluate",
                "--model",
                str(trained_dir),
                "--data",
                str(demo_root / "demo_a"),
                "--json",
                "--out",
                str(tmp_path / "r2"),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    overall = report["overall"]
    assert overall["n"] == 16 and overall["n_real"] == 8 and overall["roc_auc"] > 0.6  # held-out photos
    assert set(report["slices"]) == {"source", "label_source", "generator", "original_format"}
    assert report["slices"]["generator"]["A"]["n"] == 16  # all reals + A's fakes
    assert report["robustness"]["jpeg_q75"]["delta_roc_auc"] == pytest.approx(
        report["robustness"]["jpeg_q75"]["roc_auc"] - overall["roc_auc"]
    )


def test_a_model_that_always_says_no_gets_auc_one_half_and_recall_zero(
    tiny_base, demo_root, tmp_path, capsys
):
    folder = always_no(tiny_base, tmp_path / "always-no")
    detector = Detector.load(folder)
    images = folder_frame(demo_root / "demo_a", "test").images()
    assert all(answer.startswith("No") for answer in detector.answer(images[:4], max_new_tokens=3))
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(folder),
                "--data",
                str(demo_root / "demo_a"),
                "--json",
                "--no-robustness",
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    overall = json.loads(capsys.readouterr().out)["overall"]
    assert overall["roc_auc"] == 0.5 and overall["recall"] == 0.0 and overall["tnr"] == 1.0
    assert overall["confusion"]["tp"] == 0 and overall["balanced_accuracy"] == 0.5


def test_bad_data_argument_says_what_is_accepted(trained_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--model", str(trained_dir), "--data", str(tmp_path / "empty")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_snapshot_evaluation_and_the_gate_comparison_on_frozen_frames(
    store, settings, trained_dir, tiny_base, demo_root, publish_demo, tmp_path
):
    from tasks.data.frames import snapshot_frame
    from tasks.evaluate.cli import evaluate

    publish_demo(store, demo_root / "demo_a")
    version = publish_demo(store, demo_root / "demo_b").version
    report, _dest = evaluate(
        str(trained_dir), version, "test", str(tmp_path / "r"), robustness=False, settings=settings
    )
    assert report["data"]["name"] == f"snapshot {version} test" and report["overall"]["n"] == 32
    assert set(report["slices"]["generator"]) == {"A", "B"}
    assert set(report["slices"]["source"]) == {"demo_a", "demo_b"}
    assert report["slices"]["source"]["demo_a"]["roc_auc"] is not None

    frame = snapshot_frame(store, version, ("test",), tmp_path / "cache")
    champion = Detector.load(trained_dir)
    challenger = Detector.load(always_no(tiny_base, tmp_path / "no"))
    result = compare(
        {"champion": champion, "challenger": challenger},
        {"test": frame},
        with_robustness=False,
        keep_scores=True,
    )
    json.dumps(result)  # plain data
    assert result["test"]["champion"]["image_ids"] == result["test"]["challenger"]["image_ids"]
    assert result["test"]["challenger"]["overall"]["roc_auc"] == 0.5
    assert (
        evaluate_detector(champion, frame, with_robustness=False)["overall"]
        == result["test"]["champion"]["overall"]
    )


class CountingExtractor:
    """A probe's feature extractor that counts the images it computes features of."""

    def __init__(self, extractor):
        self.extractor, self.setup, self.names, self.images = extractor, extractor.setup, extractor.names, 0

    def __call__(self, images, batch_size=32):
        self.images += len(images)
        return self.extractor(images, batch_size)


def test_comparing_two_probes_on_one_backbone_computes_each_images_features_once(
    probe_dir, demo_frames, tmp_path, monkeypatch
):
    import dataclasses
    import shutil

    import tasks.evaluate
    from tasks.model.probe import HEAD_FILE, Head

    # A second probe on the same frozen backbone, with another head (its first layer halved).
    other = shutil.copytree(probe_dir, tmp_path / "other")
    head = Head.load(other / HEAD_FILE)
    dataclasses.replace(head, weights=(head.weights[0] * 0.5, *head.weights[1:])).save(other / HEAD_FILE)
    test, train = demo_frames["test"], demo_frames["train"]
    controls = []
    fit_control = tasks.evaluate.trivial_control
    monkeypatch.setattr(tasks.evaluate, "trivial_control", lambda *a: controls.append(1) or fit_control(*a))

    alone = {
        name: evaluate_detector(Detector.load(folder), test, train=train, keep_scores=True)
        for name, folder in (("champion", probe_dir), ("challenger", other))
    }
    detectors = {"champion": Detector.load(probe_dir), "challenger": Detector.load(other)}
    for detector in detectors.values():
        detector.extractor = CountingExtractor(detector.extractor)
    controls.clear()
    compared = compare(detectors, {"test": test}, train=train, keep_scores=True)["test"]
    assert len(controls) == 1  # the trivial-statistics control does not depend on the detector: fitted once

    # The same reports as each detector evaluated alone: shared features change no number.
    assert alone["champion"]["scores"] != alone["challenger"]["scores"]
    for name in detectors:
        for key in ("scores", "overall", "slices", "robustness", "controls"):
            assert compared[name][key] == alone[name][key], (name, key)
    # Each image's features once: clean, JPEG q75 and 0.5x, for both detectors together.
    computed = sum(d.extractor.images for d in detectors.values())
    assert computed == 3 * len(test)
    # After the comparison, scoring computes again (tuning and serving pay for every pass).
    detectors["champion"].score(test.images()[:2])
    assert sum(d.extractor.images for d in detectors.values()) == computed + 2


def test_features_kept_in_a_folder_are_found_by_the_next_evaluation(probe_dir, demo_frames, tmp_path):
    """Training's test report keeps its features; the gate, another process, reads them back."""
    from tasks.model.detector import shared_features

    test, folder = demo_frames["test"], tmp_path / "features"
    first = Detector.load(probe_dir)
    first.extractor = CountingExtractor(first.extractor)
    with shared_features([first], folder):
        before = evaluate_detector(first, test, keep_scores=True)
    assert first.extractor.images == 3 * len(test)

    torn = next(folder.rglob("*.npy"))  # a file cut short (a crash of the process that wrote it)
    torn.write_bytes(torn.read_bytes()[:40])
    second = Detector.load(probe_dir)
    second.extractor = CountingExtractor(second.extractor)
    with shared_features([second], folder):
        after = evaluate_detector(second, test, keep_scores=True)
    assert second.extractor.images == 1  # only the torn one, computed again
    assert after["scores"] == before["scores"] and after["robustness"] == before["robustness"]
