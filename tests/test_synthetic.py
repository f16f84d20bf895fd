import re

import pytest
import torch

from latte.data import synthetic
from latte.data.synthetic import (
    BACKGROUND_WORDS,
    COLORS,
    HELDOUT,
    MOTIONS,
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
    with pytest.raises(ValueError, match="unknown captions 'fancy'; allowed: basic, rich"):
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
