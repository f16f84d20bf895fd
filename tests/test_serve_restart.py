"""`latte serve` killed with SIGKILL mid-job and restarted on the same --data-dir: every accepted job is
still there, the finished one with its video, the interrupted and queued ones run again."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from latte.serving.jobs import JobStore  # noqa: E402
from serve_support import video_shape, wait_until  # noqa: E402

SRC = Path(__file__).resolve().parent.parent / "src"
TINY = {"num_frames": 1, "height": 16, "width": 16, "steps": 1}
LONG = {"num_frames": 4, "height": 64, "width": 64, "steps": 40}  # a second or two: long enough to kill


def start_server(data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("LATTE_API_KEY", None)
    with open(log, "w") as out:  # a file, not a pipe: nobody has to drain it
        proc = subprocess.Popen([sys.executable, "-m", "latte", "serve", "--port", "0", "--data-dir", str(data_dir)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)

    def url():
        if proc.poll() is not None:
            raise AssertionError(f"latte serve exited with {proc.returncode}:\n{log.read_text()}")
        match = re.search(r"latte serve: (http://127\.0\.0\.1:\d+)/", log.read_text())
        return match and match.group(1)

    return proc, wait_until(url, timeout=180, every=0.2, what="latte serve to print its URL")


def test_sigkill_mid_job_then_restart_loses_nothing(tmp_path):
    data = tmp_path / "data"
    proc, url = start_server(data, tmp_path / "first.log")
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            done = c.post("/v1/videos", json={"prompt": "a red circle", **TINY}).json()["id"]
            wait_until(lambda: c.get(f"/v1/videos/{done}").json()["status"] == "completed", what="the first job")
            video_before = c.get(f"/v1/videos/{done}/content").content
            running = c.post("/v1/videos", json={"prompt": "a blue square", **LONG}).json()["id"]
            queued = [c.post("/v1/videos", json={"prompt": f"shape {i}", **TINY}).json()["id"] for i in range(3)]
            wait_until(lambda: c.get(f"/v1/videos/{running}").json()["progress"] > 0, what="the long job to run")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc, url = start_server(data, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            listed = {j["id"]: j for j in c.get("/v1/videos").json()["data"]}
            assert set(listed) == {done, running, *queued}
            assert listed[done]["status"] == "completed"
            assert c.get(f"/v1/videos/{done}/content").content == video_before
            for job_id in (running, *queued):
                assert listed[job_id]["status"] in ("queued", "in_progress")
                wait_until(lambda j=job_id: c.get(f"/v1/videos/{j}").json()["status"] == "completed",
                           what=f"job {job_id} after the restart")
            assert video_shape(c.get(f"/v1/videos/{running}/content").content) == (4, 64, 64)
            for job_id in queued:
                assert video_shape(c.get(f"/v1/videos/{job_id}/content").content) == (1, 16, 16)
            # A clean stop (SIGTERM) mid-job queues that job again without counting it as a run.
            last = c.post("/v1/videos", json={"prompt": "a green triangle", **LONG}).json()["id"]
            wait_until(lambda: c.get(f"/v1/videos/{last}").json()["progress"] > 0, what="the last job to run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM  # shut down, then ended by the signal as usual
        log = (tmp_path / "second.log").read_text()
        assert "were running when the server stopped; queued again" in log and "Finished server process" in log
        store = JobStore(data / "jobs.sqlite3")
        row = store.get(last)
        assert (row["status"], row["progress"], row["attempts"]) == ("queued", 0, 0)
        assert store.get(running)["attempts"] == 2  # the killed run and the rerun
        store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
