"""``make demo``: the whole loop, twice, on the embedded stack, driven through Airflow.

Round 1 drops generator A's labeled demo set into the inbox and triggers ``collect_inbox``; the rest
follows by Asset events, exactly as in production: ``curate`` -> ``train_detector`` ->
``promote`` -> ``deploy``. Then one image is sent to the deployed detection API. Round 2 does the
same with generator B: the champion of round 1 has never seen B (the gate report shows its poor B
slice), training continues from it with replay of A, and the gate compares both per source.

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

from tasks import stack
from tasks.data.snapshots import latest_version
from tasks.demo.data import DemoSpec, generate
from tasks.promote.gate import report_prefix
from tasks.registry import CHAMPION, Registry
from tasks.settings import Settings
from tasks.stack.airflow_client import AirflowClient
from tasks.storage import ObjectStore

CHAIN = ("collect_inbox", "curate", "train_detector", "promote", "deploy")
TERMINAL = {"success", "failed"}
DEMO_POLICY = "gate.demo.yaml"


@dataclass
class Round:
    generator: str
    snapshot: str | None = None
    version: str | None = None
    decision: str | None = None
    reasons: list[str] = field(default_factory=list)
    auc: dict[str, dict[str, float | None]] = field(default_factory=dict)  # slice -> {champion, challenger}
    deployed: str | None = None
    detection: dict[str, Any] | None = None
    runs: dict[str, str] = field(default_factory=dict)  # dag_id -> state
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
    result.runs = {dag_id: run["state"] for dag_id, run in last.items()}

    store = ObjectStore.from_settings(settings)
    result.snapshot = latest_version(store)
    registry = Registry(settings)
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
            say(
                f"gate: version {result.version} {result.decision.upper()} (report {report_prefix(settings.model_name, result.version)}/report.html)"
            )
            for reason in report["reasons"]:
                say(f"  - {reason}")
    champion = registry.version(CHAMPION)
    if last.get("deploy", {}).get("state") == "success" and champion is not None:
        result.deployed = str(champion.version)
        fake = sorted((folder / "test" / "1_fake").iterdir())[0]
        result.detection = detect(settings, fake)
        say(
            f"detection of {fake.name} (a generator-{generator} fake): {result.detection.get('label')} "
            f"p_fake={result.detection.get('p_fake'):.3f} by version {result.detection.get('model', {}).get('version')}"
        )
    result.seconds = time.monotonic() - started
    return result


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def summary_table(rounds: list[Round]) -> str:
    lines = [
        "| round | snapshot | model version | AUC A (champion → challenger) | AUC B (champion → challenger) "
        "| gate | deployed | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        cells = []
        for generator in ("A", "B"):
            auc = r.auc.get(f"generator={generator}")
            cells.append("–" if not auc else f"{_fmt(auc['champion'])} → {_fmt(auc['challenger'])}")
        lines.append(
            f"| {r.generator} | {r.snapshot or '–'} | {r.version or '–'} | {cells[0]} | {cells[1]} | "
            f"{r.decision or '–'} | {r.deployed or '–'} | {r.seconds:.0f} s |"
        )
    return "\n".join(lines)


def run_demo(
    generators: tuple[str, ...] = ("A", "B"),
    *,
    per_split: tuple[tuple[str, int], ...] | None = None,
    round_timeout: float = 900.0,
) -> list[Round]:
    """Both rounds on a fresh embedded stack (left running for the user; ``make down`` stops it)."""

    os.environ.setdefault("VIGIL_PROMOTION__POLICY_FILE", DEMO_POLICY)
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
    client.wait_for_dags(list(CHAIN))
    for dag_id in CHAIN:
        client.unpause(dag_id)
    rounds = [play_round(settings, client, generator, round_timeout, per_split) for generator in generators]
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
    print(f"Total: {time.monotonic() - begun:.0f} s. Stop everything with `make down`.")
    failed = [r.generator for r in rounds if r.deployed is None]
    if failed:
        raise SystemExit(
            f"round(s) {', '.join(failed)} did not deploy a model; see the runs in the Airflow UI"
        )
    return rounds
