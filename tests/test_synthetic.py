import pytest
import torch

from latte.data.synthetic import (
    COLORS,
    HELDOUT,
    MOTIONS,
    SHAPES,
    SyntheticShapes,
    all_captions,
    caption,
    combinations,
    label_of,
    render_clip,
)


def test_items_are_deterministic_and_well_formed():
    a, b = SyntheticShapes(4, seed=3), SyntheticShapes(4, seed=3)
    for i in range(4):
        x, y = a[i], b[i]
        assert x["video"].shape == (3, 16, 64, 64) and x["video"].dtype == torch.float32
        assert x["video"].min() >= -1 and x["video"].max() <= 1
        assert torch.equal(x["video"], y["video"])
        assert x["caption"] == y["caption"] and x["label"] == y["label"]
    assert not torch.equal(SyntheticShapes(1, seed=4)[0]["video"], a[0]["video"])


def test_splits_partition_the_combinations():
    train, held = set(combinations("train")), set(combinations("heldout"))
    assert not train & held and len(train | held) == len(COLORS) * len(SHAPES) * len(MOTIONS)
    # Every attribute value is still seen in training.
    for i, values in enumerate((COLORS, SHAPES, MOTIONS)):
        assert {c[i] for c in train} == set(values)
    labels = {SyntheticShapes(64, split="heldout", seed=1)[i]["label"] for i in range(64)}
    assert labels <= {label_of(*c) for c in HELDOUT}
    train_labels = {SyntheticShapes(200, split="train")[i]["label"] for i in range(200)}
    assert not train_labels & {label_of(*c) for c in HELDOUT}


def test_captions_name_the_attributes():
    assert caption("red", "circle", "left") == "a red circle moving left"
    assert caption("blue", "square", "right", "small", "black", template=3, phrase=1) == (
        "a small blue square slides to the right on a black background")
    for i in range(20):
        item = SyntheticShapes(20, seed=7)[i]
        c, s, _ = combinations("all")[item["label"]]
        assert f"{c} {s}" in item["caption"]
    assert "a red circle moving left" in all_captions()


def test_motion_moves_the_centroid():
    for motion, (sx, sy) in {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}.items():
        alpha = (render_clip("green", "square", motion)[1] + 1) / 2  # green channel, background black
        grid = torch.arange(64.0)
        mass = alpha.sum((1, 2))
        cx = (alpha.sum(1) * grid).sum(1) / mass
        cy = (alpha.sum(2) * grid).sum(1) / mass
        along = (cx[-1] - cx[0]) * sx + (cy[-1] - cy[0]) * sy  # travel along the named direction
        across = (cx[-1] - cx[0]) * sy + (cy[-1] - cy[0]) * sx
        assert along > 20 and abs(across) < 1e-3
    area = (render_clip("red", "circle", "grow")[0] + 1).sum((1, 2))
    assert area[-1] > 4 * area[0]


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="orange"):
        render_clip("orange", "circle", "left")
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes(4, split="test")
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticShapes(0)
