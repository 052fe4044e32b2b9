"""The VLM family: a Qwen2-VL / Qwen2.5-VL model asked "Is this image manipulated or synthesized?".

**Score = P(fake)**, read from the logits of the answer's first token in one batched forward pass:
``p = softmax(logit[Yes], logit[No])[Yes]`` at the last prompt position. Thresholds, metrics and
serving all use this score; text is generated only when an explanation is asked for
(:meth:`Detector.explain`), and its verdict word is forced to agree with the score and threshold.

A saved detector is a folder (also the MLflow model's ``artifacts/detector``)::

    detector.json        the card: profile, base model + revision, method, threshold, snapshot, metrics
    tokenizer/           the tokenizer with its chat template
    image_processor/     Qwen2VLImageProcessorPil settings (min/max pixels)
    weights/             method full: the whole model (Hugging Face layout)
    adapter/             method lora: the peft adapter; the base is re-loaded from the hub (revision
                         pinned) or, for the tiny profile, rebuilt offline from its sizes
    model_config.yaml    the training setup that produced it

:class:`InferenceSettings` (device, dtype, threads, batch size, max_pixels, int8 dynamic quantization,
torch.compile) are applied at load time; the inference-tuning task benchmarks them and serving applies
the chosen ``inference.json``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tasks.model.artifacts import ResolvedModel
from tasks.model.card import CARD_NAME, CONFIG_NAME, InferenceSettings, VLMCard
from tasks.model.config import LoraSettings, TinyArchitecture, VLMConfig
from tasks.model.detector import Detector
from tasks.model.processing import Preprocessor

WEIGHTS_DIR, ADAPTER_DIR = "weights", "adapter"
# peft target regexes (full match on module paths). Explicit paths, because the bare names
# gate_proj/up_proj/down_proj also name the vision tower's MLP layers.
LANGUAGE_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
VISION_TARGETS = r".*visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj|fc1|fc2))"


# -- building blocks shared by training and inference -----------------------------------------------


def lora_targets(targets: str) -> str:
    return LANGUAGE_TARGETS if targets == "language" else f"({LANGUAGE_TARGETS})|({VISION_TARGETS})"


def apply_lora(model, lora: LoraSettings):
    """Wrap ``model`` with fresh LoRA adapters on the configured targets."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_targets(lora.targets),
        modules_to_save=list(lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_base(config_or_card: VLMConfig | VLMCard, cache_dir: Path, dtype: torch.dtype = torch.float32):
    """The base model and preprocessor of a setup: the hub checkpoint (revision pinned) or the offline tiny one."""
    from transformers import AutoModelForImageTextToText

    from tasks.model.tiny import tiny_base_dir

    if config_or_card.profile == "tiny":
        source, revision = (
            tiny_base_dir(config_or_card.tiny or TinyArchitecture(), config_or_card.images, cache_dir),
            None,
        )
    else:
        source = (
            config_or_card.resolved_base_model
            if isinstance(config_or_card, VLMConfig)
            else config_or_card.base_model
        )
        revision = config_or_card.revision
    model = AutoModelForImageTextToText.from_pretrained(source, revision=revision, dtype=dtype)
    preprocessor = Preprocessor.load(
        source,
        revision=revision,
        subfolders=False,
        min_pixels=config_or_card.images.min_pixels,
        max_pixels=config_or_card.images.max_pixels,
    )
    return model, preprocessor


def load_weights(
    folder: Path,
    card: VLMCard,
    cache_dir: Path,
    *,
    trainable: bool = False,
    dtype: torch.dtype = torch.float32,
):
    """The model of a saved detector: full weights, or base + adapter (merged unless it is to be trained further)."""
    from transformers import AutoModelForImageTextToText

    if card.method == "full":
        return AutoModelForImageTextToText.from_pretrained(folder / WEIGHTS_DIR, dtype=dtype)
    from peft import PeftModel

    base, _ = load_base(card, cache_dir, dtype=dtype)
    model = PeftModel.from_pretrained(base, folder / ADAPTER_DIR, is_trainable=trainable)
    return model if trainable else model.merge_and_unload()


def save_detector(
    dest: Path, model, preprocessor: Preprocessor, card: VLMCard, config: VLMConfig | None = None
) -> Path:
    """Write a detector folder (weights or adapter, tokenizer, image processor, card, config)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    model = getattr(model, "module", model)  # DDP / DeepSpeed wrappers
    model.save_pretrained(dest / (ADAPTER_DIR if card.method == "lora" else WEIGHTS_DIR))
    preprocessor.save(dest)
    (dest / CARD_NAME).write_text(card.model_dump_json(indent=2))
    if config is not None:
        import yaml

        (dest / CONFIG_NAME).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return dest


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def score_images(
    model,
    preprocessor: Preprocessor,
    images: Sequence[Image.Image],
    batch_size: int = 32,
    forward=None,
    *,
    hidden: bool = False,
):
    """P(fake) for every image: one forward pass per batch, softmax over the Yes/No logits of the first
    answer token. With ``hidden``, also the last layer's hidden state at that position (``[n, d]``)."""
    forward = model if forward is None else forward
    device = model_device(model)
    scores: list[np.ndarray] = []
    states: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        batch = preprocessor.encode(images[start : start + batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        out = forward(**batch, logits_to_keep=1, use_cache=False, output_hidden_states=hidden)
        pair = out.logits[:, -1][:, [preprocessor.yes_id, preprocessor.no_id]].float()
        scores.append(torch.softmax(pair, dim=-1)[:, 0].cpu().numpy())
        if hidden:
            states.append(out.hidden_states[-1][:, -1].float().cpu().numpy())
    p = np.concatenate(scores).astype(np.float64) if scores else np.zeros(0)
    if not hidden:
        return p
    return p, (np.concatenate(states) if states else np.zeros((0, 0), np.float32))


@torch.inference_mode()
def generate_answers(
    model,
    preprocessor: Preprocessor,
    images: Sequence[Image.Image],
    *,
    prefix_ids: Sequence[int] | None = None,
    max_new_tokens: int = 24,
) -> list[str]:
    """Greedy answers to the question; with ``prefix_ids``, each answer starts with that (verdict) token."""
    batch = preprocessor.encode(images)
    if prefix_ids is not None:
        column = torch.tensor(list(prefix_ids), dtype=torch.long)[:, None]
        batch["input_ids"] = torch.cat([batch["input_ids"], column], dim=1)
        batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(column)], dim=1)
        batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(column)], dim=1)
    device = model_device(model)
    batch = {k: v.to(device) for k, v in batch.items()}
    start = batch["input_ids"].shape[1] - (0 if prefix_ids is None else 1)
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=preprocessor.end_id,
        pad_token_id=preprocessor.pad_id,
    )
    return [
        text.strip() for text in preprocessor.tokenizer.batch_decode(out[:, start:], skip_special_tokens=True)
    ]


