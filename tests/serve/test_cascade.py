"""Serving with two stages: the probe answers, the VLM decides the uncertain band and writes reasons;
answers say which stage decided, abstain near the threshold, and report provenance metadata apart."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
import requests
from PIL import Image, PngImagePlugin

from tasks.model.detector import Detector
from tasks.registry import Registry
from tests.helpers.serve import make_settings, register


def _wait_for_second_stage(server, timeout: float = 120) -> dict:
    """/readyz answers once the first stage is loaded; the second follows it (a VLM takes longer)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = server.wait_ready()
        if ready["model"]["cascade"] is not None:
            return ready
        time.sleep(0.2)
    raise TimeoutError("the second stage did not load")


def _post(server, data: bytes, name: str = "x.png", **params) -> dict:
    response = requests.post(
        server.url + "/v1/detect", params=params, files={"file": (name, data)}, timeout=120
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def cascade_registry(mlflow_server, probe_dir, trained_dir):
    """The probe as champion of the fast model, the tiny VLM as champion of the VLM model."""
    fast, vlm = f"probe-{uuid.uuid4().hex[:6]}", f"vlm-{uuid.uuid4().hex[:6]}"
    for name, folder in ((fast, probe_dir), (vlm, trained_dir)):
        register(mlflow_server, folder, name, alias="champion")
    return fast, vlm


def test_the_band_goes_to_the_vlm_and_the_answer_says_which_stage_decided(
    serve, tmp_path, mlflow_server, cascade_registry, probe_dir, test_images
):
    fast, vlm = cascade_registry
    probe = Detector.load(probe_dir)
    paths = test_images["real"][:4] + test_images["fake"][:4]
    first = probe.score([Image.open(p).convert("RGB") for p in paths])
    low, high = float(np.quantile(first, 0.3)), float(np.quantile(first, 0.7)) + 1e-9
    settings = make_settings(
        tmp_path / "s",
        mlflow_uri=mlflow_server,
        model_name=fast,
        vlm_model_name=vlm,
        cascade=True,
        cascade_band=(low, high),
    )
    server = serve(None, settings=settings)
    ready = _wait_for_second_stage(server)
    assert [s["name"] for s in ready["model"]["cascade"]["stages"]] == [fast, vlm]
    for path, p in zip(paths, first, strict=True):
        answer = _post(server, path.read_bytes())
        routed = low <= p < high
        assert answer["stage"] == ("vlm" if routed else "probe"), (p, low, high, answer)
        assert answer["model"]["name"] == (vlm if routed else fast)
    # explain=true goes to the VLM, whose reason starts with its verdict word.
    explained = _post(server, paths[0].read_bytes(), explain="true")
    assert explained["stage"] == "vlm" and explained["explanation"].split()[0].rstrip(".,") in {"Yes", "No"}


def test_without_a_vlm_champion_the_probe_decides_and_explains(
    serve, tmp_path, mlflow_server, probe_dir, test_images
):
    fast = f"probe-{uuid.uuid4().hex[:6]}"
    register(mlflow_server, probe_dir, fast, alias="champion")
    settings = make_settings(
        tmp_path / "s",
        mlflow_uri=mlflow_server,
        model_name=fast,
        vlm_model_name=f"none-{uuid.uuid4().hex[:6]}",
        cascade=True,
    )
    server = serve(None, settings=settings)
    server.wait_ready()
    import time

    time.sleep(2)  # the (missing) second stage's load has been tried by now
    assert server.wait_ready()["model"]["cascade"] is None
    answer = _post(server, test_images["fake"][0].read_bytes(), explain="true")
    assert answer["stage"] == "probe" and answer["explanation"].startswith("Likely")


def test_near_the_threshold_the_answer_is_uncertain(serve, tmp_path, probe_dir, test_images):
    probe = Detector.load(probe_dir)
    paths = test_images["real"] + test_images["fake"]
    scores = probe.score([Image.open(p).convert("RGB") for p in paths])
    nearest = int(np.argmin(np.abs(scores - probe.threshold)))
    margin = float(abs(scores[nearest] - probe.threshold)) + 1e-6
    server = serve(probe, settings=make_settings(tmp_path / "s", abstain_margin=min(margin, 0.49)))
    answer = _post(server, paths[nearest].read_bytes(), explain="true")
    assert answer["label"] == "uncertain"
    assert answer["explanation"].startswith("Uncertain: ")  # the reason does not claim a verdict first
    far = int(np.argmax(np.abs(scores - probe.threshold)))
    if abs(scores[far] - probe.threshold) >= margin:
        assert _post(server, paths[far].read_bytes())["label"] in {"synthetic", "authentic"}


def test_provenance_metadata_is_reported_beside_p_fake_never_in_it(serve, tmp_path, probe_dir, test_images):
    probe = Detector.load(probe_dir)
    server = serve(probe, settings=make_settings(tmp_path / "s"))
    image = Image.open(test_images["real"][0]).convert("RGB")
    plain, tagged = io.BytesIO(), io.BytesIO()
    image.save(plain, format="PNG")
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters", "a photo of a cat, Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: sd15"
    )
    image.save(tagged, format="PNG", pnginfo=info)
    without, with_tag = _post(server, plain.getvalue()), _post(server, tagged.getvalue())
    assert without["provenance"] is None
    assert (
        with_tag["provenance"]["label"] == "fake" and with_tag["provenance"]["evidence"] == "png_parameters"
    )
    assert with_tag["p_fake"] == pytest.approx(without["p_fake"], abs=1e-6)  # the pixels decide P(fake)


def test_reload_swaps_the_second_stage_by_its_model_name(serve, tmp_path, mlflow_server, cascade_registry):
    from tests.helpers.serve import ADMIN_TOKEN

    fast, vlm = cascade_registry
    settings = make_settings(
        tmp_path / "s", mlflow_uri=mlflow_server, model_name=fast, vlm_model_name=vlm, cascade=True
    )
    server = serve(None, settings=settings)
    _wait_for_second_stage(server)
    version = Registry(settings, name=vlm).version("champion").version
    answer = requests.post(
        server.url + "/admin/reload",
        json={"model": f"models:/{vlm}/{version}"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"]["name"] == vlm
    assert server.service.second is not None and server.service.detector.name == fast
