"""``make demo``: the whole loop, three rounds, on the embedded stack, driven through Airflow.

Round 1 drops generator A's labeled demo set into the inbox and triggers ``collect_inbox``; the rest
follows by Asset events, exactly as in production: ``curate`` -> ``train_detector`` ->
``promote`` -> ``deploy``. Then one image is sent to the deployed detection API. Round 2 does the
same with generator B: the champion of round 1 has never seen B (the gate report shows its poor B
slice), training continues from it with replay of A, and the gate compares both per generator.

Round 3 is what production looks like: generator C never reaches the inbox. It appears in *traffic*
only: the demo sends a stream of C fakes and real photos to the detection API in two windows and
runs the ``monitor`` (as its schedule would); the second drifting window raises a drift alert, which
fills the review queue. The demo then acts as a reviewer through the review API, as a person would
on the Review page, labelling what it knows the truth of; those labels land in the inbox
(``label_source=review``), and collection, curation, training, the gate and deploy follow. The AUC on
C is measured on held-out C images (never sent) before and after.

Every run is visible in the Airflow UI. A previous demo's state folder is kept as ``<home>.prev``,
so running the demo again starts clean.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tasks import stack
from tasks.data.snapshots import latest_version
from tasks.demo.data import DemoSpec, generate
from tasks.promote.gate import report_prefix
from tasks.registry import CHAMPION, Registry
from tasks.settings import Settings
from tasks.stack.airflow_client import AirflowClient
from tasks.storage import ObjectStore, sha256_hex

CHAIN = ("collect_inbox", "curate", "train_detector", "promote", "deploy")
TERMINAL = {"success", "failed"}
DEMO_POLICY = "gate.demo.yaml"
DEMO_MONITOR = "monitor.demo.yaml"
TRAFFIC_SOURCE = "demo-traffic"
TRAFFIC_WINDOWS = 2  # the monitor alerts on the second consecutive drifting window
# Traffic: crops of the training photographs only; held out: the test photographs. (Traffic from the
# validation photographs would put them into training through the review labels, and a threshold
# chosen on photographs the model has seen does not transfer: 53-66% of the test photos flagged.)
TRAFFIC_SPLITS = (("train", 240), ("test", 60))


@dataclass
class Round:
    generator: str
    trigger: str = "inbox"  # what started the round: a labeled drop in the inbox, or monitoring + review
    snapshot: str | None = None
    version: str | None = None
    decision: str | None = None
    reasons: list[str] = field(default_factory=list)
    auc: dict[str, dict[str, float | None]] = field(default_factory=dict)  # slice -> {champion, challenger}
    deployed: str | None = None
    detection: dict[str, Any] | None = None
    runs: dict[str, str] = field(default_factory=dict)  # dag_id -> state
    robustness: dict[str, float | None] = field(
        default_factory=dict
    )  # condition -> the challenger's AUC drop
    held_out: dict[str, float | None] = field(
        default_factory=dict
    )  # round 3: AUC on held-out C, before/after
    traffic: dict[str, Any] = field(default_factory=dict)  # round 3: sent, windows, alerts, queue, reviewed
    seconds: float = 0.0


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def fresh_home(settings: Settings) -> None:
    """Stop a running stack and keep the previous demo's state as ``<home>.prev``."""

    home = Path(settings.home)
    stack.down(settings)
    if home.exists():
        previous = home.with_name(home.name + ".prev")
        shutil.rmtree(previous, ignore_errors=True)
        home.rename(previous)
        say(f"previous demo state moved to {previous}")


