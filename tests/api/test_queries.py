"""The JSON API against a running exporter fed by a real worker on Redis."""

from __future__ import annotations

from urllib.parse import quote

from tests.cluster import BIG_ARG, TASK_NAMES, Cluster, api_get
from tests.support import select, wait_for


def tasks(cluster: Cluster, query: str = "") -> list[dict]:
    status, body = api_get(cluster.url, "/api/tasks" + query)
    assert status == 200, body
    return body["tasks"]


def uuids(cluster: Cluster, query: str) -> list[str]:
    return [task["uuid"] for task in tasks(cluster, query)]


def test_tasks_of_several_types_with_their_current_state(cluster: Cluster):
    by_id = {task["uuid"]: task for task in tasks(cluster)}
    ids = cluster.ids
    assert {role: by_id[ids[role]]["state"] for role in ids} == {
        **{role: "SUCCESS" for role in ids},
        "fail1": "FAILURE",
        "fail2": "FAILURE",
        "slow": "STARTED",
    }
    fail = by_id[ids["fail1"]]
    assert fail["name"] == "demo.fail"
    assert fail["args"] == "('boom 1',)"
    assert fail["exception"] == "ValueError('boom 1')"
    assert "Traceback (most recent call last)" in fail["traceback"]
    assert fail["worker"] == cluster.worker.name
    assert fail["routing_key"] == cluster.queue
    assert by_id[ids["add1"]]["result"] == "101"
    assert by_id[ids["flaky"]]["retries"] == 1
    assert by_id[ids["login"]]["kwargs"] == "{'password': '[redacted]'}"


def test_pattern_searches_name_routing_key_and_uuid_case_insensitively(cluster: Cluster):
    ids = cluster.ids
    assert set(uuids(cluster, "?pattern=DEMO%5C.FAIL")) == {ids["fail1"], ids["fail2"]}
    assert set(uuids(cluster, "?pattern=^demo%5C.(fail|flaky)$")) == {
        ids["fail1"],
        ids["fail2"],
        ids["flaky"],
    }
    assert set(uuids(cluster, "?pattern=" + cluster.queue)) == set(ids.values())
    assert uuids(cluster, "?pattern=" + ids["login"][:13].upper()) == [ids["login"]]
    negated = set(uuids(cluster, "?pattern=demo%5C.fail&negate=true"))
    assert negated == set(ids.values()) - {ids["fail1"], ids["fail2"]}


def test_state_filter_uses_the_current_inferred_state(cluster: Cluster):
    ids = cluster.ids
    assert set(uuids(cluster, "?state=failure")) == {ids["fail1"], ids["fail2"]}
    assert uuids(cluster, "?state=STARTED") == [ids["slow"]]
    assert uuids(cluster, "?state=STARTED&pattern=fail") == []


def test_newest_first_limit_and_reverse(cluster: Cluster):
    adds = [cluster.ids[f"add{i}"] for i in (1, 2, 3)]
    pattern = "?pattern=" + quote("|".join(adds))
    assert uuids(cluster, pattern) == adds[::-1]
    assert uuids(cluster, pattern + "&reverse=false") == adds
    assert uuids(cluster, pattern + "&limit=2") == adds[:0:-1]
    assert uuids(cluster, pattern + "&limit=2&reverse=false") == adds[:2]
    assert uuids(cluster, pattern + "&limit=0") == adds[::-1]


def test_one_task_has_its_states_attempts_workflow_and_trace_id(cluster: Cluster):
    ids = cluster.ids
    status, flaky = api_get(cluster.url, f"/api/tasks/{ids['flaky']}")
    assert status == 200
    assert flaky["trace_id"] == ids["flaky"].replace("-", "")
    assert [att["retries"] for att in flaky["attempts"]] == [0, 1]
    first, second = flaky["attempts"]
    assert [s["state"] for s in first["states"]] == ["PENDING", "RECEIVED", "STARTED", "RETRY"]
    assert [s["state"] for s in second["states"]] == ["PENDING", "RECEIVED", "STARTED", "SUCCESS"]
    assert all(s["timestamp"] for s in first["states"] + second["states"])
    assert "RuntimeError" in first["exception"] and "Traceback" in first["traceback"]
    assert flaky["result"] == "'ok after 1 retries'"
    assert flaky["worker"] == cluster.worker.name and flaky["queue"] == cluster.queue

    status, spawn = api_get(cluster.url, f"/api/tasks/{ids['spawn']}")
    assert sorted(spawn["children"]) == sorted([ids["child0"], ids["child1"]])
    status, child = api_get(cluster.url, f"/api/tasks/{ids['child0']}")
    assert (child["parent_id"], child["root_id"]) == (ids["spawn"], ids["spawn"])
    assert child["trace_id"] == ids["spawn"].replace("-", "")

    status, login = api_get(cluster.url, f"/api/tasks/{ids['login']}")
    assert login["kwargs"] == "{'password': '[redacted]'}"
    assert "hunter2" not in str(login)