# -- the detector ---------------------------------------------------------------------------------


class VLMDetector(Detector):
    """A loaded VLM detector. ``score`` for verdicts and metrics, ``explain`` for reasons.

    Calls into the model are serialised (serving micro-batches requests instead).
    """

    family = "vlm"

    def __init__(self, model, preprocessor: Preprocessor, card: VLMCard, **kwargs: Any) -> None:
        super().__init__(card, **kwargs)
        self.model, self.preprocessor, self._forward = _apply_inference(model, preprocessor, self.inference)

    @classmethod
    def from_folder(
        cls, folder: Path, card: VLMCard, inference: InferenceSettings, resolved: ResolvedModel, source: str
    ) -> VLMDetector:
        model = load_weights(folder, card, resolved.cache_dir, dtype=_resolve_dtype(inference))
        return cls(
            model,
            Preprocessor.load(folder),
            card,
            path=folder,
            name=resolved.name,
            version=resolved.version,
            source=source,
            inference=inference,
        )

    # -- inference ------------------------------------------------------------------------------
    def score(self, images: Sequence[Image.Image]) -> np.ndarray:
        """P(fake) per image (float64 array), one batched forward pass per ``inference.batch_size`` images."""
        return self.score_and_embed(images)[0]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.score_and_embed(images)[1]

    def score_and_embed(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """P(fake) and, from the same forward pass, the last hidden state at the answer position
        projected to :data:`EMBEDDING_DIMS` floats (a fixed seeded projection, the same for every window)."""
        if not images:
            return np.zeros(0), np.zeros((0, EMBEDDING_DIMS), np.float32)
        with self._lock:
            self.model.eval()
            scores, hidden = score_images(
                self.model, self.preprocessor, images, self.inference.batch_size, self._forward, hidden=True
            )
        return scores, _project(hidden)

    def explain(
        self, images: Sequence[Image.Image], p_fake: Sequence[float] | None = None, max_new_tokens: int = 24
    ) -> list[str]:
        """An answer per image ("Yes. ..."/"No. ..."): the verdict word follows the score and threshold, the model writes the rest."""
        if not images:
            return []
        scores = self.score(images) if p_fake is None else np.asarray(p_fake)
        verdicts = [
            self.preprocessor.yes_id if p >= self.threshold else self.preprocessor.no_id for p in scores
        ]
        answers: list[str] = []
        with self._lock:
            for start in range(0, len(images), self.inference.batch_size):
                chunk = slice(start, start + self.inference.batch_size)
                answers += generate_answers(
                    self.model,
                    self.preprocessor,
                    images[chunk],
                    prefix_ids=verdicts[chunk],
                    max_new_tokens=max_new_tokens,
                )
        return answers

    def answer(self, images: Sequence[Image.Image], max_new_tokens: int = 24) -> list[str]:
        """The model's free greedy answers (no forced verdict); what text-parsing detectors do, kept for comparison."""
        with self._lock:
            return generate_answers(self.model, self.preprocessor, images, max_new_tokens=max_new_tokens)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "method": self.card.method, "base_model": self.card.base_model}


