"""The detection API on a live uvicorn with the trained tiny detector: answers, log, feedback, metrics."""

from __future__ import annotations

import re
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from tasks.collect.run import collect
from tasks.data.batches import list_batches, read_batch
from tasks.storage import ObjectStore, sha256_hex
from tests.helpers.serve import RELABEL_TOKEN

RELABEL = {"Authorization": f"Bearer {RELABEL_TOKEN}"}


def detect(server, path, **params) -> requests.Response:
    with open(path, "rb") as fh:
        return requests.post(
            server.url + "/v1/detect", files={"file": (path.name, fh, "image/png")}, params=params, timeout=60
        )


def metric(text: str, sample: str, **labels) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith((sample + "{", sample + " ")):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_detect_answers_the_models_verdict_and_every_prediction_is_logged(
    serve, detector, test_images, image_host
):
    server = serve(detector, allow_private_urls=True)  # the URL input below is served on loopback
    images = test_images["real"][:3] + test_images["fake"][:3]
    detector_images = [Image.open(p).convert("RGB") for p in images]
    expected = detector.score(detector_images)

    answers = [detect(server, path) for path in images]

    assert [a.status_code for a in answers] == [200] * len(images)
    margin = server.service.settings.serving.abstain_margin
    for answer, p in zip((a.json() for a in answers), expected, strict=True):
        assert answer["p_fake"] == pytest.approx(p, abs=1e-4)
        verdict = "synthetic" if p >= detector.threshold else "authentic"
        assert answer["label"] == ("uncertain" if abs(p - detector.threshold) < margin else verdict)
        assert answer["threshold"] == pytest.approx(detector.threshold)
        assert answer["model"] == {"name": detector.name, "version": detector.version}
        assert answer["stage"] == detector.card.family  # one stage here: it decides everything
        assert answer["provenance"] is None  # the demo images carry no provenance metadata
        assert answer["latency_ms"] > 0 and "explanation" not in answer

    # explain=true (query parameter or form field): the reason starts with the verdict word.
    explained = [
        detect(server, images[0], explain="true").json(),
        detect(server, images[-1], explain="true").json(),
    ]
    for answer in explained:
        assert answer["explanation"].split()[0].rstrip(".,") == (
            "Yes" if answer["label"] == "synthetic" else "No"
        )

    # A batch scores like single requests.
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in images[2:5]]
    batch = requests.post(server.url + "/v1/detect/batch", files=files, timeout=60)
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert [p["p_fake"] for p in predictions] == pytest.approx(list(expected[2:5]), abs=1e-4)
    assert len({p["prediction_id"] for p in predictions}) == 3

    # URL input (loopback allowed for this server only).
    url = image_host.route("/photo.png", images[-1].read_bytes(), headers={"Content-Type": "image/png"})
    by_url = requests.post(server.url + "/v1/detect", json={"url": url}, timeout=60)
    assert by_url.status_code == 200 and by_url.json()["p_fake"] == pytest.approx(expected[-1], abs=1e-4)

    # Nothing is written per request; shutdown flushes the buffered log as Parquet.
    store = ObjectStore(server.service.settings.store_url)
    assert store.list("predictions") == []
    server.stop()
    keys = [k for k in store.list("predictions") if not k.startswith("predictions/images/")]
    assert len(keys) == 1 and re.fullmatch(r"predictions/date=\d{4}-\d{2}-\d{2}/[\w-]+\.parquet", keys[0])
    log = store.read_table(keys[0])
    assert len(log) == len(images) + 2 + 3 + 1
    answered = {a.json()["prediction_id"]: a.json() for a in answers}
    logged = log.set_index("prediction_id")
    for prediction_id, answer in answered.items():
        row = logged.loc[prediction_id]
        assert row["p_fake"] == pytest.approx(answer["p_fake"], abs=1e-5) and row["label"] == answer["label"]
        assert row["input_kind"] == "upload" and row["model_name"] == detector.name
    assert set(log["input_kind"]) == {"upload", "batch", "url"}
    assert sorted(log["image_sha256"].unique()) == sorted({sha256_hex(p.read_bytes()) for p in images})
    # No image bytes, except for review candidates (near the threshold, or the random audit sample).
    kept = log[log["image_key"].notna()]
    assert set(kept["review_candidate"]) <= {"near_threshold", "audit"}
    assert log.loc[log["review_candidate"].isna(), "image_key"].isna().all()
    for row in kept.itertuples():  # where the monitor finds (and later deletes) the ones it does not queue
        assert row.image_key.startswith("review/candidates/") and store.exists(row.image_key)
    # What the monitor reads: the embedding of every prediction, the deciding stage, the source.
    assert {len(e) for e in log["embedding"]} == {detector.embed(detector_images[:1]).shape[1]}
    assert set(log["stage"]) == {detector.card.family} and set(log["source"]) == {"api"}


