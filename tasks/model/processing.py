"""The one preprocessing path from an image to model tensors, shared by training, evaluation and serving.

Detectors of this kind suffered from train/serve skew: a prompt worded differently at serving time,
images resized another way. Here every path calls :meth:`Preprocessor.encode`: the prompt comes from
the tokenizer's chat template with the fixed :data:`QUESTION`, images are converted by
:func:`prepare_image` and resized by the saved ``Qwen2VLImageProcessorPil`` (no torchvision), and
batches are left-padded so that the last position of every row is where the answer's first token is
predicted. Training appends the target answer to the very same prompt tokens and masks the prompt
out of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from tasks.images import upright_rgb
from tasks.model.card import QUESTION

YES, NO = "Yes", "No"
# The answers the model is trained to give. The reason is a template tied to the label: the training
# data has labels, not explanations, so the model can only learn to phrase its verdict.
REASONS = {
    "fake": "It shows traces of synthesis or manipulation.",
    "real": "It looks like an unedited photograph.",
}
IGNORE_INDEX = -100
TOKENIZER_DIR, IMAGE_PROCESSOR_DIR = "tokenizer", "image_processor"


def answer_for(label: str) -> str:
    """The target answer for a ``real``/``fake`` label: the verdict word, then a short reason."""
    if label not in REASONS:
        raise ValueError(f"label must be 'real' or 'fake', got {label!r}")
    return f"{YES if label == 'fake' else NO}. {REASONS[label]}"


def parse_verdict(answer: str) -> bool | None:
    """True for an answer starting with Yes, False for No, None for anything else."""
    word = answer.strip().split(maxsplit=1)[0].strip(".,:;!").lower() if answer.strip() else ""
    return {YES.lower(): True, NO.lower(): False}.get(word)


def prepare_image(image: Image.Image) -> Image.Image:
    """The model's view of any PIL image (:func:`tasks.images.upright_rgb`): a no-op for decoded images."""
    return upright_rgb(image)[0]


class _Processor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without a video processor (whose default needs torchvision)."""

    def __init__(
        self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None, **kwargs
    ):
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def single_token_id(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"the tokenizer splits {text!r} into {len(ids)} tokens {ids}; the detector needs one token"
        )
    return ids[0]


class Preprocessor:
    """Tokenizer + image processor + the fixed prompt; :meth:`encode` is the only way to build model inputs."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_processor: Qwen2VLImageProcessorPil) -> None:
        tokenizer.padding_side = "left"
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.processor = _Processor(image_processor=image_processor, tokenizer=tokenizer)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
        self.prompt: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        self.yes_id = single_token_id(tokenizer, YES)
        self.no_id = single_token_id(tokenizer, NO)
        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id

    # -- persistence: the tokenizer and the image processor are saved separately (the processor cannot be) --
    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        revision: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        subfolders: bool = True,
    ) -> Preprocessor:
        """Load from a detector folder (``tokenizer/`` + ``image_processor/``) or, with ``subfolders=False``,
        from a hub id or checkpoint folder. ``min_pixels``/``max_pixels`` override the saved sizes."""
        tok_src = Path(path) / TOKENIZER_DIR if subfolders else path
        img_src = Path(path) / IMAGE_PROCESSOR_DIR if subfolders else path
        tokenizer = AutoTokenizer.from_pretrained(tok_src, revision=revision)
        if tokenizer.chat_template is None and not subfolders:
            tokenizer.chat_template = _processor_chat_template(str(path), revision)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(img_src, revision=revision)
        if min_pixels is not None or max_pixels is not None:
            image_processor = resized(image_processor, min_pixels, max_pixels)
        return cls(tokenizer, image_processor)

    def save(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(Path(path) / TOKENIZER_DIR)
        self.image_processor.save_pretrained(Path(path) / IMAGE_PROCESSOR_DIR)

    def with_max_pixels(self, max_pixels: int) -> Preprocessor:
        """The same preprocessing with another upper bound on image size (inference tuning)."""
        return Preprocessor(self.tokenizer, resized(self.image_processor, None, max_pixels))

    @property
    def pixel_bounds(self) -> tuple[int, int]:
        size = self.image_processor.size
        return int(size["shortest_edge"]), int(size["longest_edge"])

    # -- the one encoding function ------------------------------------------------------------------
    def encode(
        self, images: Sequence[Image.Image], answers: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Model inputs for ``images`` (left-padded); with ``answers``, also ``labels`` for the answer tokens only."""
        if not images:
            raise ValueError("encode() needs at least one image")
        if answers is not None and len(answers) != len(images):
            raise ValueError(f"got {len(images)} images but {len(answers)} answers")
        images = [prepare_image(image) for image in images]
        feats = self.processor(text=[self.prompt] * len(images), images=images, padding=False)
        rows = []
        for i, prompt_ids in enumerate(feats["input_ids"]):
            answer_ids = (
                []
                if answers is None
                else (self.tokenizer(answers[i], add_special_tokens=False)["input_ids"] + [self.end_id])
            )
            rows.append(
                (
                    list(prompt_ids) + answer_ids,
                    [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
                    list(feats["mm_token_type_ids"][i]) + [0] * len(answer_ids),
                )
            )
        width = max(len(ids) for ids, _, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mm_types = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, labs, mm) in enumerate(rows):
            start = width - len(ids)
            input_ids[i, start:] = torch.tensor(ids)
            attention[i, start:] = 1
            labels[i, start:] = torch.tensor(labs)
            mm_types[i, start:] = torch.tensor(mm)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "mm_token_type_ids": mm_types,
            "pixel_values": torch.from_numpy(np.asarray(feats["pixel_values"], dtype=np.float32)),
            "image_grid_thw": torch.from_numpy(np.asarray(feats["image_grid_thw"], dtype=np.int64)),
        }
        if answers is not None:
            batch["labels"] = labels
        return batch


def resized(
    image_processor: Qwen2VLImageProcessorPil, min_pixels: int | None, max_pixels: int | None
) -> Qwen2VLImageProcessorPil:
    """A copy of ``image_processor`` with other pixel bounds (min is lowered to max when needed)."""
    low, high = int(image_processor.size["shortest_edge"]), int(image_processor.size["longest_edge"])
    high = max_pixels or high
    low = min(min_pixels or low, high)
    config = image_processor.to_dict()
    config.pop("image_processor_type", None)
    config["size"] = {"shortest_edge": low, "longest_edge": high}
    return Qwen2VLImageProcessorPil(**config)


def _processor_chat_template(source: str, revision: str | None) -> str:
    """Checkpoints that keep the chat template with the processor (``chat_template.json``/``.jinja``)."""
    import json

    for name in ("chat_template.jinja", "chat_template.json"):
        local = Path(source) / name
        if local.is_file():
            path = local
        else:
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(source, name, revision=revision))
            except Exception:  # noqa: BLE001 - not there: try the next name
                continue
        text = path.read_text()
        return json.loads(text)["chat_template"] if name.endswith(".json") else text
    raise ValueError(
        f"{source}: the tokenizer has no chat template and there is no chat_template.jinja/.json"
    )
