"""The job table (SQLite under the data folder) and the one worker thread that owns the pipeline.

Every accepted job is a row before the client hears of it, and every state change is committed before it is
announced, so a server killed at any moment restarts with every job it accepted: finished ones with their
videos, the running and queued ones queued again (a job that was running when the server died
`MAX_ATTEMPTS` times is marked failed instead, so one job cannot crash the server forever).

Concurrent calls on one diffusers-style pipeline corrupt the scheduler's state, so only the worker thread
touches the pipeline; the HTTP side reads and writes rows and wakes the worker.
"""

import asyncio
import collections
import contextlib
import fcntl
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from latte.serving.params import Limits, ModelInfo, VideoRequest, resolve_params

logger = logging.getLogger(__name__)

ACTIVE = ("queued", "in_progress")
TERMINAL = ("completed", "failed", "cancelled")
MAX_ATTEMPTS = 3  # runs of one job cut short by the server dying before it is failed instead of rerun
PURGE_EVERY_S = 60.0  # how often expired results are looked for (only with --keep)
VARIANTS = {"video": ".mp4", "gif": ".gif"}  # ?variant= of the content route -> file suffix

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: the queue and the list follow it
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    params TEXT NOT NULL,                   -- JSON, every field filled in
    request TEXT NOT NULL,                  -- JSON of the fields as sent, to check Idempotency-Key reuse
    idempotency_key TEXT UNIQUE,
    created_at REAL NOT NULL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,    -- runs started
    error_code TEXT,
    error_message TEXT
)
"""


class QueueFull(Exception):
    """The bounded queue holds `queue_size` jobs already (HTTP 429)."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class NotCancellable(Exception):
    """The job finished already (HTTP 409)."""


class IdempotencyMismatch(ValueError):
    """An Idempotency-Key reused for a different request (HTTP 422)."""