EMBEDDING_DIMS = 64


def _project(hidden: np.ndarray) -> np.ndarray:
    """``[n, d]`` hidden states to ``[n, EMBEDDING_DIMS]``: a Gaussian random projection seeded by ``d``."""
    d = hidden.shape[1]
    if d <= EMBEDDING_DIMS:
        return hidden.astype(np.float32)
    basis = np.random.default_rng(d).standard_normal((d, EMBEDDING_DIMS)) / np.sqrt(EMBEDDING_DIMS)
    return (hidden @ basis).astype(np.float32)


def _resolve_device(inference: InferenceSettings) -> torch.device:
    if inference.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("inference device 'cuda' asked for, but no CUDA device is available")
    if inference.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(inference.device)


def _resolve_dtype(inference: InferenceSettings) -> torch.dtype:
    if inference.dtype == "auto":
        cuda = _resolve_device(inference).type == "cuda"
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, inference.dtype)


def _apply_inference(model, preprocessor: Preprocessor, inference: InferenceSettings):
    """Move, cast, quantize and compile as asked; returns (model, preprocessor, forward used for scoring)."""
    if inference.threads:
        torch.set_num_threads(inference.threads)
    device, dtype = _resolve_device(inference), _resolve_dtype(inference)
    model = model.to(device=device, dtype=dtype).eval()
    if inference.quantization == "int8-dynamic":
        if device.type != "cpu" or dtype != torch.float32:
            raise ValueError(
                "int8-dynamic quantization needs device cpu and dtype float32, "
                f"got {device.type}/{str(dtype).removeprefix('torch.')}"
            )
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    if inference.max_pixels:
        preprocessor = preprocessor.with_max_pixels(inference.max_pixels)
    forward = torch.compile(model, dynamic=True) if inference.compile else model
    return model, preprocessor, forward
