"""A procedural video domain: one coloured shape moving on a plain background, with a caption.

It is the training set of the shipped default model (`latte/assets/latte-shapes`) and the ground truth of
the prompt-adherence analyser (`latte.evaluation.adherence`). Every clip is a pure function of
(seed, index), so the data set needs no files and two processes always see the same clips.

Attributes a caption names, each read back from the frames by the analyser:
  colour (COLORS) x shape (SHAPES) x motion (MOTIONS); background and size are named in some captions.
A fixed set of colour x shape x motion combinations (HELDOUT) never appears in the "train" split, so
prompt adherence can be measured on combinations the model has not seen.

One motion lies outside that domain on purpose: "shrink" (NEW_MOTIONS), the time reverse of "grow", which
the shipped model never saw. Its own split "shrink", mixed with the training split as replay ("shrink+train":
half and half; "shrink+train+train+train+train+train": one in six, as common as each old motion), is what a
LoRA learns a new concept from; "train", "heldout" and "all", their labels, captions and clips are exactly
what they were before it existed.

Captions come in two vocabularies (CAPTION_STYLES; "basic+rich" takes them in turn): "basic", the few
phrasings the shipped model was trained on ("a red circle moving left"), and "rich", the words people use for
the same things (a ball or disc for a circle, a box for a square; rising, climbing, dropping, sliding, heading
"to the left side", swelling, ...) in many sentence shapes. A third set, the paraphrases
(`paraphrase_prompts`), is held apart: sentence shapes no training caption uses, in words the rich captions
teach, for measuring robustness to phrasing.
"""

import itertools
import math

import torch
from torch.utils.data import Dataset

# Saturated colours, far apart in RGB so that a decoded frame is still classified by the nearest colour.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.80, 0.15),
    "blue": (0.12, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.15, 0.85),
    "cyan": (0.10, 0.85, 0.90),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "grow")
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "gray": (0.45, 0.45, 0.45),
    "white": (0.95, 0.95, 0.95),
}
SIZES: tuple[str, ...] = ("small", "large")

# Combinations never shown in training: every colour, shape and motion still appears in other combinations.
HELDOUT: tuple[tuple[str, str, str], ...] = (
    ("red", "triangle", "up"),
    ("red", "square", "grow"),
    ("green", "circle", "right"),
    ("green", "triangle", "down"),
    ("blue", "square", "down"),
    ("yellow", "circle", "grow"),
    ("purple", "triangle", "left"),
    ("cyan", "square", "up"),
)
# A motion outside the shipped model's domain (not in MOTIONS, "all" or the tokenizer's corpus): a new concept.
NEW_MOTIONS: tuple[str, ...] = ("shrink",)
_SCALING = ("grow", "shrink")  # motions whose shape stays put and changes size (no one size to name)
# Splits joined by "+" are mixed: item i comes from their parts in turn (see SyntheticShapes), so a part named
# twice has twice the share ("shrink+train+train": a third of the clips shrink).
SPLITS = ("train", "heldout", "all", "grow", "shrink")

# Geometry in pixels at the reference size of 64 px; scaled linearly for other sizes.
_REF_SIZE = 64
_RADIUS = {"small": 7.0, "large": 10.0}  # half-extent of a moving shape
_GROW_RADIUS = (5.0, 13.0)  # a growing shape goes from the first to the second half-extent
# A shrinking one stops short of where growing starts: at 5 px (under 2 latent pixels across) squares, circles
# and triangles look alike, and an adapter taught such clips drew held-out combinations' shapes as circles
# (docs/lora_experiments.md).
_SHRINK_RADIUS = (13.0, 6.5)
_TRAVEL = 24.0  # distance a moving shape covers over the clip
_MARGIN = 2.0  # pixels kept free between the shape and the frame border

_MOTION_PHRASES = {
    "left": ("moving left", "slides to the left", "moves to the left", "drifting left"),
    "right": ("moving right", "slides to the right", "moves to the right", "drifting right"),
    "up": ("moving up", "slides upward", "moves up", "rising"),
    "down": ("moving down", "slides downward", "moves down", "falling"),
    "grow": ("growing", "grows bigger", "getting larger", "expanding"),
    "shrink": ("shrinking", "shrinks"),
}
_TEMPLATES = (
    "a {color} {shape} {motion}",
    "a {size} {color} {shape} {motion}",
    "a {color} {shape} {motion} on a {background} background",
    "a {size} {color} {shape} {motion} on a {background} background",
)


