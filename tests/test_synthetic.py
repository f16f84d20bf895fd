import hashlib
import re

import pytest
import torch

from latte.data import synthetic
from latte.data.synthetic import (
    BACKGROUND_WORDS,
    COLORS,
    HELDOUT,
    MOTIONS,
    NEW_MOTIONS,
    PARAPHRASE_TEMPLATES,
    PARAPHRASES_PER_COMBINATION,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SyntheticShapes,
    all_captions,
    caption,
    combinations,
    label_of,
    motion_phrases,
    paraphrase_prompts,
    render_clip,
    rich_caption,
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


def _domain_digest() -> str:
    """sha256 of what the shipped model's recipe uses: captions, labels and (8-bit) clips of every split in both
    vocabularies, and the tokenizer corpora."""
    h = hashlib.sha256()
    for split in ("train", "heldout", "all"):
        for style in ("basic", "rich"):
            data = SyntheticShapes(12, num_frames=4, size=32, seed=5, split=split, captions=style)
            for i in range(12):
                item = data[i]
                h.update(f"{item['caption']}|{item['label']}|".encode())
                h.update(((item["video"] + 1) * 127.5).round().to(torch.uint8).numpy().tobytes())
    for style in ("basic", "rich"):
        h.update("\n".join(all_captions(style)).encode())
    return h.hexdigest()


def test_the_new_concept_leaves_the_domain_unchanged():
    """Adding "shrink" changed nothing the shipped model was trained or measured on (pinned before it existed)."""
    assert MOTIONS == ("left", "right", "up", "down", "grow") and NEW_MOTIONS == ("shrink",)
    assert len(combinations("all")) == 90 and len(combinations("train")) == 82
    assert [label_of(*c) for c in combinations("all")] == list(range(90))
    assert _domain_digest() == "92672bf30e4229aefd706a0ec93b98ac93fb4df388c9eef97cde42eed8929b39"


def test_shrink_split_and_the_mix_with_replay():
    shrink = combinations("shrink")
    assert len(shrink) == len(COLORS) * len(SHAPES) and {m for _, _, m in shrink} == {"shrink"}
    assert sorted(label_of(*c) for c in shrink) == list(range(90, 108))  # after every label of the domain
    assert not any("shrink" in text or "smaller" in text for text in all_captions())  # a concept never taught
    by_label = {label_of(*c): c for c in combinations("all") + shrink}
    items = [SyntheticShapes(8, seed=1, split="shrink+train", captions=style)[i] for style in ("basic", "rich")
             for i in range(8)]
    for i, item in enumerate(items):
        color, shape, motion = by_label[item["label"]]
        assert (motion == "shrink") == (i % 2 == 0)  # parts in turn: the new concept, then replay
        assert color in item["caption"] and (motion == "shrink") == any(
            ing in item["caption"] or s in item["caption"] for ing, s in motion_phrases("shrink"))
        if motion != "shrink":
            assert (color, shape, motion) in combinations("train")
    assert caption("red", "circle", "shrink") == "a red circle shrinking"
    # Taught by its own words only: none is a word of the domain's captions (e.g. "down", "getting", "small").
    shrink_words = {w for phrase in motion_phrases("shrink") for w in " ".join(phrase).split()}
    shrink_words |= {caption("red", "circle", "shrink", phrase=p).split()[-1] for p in range(4)}
    assert shrink_words == {"shrinking", "shrinks"}
    assert not shrink_words & {w for text in all_captions() for w in text.replace(",", "").split()}
    with pytest.raises(ValueError, match=r"unknown split 'shrink\+shrunk': 'shrunk' is none of train, .*, shrink"):
        SyntheticShapes(4, split="shrink+shrunk")


def test_grow_split_pairs_the_new_motion_with_its_opposite():
    grow = combinations("grow")
    assert {m for _, _, m in grow} == {"grow"} and len(grow) == len(COLORS) * len(SHAPES) - 2
    assert not set(grow) & set(HELDOUT)  # replay: the held-out growing combinations stay unseen
    by_label = {label_of(*c): c for c in combinations("all") + combinations("shrink")}
    mixed = SyntheticShapes(9, seed=1, split="shrink+grow+train", captions="basic+rich")
    motions = [by_label[mixed[i]["label"]][2] for i in range(9)]
    assert motions[0::3] == ["shrink"] * 3 and motions[1::3] == ["grow"] * 3  # the parts in turn
    assert all(by_label[mixed[i]["label"]] in combinations("train") for i in range(1, 9) if i % 3)
    # A part named again weighs more: one clip in six shrinks.
    weighted = SyntheticShapes(12, seed=1, split="shrink+train+train+train+train+train")
    motions = [by_label[weighted[i]["label"]][2] for i in range(12)]
    assert [i for i, m in enumerate(motions) if m == "shrink"] == [0, 6]


def test_shrinking_shapes_get_smaller_and_read_as_shrink():
    from latte.evaluation.adherence import read_clip

    for shape in SHAPES:
        video = render_clip("cyan", shape, "shrink", "gray")
        area = ((video - video[:, :1, :1, :1]).abs().sum(0) > 0.1).sum((1, 2))  # pixels off the background
        grow = render_clip("cyan", shape, "grow", "gray")
        grow_area = ((grow - grow[:, :1, :1, :1]).abs().sum(0) > 0.1).sum((1, 2))
        # From where growing ends (13 px) to half that (6.5 px): a quarter of the area, and larger than where
        # growing starts (5 px), the size at which the three shapes look alike.
        torch.testing.assert_close(video[:, 0], grow[:, -1], atol=1e-5, rtol=0)
        assert (area[1:] <= area[:-1]).all() and 3 * area[-1] < area[0] < 5 * area[-1]
        assert area[-1] > 1.3 * grow_area[0]  # (6.5 / 5)^2 = 1.69 for the exact shapes
        reading = read_clip((video.transpose(0, 1) + 1) / 2)
        assert (reading.color, reading.shape, reading.motion) == ("cyan", shape, "shrink")


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="orange"):
        render_clip("orange", "circle", "left")
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes(4, split="test")
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticShapes(0)


