"""Helpers shared by the `latte serve` tests."""

import io
import time


def wait_until(predicate, timeout: float = 60.0, every: float = 0.05, what: str = "condition"):
    """Poll `predicate()` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def video_shape(data: bytes) -> tuple[int, int, int]:
    """(frames, height, width) of an mp4 or gif, decoded in full (a truncated file fails)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return len(frames), frames[0].shape[0], frames[0].shape[1]
