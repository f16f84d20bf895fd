"""Video/image folders: real decoding (PyAV), clip sampling, labels, captions, and bad-data handling."""

import logging

import av
import numpy as np
import pytest
import torch
from PIL import Image

from latte.data.cache import LatentCache, build_cache
from latte.data.video import ImageFolder, VideoFolder, clip_indices

CODECS = {".mp4": "libx264", ".avi": "mpeg4", ".webm": "libvpx", ".mkv": "mjpeg"}


def write_video(path, num_frames, size=(24, 32)):
    """Frame i is a flat grey of level 8 * i (so decoded frames reveal their index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.full((*size, 3), 8 * i, dtype=np.uint8) for i in range(num_frames)]
    if path.suffix == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
        return path
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[path.suffix], rate=8)
        stream.width, stream.height = size[1], size[0]
        stream.pix_fmt = "yuvj420p" if path.suffix == ".mkv" else "yuv420p"
        stream.bit_rate = 2_000_000  # near-lossless, so the grey levels survive
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path


def frame_levels(video):
    """Mean grey level (0..255) of each frame of a (3, F, H, W) clip in [-1, 1]."""
    return ((video.mean(dim=(0, 2, 3)) + 1) * 127.5).tolist()


def test_clip_indices_follow_the_paper():
    g = torch.Generator().manual_seed(0)
    idx = clip_indices(100, 16, 3, "stride", g)
    assert len(idx) == 16 and all(b - a == 3 for a, b in zip(idx, idx[1:], strict=False)) and idx[-1] < 100
    idx = clip_indices(100, 16, 3, "linspace", g)  # 16 frames over a 48-frame window
    assert idx[-1] - idx[0] == 47 and idx == sorted(idx)
    assert clip_indices(10, 4, 3, "linspace", g) == [0, 3, 6, 9]  # the window shrinks to the video


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".webm", ".gif", ".mkv"])
def test_decodes_every_container(tmp_path, suffix):
    write_video(tmp_path / "videos" / f"clip{suffix}", 12)
    ds = VideoFolder(tmp_path / "videos", num_frames=4, frame_interval=2, size=16)
    item = ds[0]
    assert item["video"].shape == (3, 4, 16, 16) and item["label"] == -1 and item["caption"] == ""
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    levels = frame_levels(item["video"])
    steps = [b - a for a, b in zip(levels, levels[1:], strict=False)]
    assert all(abs(s - 16) < 3 for s in steps), levels  # every 2nd frame: +16 grey levels each


def test_labels_from_subfolders_and_captions(tmp_path):
    root = tmp_path / "videos"
    write_video(root / "apply_eye_makeup" / "a.mp4", 8)
    write_video(root / "walking" / "b.mp4", 8)
    write_video(root / "walking" / "c.gif", 8)
    ds = VideoFolder(root, num_frames=4, frame_interval=1, size=16, flip=True)
    assert ds.classes == ["apply_eye_makeup", "walking"]
    assert [(p.name, c, lab) for p, c, lab in ds.entries] == [
        ("a.mp4", "apply eye makeup", 0),
        ("b.mp4", "walking", 1),
        ("c.gif", "walking", 1),
    ]

    (root / "captions.jsonl").write_text(
        '{"path": "walking/b.mp4", "caption": "A person walks"}\n\n'
        '{"path": "missing.mp4", "caption": "gone"}\n'
    )
    (root / "captions.csv").write_text('path,caption\napply_eye_makeup/a.mp4,"eyes, close up"\n')
    assert (
        VideoFolder(root, captions=root / "captions.jsonl", num_frames=4, frame_interval=2, size=16)[0][
            "caption"
        ]
        == "A person walks"
    )
    assert (
        VideoFolder(root, captions=root / "captions.csv", num_frames=4, size=16).entries[0][1]
        == "eyes, close up"
    )
    (root / "bad.jsonl").write_text('{"video": "a.mp4"}\n')
    with pytest.raises(ValueError, match="bad.jsonl line 1 needs string fields 'path' and 'caption'"):
        VideoFolder(root, captions=root / "bad.jsonl")


def test_bad_files_are_skipped_with_a_warning(tmp_path, caplog):
    root = tmp_path / "videos"
    write_video(root / "good.mp4", 10)
    write_video(root / "short.mp4", 3)
    (root / "corrupt.mp4").write_bytes(b"\x00\x01not a video at all" * 50)
    truncated = write_video(root / "truncated.webm", 10)
    truncated.write_bytes(truncated.read_bytes()[:200])
    ds = VideoFolder(root, num_frames=4, frame_interval=2, size=16)
    with caplog.at_level(logging.WARNING):
        items = {p.name: ds[i] for i, (p, _, _) in enumerate(ds.entries)}
    assert items["good.mp4"] is not None
    assert items["short.mp4"] is None and items["corrupt.mp4"] is None and items["truncated.webm"] is None
    for name in ("short.mp4", "corrupt.mp4", "truncated.webm"):
        assert any(name in r.getMessage() for r in caplog.records), name
    assert "too short" in caplog.text

    class FakeVAE:  # mean = 2x2-pooled pixels, just enough for the cache writer
        device, dtype = torch.device("cpu"), torch.float32
        config = type("C", (), {"scaling_factor": 1.0})()

        def encode(self, x):
            pooled = torch.nn.functional.avg_pool2d(x, 4)
            dist = type(
                "D",
                (),
                {
                    "mean": pooled[:, :3].repeat(1, 2, 1, 1)[:, :4],
                    "std": torch.full_like(pooled[:, :1], 0.1).repeat(1, 4, 1, 1),
                },
            )()
            return type("O", (), {"latent_dist": dist})()

    folder = build_cache(ds, tmp_path / "cache", FakeVAE(), batch_size=2)
    cache = LatentCache(folder)
    assert len(cache) == 1 and cache[0]["mean"].shape == (4, 4, 4, 4)


def test_empty_or_missing_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no videos here")
    with pytest.raises(ValueError, match="no videos found in .*empty"):
        VideoFolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="video folder not found"):
        VideoFolder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="captions file not found"):
        write_video(tmp_path / "v" / "a.mp4", 4)
        VideoFolder(tmp_path / "v", captions=tmp_path / "v" / "caps.jsonl")


def test_joint_training_stills(tmp_path):
    root, images = tmp_path / "videos", tmp_path / "images"
    for cls in ("jump", "run"):
        write_video(root / cls / "clip.mp4", 8)
        (images / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((20, 30, 3), 100 + 50 * i, np.uint8)).save(images / cls / f"{i}.png")
    (images / "run" / "broken.png").write_bytes(b"not a png")
    ds = VideoFolder(root, num_frames=4, frame_interval=1, size=16, image_root=images, use_image_num=3)
    item = ds[1]
    assert item["images"].shape == (3, 3, 16, 16) and item["image_labels"].shape == (3,)
    assert set(item["image_labels"].tolist()) <= {0, 1}
    stills = ImageFolder(images, 16, classes=["jump", "run"])
    assert [lab for _, _, lab in stills.entries] == [0, 0, 1, 1, 1]
    assert stills[2][0].shape == (3, 16, 16)  # broken.png is replaced by a readable neighbour
    with pytest.raises(ValueError, match="not video classes"):
        ImageFolder(images, 16, classes=["jump"])