def test_one_task_view_completes_what_celery_cut_from_the_result_backend(cluster: Cluster):
    ids = cluster.ids
    (listed,) = [task for task in tasks(cluster) if task["uuid"] == ids["big"]]
    assert "..." in listed["args"] and len(listed["args"]) < 1100, "lists: the event's"
    status, big = api_get(cluster.url, f"/api/tasks/{ids['big']}")
    assert status == 200
    assert big["values_source"] == "backend"
    assert big["args"] == repr((BIG_ARG,))
    assert big["result"] == repr(BIG_ARG[::-1].ljust(5000, "#"))
    assert big["kwargs"] == "{}"

    status, secret = api_get(cluster.url, f"/api/tasks/{ids['big_secret']}")
    assert secret["values_source"] == "backend"
    redacted = [[BIG_ARG], [{"token": "[redacted]"}]]
    assert secret["args"] == repr(tuple(redacted)), "completed, then redacted"
    assert secret["result"] == repr(redacted[0] + redacted[1])
    assert "hunter3" not in str(secret)

    _, add = api_get(cluster.url, f"/api/tasks/{ids['add1']}")
    assert add["values_source"] == "event", "nothing cut, nothing fetched"
    fetches = {
        dict(labels)["outcome"]: value
        for labels, value in select(
            cluster.exporter.scrape(), "clearly_exporter_result_fetches_total"
        ).items()
    }
    assert fetches["ok"] >= 2 and fetches["error"] == fetches["timeout"] == 0, fetches


def test_unknown_uuid_is_a_404_with_a_reason(cluster: Cluster):
    status, body = api_get(cluster.url, "/api/tasks/no-such-task")
    assert status == 404
    assert body == {"error": "unknown task 'no-such-task' (never seen, or no longer stored)"}


def test_unknown_paths_and_methods_are_answered_in_json(cluster: Cluster):
    assert api_get(cluster.url, "/api/nope") == (404, {"error": "Not Found: GET /api/nope"})
    status, body = api_get(cluster.url, "/api/reset")
    assert (status, body) == (405, {"error": "Method Not Allowed: GET /api/reset"})


def test_bad_parameters_are_400_with_one_line(cluster: Cluster):
    for query, message in [
        ("/api/tasks?pattern=(", "invalid regex '('"),
        ("/api/tasks?negate=maybe", "negate='maybe' is not a boolean"),
        ("/api/tasks?limit=-1", "limit='-1' is negative"),
        ("/api/workers?pattern=[", "invalid regex '['"),
        ("/api/stream?tasks=*", "invalid regex '*'"),
        ("/api/tasks?state=FAILED", "unknown state 'FAILED'; use one of PENDING"),
    ]:
        status, body = api_get(cluster.url, query)
        assert status == 400, query
        assert body["error"].startswith(message) and "\n" not in body["error"]


def test_workers_with_and_without_stats(cluster: Cluster):
    _, body = api_get(cluster.url, "/api/workers")
    (worker,) = body["workers"]
    assert worker["hostname"] == cluster.worker.name
    assert worker["state"] == "ONLINE"
    assert worker["active"] >= 0 and worker["processed"] >= 0
    assert worker["heartbeat_age"] < 10 and worker["last_heartbeat"] > 0
    assert len(worker["loadavg"]) == 3 and worker["sw_ver"].startswith("5.")
    assert "pid" not in worker
    _, body = api_get(cluster.url, "/api/workers?stats=true")
    (full,) = body["workers"]
    assert full["sw_ident"] == "py-celery" and full["pid"] and full["freq"] == 2.0
    name = cluster.worker.name.split("@")[0]
    assert api_get(cluster.url, f"/api/workers?pattern={name.upper()}")[1]["workers"]
    assert api_get(cluster.url, f"/api/workers?pattern={name}&negate=1")[1]["workers"] == []


def test_stats_and_seen_tasks(cluster: Cluster):
    def sampled() -> dict | None:  # the rate needs two samples, taken a second apart
        stats = api_get(cluster.url, "/api/stats")[1]
        return stats if stats["events_per_second"] is not None else None

    stats = wait_for(sampled, 10, "an event rate")
    # add×4, fail×2, flaky (a retry, then a success), login, spawn and its 2 children,
    # big.
    assert stats["tasks_processed"] == 13
    assert stats["tasks_stored"] == len(cluster.ids)
    assert stats["workers_stored"] == 1
    samples = cluster.exporter.scrape()
    events = sum(select(samples, "clearly_exporter_events_total").values())
    assert 0 < stats["events_processed"] <= events
    assert stats["events_per_second"] is not None and stats["events_per_second"] >= 0
    assert stats["last_event_age"] < 10
    _, seen = api_get(cluster.url, "/api/seen-tasks")
    assert seen == {"tasks": TASK_NAMES}
