"""tasks.images.decode_image: the one definition of an acceptable image (shared with serving)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tasks.images import (
    REJECTION_CODES,
    ImageRejected,
    decode_image,
    encode_png,
    hamming,
    perceptual_hash,
    pixel_hash,
)
from tasks.settings import ImageSettings
from tests.helpers import corpus
from tests.helpers.curation import encode, photo

POLICY = ImageSettings()


def rejected(data: bytes, policy: ImageSettings = POLICY) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, policy)
    assert info.value.code in REJECTION_CODES
    return info.value


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", "empty", "0 bytes"),
        (corpus.HTML, "not_an_image", "HTML document"),
        (corpus.SVG, "not_an_image", "SVG"),
        (b"caption: a cat\nlicense: CC-BY\n", "not_an_image", "text file"),
        (np.random.default_rng(0).bytes(4096), "not_an_image", "unknown content"),
        (corpus.truncated_jpeg(), "truncated", "truncated"),
        (corpus.bad_crc_png(), "corrupt", "PNG could not be decoded"),
        (corpus.png_header_only(100_000, 100_000), "decompression_bomb", "images.max_pixels=50,000,000"),
        (
            corpus.png_header_only(10_000, 10_000),
            "decompression_bomb",
            "100,000,000 pixels is more than images.max_pixels",
        ),
        (corpus.png_header_only(20_000, 100), "too_large_dimensions", "images.max_side=12000"),
        (encode(photo(0, 16)), "too_small", "16x16"),
        (corpus.near_constant_png(), "near_constant", "standard deviation"),
    ],
    ids=[
        "zero_byte",
        "html",
        "svg",
        "text",
        "random_bytes",
        "truncated_jpeg",
        "bad_crc_png",
        "pillow_bomb",
        "bomb",
        "too_wide",
        "too_small",
        "near_constant",
    ],
)
def test_rejections_have_a_code_and_say_why(data, code, words):
    error = rejected(data)
    assert error.code == code
    assert words in error.message


def test_limits_come_from_the_policy():
    small = ImageSettings(max_file_bytes=1000, allowed_formats=("PNG",))
    assert rejected(encode(photo(1)), small).code == "too_large_file"
    assert (
        "images.allowed_formats=['PNG']" in rejected(encode(photo(1, 32), "JPEG", quality=30), small).message
    )
    assert rejected(encode(photo(1, 32), "JPEG", quality=30), small).code == "format_not_allowed"


def test_pillow_bomb_guard_maps_to_the_same_code():
    # Our max_pixels above Pillow's own limit: Pillow's DecompressionBombError becomes the same code.
    lenient = ImageSettings(max_pixels=10**12, max_side=10**6)
    assert rejected(corpus.png_header_only(100_000, 100_000), lenient).code == "decompression_bomb"


def test_animated_policy():
    data, first = corpus.animated_gif()
    decoded = decode_image(data, ImageSettings(animated="first_frame"))
    assert decoded.frames == 3 and "first_frame_of_3" in decoded.conversions
    assert np.array_equal(np.asarray(decoded.image), np.asarray(first))
    assert rejected(data, ImageSettings(animated="reject")).code == "animated"


def test_exif_orientation_is_applied():
    decoded = decode_image(corpus.exif_rotated_jpeg(), POLICY)
    assert (decoded.width, decoded.height) == (80, 40)  # as stored
    assert decoded.image.size == (40, 80)  # upright
    pixels = np.asarray(decoded.image).astype(int)
    assert pixels[5, 20, 0] > 180 and pixels[5, 20, 2] < 60  # top: red
    assert pixels[75, 20, 2] > 180 and pixels[75, 20, 0] < 60  # bottom: blue
    assert "exif_orientation_6" in decoded.conversions


@pytest.mark.parametrize(
    ("make", "mode", "conversion"),
    [
        (corpus.cmyk_jpeg, "CMYK", "cmyk_to_rgb"),
        (corpus.grayscale_png, "L", "gray_to_rgb"),
        (corpus.rgba_png, "RGBA", "alpha_on_white"),
        (corpus.palette_png_with_transparency, "P", "alpha_on_white"),
    ],
)
def test_modes_become_rgb(make, mode, conversion):
    decoded = decode_image(make(), POLICY)
    assert decoded.image.mode == "RGB" and decoded.mode == mode
    assert conversion in decoded.conversions


def test_alpha_is_composited_on_white():
    pixels = np.asarray(decode_image(corpus.rgba_png(), POLICY).image)
    assert (pixels[:, : pixels.shape[1] // 2] == 255).all()
    assert pixels[:, pixels.shape[1] // 2 :].std() > 10


def test_sixteen_bit_is_scaled_not_clipped():
    data, expected = corpus.png16()
    decoded = decode_image(data, POLICY)
    assert decoded.mode.startswith("I")
    pixels = np.asarray(decoded.image)
    assert np.array_equal(pixels[..., 0], expected) and np.array_equal(pixels[..., 2], expected)


def test_grayscale_channels_are_equal():
    pixels = np.asarray(decode_image(corpus.grayscale_png(), POLICY).image)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


def test_normalised_png_is_lossless_and_metadata_free():
    image = photo(3, 128)
    with_metadata = encode(image, "PNG", exif=Image.Exif().tobytes(), icc_profile=b"\0" * 128, dpi=(300, 300))
    decoded = decode_image(with_metadata, POLICY)
    png = encode_png(decoded.image)
    back = Image.open(io.BytesIO(png))
    back.load()
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), np.asarray(image))
    assert not back.info  # no dpi, exif, icc_profile, text
    assert png == encode_png(decode_image(encode(image, "BMP"), POLICY).image)  # same pixels, same bytes


def test_pixel_hash_ignores_container_and_phash_sees_reencodes():
    image = photo(5, 128)
    as_png = decode_image(encode(image), POLICY).image
    as_bmp = decode_image(encode(image, "BMP"), POLICY).image
    as_jpeg = decode_image(encode(image, "JPEG", quality=85), POLICY).image
    assert pixel_hash(as_png) == pixel_hash(as_bmp) != pixel_hash(as_jpeg)
    assert hamming(perceptual_hash(as_png), perceptual_hash(as_jpeg)) <= 4
    assert (
        hamming(perceptual_hash(as_png), perceptual_hash(decode_image(encode(photo(6, 128)), POLICY).image))
        > 8
    )


def test_unknown_code_is_refused():
    with pytest.raises(ValueError, match="unknown rejection code 'nope'"):
        ImageRejected("nope", "x")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the damaged TIFF tags it reads
def test_damaged_files_are_rejected_never_crash():
    """Random byte damage to valid files: decode_image returns an image or raises ImageRejected, nothing else."""
    rng = np.random.default_rng(11)
    originals = [
        encode(photo(7, 64)),
        encode(photo(8, 64), "JPEG"),
        corpus.animated_gif()[0],
        encode(photo(9, 64), "WEBP"),
        encode(photo(10, 64), "TIFF"),
        encode(photo(11, 64), "BMP"),
    ]
    outcomes = set()
    for i in range(300):
        data = bytearray(originals[i % len(originals)])
        for position in rng.integers(0, len(data), int(rng.integers(1, 8))):
            data[position] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(1, len(data)))]
        try:
            decode_image(bytes(data), POLICY)
            outcomes.add("accepted")
        except ImageRejected as exc:
            outcomes.add(exc.code)
    assert "accepted" in outcomes and {"corrupt", "truncated"} & outcomes


# -- one conversion to RGB for every stage (no train/serve skew) -----------------------------------


def _rgba_with_hidden_colour() -> bytes:
    """A PNG whose transparent pixels hide a colour (red): a viewer shows them as background."""
    import io

    from PIL import Image

    pixels = np.zeros((40, 40, 4), np.uint8)
    pixels[..., 0] = 255  # red everywhere ...
    pixels[:, 20:, 3] = 255  # ... opaque on the right half only
    pixels[:, 20:, 1] = np.arange(40, dtype=np.uint8)[:, None] * 6  # some texture where it shows
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def test_a_transparent_pixel_is_white_for_serving_training_and_the_model_alike():
    from tasks.images import load_image
    from tasks.settings import ImageSettings

    data = _rgba_with_hidden_colour()
    served = decode_image(data, ImageSettings()).image  # what serving and curation see
    trained = load_image(data)  # what training, evaluation and the pyfunc model see
    assert served.getpixel((0, 0)) == (255, 255, 255)  # composited on white, the hidden red is gone
    assert np.array_equal(np.asarray(served), np.asarray(trained))


def test_the_models_view_of_a_decoded_image_changes_nothing():
    """EXIF orientation is applied once: the model's preprocessing does not rotate a decoded image again."""
    from tasks.images import upright_rgb
    from tasks.settings import ImageSettings

    data = corpus.exif_rotated_jpeg()
    decoded = decode_image(data, ImageSettings()).image
    assert "exif_orientation_6" in decode_image(data, ImageSettings()).conversions
    again, conversions = upright_rgb(decoded)
    assert conversions == [] and again.size == decoded.size
    assert np.array_equal(np.asarray(again), np.asarray(decoded))