CAPTION_STYLES = ("basic", "rich", "basic+rich")

# The rich vocabulary: every word a user might type for an attribute must occur in training captions, since
# the frozen random text encoder means nothing by itself; the transformer learns what its features stand for.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {"black": ("black",), "gray": ("gray", "grey"), "white": ("white",)}
# Motion phrases as (-ing form, present form): "a ball rising", "the ball rises".
_MOVE_VERBS = (
    ("moving", "moves"), ("sliding", "slides"), ("drifting", "drifts"),
    ("travelling", "travels"), ("heading", "heads"), ("going", "goes"),
)
_DIRECTIONS = {
    "left": ("left", "to the left", "to the left side", "leftward"),
    "right": ("right", "to the right", "to the right side", "rightward"),
    "up": ("up", "upward", "upwards", "to the top"),
    "down": ("down", "downward", "downwards", "to the bottom"),
}
_OWN_VERBS = {  # motions with verbs of their own
    "up": (("rising", "rises"), ("climbing", "climbs")),
    "down": (("falling", "falls"), ("dropping", "drops"), ("sinking", "sinks")),
    "grow": (
        ("growing", "grows"), ("growing larger", "grows larger"), ("getting bigger", "gets bigger"),
        ("getting larger", "gets larger"), ("swelling", "swells"), ("expanding", "expands"),
    ),
    # Only its own word: "shrinks down", "getting smaller" share words with old motions ("down", "getting") and a
    # size ("small"), and a LoRA taught with them made the new motion the reading of phrasings it cannot parse.
    "shrink": (("shrinking", "shrinks"),),
}
# {size} is dropped with its space where a clip has no one size (grow, shrink); {ing} / {s}: the motion's two forms.
_RICH_TEMPLATES = (
    "a {size} {color} {shape} {ing}",
    "a {size} {color} {shape} {ing} on a {background} background",
    "a {size} {color} {shape} {s}",
    "a {size} {color} {shape} {s} on a {background} background",
    "there is a {size} {color} {shape} {ing}",
    "there is a {size} {color} {shape} {ing} on a {background} background",
    "the {color} {shape} {s}",
    "{size} {color} {shape} {ing}",
    "{color} {shape}, {ing}, {background} background",
    "a {shape}, {color}, {ing}",
    "a {color} {shape} that {s}",
    "a {color} {shape} is {ing} on a {background} background",
)
# Held apart from training: sentence shapes no training template has, in words the rich templates teach
# (tests/test_synthetic.py checks both).
PARAPHRASE_TEMPLATES = (
    "there is a {color} {shape} that {s}",
    "the {color} {shape} is {ing}",
    "{color} {shape} {s}",
    "a {shape}, {color}, {s} on a {background} background",
    "{color} {shape} {ing} on a {background} background",
    "the {shape} that {s} is {color}",
)
PARAPHRASES_PER_COMBINATION = 3


def label_of(color: str, shape: str, motion: str) -> int:
    """Class index of a colour x shape x motion: (colour * #shapes + shape) * #motions + motion; the new
    motions number their combinations after all of those, so the domain's labels stay what they were."""
    for value, allowed in ((color, COLORS), (shape, SHAPES), (motion, (*MOTIONS, *NEW_MOTIONS))):
        if value not in allowed:
            raise ValueError(f"unknown attribute {value!r}; allowed: {', '.join(allowed)}")
    cell = list(COLORS).index(color) * len(SHAPES) + SHAPES.index(shape)
    if motion in NEW_MOTIONS:
        return len(COLORS) * len(SHAPES) * (len(MOTIONS) + NEW_MOTIONS.index(motion)) + cell
    return cell * len(MOTIONS) + MOTIONS.index(motion)


def split_parts(split: str) -> list[str]:
    """A split's parts in order ("shrink+train+train" -> ["shrink", "train", "train"]), each one of SPLITS."""
    parts = split.split("+") if isinstance(split, str) else [split]
    unknown = [part for part in parts if part not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split {split!r}: {', '.join(map(repr, unknown))} is none of "
                         f"{', '.join(SPLITS)} (parts joined by '+' mix in turn, e.g. 'shrink+train+train')")
    return parts


