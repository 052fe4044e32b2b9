"""A batch mixing bad and good files: each bad one ends in quarantine with its reason, the rest is curated."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tasks.curate import curate
from tasks.data.snapshots import read_snapshot
from tasks.settings import Settings
from tasks.storage import sha256_hex
from tests.helpers import corpus
from tests.helpers.curation import add_batch, good_images

REJECTED = {  # file name -> (bytes, expected code)
    "zero.jpg": (b"", "empty"),
    "truncated.jpg": (corpus.truncated_jpeg(), "truncated"),
    "random.jpg": (np.random.default_rng(7).bytes(3000), "not_an_image"),
    "page.png": (corpus.HTML, "not_an_image"),
    "vector.svg": (corpus.SVG, "not_an_image"),
    "bomb.png": (corpus.png_header_only(100_000, 100_000), "decompression_bomb"),
    "oversize.png": (corpus.noise_png(256), "too_large_file"),
    "blank.png": (corpus.near_constant_png(), "near_constant"),
    "bad_crc.png": (corpus.bad_crc_png(), "corrupt"),
}
ANIMATED, FIRST_FRAME = corpus.animated_gif()
PNG16, PNG16_PIXELS = corpus.png16()
ACCEPTED = {  # file name -> (bytes, expected original_mode, expected conversion)
    "animated.gif": (ANIMATED, "P", "first_frame_of_3"),
    "cmyk.jpg": (corpus.cmyk_jpeg(), "CMYK", "cmyk_to_rgb"),
    "deep.png": (PNG16, "I;16", "i;16_to_8bit"),
    "gray.png": (corpus.grayscale_png(), "L", "gray_to_rgb"),
    "rotated.jpg": (corpus.exif_rotated_jpeg(), "RGB", "exif_orientation_6"),
    "alpha.png": (corpus.rgba_png(), "RGBA", "alpha_on_white"),
    "polyglot.jpg": (corpus.polyglot_jpeg_zip(), "RGB", ""),
    "polyglot.png": (corpus.polyglot_png_html(), "RGB", ""),
}


def curated_pixels(store, row) -> np.ndarray:
    image = Image.open(io.BytesIO(store.read_bytes(row.key)))
    image.load()
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image)


def test_bad_files_are_quarantined_with_reasons_and_good_ones_curated(store, store_env):
    settings = Settings(images={"max_file_bytes": 150_000})
    files = [{"data": data, "name": name, "label": "fake"} for name, (data, _) in REJECTED.items()]
    files += [{"data": data, "name": name, "label": "real"} for name, (data, _, _) in ACCEPTED.items()]
    files += good_images(12)
    files.append({"data": b"gone", "name": "missing.png", "missing": True})
    files.append({"data": corpus.grayscale_png(), "name": "tampered.png", "sha256": "0" * 64})
    batch = add_batch(store, files)

    summary = curate(settings, store)

    assert summary["version"] == "v0001" and summary["failed_batches"] == []
    expected_codes = {name: code for name, (_, code) in REJECTED.items()}
    expected_codes |= {"missing.png": "missing_raw", "tampered.png": "checksum_mismatch"}
    prefix = f"quarantine/{batch.batch_id}"
    rows = batch.table.set_index("original_name")
    for name, code in expected_codes.items():
        sha, raw = rows.loc[name, "sha256"], rows.loc[name, "raw_key"]
        reason = store.read_json(f"{prefix}/{sha}.json")
        assert reason["code"] == code, name
        assert reason["message"] and reason["batch_id"] == batch.batch_id and reason["source"] == "inbox"
        assert reason["raw_key"] == raw and reason["original_name"] == name
        if code != "missing_raw":
            assert store.read_bytes(f"{prefix}/{sha}.{raw.rsplit('.', 1)[1]}") == store.read_bytes(raw)
    assert not store.exists(f"{prefix}/{rows.loc['missing.png', 'sha256']}.png")

    snapshot = read_snapshot(store)
    curated = snapshot.table.set_index("original_name")
    assert set(curated.index) == set(ACCEPTED) | {f"img{i}.png" for i in range(12)}
    assert summary["new_images"] == len(snapshot.table) == 20
    assert summary["quarantined"] == {
        code: list(expected_codes.values()).count(code) for code in set(expected_codes.values())
    }

    for name, (_, mode, conversion) in ACCEPTED.items():
        row = curated.loc[name]
        assert row.original_mode == mode, name
        assert conversion in row.conversions.split(",") if conversion else row.conversions == "", name
        assert row.key == f"curated/{row.image_id}.png"
        assert store.exists(row.key)

    # EXIF-rotated: upright in the curated store (width/height swapped, red on top, blue below).
    rotated = curated.loc["rotated.jpg"]
    assert (rotated.width, rotated.height, rotated.original_width, rotated.original_height) == (
        40,
        80,
        80,
        40,
    )
    upright = curated_pixels(store, rotated).astype(int)
    assert upright[5, 20, 0] > 180 and upright[75, 20, 2] > 180
    # Animated GIF: policy first_frame keeps exactly the first frame.
    assert np.array_equal(curated_pixels(store, curated.loc["animated.gif"]), np.asarray(FIRST_FRAME))
    # 16-bit PNG: scaled to 8 bits, not clipped; CMYK: a plausible photo in RGB.
    assert np.array_equal(curated_pixels(store, curated.loc["deep.png"])[..., 1], PNG16_PIXELS)
    assert curated_pixels(store, curated.loc["cmyk.jpg"]).std() > 20
    # Polyglots: accepted for their pixels, but re-encoding strips the appended payloads.
    for name, marker in (("polyglot.jpg", b"POLYGLOT-PAYLOAD"), ("polyglot.png", b"POLYGLOT-SCRIPT")):
        assert marker in ACCEPTED[name][0]
        curated_bytes = store.read_bytes(curated.loc[name].key)
        assert (
            marker not in curated_bytes
            and b"PK\x03\x04" not in curated_bytes
            and b"<html" not in curated_bytes
        )
        assert curated_bytes.endswith(b"IEND\xaeB`\x82")
    # Every curated object is a PNG without metadata, named by its pixel hash.
    for row in snapshot.table.itertuples():
        data = store.read_bytes(row.key)
        assert Image.open(io.BytesIO(data)).info == {}

    report = store.read_json(f"reports/{batch.batch_id}/summary.json")
    assert report["status"] == "passed" and report["version"] == "v0001"
    assert report["counts"]["quarantined"] == len(expected_codes) and report["counts"]["new_images"] == 20
    assert {item["code"] for item in report["quarantine"]["items"]} == set(expected_codes.values())


def test_animated_reject_policy_quarantines(local_store, monkeypatch, tmp_path):
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    settings = Settings(store_url=local_store.url, images={"animated": "reject"})
    batch = add_batch(local_store, [{"data": ANIMATED, "name": "anim.gif"}, *good_images(3)])
    summary = curate(settings, local_store)
    assert summary["quarantined"] == {"animated": 1} and summary["new_images"] == 3
    sha = batch.table.loc[0, "sha256"]
    assert local_store.read_json(f"quarantine/{batch.batch_id}/{sha}.json")["code"] == "animated"
    assert sha256_hex(local_store.read_bytes(f"quarantine/{batch.batch_id}/{sha}.gif")) == sha