def _wait_chain(client, after: datetime, timeout: float) -> dict[str, dict]:
    """Wait until the asset-triggered chain after ``after`` has settled; the last run of each DAG.

    Settled: collect and curate finished, and the run that ended the chain (a skipped training, a
    rejection, or a deployment) is terminal with nothing queued or running behind it.
    """
    deadline = time.monotonic() + timeout
    last: dict[str, dict] = {}
    reported: set[str] = set()
    while time.monotonic() < deadline:
        for dag_id in CHAIN:
            runs = client.runs(dag_id, after=after)
            if runs:
                last[dag_id] = runs[-1]
        for dag_id, run in last.items():
            key = f"{dag_id}:{run['dag_run_id']}:{run['state']}"
            if run["state"] in TERMINAL and key not in reported:
                reported.add(key)
                say(f"  {dag_id:<15} {run['state']}")
                if dag_id == "promote" and run["state"] == "failed" and _promoted(client, run) is False:
                    say("    the gate rejected the challenger: see the gate report on the Models page")
                elif run["state"] == "failed":
                    explain_failure(client, dag_id, run)
        busy = any(run["state"] not in TERMINAL for run in last.values())
        if not busy and "curate" in last and _chain_ended(client, last):
            time.sleep(3)  # an Asset event just emitted may still be turning into a queued run
            if not any(r["state"] not in TERMINAL for d in CHAIN for r in client.runs(d, after=after)):
                return last
        time.sleep(2)
    raise TimeoutError(
        f"the pipeline did not settle within {timeout:.0f}s: "
        + ", ".join(f"{d}={r['state']}" for d, r in last.items())
    )


def explain_failure(client, dag_id: str, run: dict, lines: int = 12) -> None:
    """Print the end of each failed task's log, so a failed demo says why without opening the UI."""
    for ti in client.task_instances(dag_id, run["dag_run_id"]):
        if ti["state"] != "failed":
            continue
        try:
            log = client.task_log(dag_id, run["dag_run_id"], ti["task_id"], ti["try_number"])
        except Exception as exc:  # noqa: BLE001 - the log is a courtesy; the run's state is what counts
            log = [f"(log unavailable: {exc})"]
        say(f"    {ti['task_id']} failed (try {ti['try_number']}); end of its log:")
        for line in log[-lines:]:
            print(f"      {line[:300]}", flush=True)


def _chain_ended(client, last: dict[str, dict]) -> bool:
    if "deploy" in last:
        return True
    if "promote" in last:  # a rejection ends the chain; a promotion goes on to deploy
        return _promoted(client, last["promote"]) is False or last["promote"]["state"] == "failed"
    if "train_detector" in last:
        run = last["train_detector"]
        states = {
            ti["task_id"]: ti["state"] for ti in client.task_instances("train_detector", run["dag_run_id"])
        }
        return (
            run["state"] == "failed"
            or states.get("enough_new_images") == "skipped"
            or states.get("train") == "skipped"
        )
    return False


def _promoted(client, run: dict) -> bool | None:
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances("promote", run["dag_run_id"])}
    if states.get("promote_champion") == "success":
        return True
    if states.get("reject") in ("success", "failed"):  # a rejection fails its run (red in the UI)
        return False
    return None


def detect(settings: Settings, image: Path) -> dict[str, Any]:
    import requests

    with image.open("rb") as handle:
        resp = requests.post(
            f"{settings.serving_url}/v1/detect",
            params={"explain": "true"},
            files={"file": (image.name, handle, "image/png")},
            timeout=120,
        )
    resp.raise_for_status()
    return resp.json()


def play_round(
    settings: Settings,
    client,
    generator: str,
    timeout: float,
    per_split: tuple[tuple[str, int], ...] | None = None,
) -> Round:

    result = Round(generator)
    started = time.monotonic()
    spec = DemoSpec(generator=generator, **({"per_split": per_split} if per_split else {}))
    # Written aside, then moved into the inbox in one rename: a scheduled collection never sees half a set.
    staged = generate(Path(settings.home) / "staging", spec)
    folder = Path(settings.inbox) / staged.name
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(folder)
    say(f"round {generator}: demo set written to {folder}; triggering collect_inbox")
    after = datetime.now(UTC)
    client.trigger("collect_inbox", note=f"make demo, round {generator}")
    last = _wait_chain(client, after, timeout)

    _read_outcome(settings, last, result)
    if result.deployed:
        fake = sorted((folder / "test" / "1_fake").iterdir())[0]
        result.detection = detect(settings, fake)
        say(
            f"detection of {fake.name} (a generator-{generator} fake): {result.detection.get('label')} "
            f"p_fake={result.detection.get('p_fake'):.3f} by version {result.detection.get('model', {}).get('version')}"
        )
    result.seconds = time.monotonic() - started
    return result


