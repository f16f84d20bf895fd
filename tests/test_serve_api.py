"""`latte serve` HTTP contract without a worker (jobs stay queued): fields, status codes, limits, auth, the
job table's recovery after a crash, and the CLI's early errors."""

import json
import socket
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from latte.cli.main import main  # noqa: E402
from latte.cli.serve import listen, parse_age  # noqa: E402
from latte.pipelines import default_model_path  # noqa: E402
from latte.serving.app import MAX_BODY_BYTES, create_app  # noqa: E402
from latte.serving.jobs import MAX_ATTEMPTS, JobStore, Service  # noqa: E402
from latte.serving.params import Limits, ModelInfo  # noqa: E402

JOB_FIELDS = {"id", "object", "model", "status", "progress", "created_at", "completed_at", "params", "error"}


@pytest.fixture(scope="module")
def model():
    return ModelInfo.from_folder(default_model_path())


@pytest.fixture
def service(model, tmp_path):
    service = Service(model, tmp_path / "data", Limits(max_frames=16, max_steps=50, max_pixels=128 * 128),
                      queue_size=4)
    yield service
    service.stop()


@pytest.fixture
def client(service):
    return TestClient(create_app(service))


def submit(client, **body):
    return client.post("/v1/videos", json={"prompt": "a red circle moving left", **body})


def test_create_returns_202_and_a_queued_job_with_every_parameter(client):
    r = submit(client, steps=3, seed=7)
    assert r.status_code == 202
    job = r.json()
    assert set(job) == JOB_FIELDS
    assert job["id"].startswith("video_") and job["object"] == "video" and job["model"] == "latte-shapes"
    assert (job["status"], job["progress"], job["error"], job["completed_at"]) == ("queued", 0, None, None)
    assert abs(job["created_at"] - time.time()) < 60
    # Omitted fields take the shipped model's defaults (model_index.json `_generate_defaults`).
    assert job["params"] == {
        "prompt": "a red circle moving left", "negative_prompt": "", "num_frames": 16, "height": 64, "width": 64,
        "steps": 3, "guidance_scale": 4.0, "seed": 7, "scheduler": "DPMSolverMultistepScheduler",
    }
    assert client.get(f"/v1/videos/{job['id']}").json() == job


def test_a_seed_is_drawn_and_kept_when_none_is_given(client):
    seeds = {submit(client).json()["params"]["seed"] for _ in range(3)}
    assert len(seeds) == 3 and all(isinstance(s, int) for s in seeds)


