"""`latte serve`: a video-generation service (web page + HTTP job API) over one loaded pipeline."""

import ipaddress
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

API_KEY_ENV = "LATTE_API_KEY"
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "latte" / "serve"


def parse_age(text: str) -> float:
    """'90s', '30m', '12h', '7d' (or plain seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--keep must be a positive age such as 90s, 30m, 12h or 7d, got {text!r}")
    return float(match.group(1)) * AGE_UNITS[match.group(2) or "s"]


@dataclass
class ServeOptions:
    model: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    queue_size: int = 16
    data_dir: Path | None = None
    api_key: str | None = None
    keep: str | None = None
    max_frames: int = 16
    max_steps: int = 100
    max_pixels: int = 512 * 512
    device: str | None = None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a web page and HTTP job API for text-to-video",
        description="Serve text-to-video over HTTP: a web page at / and an OpenAI-style job API at /v1/videos "
        "(queue, real progress, event streams, cancel), one pipeline and one worker; jobs and videos persist "
        "in --data-dir across restarts. API: docs/serving.md.",
    )
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 for every interface, then set --api-key)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--queue-size", type=int, default=16,
                   help="jobs that may wait; more are refused with 429 and Retry-After (default 16)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"where the job table and videos live (default {default_data_dir()})")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"require 'Authorization: Bearer KEY' on every route but /healthz (default: ${API_KEY_ENV}, "
                   "else none)")
    p.add_argument("--keep", default=None, metavar="AGE",
                   help="delete finished jobs and their videos this long after they finish, e.g. 7d, 12h "
                   "(default: keep them)")
    p.add_argument("--max-frames", type=int, default=16, help="most frames one job may ask for (default 16)")
    p.add_argument("--max-steps", type=int, default=100, help="most denoising steps of one job (default 100)")
    p.add_argument("--max-pixels", type=int, default=512 * 512,
                   help="most height x width pixels of one job (default 262144 = 512 x 512)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(run=lambda args: run_serve(ServeOptions(**{
        name: getattr(args, name) for name in ServeOptions.__dataclass_fields__})))


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, so that a taken port fails in one line before the model loads."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {port}")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name
    # proto=IPPROTO_TCP: asyncio turns Nagle's algorithm off only on such sockets (else +40 ms per response).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(128)
    return sock


def run_serve(options: ServeOptions) -> int:
    import uvicorn

    from latte.cli.generate import resolve_model
    from latte.serving.app import create_app
    from latte.serving.jobs import Service
    from latte.serving.params import Limits, ModelInfo

    keep_s = None if options.keep is None else parse_age(options.keep)
    limits = Limits(options.max_frames, options.max_steps, options.max_pixels)
    data_dir = options.data_dir or default_data_dir()
    sock = listen(options.host, options.port)
    if not _is_loopback(options.host) and not options.api_key:
        logger.warning("listening on %s without --api-key: anyone who can reach this port can use it",
                       options.host)
    service = Service(ModelInfo.from_folder(resolve_model(options.model)), data_dir, limits,
                      options.queue_size, options.device, keep_s)
    try:
        service.start()
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"latte serve: http://{shown}:{port}/ (model {service.model.name}, data in {data_dir}"
              f"{'; add ?access_token=KEY to the URL' if options.api_key else ''})", flush=True)
        logging.getLogger("uvicorn.access").addFilter(_redact_tokens)
        config = uvicorn.Config(create_app(service, options.api_key, owns_service=True), log_config=None,
                                timeout_graceful_shutdown=2)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        service.stop()
        sock.close()
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _redact_tokens(record: logging.LogRecord) -> bool:
    """Access-log filter: the API key never reaches the log through ?access_token=."""
    if isinstance(record.args, tuple):
        record.args = tuple(re.sub(r"access_token=[^&\s]*", "access_token=***", a) if isinstance(a, str) else a
                            for a in record.args)
    return True
