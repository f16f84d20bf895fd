"""`latte serve` throughput and per-job queueing overhead against calling the pipeline directly.

One process, the shipped model, tiny jobs (so the overhead is not hidden by denoising time):

- direct: `pipe(...)` then the two files the server writes (mp4 + gif), one job after another;
- serve, one at a time: a client submits a job, follows its event stream to `completed`, downloads the mp4;
  the difference to direct is the server's overhead per job (HTTP, SQLite, notifications, the worker hand-off);
- serve, loaded: `--clients` concurrent clients submit `--jobs` jobs, then wait for all: jobs per minute.

    python benchmarks/bench_serve.py --jobs 30 --clients 10
"""

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn
from bench_utils import print_machine

from latte.cli.serve import listen
from latte.pipelines import LattePipeline, default_model_path
from latte.pipelines.export import export_video
from latte.serving.app import create_app
from latte.serving.jobs import Service
from latte.serving.params import ModelInfo


def direct(pipe: LattePipeline, jobs: list[dict], out: Path) -> float:
    """Seconds per job calling the pipeline and writing the files ourselves."""
    fps = ModelInfo.from_folder(default_model_path()).defaults["fps"]
    start = time.perf_counter()
    for i, job in enumerate(jobs):
        frames = pipe(job["prompt"], num_inference_steps=job["steps"], video_length=job["num_frames"],
                      height=job["height"], width=job["width"], guidance_scale=4.0,
                      generator=torch.Generator().manual_seed(job["seed"]), output_type="np").frames[0]
        for suffix in (".mp4", ".gif"):
            export_video(frames, out / f"direct-{i}{suffix}", fps=fps)
    return (time.perf_counter() - start) / len(jobs)


def wait_for(client: httpx.Client, job_id: str) -> None:
    """Follow the job's event stream (no polling, which would take CPU from the worker) to `completed`."""
    with client.stream("GET", f"/v1/videos/{job_id}/events") as r:
        for line in r.iter_lines():
            if line in ("event: completed", "event: failed", "event: cancelled"):
                assert line == "event: completed", line


def one_at_a_time(client: httpx.Client, jobs: list[dict]) -> float:
    start = time.perf_counter()
    for job in jobs:
        job_id = client.post("/v1/videos", json=job).json()["id"]
        wait_for(client, job_id)
        client.get(f"/v1/videos/{job_id}/content").raise_for_status()
    return (time.perf_counter() - start) / len(jobs)


def loaded(url: str, jobs: list[dict], clients: int) -> float:
    """Jobs per minute with `clients` threads submitting (retrying on 429) and the queue kept full."""
    ids, lock = [], threading.Lock()

    def run(share: list[dict]) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            for job in share:
                while (r := c.post("/v1/videos", json=job)).status_code == 429:
                    time.sleep(float(r.headers["Retry-After"]))
                with lock:
                    ids.append(r.json()["id"])

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(jobs[k::clients],)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with httpx.Client(base_url=url, timeout=60) as c:
        for job_id in ids:
            wait_for(c, job_id)
    return len(ids) / (time.perf_counter() - start) * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="direct and served runs alternate this many times")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # The block goes to stderr: stdout stays one JSON document, which holds the same facts under "machine".
    machine = print_machine(torch.get_num_threads(), json_line=False, file=sys.stderr)
    jobs = [{"prompt": f"a red circle moving left {i}", "num_frames": args.frames, "height": args.size,
             "width": args.size, "steps": args.steps, "seed": i} for i in range(args.jobs)]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipe = LattePipeline.from_pretrained(default_model_path())
        pipe.set_progress_bar_config(disable=True)
        service = Service(ModelInfo.from_folder(default_model_path()), tmp / "data", queue_size=16)
        service.start()
        sock = listen("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(create_app(service), log_config=None, access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # Alternate the two so that other load on the machine hits both alike; medians over the rounds.
        direct_runs, serial_runs = [], []
        with httpx.Client(base_url=url, timeout=60) as client:
            direct(pipe, jobs[:3], tmp)  # warm-up
            one_at_a_time(client, jobs[:3])
            for _ in range(args.rounds):
                direct_runs.append(direct(pipe, jobs, tmp))
                serial_runs.append(one_at_a_time(client, jobs))
        per_min = loaded(url, jobs, args.clients)
        server.should_exit = True
        thread.join()
        service.stop()
    direct_s, serial_s = statistics.median(direct_runs), statistics.median(serial_runs)
    overhead_ms = statistics.median(s - d for s, d in zip(serial_runs, direct_runs)) * 1000

    print(json.dumps({
        "machine": machine,
        "job": {k: v for k, v in jobs[0].items() if k not in ("prompt", "seed")},
        "direct_s_per_job": round(direct_s, 4),
        "serve_one_at_a_time_s_per_job": round(serial_s, 4),
        "overhead_ms_per_job": round(overhead_ms, 1),
        "rounds_s_per_job": {"direct": [round(x, 4) for x in direct_runs],
                             "serve": [round(x, 4) for x in serial_runs]},
        "direct_jobs_per_min": round(60 / direct_s, 1),
        "serve_loaded_jobs_per_min": round(per_min, 1),
        "clients": args.clients,
    }, indent=2))


if __name__ == "__main__":
    main()