def _read_outcome(settings: Settings, last: dict[str, dict], result: Round) -> None:
    """The snapshot, the gate report of the newest challenger (AUC per generator, robustness drops)
    and what was deployed, into ``result``."""
    store = ObjectStore.from_settings(settings)
    result.snapshot = latest_version(store)
    result.runs = {dag_id: run["state"] for dag_id, run in last.items()}
    if "promote" in last:
        gated = [k for k in store.list(f"reports/gate/{settings.model_name}/") if k.endswith("/report.json")]
        reports = [json.loads(store.read_bytes(k)) for k in gated]
        report = max(reports, key=lambda r: int(r["challenger"]["version"])) if reports else None
        if report:
            result.version, result.decision, result.reasons = (
                report["challenger"]["version"],
                report["decision"],
                report["reasons"],
            )
            for row in report["slices"]:
                if row["slice"].startswith("generator=") or row["slice"] == "overall":
                    result.auc[row["slice"]] = {
                        who: (row[who] or {}).get("roc_auc") for who in ("champion", "challenger")
                    }
            drops = (report.get("robustness") or {}).get("challenger") or {}
            result.robustness = {name: (value or {}).get("drop") for name, value in drops.items()}
            say(
                f"gate: version {result.version} {result.decision.upper()} (report {report_prefix(settings.model_name, result.version)}/report.html)"
            )
            for reason in report["reasons"]:
                say(f"  - {reason}")
    champion = Registry(settings).version(CHAMPION)
    if last.get("deploy", {}).get("state") == "success" and champion is not None:
        result.deployed = str(champion.version)


# -- round 3: a generator that appears only in traffic ----------------------------------------------
def play_traffic_round(settings: Settings, client, generator: str, timeout: float) -> Round:
    """Traffic with a new generator -> monitor -> drift alert -> review queue -> the demo reviews through
    the API -> the labels go through collection, curation, training, the gate and deploy."""
    from tasks.data.frames import folder_frame

    result = Round(generator, trigger="monitoring + review")
    started = time.monotonic()
    staged = generate(
        Path(settings.home) / "traffic", DemoSpec(generator=generator, per_split=TRAFFIC_SPLITS)
    )
    frame = folder_frame(staged)
    splits = frame.table["split"].to_numpy()
    traffic = frame.where(splits == "train", "traffic")
    held_out = frame.where(splits == "test", f"held-out {generator}")
    truth = {
        sha256_hex(Path(f).read_bytes()): label
        for f, label in zip(traffic.table["file"], traffic.table["label"], strict=True)
    }
    champion = Registry(settings).require(CHAMPION)
    result.held_out["before"] = held_out_auc(settings, str(champion.version), held_out)
    say(
        f"round {generator}: generator {generator} appears only in traffic; the champion (version "
        f"{champion.version}) has AUC {_fmt(result.held_out['before'])} on {len(held_out)} held-out "
        f"{generator} images. Sending {len(traffic)} images to the API in {TRAFFIC_WINDOWS} windows."
    )
    files = traffic.table["file"].tolist()
    order = np.random.default_rng(0).permutation(len(files))  # reals and fakes mixed, as traffic is
    chunks = np.array_split(order, TRAFFIC_WINDOWS)
    alerts: list[dict[str, Any]] = []
    for window, chunk in enumerate(chunks, start=1):
        sent = send_traffic(settings, [files[i] for i in chunk])
        summary = run_monitor(settings, client, expect_rows=sent)
        alerts += summary.get("alerts") or []
        flagged = ", ".join(
            g.get("group_id", str(g)) if isinstance(g, dict) else str(g) for g in summary["drifting"]
        )
        say(
            f"  window {window}: {sent} predictions; monitor: {summary['rows']} rows in "
            f"{len(summary['windows'])} window(s), drifting: {flagged or 'none'}, alerts: {len(summary['alerts'])}"
        )
    for alert in alerts:
        say(f"  DRIFT ALERT {alert['reason']}")
    reviewed = review_queue(client, truth)
    result.traffic = {"sent": len(traffic), "alerts": len(alerts), **reviewed}
    say(
        f"  review: {reviewed['queued']} images queued; the demo reviewed {reviewed['labeled']} "
        f"({reviewed['fake']} fake, {reviewed['real']} real) through the review API, skipped {reviewed['skipped']}"
    )
    if not alerts:
        say("  no drift alert: the queue holds only near-threshold and audit images")
    # The inbox schedule collects every 10 minutes; the demo does not wait for it.
    after = datetime.now(UTC)
    client.trigger("collect_inbox", note=f"make demo, round {generator}: the review labels")
    last = _wait_chain(client, after, timeout)
    _read_outcome(settings, last, result)
    if result.deployed:
        result.held_out["after"] = held_out_auc(settings, result.deployed, held_out)
        say(
            f"  AUC on held-out {generator}: {_fmt(result.held_out['before'])} -> {_fmt(result.held_out['after'])}"
        )
    result.seconds = time.monotonic() - started
    return result