def collect_inbox(settings, tmp_path) -> list[dict]:
    """Run the inbox source of include/sources.yaml once; every row collected so far, of every batch."""
    include = tmp_path / "include"
    include.mkdir(exist_ok=True)
    (include / "sources.yaml").write_text(
        textwrap.dedent("""
        sources:
          - name: inbox
            kind: folder
            schedule: null
            label_prior: unknown
            options: {path: "."}
    """)
    )
    store = ObjectStore(settings.store_url)
    collect("inbox", settings.model_copy(update={"include_dir": include}), store)
    return [row for key in list_batches(store) for row in read_batch(store, key).table.to_dict("records")]


def test_trusted_feedback_lands_in_the_inbox_and_the_folder_collector_imports_it(
    serve, detector, test_images, tmp_path
):
    server = serve(detector)
    settings = server.service.settings
    real, fake = test_images["real"][0], test_images["fake"][0]
    first, second = detect(server, real).json(), detect(server, fake).json()

    for answer, label in (
        (first, "synthetic"),
        (second, "authentic"),
        (first, "authentic"),
    ):  # the last corrects
        stored = requests.post(
            server.url + "/v1/feedback",
            timeout=10,
            headers=RELABEL,
            json={"prediction_id": answer["prediction_id"], "label": label},
        )
        assert stored.status_code == 200, stored.text
        assert stored.json()["status"] == "label_stored" and stored.json()["trusted"] is True
        assert "inbox" not in stored.text and str(settings.home) not in stored.text  # no server paths

    unknown = requests.post(
        server.url + "/v1/feedback", json={"prediction_id": "0" * 32, "label": "synthetic"}
    )
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_prediction"
    assert "unknown" in unknown.json()["message"]
    bad = requests.post(
        server.url + "/v1/feedback", json={"prediction_id": first["prediction_id"], "label": "fake"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "label"

    # The inbox source of include/sources.yaml imports them with label_source feedback.
    rows = collect_inbox(settings, tmp_path)
    by_sha = {row["sha256"]: (row["label"], row["label_source"]) for row in rows}
    assert by_sha == {
        sha256_hex(real.read_bytes()): ("real", "feedback"),
        sha256_hex(fake.read_bytes()): ("real", "feedback"),
    }
    store = ObjectStore(settings.store_url)
    records = [key for key in store.list("feedback") if key.endswith(".json")]
    assert len(records) == 2 and all(key.startswith("feedback/date=") for key in records)
    assert {store.read_json(key)["decided_by"] for key in records} == {"token:curator"}


def test_metrics_count_requests_scores_batches_and_the_model_version(serve, detector, test_images):
    server = serve(detector)
    for path in test_images["real"][:2]:
        assert detect(server, path).status_code == 200
    requests.post(server.url + "/v1/detect", data=b"x", headers={"Content-Type": "text/plain"})

    text = requests.get(server.url + "/metrics", timeout=10).text

    assert metric(text, "vigil_http_requests_total", route="/v1/detect", status="200") == 2
    assert metric(text, "vigil_http_requests_total", route="/v1/detect", status="415") == 1
    assert metric(text, "vigil_http_request_duration_seconds_count", route="/v1/detect") == 3
    assert metric(text, "vigil_p_fake_count") == 2
    assert metric(text, "vigil_micro_batch_size_sum") == 2
    assert metric(text, "vigil_model_info", name=detector.name, version="local") == 1
    assert metric(text, "vigil_model_loaded") == 1


@pytest.mark.parametrize("micro_batching", [True, False])
def test_concurrent_requests_share_forward_passes_only_when_micro_batching(
    serve, detector, test_images, micro_batching
):
    server = serve(detector, micro_batching=micro_batching, micro_batch_wait_ms=100, micro_batch_size=8)
    paths = (test_images["real"] + test_images["fake"])[:8]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: detect(server, p), paths))
    assert [a.status_code for a in answers] == [200] * 8
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert metric(text, "vigil_micro_batch_size_sum") == 8
    passes = metric(text, "vigil_micro_batch_size_count")
    assert passes < 8 if micro_batching else passes == 8


def test_upload_page_and_openapi_are_served(serve, detector):
    server = serve(detector)
    page = requests.get(server.url + "/", timeout=10)
    assert (
        page.status_code == 200
        and 'type="file"' in page.text
        and "http" not in page.text.split("<script>")[0]
    )
    schema = requests.get(server.url + "/openapi.json", timeout=10).json()
    assert {"/v1/detect", "/v1/detect/batch", "/v1/feedback", "/admin/reload", "/readyz"} <= set(
        schema["paths"]
    )
    assert requests.get(server.url + "/docs", timeout=10).status_code == 200