def combinations(split: str = "all") -> list[tuple[str, str, str]]:
    """The (colour, shape, motion) triples of a split, in label order; a mixed split's: its parts', one part
    after the other."""
    parts = split_parts(split)
    if len(parts) > 1:
        return [c for part in parts for c in combinations(part)]
    if split == "shrink":
        return [(c, s, "shrink") for c, s in itertools.product(COLORS, SHAPES)]
    combos = list(itertools.product(COLORS, SHAPES, MOTIONS))
    if split == "train":
        return [c for c in combos if c not in HELDOUT]
    if split == "heldout":
        return list(HELDOUT)
    if split == "grow":  # the training split's growing clips: replayed beside "shrink", the same words' opposite
        return [c for c in combinations("train") if c[2] == "grow"]
    return combos


def caption(color: str, shape: str, motion: str, size: str | None = None, background: str = "black",
            template: int = 0, phrase: int = 0) -> str:
    """One phrasing of a clip's description, e.g.
    "a small blue square slides to the right on a black background".

    `size=None` drops the size word (a growing shape has no one size).
    """
    label_of(color, shape, motion)  # validates the attributes
    text = _TEMPLATES[template % len(_TEMPLATES)]
    if size is None:
        text = text.replace("{size} ", "")
    return text.format(
        color=color, shape=shape, size=size, background=background,
        motion=_MOTION_PHRASES[motion][phrase % len(_MOTION_PHRASES[motion])],
    )


def motion_phrases(motion: str) -> tuple[tuple[str, str], ...]:
    """The rich vocabulary's phrases for a motion, each as (-ing form, present form), e.g.
    ("heading to the left side", "heads to the left side")."""
    if motion not in (*MOTIONS, *NEW_MOTIONS):
        raise ValueError(f"unknown motion {motion!r}; allowed: {', '.join((*MOTIONS, *NEW_MOTIONS))}")
    moves = tuple((f"{ing} {d}", f"{s} {d}") for ing, s in _MOVE_VERBS for d in _DIRECTIONS.get(motion, ()))
    return moves + _OWN_VERBS.get(motion, ())


def _fill(template: str, color: str, shape: str, motion: tuple[str, str], size: str | None,
          background: str) -> str:
    """A rich or paraphrase template filled with words (not attribute names)."""
    if size is None:
        template = template.replace("{size} ", "")
    return template.format(color=color, shape=shape, ing=motion[0], s=motion[1], size=size,
                           background=background)


def rich_caption(color: str, shape: str, motion: str, size: str | None, background: str, pick,
                 templates: tuple[str, ...] = _RICH_TEMPLATES) -> str:
    """One phrasing in the rich vocabulary, e.g. "there is a little red ball climbing on a grey background".

    `pick(n)` chooses one of n alternatives (template, shape word, motion phrase, size word, background word,
    in that order): a seeded draw, or fixed choices. `size=None` drops the size word.
    """
    label_of(color, shape, motion)
    for value, allowed in ((size, (*SIZES, None)), (background, BACKGROUNDS)):
        if value not in allowed:
            raise ValueError(f"unknown attribute {value!r}; allowed: {', '.join(map(str, allowed))}")
    template = templates[pick(len(templates))]
    shape_word = SHAPE_WORDS[shape][pick(len(SHAPE_WORDS[shape]))]
    phrases = motion_phrases(motion)
    phrase = phrases[pick(len(phrases))]
    size_word = None if size is None else SIZE_WORDS[size][pick(len(SIZE_WORDS[size]))]
    return _fill(template, color, shape_word, phrase, size_word,
                 BACKGROUND_WORDS[background][pick(len(BACKGROUND_WORDS[background]))])


def paraphrase_prompts() -> list[tuple[str, tuple[str, str, str]]]:
    """The held-apart phrasings: PARAPHRASES_PER_COMBINATION prompts for each held-out combination, as
    (prompt, (colour, shape, motion)). Their sentence shapes never occur in training captions of either
    vocabulary; their words all occur in rich ones. Fixed: the choices come from one seeded generator."""
    g = torch.Generator().manual_seed(17)
    pick = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
    prompts = []
    for i, (color, shape, motion) in enumerate(HELDOUT):
        for j in range(PARAPHRASES_PER_COMBINATION):
            # Templates in turn (each used equally often); the words drawn.
            template = PARAPHRASE_TEMPLATES[(i * PARAPHRASES_PER_COMBINATION + j) % len(PARAPHRASE_TEMPLATES)]
            background = list(BACKGROUNDS)[pick(len(BACKGROUNDS))]
            text = rich_caption(color, shape, motion, None, background, pick, templates=(template,))
            prompts.append((text, (color, shape, motion)))
    return prompts