def send_traffic(settings: Settings, files: list[str], batch: int = 16) -> int:
    """Post the images to ``/v1/detect/batch`` as traffic from one source, waiting when the server
    says so (429 + Retry-After, as a well-behaved client does); the number of predictions answered."""
    import requests

    answered = 0
    for begin in range(0, len(files), batch):
        chunk = files[begin : begin + batch]
        handles = [("file", (Path(f).name, Path(f).read_bytes(), "image/png")) for f in chunk]
        for _attempt in range(30):
            resp = requests.post(
                f"{settings.serving_url}/v1/detect/batch",
                params={"source": TRAFFIC_SOURCE},
                files=handles,
                timeout=300,
            )
            if resp.status_code != 429:
                break
            time.sleep(min(10.0, float(resp.headers.get("Retry-After") or 1)))
        if resp.status_code != 200:
            raise RuntimeError(f"/v1/detect/batch answered {resp.status_code}: {resp.text[:300]}")
        answered += sum(1 for item in resp.json()["predictions"] if "p_fake" in item)
    return answered


def run_monitor(settings: Settings, client, expect_rows: int, timeout: float = 600.0) -> dict[str, Any]:
    """Trigger the ``monitor`` DAG (as its schedule would) once serving has flushed ``expect_rows`` new
    predictions to the log; its summary."""
    deadline = time.monotonic() + settings.serving.log_flush_s + 60
    while time.monotonic() < deadline and _waiting_rows(settings) < expect_rows:
        time.sleep(2)
    run_id = client.trigger("monitor", note="make demo: a traffic window")
    finished = client.wait_for_run("monitor", run_id, timeout=timeout)
    if finished["state"] != "success":
        explain_failure(client, "monitor", finished)
        raise RuntimeError(f"the monitor run {run_id} {finished['state']}")
    summary = client.xcom("monitor", run_id, "monitor_windows")
    return json.loads(summary) if isinstance(summary, str) else summary


def _waiting_rows(settings: Settings) -> int:
    """Prediction-log rows the monitor has not processed yet."""
    from tasks.monitor.run import pending_rows

    return pending_rows(settings)


def review_queue(client, truth: dict[str, str]) -> dict[str, int]:
    """Decide every queued image the demo knows the truth of, through the review API (as a reviewer)."""
    items = client.vigil("GET", "/api/review/queue")["items"]
    counts = {"queued": len(items), "labeled": 0, "fake": 0, "real": 0, "skipped": 0}
    for item in items:
        label = truth.get(item.get("image_sha256") or "")
        decision = label or "skip"
        client.vigil("POST", f"/api/review/{item['item_id']}/decision", json={"label": decision}, ok=(409,))
        if label:
            counts["labeled"] += 1
            counts[label] += 1
        else:
            counts["skipped"] += 1
    return counts


def held_out_auc(settings: Settings, version: str, frame) -> float | None:
    """ROC AUC of a registered version of the serving model on images it never saw."""
    from sklearn.metrics import roc_auc_score

    from tasks.model.detector import Detector

    detector = Detector.load(f"models:/{settings.model_name}/{version}", settings=settings)
    labels = frame.labels
    if len(set(labels)) < 2:
        return None
    return float(roc_auc_score(labels, detector.score(frame.images())))


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def forgetting(r: Round, generators: tuple[str, ...]) -> float | None:
    """How much AUC the challenger lost against the champion on the older generators (worst one; 0 if none)."""
    older = [
        auc["champion"] - auc["challenger"]
        for g in generators
        if g != r.generator
        and (auc := r.auc.get(f"generator={g}"))
        and auc["champion"] is not None
        and auc["challenger"] is not None
    ]
    return max(0.0, *older) if older else None


