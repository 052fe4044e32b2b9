"""Feedback is a claim, not a label: who may change a label, what a claim records, replays, rate limits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests

from tasks.data.batches import list_batches
from tasks.serve.records import accept_claim, claim_key
from tasks.storage import ObjectStore
from tests.helpers.serve import ADMIN_TOKEN, RELABEL_TOKEN
from tests.serve.test_routes import collect_inbox, detect

RELABEL = {"Authorization": f"Bearer {RELABEL_TOKEN}"}


def feedback(server, prediction_id: str, label: str, headers: dict | None = None) -> requests.Response:
    return requests.post(
        server.url + "/v1/feedback",
        json={"prediction_id": prediction_id, "label": label},
        headers=headers or {},
        timeout=30,
    )


def inbox_files(settings) -> list[str]:
    return ObjectStore(settings.inbox).list("feedback")


def test_anonymous_feedback_is_a_claim_that_changes_no_label(serve, detector, test_images, tmp_path):
    """The attack of the issue: a known fake, "authentic" from a client without a token."""
    server = serve(detector)
    settings = server.service.settings
    fake = detect(server, test_images["fake"][0]).json()

    answer = feedback(server, fake["prediction_id"], "authentic")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["trusted"], body["duplicate"]) == ("claim_recorded", False, False)
    assert "changes no label" in body["message"]
    assert inbox_files(settings) == []  # nothing the collector would take as a label
    assert [row for row in collect_inbox(settings, tmp_path) if row["label_source"] == "feedback"] == []
    store = ObjectStore(settings.store_url)
    claim = store.read_json(claim_key(fake["prediction_id"], "authentic"))
    assert claim["status"] == "pending" and claim["claimed_label"] == "authentic"
    assert claim["client"] == "ip:127.0.0.1" and claim["time"]
    assert claim["model_name"] == detector.name and claim["model_version"] == detector.version
    assert round(claim["p_fake"], 6) == fake["p_fake"] and claim["predicted"] == fake["label"]
    assert store.read_bytes(claim["image_key"]) == test_images["fake"][0].read_bytes()  # kept for review

    # A person accepting it in the review queue (the hook) makes it the label the collector takes.
    inbox_key, written = accept_claim(
        ObjectStore(settings.inbox), store, fake["prediction_id"], "authentic", "reviewer:alice"
    )
    assert written and inbox_files(settings) == [inbox_key]
    assert inbox_key.startswith("feedback/0_real/")
    assert store.read_json(claim_key(fake["prediction_id"], "authentic"))["status"] == "accepted"
    assert not store.exists(claim["image_key"])  # no longer awaiting review


def test_a_relabel_token_stores_a_trusted_label_and_replays_write_nothing(
    serve, detector, test_images, tmp_path
):
    server = serve(detector)
    settings = server.service.settings
    fake = detect(server, test_images["fake"][0]).json()

    first = feedback(server, fake["prediction_id"], "authentic", RELABEL)
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["trusted"], first.json()["duplicate"]) == (
        "label_stored",
        True,
        False,
    )
    assert inbox_files(settings) == [f"feedback/0_real/{fake['prediction_id']}.png"]
    store = ObjectStore(settings.store_url)
    assert store.read_json(claim_key(fake["prediction_id"], "authentic"))["client"] == "token:curator"
    collect_inbox(settings, tmp_path)
    batches = list_batches(store)
    assert len(batches) == 1
    inbox = ObjectStore(settings.inbox)

    def everything() -> dict[str, bytes]:
        return {f"store:{k}": store.read_bytes(k) for k in store.list("")} | {
            f"inbox:{k}": inbox.read_bytes(k) for k in inbox.list("")
        }

    before = everything()
    label_file = Path(settings.inbox) / inbox_files(settings)[0]
    mtime = label_file.stat().st_mtime_ns

    for _ in range(3):  # replays: same prediction, same label
        again = feedback(server, fake["prediction_id"], "authentic", RELABEL)
        assert again.status_code == 200 and again.json()["duplicate"] is True

    assert everything() == before and label_file.stat().st_mtime_ns == mtime  # nothing written
    collect_inbox(settings, tmp_path)
    assert list_batches(store) == batches  # so no new raw batch


def test_tokens_are_checked_and_scoped(serve, detector, test_images, tmp_path):
    reviewer = "test-reviewer-token"
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text(
        "tokens:\n  - name: bot\n"
        f"    sha256: {hashlib.sha256(reviewer.encode()).hexdigest()}\n    scopes: [detect]\n"
    )
    server = serve(detector, tokens_file=str(tokens_file), anonymous_scopes=["detect"])
    real = detect(server, test_images["real"][0]).json()

    for headers, status, code in (
        ({}, 401, "unauthorized"),  # anonymous clients may not send feedback on this server
        ({"Authorization": "Bearer not-a-token"}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {reviewer}"}, 403, "forbidden"),  # a token without the scope
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, 403, "forbidden"),  # admin: reload only
    ):
        answer = feedback(server, real["prediction_id"], "synthetic", headers)
        assert (answer.status_code, answer.json()["error"]) == (status, code), answer.text
    reload = requests.post(
        server.url + "/admin/reload", headers={"Authorization": f"Bearer {RELABEL_TOKEN}"}, timeout=30
    )
    assert (reload.status_code, reload.json()["error"]) == (403, "forbidden")

    # Rotation: the file is re-read when it changes; the old token stops working at once.
    rotated = "test-rotated-token"
    tokens_file.write_text(
        "tokens:\n  - name: bot\n"
        f"    sha256: {hashlib.sha256(rotated.encode()).hexdigest()}\n    scopes: [detect, feedback]\n"
    )
    old = feedback(server, real["prediction_id"], "synthetic", {"Authorization": f"Bearer {reviewer}"})
    assert old.status_code == 401
    new = feedback(server, real["prediction_id"], "synthetic", {"Authorization": f"Bearer {rotated}"})
    assert new.status_code == 200 and new.json()["status"] == "claim_recorded", new.text
    store = ObjectStore(server.service.settings.store_url)
    assert store.read_json(claim_key(real["prediction_id"], "synthetic"))["client"] == "token:bot"


def test_feedback_and_detection_are_rate_limited_per_client(serve, detector, test_images):
    server = serve(
        detector,
        rate_limits={"detect": {"per_s": 0.001, "burst": 3}, "feedback": {"per_s": 0.001, "burst": 2}},
    )
    image = test_images["real"][0]
    answers = [detect(server, image) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert (
        limited.json()["error"] == "rate_limited"
        and "serving.rate_limits.detect" in limited.json()["message"]
    )
    assert int(limited.headers["Retry-After"]) >= 1

    prediction = answers[0].json()["prediction_id"]
    statuses = [feedback(server, prediction, "synthetic").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    # Another client (a token is its own client) has its own buckets.
    assert feedback(server, prediction, "synthetic", RELABEL).status_code == 200


def test_vigil_serve_token_mints_a_token_whose_entry_configures_it(serve, detector, test_images, capsys):
    import json

    from tasks.cli import build_parser

    args = build_parser().parse_args(["serve-token", "curator-2", "--scopes", "relabel"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out.splitlines()
    token = printed[0].rsplit(" ", 1)[1]
    entry = json.loads(printed[-1])
    assert entry["name"] == "curator-2" and entry["scopes"] == ["relabel"] and token not in printed[-1]

    server = serve(detector, tokens=[entry])
    fake = detect(server, test_images["fake"][0]).json()
    answer = feedback(server, fake["prediction_id"], "authentic", {"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["status"] == "label_stored", answer.text
