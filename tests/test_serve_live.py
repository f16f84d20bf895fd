"""`latte serve` with its worker and the shipped model, over a real loopback socket: real progress over the
event stream, videos, cancel of a running job, failures, the web page in a headless Chromium, and a load test."""

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from latte.cli.serve import listen  # noqa: E402
from latte.pipelines import default_model_path  # noqa: E402
from latte.serving.app import create_app  # noqa: E402
from latte.serving.jobs import TERMINAL, Service  # noqa: E402
from latte.serving.params import ModelInfo  # noqa: E402
from serve_support import video_shape, wait_until  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TINY = {"num_frames": 2, "height": 32, "width": 32, "steps": 2}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    service = Service(ModelInfo.from_folder(default_model_path()), tmp_path_factory.mktemp("serve"), queue_size=16)
    service.start()
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_config=None, access_log=False,
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="the server to start")
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with httpx.Client(base_url=url, timeout=60) as client:
        yield SimpleNamespace(url=url, service=service, client=client)
    server.should_exit = True
    thread.join(10)
    service.stop()


def submit(client, **body) -> dict:
    r = client.post("/v1/videos", json={"prompt": "a red circle moving left", **body})
    assert r.status_code == 202, r.text
    return r.json()


def events(client, job_id: str) -> list[tuple[str, dict]]:
    """The whole event stream of a job, read until the server ends it."""
    found, kind = [], None
    with client.stream("GET", f"/v1/videos/{job_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                found.append((kind, json.loads(line[6:])))
    return found


def finished(client, job_id: str) -> dict:
    return wait_until(lambda: (j := client.get(f"/v1/videos/{job_id}").json())["status"] in TERMINAL and j,
                      what=f"job {job_id} to finish")


def test_healthz(live):
    assert live.client.get("/healthz").json() == {"status": "ok"}


def test_a_job_streams_real_progress_then_its_videos(live):
    job = submit(live.client, num_frames=3, height=32, width=48, steps=5, seed=1)
    stream = events(live.client, job["id"])
    kinds = [k for k, _ in stream]
    assert kinds[-1] == "completed" and set(kinds[:-1]) == {"progress"}
    running = [j["progress"] for k, j in stream if k == "progress" and j["status"] == "in_progress"]
    assert running == sorted(running) and all(0 <= p < 100 for p in running)
    assert {20, 40, 60, 80} <= set(running)  # one event per denoising step of 5: real steps, not a timer
    final = stream[-1][1]
    assert final["status"] == "completed" and final["progress"] == 100 and final["completed_at"] is not None

    mp4 = live.client.get(f"/v1/videos/{job['id']}/content")
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    assert video_shape(mp4.content) == (3, 32, 48)
    gif = live.client.get(f"/v1/videos/{job['id']}/content?variant=gif")
    assert gif.headers["content-type"] == "image/gif" and video_shape(gif.content) == (3, 32, 48)
    part = live.client.get(f"/v1/videos/{job['id']}/content", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100  # seeking in <video>


def test_the_same_seed_gives_the_same_video(live):
    a, b = (submit(live.client, **TINY, seed=5)["id"] for _ in range(2))
    for job_id in (a, b):
        assert finished(live.client, job_id)["status"] == "completed"
    assert live.client.get(f"/v1/videos/{a}/content").content == live.client.get(f"/v1/videos/{b}/content").content


def test_cancel_stops_a_running_job_at_the_next_step(live):
    job = submit(live.client, num_frames=4, height=64, width=64, steps=100)
    wait_until(lambda: live.client.get(f"/v1/videos/{job['id']}").json()["progress"] > 0, what="progress")
    r = live.client.post(f"/v1/videos/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    wait_until(lambda: live.service._running is None, what="the worker to let go of the job")
    final = live.client.get(f"/v1/videos/{job['id']}").json()
    assert final["status"] == "cancelled" and final["progress"] < 99
    assert live.client.get(f"/v1/videos/{job['id']}/content").status_code == 409
    assert not live.service.video_path(job["id"]).exists()
    assert finished(live.client, submit(live.client, **TINY)["id"])["status"] == "completed"  # worker goes on


def test_deleting_a_running_job_stops_it_and_leaves_nothing(live):
    job = submit(live.client, num_frames=4, height=64, width=64, steps=100)
    wait_until(lambda: live.client.get(f"/v1/videos/{job['id']}").json()["progress"] > 0, what="progress")
    assert live.client.delete(f"/v1/videos/{job['id']}").json()["deleted"] is True
    wait_until(lambda: live.service._running is None, what="the worker to let go of the job")
    assert live.client.get(f"/v1/videos/{job['id']}").status_code == 404
    assert not any(live.service.videos.glob(f"{job['id']}*"))


def test_a_failing_job_is_failed_with_its_reason_and_the_worker_goes_on(live, monkeypatch):
    import latte.pipelines.export

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(latte.pipelines.export, "export_video", broken)
    job = finished(live.client, submit(live.client, **TINY)["id"])
    assert job["status"] == "failed"
    assert job["error"] == {"code": "generation_failed", "message": "OSError: No space left on device"}
    assert events(live.client, job["id"])[-1][0] == "failed"
    monkeypatch.undo()
    assert finished(live.client, submit(live.client, **TINY)["id"])["status"] == "completed"


def test_the_page_makes_a_video_in_a_headless_browser(live, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"no system Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    prompt = "a blue square moving right"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            # Record every value the progress bars take (the page sets them from the event stream).
            page.add_init_script("""
                window.progressSeen = [];
                new MutationObserver((changes) => { for (const c of changes) {
                    if (c.target.tagName === 'PROGRESS') window.progressSeen.push(Number(c.target.value)); }
                }).observe(document, {subtree: true, attributes: true, attributeFilter: ['value']});
            """)
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(live.url)
            page.wait_for_function("document.querySelector('select[name=scheduler]').options.length > 0")
            page.fill("#prompt", prompt)
            page.click("summary")
            page.fill("input[name=num_frames]", "8")
            page.fill("input[name=steps]", "12")
            page.fill("input[name=seed]", "3")
            page.click("#submit")
            card = page.locator(".job", has_text=prompt).first
            card.locator("video[src]").wait_for(timeout=90_000)
            playable = """(video) => new Promise((done) => {
                const check = () => video.readyState >= 2 && video.duration > 0 && !video.error;
                if (check()) return done(true);
                video.addEventListener('loadeddata', () => done(check()));
                video.addEventListener('error', () => done(false));
            })"""
            assert card.locator("video").evaluate(playable) and card.locator("video").is_visible()
            seen = page.evaluate("window.progressSeen")
            assert any(0 < v < 100 for v in seen) and seen[-1] == 100, seen
            assert card.locator(".status").inner_text() == "completed"
            assert card.locator("a.download").get_attribute("href").endswith("/content?variant=video")
            assert card.locator("button.cancel").is_hidden()
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
            assert (tmp_path / "serve.png").stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()


def test_load_50_jobs_from_10_clients_none_lost_or_duplicated(live):
    accepted, cancelled, lock = [], set(), threading.Lock()
    retries = [0]

    def client_run(k: int) -> None:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            for i in range(5):
                body = {"prompt": f"a shape {k} {i}", "num_frames": 1 + i % 2, "height": 16, "width": 16 + 16 * (k % 2),
                        "steps": 1 + k % 2, "seed": 10 * k + i}
                while (r := c.post("/v1/videos", json=body)).status_code == 429:
                    with lock:
                        retries[0] += 1
                    time.sleep(float(r.headers["Retry-After"]))
                assert r.status_code == 202, r.text
                job_id = r.json()["id"]
                with lock:
                    accepted.append((job_id, body))
                if (k + i) % 5 == 0:  # cancel a fifth of them, queued or running or already done
                    r = c.post(f"/v1/videos/{job_id}/cancel")
                    assert r.status_code in (200, 409), r.text
                    if r.status_code == 200:
                        with lock:
                            cancelled.add(job_id)

    start = time.monotonic()
    threads = [threading.Thread(target=client_run, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 50 and len({job_id for job_id, _ in accepted}) == 50
    for job_id, _ in accepted:
        finished(live.client, job_id)
    elapsed = time.monotonic() - start

    listed, after = [], None
    while True:
        page = live.client.get("/v1/videos", params={"limit": 100, **({"after": after} if after else {})}).json()
        listed += page["data"]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    ids = [j["id"] for j in listed]
    assert len(ids) == len(set(ids))  # nothing listed twice
    jobs = {j["id"]: j for j in listed}
    assert {job_id for job_id, _ in accepted} <= set(jobs)  # nothing lost
    assert cancelled, "no cancel reached a job in time; the test did not exercise cancelling"
    for job_id, body in accepted:
        job = jobs[job_id]
        assert job["status"] == ("cancelled" if job_id in cancelled else "completed"), job
        if job["status"] == "completed":
            content = live.client.get(f"/v1/videos/{job_id}/content").content
            assert video_shape(content) == (body["num_frames"], body["height"], body["width"])
    print(f"load: 50 jobs, {len(cancelled)} cancelled, {retries[0]} retries after 429, "
          f"{elapsed:.1f} s, {50 / elapsed * 60:.0f} jobs/min")