def all_captions(captions: str = "rich") -> list[str]:
    """The tokenizer's training corpus. "basic": every caption of the basic vocabulary (the shipped model's
    tokenizer). "rich": those plus rich captions that use every template with every shape word, motion
    phrase, size word and background word (all rich captions would be millions), so every word of the rich
    vocabulary, hence of the paraphrases, occurs. "basic+rich": as "rich"."""
    if captions not in CAPTION_STYLES:
        raise ValueError(f"unknown captions {captions!r}; allowed: {', '.join(CAPTION_STYLES)}")
    texts = {
        caption(c, s, m, size, bg, t, p)
        for c, s, m in combinations("all") for size in (*SIZES, None) for bg in BACKGROUNDS
        for t in range(len(_TEMPLATES)) for p in range(len(_MOTION_PHRASES[m]))
    }
    if "rich" in captions.split("+"):
        texts.update(_rich_corpus())
    return sorted(texts)


def _rich_corpus() -> list[str]:
    """Every rich template with every shape word and motion phrase; colour, size and background words in
    turn."""
    colors, sizes = list(COLORS), [w for words in SIZE_WORDS.values() for w in words]
    backgrounds = [w for words in BACKGROUND_WORDS.values() for w in words]
    texts = []
    for shape, motion in itertools.product(SHAPES, MOTIONS):
        for template, shape_word, phrase in itertools.product(
                _RICH_TEMPLATES, SHAPE_WORDS[shape], motion_phrases(motion)):
            k = len(texts)
            size = None if motion == "grow" else sizes[k % len(sizes)]
            texts.append(_fill(template, colors[k % len(colors)], shape_word, phrase, size,
                               backgrounds[k % len(backgrounds)]))
    return texts


