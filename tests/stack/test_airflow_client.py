"""The REST client against the real embedded Airflow, through a loopback proxy that answers 500 or drops
the connection where a busy machine would: a retried trigger creates exactly one run, reads survive,
and a call that cannot be repeated safely is not repeated."""

from __future__ import annotations

import pytest

from tests.helpers.stack import FlakyProxy

DAG = "deploy"  # never unpaused here: its runs stay queued and do nothing
RUNS = f"/api/v2/dags/{DAG}/dagRuns"


@pytest.fixture
def proxy(embedded):
    proxy = FlakyProxy(embedded.settings.airflow_url)
    yield proxy
    proxy.close()


@pytest.fixture
def client(embedded, proxy):
    client = embedded.client(proxy.url, backoff_s=0.1)
    client.wait_for_dags([DAG])
    return client


def runs_with_id(embedded, run_id: str) -> list[dict]:
    runs = embedded.client().request("GET", f"/dags/{DAG}/dagRuns", params={"limit": 1000})["dag_runs"]
    return [r for r in runs if r["dag_run_id"] == run_id]


def test_a_trigger_answered_500_after_airflow_created_the_run_makes_exactly_one_run(embedded, proxy, client):
    # Airflow commits the run, the client only sees a 500: the retry finds it there (409).
    proxy.fail("POST", RUNS, "500-after")

    run_id = client.trigger(DAG, conf={"attempt": "first"}, note="retried trigger")

    assert [(e.forwarded, e.status) for e in proxy.seen("POST", RUNS)] == [(True, 500), (True, 409)]
    (run,) = runs_with_id(embedded, run_id)
    assert run["conf"] == {"attempt": "first"} and run["note"] == "retried trigger"


def test_a_trigger_answered_500_before_airflow_saw_it_is_retried_into_one_run(embedded, proxy, client):
    proxy.fail("POST", RUNS, "500-before", "500-before")

    run_id = client.trigger(DAG)

    assert [(e.forwarded, e.status) for e in proxy.seen("POST", RUNS)] == [
        (False, 500),
        (False, 500),
        (True, 200),
    ]
    assert len(runs_with_id(embedded, run_id)) == 1


def test_a_trigger_whose_run_id_exists_returns_that_run_and_keeps_it(embedded, client):
    first = client.trigger(DAG, conf={"n": 1}, run_id="vigil-test-existing-id")

    again = client.trigger(DAG, conf={"n": 2}, run_id="vigil-test-existing-id")  # Airflow answers 409

    assert first == again == "vigil-test-existing-id"
    (run,) = runs_with_id(embedded, first)
    assert run["conf"] == {"n": 1}


def test_reads_and_patches_survive_dropped_connections_and_500s(embedded, proxy, client):
    run_id = client.trigger(DAG)
    run_path = f"{RUNS}/{run_id}"
    proxy.fail("GET", run_path, "drop", "500-before", "drop")
    proxy.fail("PATCH", f"/api/v2/dags/{DAG}", "500-after")

    run = client.request("GET", f"/dags/{DAG}/dagRuns/{run_id}")
    client.request("PATCH", f"/dags/{DAG}", json={"is_paused": True})

    assert run["dag_run_id"] == run_id
    assert [e.status for e in proxy.seen("GET", run_path)] == [None, 500, None, 200]
    assert [e.status for e in proxy.seen("PATCH", f"/api/v2/dags/{DAG}")] == [500, 200]


def test_a_post_without_its_own_id_is_not_repeated(embedded, proxy, client):
    """Creating a pool twice would not be harmless: the 500 reaches the caller, and Airflow saw one POST."""
    from tasks.stack.airflow_client import AirflowError

    proxy.fail("POST", "/api/v2/pools", "500-after")

    with pytest.raises(AirflowError, match="500") as failure:
        client.request("POST", "/pools", json={"name": "vigil-test-pool", "slots": 1})

    assert failure.value.status == 500
    assert [(e.forwarded, e.status) for e in proxy.seen("POST", "/api/v2/pools")] == [(True, 500)]


def test_a_server_that_stays_down_fails_after_the_retries_with_the_status(embedded, proxy, client):
    from tasks.stack.airflow_client import AirflowError

    client.retries = 2
    before = len(proxy.seen("GET", "/api/v2/dags"))
    proxy.fail("GET", "/api/v2/dags", "500-before", "500-before", "500-before")

    with pytest.raises(AirflowError, match=r"GET /dags -> 500"):
        client.request("GET", "/dags")

    assert len(proxy.seen("GET", "/api/v2/dags")) - before == 3  # the first try and two retries
