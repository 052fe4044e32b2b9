"""The detector: it learns, its score is the answer's first token, saving loses nothing, and training,
evaluation and serving feed the model identical tensors."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from tasks.model.card import InferenceSettings, card_for, parse_card
from tasks.model.detector import Detector
from tasks.model.processing import IGNORE_INDEX, QUESTION, parse_verdict
from tasks.model.vlm import apply_lora, save_detector, score_images


def test_tiny_profile_learns_within_a_bounded_number_of_steps(trained, demo_frames):
    trainer, _ = trained
    assert trainer.state.global_step <= 75
    train = demo_frames["train"]
    scores = score_images(trainer.model, trainer.preprocessor, train.images())
    assert roc_auc_score(train.labels, scores) >= 0.95
    # The best epoch was chosen by validation AUC, which the log history records per epoch.
    val_aucs = [e["eval_roc_auc"] for e in trainer.state.log_history if "eval_roc_auc" in e]
    assert len(val_aucs) == 25 and trainer.state.best_metric == max(val_aucs)


def test_score_is_the_first_answer_token_and_agrees_with_the_generated_answer(trained_dir, demo_frames):
    detector = Detector.load(trained_dir)
    images = demo_frames["test"].images()
    scores = detector.score(images)
    answers = detector.answer(images)
    verdicts = [parse_verdict(a) for a in answers]
    assert None not in verdicts, answers
    assert verdicts == [bool(p > 0.5) for p in scores]
    assert all(a.split(".")[1].strip() for a in answers), "an answer is a verdict followed by a reason"


def test_explanations_follow_the_threshold(trained_dir, demo_frames):
    detector = Detector.load(trained_dir)
    images = demo_frames["test"].images()[:6]
    scores = detector.score(images)
    explanations = detector.explain(images, scores)
    assert [parse_verdict(e) for e in explanations] == [bool(p >= detector.threshold) for p in scores]


def test_full_model_save_load_round_trip_gives_identical_scores(trained, trained_dir, demo_frames):
    trainer, _ = trained
    images = demo_frames["test"].images()
    in_memory = score_images(trainer.model, trainer.preprocessor, images)
    loaded = Detector.load(trained_dir)
    np.testing.assert_array_equal(loaded.score(images), in_memory)
    assert loaded.threshold == parse_card((trained_dir / "detector.json").read_text()).threshold
    assert loaded.card.images.max_pixels == 3136 and loaded.preprocessor.prompt.count(QUESTION) == 1


def lora_model(tiny_config, tiny_base, targets: str):
    import copy

    base, preprocessor = tiny_base
    config = tiny_config.with_overrides({"method": "lora", "lora.r": 4, "lora.targets": targets})
    return apply_lora(copy.deepcopy(base), config.lora), preprocessor, config


def test_lora_targets_are_explicit(tiny_config, tiny_base):
    language, _, _ = lora_model(tiny_config, tiny_base, "language")
    wrapped = {name for name, module in language.named_modules() if hasattr(module, "lora_A")}
    assert wrapped and not any(".visual." in name for name in wrapped)
    assert {n.rsplit(".", 1)[-1] for n in wrapped} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    both, _, _ = lora_model(tiny_config, tiny_base, "language+vision")
    vision = {
        name for name, module in both.named_modules() if hasattr(module, "lora_A") and ".visual." in name
    }
    assert {n.rsplit(".", 1)[-1] for n in vision} == {"qkv", "proj", "gate_proj", "up_proj", "down_proj"}
    trainable = {n for n, p in language.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_adapter_save_load_round_trip(tiny_config, tiny_base, demo_frames, tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    model, preprocessor, config = lora_model(tiny_config, tiny_base, "language+vision")
    images, labels = demo_frames["train"].images()[:8], demo_frames["train"].table["label"].tolist()[:8]
    from tasks.model.processing import answer_for

    before = score_images(model, preprocessor, images)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = model(**preprocessor.encode(images, [answer_for(label) for label in labels])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()  # no adapter dropout
    trained_scores = score_images(model, preprocessor, images)
    assert np.abs(trained_scores - before).max() > 1e-3, "the adapters changed nothing"
    folder = save_detector(tmp_path / "detector", model, preprocessor, card_for(config), config)
    assert not (folder / "weights").exists()
    adapter_bytes = sum(f.stat().st_size for f in (folder / "adapter").rglob("*") if f.is_file())
    base_bytes = sum(p.numel() * 4 for p in tiny_base[0].parameters())
    assert adapter_bytes < base_bytes / 3, "only the adapter is saved, the base is rebuilt"
    np.testing.assert_allclose(Detector.load(folder).score(images), trained_scores, atol=1e-5)


def capture_model_inputs(monkeypatch) -> list[dict]:
    """Record the keyword arguments of every Qwen2.5-VL forward call in this process."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    calls: list[dict] = []
    original = Qwen2_5_VLForConditionalGeneration.forward

    def recording(self, *args, **kwargs):
        calls.append({k: v.detach().clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Qwen2_5_VLForConditionalGeneration, "forward", recording)
    return calls


def per_image(call: dict) -> dict[bytes, tuple]:
    """Per image of a batch: its pixel patches -> (prompt token ids, modality ids, grid)."""
    out = {}
    offset = 0
    for row, grid in enumerate(call["image_grid_thw"]):
        patches = int(grid.prod())
        pixels = call["pixel_values"][offset : offset + patches]
        offset += patches
        keep = call["attention_mask"][row].bool()
        if "labels" in call:  # training: the prompt is where the loss is masked
            keep &= call["labels"][row] == IGNORE_INDEX
        out[pixels.numpy().tobytes()] = (
            tuple(call["input_ids"][row][keep].tolist()),
            tuple(call["mm_token_type_ids"][row][keep].tolist()),
            tuple(grid.tolist()),
        )
    return out


def test_training_evaluation_and_serving_feed_identical_tensors(
    tiny_config, trained_dir, demo_root, tmp_path, monkeypatch
):
    from tasks.data.frames import folder_frame
    from tasks.evaluate.cli import evaluate
    from tasks.settings import Settings
    from tasks.train.job import StartingPoint, TrainingData, fit

    # One real and one fake image in an ImageFolder layout, as curation stores them (PNG files).
    folder = tmp_path / "pair"
    source = demo_root / "demo_a" / "test"
    for label_dir in ("0_real", "1_fake"):
        (folder / label_dir).mkdir(parents=True)
        shutil.copy(sorted((source / label_dir).glob("*.png"))[0], folder / label_dir)
    frame = folder_frame(folder)
    calls = capture_model_inputs(monkeypatch)

    # Training: one optimizer step of the real trainer on the pair.
    config = tiny_config.with_overrides({"train.epochs": 1, "train.batch_size": 2})
    fit(
        config,
        Settings(),
        StartingPoint("base"),
        TrainingData(frame, frame, frame, {}),
        tmp_path / "ck",
        tmp_path / "c",
    )
    training = per_image(next(c for c in calls if "labels" in c))
    calls.clear()
    # Evaluation: `vigil evaluate` on the folder.
    evaluate(str(trained_dir), str(folder), None, str(tmp_path / "report"), robustness=False)
    evaluation = per_image(calls[0])
    calls.clear()
    # Serving: uploaded bytes decoded with PIL and scored.
    uploads = [p.read_bytes() for p in sorted(folder.rglob("*.png"))]
    Detector.load(trained_dir).score([Image.open(io.BytesIO(b)) for b in uploads])
    serving = per_image(calls[0])

    assert len(training) == 2
    assert training == evaluation == serving


def test_inference_settings(trained_dir, demo_frames):
    images = demo_frames["test"].images()[:8]
    reference = Detector.load(trained_dir).score(images)
    quantized = Detector.load(trained_dir, InferenceSettings(quantization="int8-dynamic", batch_size=3))
    assert np.abs(quantized.score(images) - reference).max() < 0.1
    smaller = Detector.load(trained_dir, {"max_pixels": 28 * 28})
    assert smaller.preprocessor.pixel_bounds == (784, 784)
    assert smaller.preprocessor.encode(images[:1])["image_grid_thw"].tolist() == [[1, 2, 2]]
    with pytest.raises(ValueError, match="int8-dynamic quantization needs device cpu and dtype float32"):
        Detector.load(trained_dir, InferenceSettings(quantization="int8-dynamic", dtype="bfloat16"))
    (trained_dir / "inference.json").write_text('{"batch_size": 5}')
    try:
        assert Detector.load(trained_dir).inference.batch_size == 5
    finally:
        (trained_dir / "inference.json").unlink()


def test_bad_model_sources_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Detector.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a Vigil detector"):
        Detector.load(tmp_path)


def test_rgba_and_grayscale_images_are_scored_like_their_rgb_version(trained_dir, demo_frames):
    detector = Detector.load(trained_dir)
    image = demo_frames["test"].images()[0]
    variants = [image, image.convert("RGBA")]
    scores = detector.score(variants)
    assert scores[0] == scores[1]
    gray = detector.score([image.convert("L")])
    assert gray[0] == detector.score([image.convert("L").convert("RGB")])[0]