@pytest.mark.parametrize("body, field, says", [
    ({"prompt": None}, "prompt", "valid string"),
    ({"prompt": "   "}, "prompt", "white space"),
    ({"promt": "typo"}, "promt", "Extra inputs"),
    ({"steps": 51}, "steps", "at most 50 (this server's --max-steps), got 51"),
    ({"steps": 0}, "steps", "greater than or equal to 1"),
    ({"steps": True}, "steps", "valid integer"),
    ({"steps": "5"}, "steps", "valid integer"),
    ({"num_frames": 17}, "num_frames", "--max-frames"),
    ({"height": 60}, "height", "multiple of 8"),
    ({"width": 264}, "width", "--max-pixels"),
    ({"guidance_scale": "high"}, "guidance_scale", "valid number"),
    ({"guidance_scale": 1000}, "guidance_scale", "less than or equal to 100"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"scheduler": "NoSuchScheduler"}, "scheduler", "DDIMScheduler"),
])
def test_invalid_fields_get_422_naming_the_field(client, body, field, says):
    r = submit(client, **body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: ") and says in error["message"]
    assert "\n" not in error["message"]


def test_a_model_default_over_the_limit_is_named_as_such(model, tmp_path):
    service = Service(model, tmp_path / "d", Limits(max_steps=10))
    try:
        r = submit(TestClient(create_app(service)))
        assert r.status_code == 422 and "got 25 (the model's default)" in r.json()["error"]["message"]
    finally:
        service.stop()


def test_a_full_queue_answers_429_with_retry_after(client):
    for _ in range(4):
        assert submit(client).status_code == 202
    r = submit(client)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "queue_full"
    assert len(client.get("/v1/videos").json()["data"]) == 4  # the refused one was not stored


def test_idempotency_key_returns_the_same_job(client):
    first = client.post("/v1/videos", json={"prompt": "a cat", "steps": 2}, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/videos", json={"prompt": "a cat", "steps": 2}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/v1/videos", json={"prompt": "a dog"}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422 and other.json()["error"]["param"] == "Idempotency-Key"
    assert len(client.get("/v1/videos").json()["data"]) == 1


def test_unknown_ids_get_404(client):
    for method, path in [("GET", "/v1/videos/nope"), ("GET", "/v1/videos/nope/content"),
                         ("GET", "/v1/videos/nope/events"), ("POST", "/v1/videos/nope/cancel"),
                         ("DELETE", "/v1/videos/nope")]:
        r = client.request(method, path)
        assert r.status_code == 404 and "nope" in r.json()["error"]["message"], path


def test_content_is_409_until_completed(client):
    job = submit(client).json()
    r = client.get(f"/v1/videos/{job['id']}/content")
    assert r.status_code == 409 and "queued" in r.json()["error"]["message"]
    assert client.get(f"/v1/videos/{job['id']}/content?variant=webm").status_code == 422


def test_cancel_a_queued_job_and_delete_it(client, service):
    job = submit(client).json()
    r = client.post(f"/v1/videos/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["completed_at"] is not None
    assert client.post(f"/v1/videos/{job['id']}/cancel").json()["status"] == "cancelled"  # idempotent
    events = client.get(f"/v1/videos/{job['id']}/events").text
    assert events.startswith("event: cancelled\ndata: ") and json.loads(events.split("data: ")[1])["id"] == job["id"]
    r = client.delete(f"/v1/videos/{job['id']}")
    assert r.status_code == 200 and r.json() == {"id": job["id"], "object": "video.deleted", "deleted": True}
    assert client.get(f"/v1/videos/{job['id']}").status_code == 404
    assert service.store.queued_ids() == []


def test_finished_jobs_cannot_be_cancelled(client, service):
    job = submit(client).json()
    service.store.move(job["id"], ("queued",), "completed", finished_at=time.time())
    r = client.post(f"/v1/videos/{job['id']}/cancel")
    assert r.status_code == 409 and "completed" in r.json()["error"]["message"]


def test_list_is_newest_first_with_cursor_pagination(model, tmp_path):
    service = Service(model, tmp_path / "d", queue_size=10)
    try:
        client = TestClient(create_app(service))
        ids = [submit(client).json()["id"] for _ in range(5)]
        first = client.get("/v1/videos?limit=2").json()
        assert first["object"] == "list" and first["has_more"] is True
        assert [j["id"] for j in first["data"]] == ids[::-1][:2]
        rest = client.get(f"/v1/videos?limit=10&after={first['data'][-1]['id']}").json()
        assert [j["id"] for j in rest["data"]] == ids[::-1][2:] and rest["has_more"] is False
        assert client.get("/v1/videos?limit=0").status_code == 422
        assert client.get("/v1/videos?after=video_unknown").json()["error"]["param"] == "after"
    finally:
        service.stop()


def test_models_lists_the_served_model_with_defaults_and_limits(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and len(body["data"]) == 1
    m = body["data"][0]
    assert m["id"] == "latte-shapes" and m["object"] == "model" and m["size_multiple"] == 8
    assert m["defaults"]["steps"] == 25 and m["limits"] == {"max_frames": 16, "max_steps": 50, "max_pixels": 16384}
    assert "DDIMScheduler" in m["schedulers"]


def test_api_key_guards_every_route_but_healthz(service):
    client = TestClient(create_app(service, api_key="s3cret"))
    for method, path in [("GET", "/"), ("GET", "/v1/models"), ("GET", "/v1/videos"), ("POST", "/v1/videos"),
                         ("GET", "/v1/videos/x"), ("GET", "/v1/videos/x/events"), ("GET", "/v1/videos/x/content"),
                         ("POST", "/v1/videos/x/cancel"), ("DELETE", "/v1/videos/x")]:
        r = client.request(method, path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer", path
        assert client.request(method, path).status_code == 401, path
    assert client.get("/healthz").status_code != 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/v1/models?access_token=s3cret").status_code == 200  # for <video src> and EventSource
    assert client.get("/?access_token=s3cret").status_code == 200


def test_request_bodies_are_size_limited(client):
    r = client.post("/v1/videos", content=b'{"prompt": "' + b"a" * MAX_BODY_BYTES + b'"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunked():  # no Content-Length: counted while read
        yield b'{"prompt": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"a" * 1024
        yield b'"}'

    r = client.post("/v1/videos", content=chunked(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_healthz_reports_a_missing_worker(client):
    assert client.get("/healthz").status_code == 503  # this service's worker was never started


def test_the_page_ships_its_own_script_and_nothing_external(client):
    html = client.get("/").text
    assert "new EventSource(" in html and "fetch(" in html and "<video" in html
    assert "/*SCRIPT*/" not in html and "/*STYLE*/" not in html
    assert "http://" not in html and "https://" not in html and " src=" not in html.split("<script>")[0]


def test_prompts_never_name_files(client, service):
    job = submit(client, prompt="../../etc/passwd").json()
    assert service.video_path(job["id"]).name == f"{job['id']}.mp4"
    assert service.video_path(job["id"], "gif").parent == service.videos


def test_recovery_requeues_running_jobs_and_fails_them_after_max_attempts(model, tmp_path):
    data = tmp_path / "d"
    service = Service(model, data, queue_size=10)
    client = TestClient(create_app(service))
    ids = [submit(client).json()["id"] for _ in range(3)]
    for job_id in ids[:2]:
        assert service.store.start(job_id)  # as if the worker had started them
    with service.store._lock:  # the second one has crashed the server MAX_ATTEMPTS times already
        service.store._db.execute("UPDATE jobs SET attempts = ? WHERE id = ?", (MAX_ATTEMPTS, ids[1]))
    service.stop()  # stands in for a SIGKILL: rows are committed as they change, nothing is written at exit

    restarted = Service(model, data, queue_size=10)
    try:
        jobs = {j["id"]: j for j in restarted.list(10, None)[0]}
        assert set(jobs) == set(ids)
        assert jobs[ids[0]]["status"] == "queued" and jobs[ids[2]]["status"] == "queued"
        assert jobs[ids[1]]["status"] == "failed"
        assert jobs[ids[1]]["error"] == {"code": "server_restarted", "message":
                                         f"the server stopped while running this job {MAX_ATTEMPTS} times; "
                                         "not retried"}
        assert restarted.store.queued_ids() == [ids[0], ids[2]]  # submission order kept
    finally:
        restarted.stop()


def test_keep_deletes_finished_jobs_and_files_after_the_age(model, tmp_path):
    service = Service(model, tmp_path / "d", keep_s=3600)
    try:
        client = TestClient(create_app(service))
        old, new = submit(client).json()["id"], submit(client).json()["id"]
        service.store.move(old, ("queued",), "completed", finished_at=time.time() - 7200)
        service.store.move(new, ("queued",), "completed", finished_at=time.time())
        service.video_path(old).write_bytes(b"x")
        service._purge()
        assert service.get(old) is None and not service.video_path(old).exists()
        assert service.get(new) is not None
    finally:
        service.stop()


def test_one_data_folder_serves_one_process(model, service):
    with pytest.raises(OSError, match="in use by another latte serve"):
        Service(model, service.data_dir)


def test_job_store_survives_reopening(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.add("video_a", {"prompt": "x"}, {"prompt": "x"}, None, 10)
    store.close()
    assert JobStore(tmp_path / "jobs.sqlite3").get("video_a")["status"] == "queued"


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800)])
def test_keep_ages(text, seconds):
    assert parse_age(text) == seconds


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["serve", "--keep", "soon", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("latte serve: error: --keep must be a positive age such as 90s, "
                                               "30m, 12h or 7d, got 'soon'")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"latte serve: error: cannot listen on 127.0.0.1:{port}: ") and "\n" not in err


def test_the_listening_socket_lets_asyncio_turn_nagle_off():
    # asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets; without it every response waits ~40 ms for an ACK.
    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