def test_rich_captions_describe_the_same_clips():
    basic, rich = SyntheticShapes(30, seed=2), SyntheticShapes(30, seed=2, captions="rich")
    for i in range(30):
        a, b = basic[i], rich[i]
        assert torch.equal(a["video"], b["video"]) and a["label"] == b["label"]
        color, shape, motion = combinations("all")[b["label"]]
        words = b["caption"].replace(",", "").split()
        assert color in words and any(word in words for word in SHAPE_WORDS[shape])
        assert any(ing in b["caption"] or s in b["caption"] for ing, s in motion_phrases(motion))
        assert b["caption"] == SyntheticShapes(30, seed=2, captions="rich")[i]["caption"]
    assert len({rich[i]["caption"] for i in range(30)}) == 30  # varied phrasing
    mixed = SyntheticShapes(8, seed=2, split="shrink+train", captions="basic+rich")
    # both parts of the split in both vocabularies: items 0, 1 basic (shrink, train), 2, 3 rich, ...
    for i in range(8):
        style = ("basic", "rich")[(i // 2) % 2]
        assert mixed.caption_of(i) == SyntheticShapes(8, seed=2, split="shrink+train", captions=style).caption_of(i)
    with pytest.raises(ValueError, match="unknown captions 'fancy'; allowed: basic, rich, basic\\+rich"):
        SyntheticShapes(4, captions="fancy")
    with pytest.raises(ValueError, match="'pink'; allowed: black, gray, white"):
        rich_caption("red", "circle", "left", "small", "pink", pick=lambda n: 0)


def caption_pattern(template: str, slots: dict) -> re.Pattern:
    """A regex for every filling of `template` with any of `slots`' words (more than training produces, so a
    text it does not match is certainly no training caption)."""
    out = []
    for part in re.split(r"(\{size\} |\{\w+\})", template):
        if part == "{size} ":  # dropped where a clip has no one size
            out.append("(?:(?:" + "|".join(map(re.escape, slots["size"])) + ") )?")
        elif part.startswith("{"):
            out.append("(?:" + "|".join(map(re.escape, slots[part[1:-1]])) + ")")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def rich_words() -> dict:
    phrases = [p for m in MOTIONS for p in motion_phrases(m)]
    return {
        "color": list(COLORS), "shape": [w for ws in SHAPE_WORDS.values() for w in ws],
        "size": [w for ws in SIZE_WORDS.values() for w in ws],
        "background": [w for ws in BACKGROUND_WORDS.values() for w in ws],
        "ing": [ing for ing, _ in phrases], "s": [s for _, s in phrases],
    }


def training_patterns() -> list[re.Pattern]:
    """Every training caption shape of both vocabularies."""
    basic = {
        "color": list(COLORS), "shape": SHAPES, "size": synthetic.SIZES, "background": list(synthetic.BACKGROUNDS),
        "motion": [p for phrases in synthetic._MOTION_PHRASES.values() for p in phrases],
    }
    return [caption_pattern(t, basic) for t in synthetic._TEMPLATES] + [
        caption_pattern(t, rich_words()) for t in synthetic._RICH_TEMPLATES
    ]


def test_paraphrases_are_never_training_captions():
    patterns = training_patterns()
    # The patterns do describe the training captions of both vocabularies.
    drawn = [SyntheticShapes(200, seed=1, captions=style)[i]["caption"] for style in ("basic", "rich") for i in
             range(0, 200, 2)]
    for text in [*all_captions(), *drawn]:
        assert any(p.fullmatch(text) for p in patterns), text
    prompts = paraphrase_prompts()
    for prompt, _ in prompts:
        assert not any(p.fullmatch(prompt) for p in patterns), prompt
    assert len({p for p, _ in prompts}) == len(prompts) == PARAPHRASES_PER_COMBINATION * len(HELDOUT)
    assert [target for _, target in prompts] == [c for c in HELDOUT for _ in range(PARAPHRASES_PER_COMBINATION)]
    # Each paraphrase template is used equally often.
    for template in PARAPHRASE_TEMPLATES:
        pattern = caption_pattern(template, rich_words())
        assert sum(bool(pattern.fullmatch(p)) for p, _ in prompts) == len(prompts) // len(PARAPHRASE_TEMPLATES)


def test_tokenizer_corpus_has_every_word_of_training_and_paraphrases():
    def words(texts):
        return {w for t in texts for w in t.split()}

    rich_training = words(synthetic._rich_corpus())
    # Paraphrases use only words (as whitespace splits them, commas attached) that rich training captions use:
    # the frozen random text encoder's features mean only what training taught.
    assert words(p for p, _ in paraphrase_prompts()) <= rich_training
    # The rich vocabulary contains the basic one, and the corpus every word a rich caption can draw.
    assert words(all_captions("basic")) <= rich_training
    drawn = words(SyntheticShapes(300, seed=4, captions="rich")[i]["caption"] for i in range(300))
    assert drawn <= words(all_captions()) == rich_training
    assert {"ball", "disc", "dot", "box", "block", "climbing", "dropping", "sinking", "heading", "travelling",
            "side", "upward", "bigger", "swelling", "expanding"} <= rich_training
    assert set(all_captions("basic")) < set(all_captions())
    with pytest.raises(ValueError, match="unknown captions"):
        all_captions("other")