def _coverage(shape: str, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-aliased alpha (F, H, W) in [0, 1] of a shape centred at (cx, cy), half-extent r (each (F,))."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    x = grid.view(1, 1, size) - cx.view(-1, 1, 1)  # (F, 1, W)
    y = grid.view(1, size, 1) - cy.view(-1, 1, 1)  # (F, H, 1)
    r = r.view(-1, 1, 1)
    if shape == "circle":
        sdf = torch.sqrt(x**2 + y**2) - r
    elif shape == "square":
        sdf = torch.maximum(x.abs(), y.abs()) - 0.9 * r  # 0.9: about the same area as the circle
    elif shape == "triangle":
        # Equilateral, apex up, circumradius R: inside when all three edge half-planes are (y grows downward).
        big_r = 1.25 * r
        s, c = math.sin(math.pi / 6), math.cos(math.pi / 6)
        sdf = torch.maximum(y - big_r * s, torch.maximum(-c * x - s * y, c * x - s * y) - big_r * s)
    else:
        raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")
    return (0.5 - sdf).clamp(0, 1)  # one-pixel soft edge: partial coverage on the boundary


def render_clip(color: str, shape: str, motion: str, background: str = "black", num_frames: int = 16,
                size: int = 64, shape_size: str = "small", start: tuple[float, float] = (0.5, 0.5),
                travel: float = _TRAVEL) -> torch.Tensor:
    """Draw one clip as a float tensor (3, F, H, W) in [-1, 1].

    `start` is the shape centre in the first frame as fractions of the range that keeps the whole path
    inside the frame (0.5, 0.5 = as central as possible); `travel` is the path length in reference pixels
    (64-px frame), ignored for "grow", which stays put and scales from 5 to 13 reference pixels, and for
    "shrink", which scales back from 13 to 6.5.
    """
    label_of(color, shape, motion)
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; allowed: {', '.join(BACKGROUNDS)}")
    if shape_size not in SIZES:
        raise ValueError(f"unknown size {shape_size!r}; allowed: {', '.join(SIZES)}")
    if num_frames < 2 or size < 16:
        raise ValueError(f"need num_frames >= 2 and size >= 16, got num_frames={num_frames}, size={size}")
    scale = size / _REF_SIZE
    progress = torch.linspace(0, 1, num_frames)  # (F,)
    if motion in _SCALING:
        r0, r1 = (v * scale for v in (_GROW_RADIUS if motion == "grow" else _SHRINK_RADIUS))
        reach = 1.25 * max(r0, r1) + _MARGIN * scale  # the largest shape must fit
        radius = r0 + (r1 - r0) * progress
        dx = dy = torch.zeros(num_frames)
    else:
        radius = torch.full((num_frames,), _RADIUS[shape_size] * scale)
        step = travel * scale * progress
        dx = {"left": -step, "right": step}.get(motion, torch.zeros(num_frames))
        dy = {"up": -step, "down": step}.get(motion, torch.zeros(num_frames))
        reach = 1.25 * radius[0] + _MARGIN * scale
    # The first centre lies where the path's whole extent stays within [reach, size - reach].
    lo_x, hi_x = reach - float(dx.min()), size - reach - float(dx.max())
    lo_y, hi_y = reach - float(dy.min()), size - reach - float(dy.max())
    cx = lo_x + start[0] * (hi_x - lo_x) + dx
    cy = lo_y + start[1] * (hi_y - lo_y) + dy
    alpha = _coverage(shape, cx, cy, radius, size).unsqueeze(0)  # (1, F, H, W)
    fg = torch.tensor(COLORS[color]).view(3, 1, 1, 1)
    bg = torch.tensor(BACKGROUNDS[background]).view(3, 1, 1, 1)
    frames = bg + (fg - bg) * alpha  # (3, F, H, W) in [0, 1]
    return frames * 2 - 1


class SyntheticShapes(Dataset):
    """`num_samples` captioned clips of one split; item i depends only on (seed, i). `captions` names the
    vocabulary ("basic": the shipped model's recipe; "rich"; "basic+rich": the two in turn); the clips are the
    same in all. A mixed split ("shrink+train") takes its parts in turn: item i draws its combination from part
    i mod #parts, so a new concept and the replay of seen ones each make half of the clips.

    Items are {"video": (3, F, H, W) float in [-1, 1], "caption": str, "label": int (see `label_of`)}.
    """

    def __init__(self, num_samples: int, num_frames: int = 16, size: int = 64, seed: int = 0,
                 split: str = "train", captions: str = "basic"):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if captions not in CAPTION_STYLES:
            raise ValueError(f"unknown captions {captions!r}; allowed: {', '.join(CAPTION_STYLES)}")
        self.parts = [combinations(part) for part in split_parts(split)]
        self.num_samples, self.num_frames, self.size, self.seed, self.split, self.captions = (
            num_samples, num_frames, size, seed, split, captions)
        render_clip("red", "circle", "left", num_frames=num_frames, size=size)  # fail early on bad sizes

    def __len__(self) -> int:
        return self.num_samples

    def _draw(self, index: int) -> tuple[tuple[str, str, str, str, str], str]:
        """Item `index`'s (colour, shape, motion, background, shape size) and caption: every random draw of
        the item (rendering draws nothing), so a caption costs no rendering."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        pick = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
        combos = self.parts[index % len(self.parts)]  # one part (and no extra draw) for a plain split
        color, shape, motion = combos[pick(len(combos))]
        background = list(BACKGROUNDS)[pick(len(BACKGROUNDS))]
        shape_size = SIZES[pick(len(SIZES))]
        named_size = None if motion in _SCALING else shape_size
        # The same clip in either vocabulary: only the caption's draws (after the clip's) differ. "basic+rich"
        # alternates the two within each part of the split, so every part gets both.
        styles = self.captions.split("+")
        style = styles[(index // len(self.parts)) % len(styles)]
        if style == "rich":
            text = rich_caption(color, shape, motion, named_size, background, pick)
        else:
            text = caption(color, shape, motion, named_size, background, pick(len(_TEMPLATES)), pick(4))
        return (color, shape, motion, background, shape_size), text

    def caption_of(self, index: int) -> str:
        """Item `index`'s caption, without rendering its clip."""
        return self._draw(index)[1]

    def __getitem__(self, index: int) -> dict:
        (color, shape, motion, background, shape_size), text = self._draw(index)
        # The path is always centred: a full caption then names one clip, so the text, not a guess at a
        # random position, decides the video. A small model trained on random positions averaged them into
        # blobs and learnt to ignore the caption, whose colour and shape barely lowered its loss.
        video = render_clip(color, shape, motion, background, self.num_frames, self.size, shape_size)
        return {"video": video, "caption": text, "label": label_of(color, shape, motion)}