class JobStore:
    """The job table. One connection guarded by a lock: the worker and the HTTP threads share it."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        # WAL: a commit survives the process being killed; readers do not wait for the writer.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._db.row_factory = sqlite3.Row

    def _one(self, sql: str, args=()) -> dict | None:
        row = self._db.execute(sql, args).fetchone()
        return dict(row) if row else None

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def add(self, job_id: str, params: dict, request: dict, key: str | None, max_queued: int) -> tuple[dict, bool]:
        """Insert a queued job; returns (row, True), or (the row with this idempotency key, False)."""
        with self._lock:
            if key is not None and (old := self._one("SELECT * FROM jobs WHERE idempotency_key = ?", (key,))):
                return old, False
            queued = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
            if queued >= max_queued:
                raise QueueFull(0)  # the service re-raises it with its Retry-After estimate
            self._db.execute(
                "INSERT INTO jobs (id, status, params, request, idempotency_key, created_at) "
                "VALUES (?, 'queued', ?, ?, ?, ?)",
                (job_id, json.dumps(params), json.dumps(request, sort_keys=True), key, time.time()),
            )
            return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,)), True

    def page(self, limit: int, after: str | None) -> tuple[list[dict], bool]:
        """Up to `limit` jobs, newest first, older than job `after` when given; and whether more follow."""
        with self._lock:
            cursor = [] if after is None else [self._one("SELECT seq FROM jobs WHERE id = ?", (after,))]
            if cursor and cursor[0] is None:
                raise KeyError(after)
            where = "WHERE seq < ?" if cursor else ""
            args = [c["seq"] for c in cursor] + [limit + 1]
            rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ?", args).fetchall()
        return [dict(r) for r in rows[:limit]], len(rows) > limit

    def move(self, job_id: str, from_status: tuple[str, ...], to_status: str, **fields) -> bool:
        """Set `status` (and `fields`) only if the job is in one of `from_status`; True if it was."""
        sets = ", ".join(["status = ?"] + [f"{name} = ?" for name in fields])
        marks = ", ".join("?" * len(from_status))
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND status IN ({marks})",
                (to_status, *fields.values(), job_id, *from_status),
            )
            return cur.rowcount == 1

    def start(self, job_id: str) -> bool:
        """queued -> in_progress, counting the run (before it happens, so a crash during it counts)."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = 'in_progress', attempts = attempts + 1 WHERE id = ? AND status = 'queued'",
                (job_id,),
            )
            return cur.rowcount == 1

    def requeue(self, job_id: str) -> None:
        """in_progress -> queued after a clean stop, which does not count as a run."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = 'queued', progress = 0, attempts = attempts - 1 "
                "WHERE id = ? AND status = 'in_progress'",
                (job_id,),
            )

    def set_progress(self, job_id: str, progress: int) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET progress = ? WHERE id = ?", (progress, job_id))

    def delete(self, job_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1

    def queued_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq")]

    def recover(self) -> None:
        """After a restart: jobs left `in_progress` by a dead server are queued again, or failed after
        `MAX_ATTEMPTS` runs."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error_code = 'server_restarted', "
                "error_message = ? WHERE status = 'in_progress' AND attempts >= ?",
                (time.time(), f"the server stopped while running this job {MAX_ATTEMPTS} times; not retried",
                 MAX_ATTEMPTS),
            )
            n = self._db.execute(
                "UPDATE jobs SET status = 'queued', progress = 0 WHERE status = 'in_progress'"
            ).rowcount
        if n:
            logger.info("%d job(s) were running when the server stopped; queued again", n)

    def finished_before(self, when: float) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ?",
                (when,),
            )
            return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Listener:
    """An asyncio event set (from any thread) whenever any job changes; SSE streams wait on it."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


class Service:
    """The queue, the job table and the worker: what the HTTP routes call. The worker thread is the only
    code that touches the pipeline."""

    def __init__(self, model: ModelInfo, data_dir: Path, limits: Limits | None = None, queue_size: int = 16,
                 device: str | None = None, keep_s: float | None = None):
        if queue_size < 1:
            raise ValueError(f"--queue-size must be >= 1, got {queue_size}")
        if keep_s is not None and keep_s <= 0:
            raise ValueError(f"--keep must be a positive age, got {keep_s} s")
        self.model, self.limits, self.queue_size, self.keep_s = model, limits or Limits(), queue_size, keep_s
        self.device = device
        self.data_dir = Path(data_dir)
        self.videos = self.data_dir / "videos"
        self.videos.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_folder(self.data_dir)
        self.store = JobStore(self.data_dir / "jobs.sqlite3")
        self.store.recover()
        self._queue = collections.deque(self.store.queued_ids())
        self._wake = threading.Condition()
        self._listeners: set[Listener] = set()
        self._running: str | None = None  # the job the worker is on
        self._cancel_running = False
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pipe = None
        self._seconds_per_job = 1.0  # a running estimate for Retry-After, updated as jobs complete

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load the pipeline (errors surface here, before the server listens) and start the worker."""
        import torch

        from latte.pipelines import LattePipeline

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._pipe = LattePipeline.from_pretrained(self.model.path).to(device)
        self._pipe.set_progress_bar_config(disable=True)
        self._base_scheduler = self._pipe.scheduler
        self.device = device
        self._thread = threading.Thread(target=self._work, name="latte-serve-worker", daemon=True)
        self._thread.start()
        logger.info("worker ready on %s; %d job(s) queued", device, len(self._queue))

    def stop(self) -> None:
        """Stop the worker; a job it was running goes back to the queue for the next start."""
        if self._closed:
            return
        self._closed = True
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._notify()
        self.store.close()
        self._lock_file.close()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def worker_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ what the routes call
    def submit(self, request: VideoRequest, idempotency_key: str | None = None) -> tuple[dict, bool]:
        """Queue a job; returns (job, created). Raises InvalidParam, QueueFull, IdempotencyMismatch."""
        params = resolve_params(request, self.model, self.limits)
        sent = request.model_dump(exclude_unset=True)
        try:
            row, created = self.store.add(_new_id(), params, sent, idempotency_key, self.queue_size)
        except QueueFull:
            raise QueueFull(self._retry_after()) from None
        if not created and json.loads(row["request"]) != json.loads(json.dumps(sent, sort_keys=True)):
            raise IdempotencyMismatch("this Idempotency-Key was used for a request with other fields")
        if created:
            with self._wake:
                self._queue.append(row["id"])
                self._wake.notify_all()
            self._notify()
        return self.job(row), created

    def get(self, job_id: str) -> dict | None:
        row = self.store.get(job_id)
        return None if row is None else self.job(row)

    def list(self, limit: int, after: str | None) -> tuple[list[dict], bool]:
        rows, has_more = self.store.page(limit, after)
        return [self.job(r) for r in rows], has_more

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a queued job, or stop a running one at its next denoising step (no video is kept)."""
        row = self.store.get(job_id)
        if row is None:
            return None
        if row["status"] in ("completed", "failed"):
            raise NotCancellable(f"job {job_id} is {row['status']}; only queued or in_progress jobs can be "
                                 "cancelled")
        with self._wake:  # with the worker's lock, so it cannot start this job between the two lines
            if self.store.move(job_id, ACTIVE, "cancelled", finished_at=time.time()) and self._running == job_id:
                self._cancel_running = True
        self._notify()
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Forget a job and its files (a running job is cancelled first)."""
        if self.store.get(job_id) is None:
            return False
        with contextlib.suppress(NotCancellable):  # a finished job is simply deleted
            self.cancel(job_id)
        deleted = self.store.delete(job_id)
        self._remove_files(job_id)
        self._notify()
        return deleted

    def video_path(self, job_id: str, variant: str = "video") -> Path:
        return self.videos / f"{job_id}{VARIANTS[variant]}"  # ids only: prompts never name files

    def job(self, row: dict) -> dict:
        """The API's job object."""
        error = None
        if row["status"] == "failed":
            error = {"code": row["error_code"], "message": row["error_message"]}
        return {
            "id": row["id"],
            "object": "video",
            "model": self.model.name,
            "status": row["status"],
            "progress": 100 if row["status"] == "completed" else row["progress"],
            "created_at": int(row["created_at"]),
            "completed_at": None if row["finished_at"] is None else int(row["finished_at"]),
            "params": json.loads(row["params"]),
            "error": error,
        }

    def listen(self) -> Listener:
        listener = Listener()
        self._listeners.add(listener)
        return listener

    def unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    # ------------------------------------------------------------------ the worker
    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener.wake()
            except RuntimeError:  # its event loop has closed (the server stopped mid-stream)
                self._listeners.discard(listener)

    def _retry_after(self) -> int:
        """Seconds until a queue slot is likely free: one job's running time, at least 1."""
        return max(1, round(self._seconds_per_job))

    def _work(self) -> None:
        last_purge = 0.0
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    if self.keep_s is not None and time.monotonic() - last_purge > PURGE_EVERY_S:
                        break
                    self._wake.wait(timeout=PURGE_EVERY_S)
                if self._stopping:
                    return
                job_id = self._queue.popleft() if self._queue else None
                # queued -> in_progress under the lock that cancel() takes: a cancel sees one or the other.
                started = job_id is not None and self.store.start(job_id)
                if started:
                    self._running, self._cancel_running = job_id, False
            if self.keep_s is not None and time.monotonic() - last_purge > PURGE_EVERY_S:
                self._purge()
                last_purge = time.monotonic()
            if started:
                self._attempt(job_id)

    def _attempt(self, job_id: str) -> None:
        self._notify()
        start = time.monotonic()
        try:
            outcome = self._generate(job_id)
        except Exception as err:  # one job's failure must not stop the server
            logger.warning("job %s failed: %s: %s", job_id, type(err).__name__, _first_line(err))
            outcome = "failed"
            self.store.move(job_id, ("in_progress",), "failed", finished_at=time.time(),
                            error_code="generation_failed", error_message=f"{type(err).__name__}: {_first_line(err)}")
        finally:
            with self._wake:
                self._running = None
        if outcome == "completed":
            self._seconds_per_job = 0.7 * self._seconds_per_job + 0.3 * (time.monotonic() - start)
        logger.info("job %s %s in %.1f s", job_id, outcome, time.monotonic() - start)
        self._notify()

    def _generate(self, job_id: str) -> str:
        import torch

        from latte.pipelines.export import export_video
        from latte.pipelines.schedulers import make_scheduler

        params = json.loads(self.store.get(job_id)["params"])
        pipe = self._pipe
        if params["scheduler"] == type(self._base_scheduler).__name__:
            pipe.scheduler = self._base_scheduler
        else:
            pipe.scheduler = make_scheduler(params["scheduler"], self._base_scheduler.config)

        def on_step(pipe, step_index, timestep, tensors):
            # Real progress: denoising steps done; 100 only once the video is written.
            self.store.set_progress(job_id, min(99, 100 * (step_index + 1) // max(1, pipe.num_timesteps)))
            self._notify()
            if self._cancel_running or self._stopping:
                pipe._interrupt = True  # the pipeline skips the remaining steps
            return {}

        frames = pipe(
            params["prompt"], negative_prompt=params["negative_prompt"], num_inference_steps=params["steps"],
            guidance_scale=params["guidance_scale"], video_length=params["num_frames"], height=params["height"],
            width=params["width"], generator=torch.Generator(self.device).manual_seed(params["seed"]),
            output_type="np", callback_on_step_end=on_step,
        ).frames[0]
        if self._cancel_running:
            return "cancelled"  # the row says so already; no video is written
        if self._stopping:
            self.store.requeue(job_id)
            return "queued again (server stopping)"
        fps = self.model.defaults["fps"]
        for variant in VARIANTS:
            export_video(frames, self.video_path(job_id, variant), fps=fps)
        if not self.store.move(job_id, ("in_progress",), "completed", progress=100, finished_at=time.time()):
            self._remove_files(job_id)  # cancelled or deleted while the files were written
            return "cancelled"
        return "completed"

    def _purge(self) -> None:
        """Delete finished jobs older than --keep, with their files."""
        for job_id in self.store.finished_before(time.time() - self.keep_s):
            self.store.delete(job_id)
            self._remove_files(job_id)
            logger.info("job %s expired (--keep)", job_id)

    def _remove_files(self, job_id: str) -> None:
        for variant in VARIANTS:
            self.video_path(job_id, variant).unlink(missing_ok=True)


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [""])[0]


def _new_id() -> str:
    return f"video_{secrets.token_hex(12)}"


def _lock_folder(data_dir: Path):
    """Hold an exclusive lock on the data folder for this process's life (the kernel drops it if the
    process dies), so two servers never share one job table."""
    handle = open(data_dir / "serve.lock", "a+")  # noqa: SIM115 - held open until stop()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OSError(f"data folder {data_dir} is in use by another latte serve; stop it or pass another "
                      "--data-dir") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