def summary_table(rounds: list[Round]) -> str:
    generators = tuple(dict.fromkeys(g for r in rounds for g in (r.generator,)))
    head = " | ".join(f"AUC {g} (champion → challenger)" for g in generators)
    lines = [
        f"| round | trigger | snapshot | model version | {head} | forgetting | JPEG q75 drop | 0.5x drop "
        "| gate | deployed | time |",
        "|---|---|---|---|" + "---|" * len(generators) + "---:|---:|---:|---|---|---:|",
    ]
    for r in rounds:
        cells = []
        for generator in generators:
            auc = r.auc.get(f"generator={generator}")
            if generator == r.generator and r.held_out:
                before, after = r.held_out.get("before"), r.held_out.get("after")
                cells.append(f"{_fmt(before)} → {_fmt(after)} (held out)")
            else:
                cells.append("–" if not auc else f"{_fmt(auc['champion'])} → {_fmt(auc['challenger'])}")
        lines.append(
            f"| {r.generator} | {r.trigger} | {r.snapshot or '–'} | {r.version or '–'} | {' | '.join(cells)} | "
            f"{_fmt(forgetting(r, generators))} | {_fmt(r.robustness.get('jpeg_q75'))} | "
            f"{_fmt(r.robustness.get('resize_0.5x'))} | {r.decision or '–'} | {r.deployed or '–'} | {r.seconds:.0f} s |"
        )
    return "\n".join(lines)


def run_demo(
    generators: tuple[str, ...] = ("A", "B"),
    *,
    traffic: tuple[str, ...] = ("C",),
    per_split: tuple[tuple[str, int], ...] | None = None,
    round_timeout: float = 900.0,
) -> list[Round]:
    """The inbox rounds (``generators``), then the traffic rounds, on a fresh embedded stack (left
    running for the user; ``make down`` stops it)."""

    os.environ.setdefault("VIGIL_PROMOTION__POLICY_FILE", DEMO_POLICY)
    os.environ.setdefault("VIGIL_MONITORING__CONFIG_FILE", DEMO_MONITOR)
    os.environ.setdefault("VIGIL_SERVING__LOG_FLUSH_S", "5")  # traffic reaches the log within seconds
    # A review campaign can only ask about images whose bytes serving kept. Production windows hold
    # thousands of predictions, of which the 2% audit sample is plenty; the demo's hold 240.
    os.environ.setdefault("VIGIL_SERVING__AUDIT_RATE", "1.0")
    settings = Settings()
    begun = time.monotonic()
    fresh_home(settings)
    settings = Settings()
    say("starting the embedded stack (MLflow, Airflow standalone, serving)...")
    info = stack.up(settings)
    say(
        f"Airflow {info['airflow_url']} (user {info['airflow_user']}, password {info['airflow_password']}); "
        f"MLflow {info['mlflow_url']}; serving {info['serving_url']}"
    )
    client = AirflowClient(settings.airflow_url, info["airflow_user"], info["airflow_password"])
    client.wait_for_dags([*CHAIN, "monitor"])
    for dag_id in (*CHAIN, "monitor"):
        client.unpause(dag_id)
    rounds = [play_round(settings, client, generator, round_timeout, per_split) for generator in generators]
    for generator in traffic:
        if rounds and rounds[-1].deployed is None:
            say(f"round {generator} skipped: the previous round deployed no model")
            break
        rounds.append(play_traffic_round(settings, client, generator, round_timeout))
    print()
    print(summary_table(rounds))
    print()
    print(f"Airflow UI:           {info['airflow_url']}  (admin / {info['airflow_password']})")
    print(f"MLflow UI:            {info['mlflow_url']}")
    print(f"Detection page:       {info['serving_url']}/")
    print(
        f"Data quality reports: {info['airflow_url']}/vigil/data-quality  (also under {settings.store_url}/reports/)"
    )
    print(f"Models and gates:     {info['airflow_url']}/vigil/models")
    if traffic:
        print(f"Monitoring:           {info['airflow_url']}/vigil/monitoring  (review queue: /vigil/review)")
    print(f"Total: {time.monotonic() - begun:.0f} s. Stop everything with `make down`.")
    failed = [r.generator for r in rounds if r.deployed is None]
    if failed:
        raise SystemExit(
            f"round(s) {', '.join(failed)} did not deploy a model; see the runs in the Airflow UI"
        )
    return rounds
