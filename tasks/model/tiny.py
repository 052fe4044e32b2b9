"""The ``tiny`` profile's base checkpoint, built entirely offline.

A byte-level BPE tokenizer trained on a small fixed corpus (so that ``Yes`` and ``No`` are single
tokens) with the Qwen special tokens and a Qwen-style chat template, a ``Qwen2_5_VLConfig`` with small
sizes and a random initialisation from a seed. The result is written in the same layout as a Hugging
Face checkpoint and then loaded exactly like ``Qwen/Qwen2.5-VL-3B-Instruct`` would be: the profile only
chooses sizes, never the code path. It is a pure function of its sizes, so a folder is built once per
machine and cached.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from tasks.model.config import ImageSize, TinyArchitecture
from tasks.model.processing import NO, QUESTION, REASONS, YES

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
SYSTEM_PROMPT = "You are a helpful assistant."
# The Qwen2-VL conversation format: a default system turn, images as <|vision_start|><|image_pad|><|vision_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    + SYSTEM_PROMPT
    + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    SYSTEM_PROMPT,
    "system user assistant",
    QUESTION,
    f"{YES}. {REASONS['fake']}",
    f"{NO}. {REASONS['real']}",
    "The image is a photograph of a scene. It was generated, edited, resized or compressed.",
]


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )


def tiny_model_config(arch: TinyArchitecture, tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    # mrope splits the head_dim/2 rotary frequencies over (time, height, width) like Qwen's default 16/24/24.
    half = arch.hidden_size // arch.heads // 2
    time_part = half // 4
    height_part = (half - time_part) // 2
    mrope_section = [time_part, height_part, half - time_part - height_part]
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": arch.hidden_size,
            "intermediate_size": arch.intermediate_size,
            "num_hidden_layers": arch.layers,
            "num_attention_heads": arch.heads,
            "num_key_value_heads": max(1, arch.heads // 2),
            "max_position_embeddings": 2048,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": mrope_section,
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": arch.vision_depth,
            "hidden_size": arch.vision_hidden_size,
            "intermediate_size": 2 * arch.vision_hidden_size,
            "num_heads": arch.vision_heads,
            "out_hidden_size": arch.hidden_size,
            "fullatt_block_indexes": [arch.vision_depth - 1],
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_base_dir(arch: TinyArchitecture, images: ImageSize, cache_dir: Path) -> Path:
    """The tiny base checkpoint for these sizes, built into ``cache_dir`` on first use."""
    key = json.dumps({"arch": arch.model_dump(), "images": images.model_dump(), "format": 1}, sort_keys=True)
    dest = Path(cache_dir) / f"tiny-qwen2.5-vl-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (dest / "model.safetensors").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=dest.parent))
    try:
        build_tiny_base(arch, images, tmp)
        try:
            tmp.rename(dest)
        except OSError:  # another process finished first: use its folder
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def build_tiny_base(arch: TinyArchitecture, images: ImageSize, dest: Path) -> Path:
    """Write tokenizer, image processor, config and seeded random weights in the Hugging Face layout."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = build_tokenizer(arch.vocab_size)
    config = tiny_model_config(arch, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch.seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    Qwen2VLImageProcessorPil(min_pixels=images.min_pixels, max_pixels=images.max_pixels).save_pretrained(dest)
    return dest
