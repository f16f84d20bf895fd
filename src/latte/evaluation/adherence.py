"""Prompt adherence on the synthetic shapes domain: does a generated video show the colour, shape and motion
its prompt names?

`read_clip` is a deterministic analyser of one video (no learned parts): it finds the background from the
frame borders, the shape as the pixels that differ from it, and reads
  colour  - the nearest domain colour to the shape's median pixel,
  shape   - triangle when the centroid sits below the middle of the shape's height (apex up: h/6 below),
            else square or circle by the fill ratio area / (width x height) (1 vs pi/4), both measured on
            the shape's half-coverage footprint, which blur (e.g. a VAE's) leaves nearly unchanged,
  motion  - from straight-line fits of the centroid and of the equivalent radius over the frames.
It also measures temporal consistency: the fraction of frames whose own colour and shape readings agree
with the clip's, and the jitter of the centroid around its straight-line path.

`evaluate_adherence` generates videos for a prompt set (seen and held-out combinations, and the held-out
combinations again in paraphrases no training caption uses; optionally every colour x shape "shrinking", a
motion outside the shipped model's domain; several seeds) with a `LattePipeline` and reports the accuracy per
attribute.
"""

import logging
import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from latte.data.synthetic import (
    COLORS,
    HELDOUT,
    MOTIONS,
    NEW_MOTIONS,
    SHAPES,
    caption,
    combinations,
    paraphrase_prompts,
)

logger = logging.getLogger(__name__)

_PALETTE = torch.tensor(list(COLORS.values()))  # (K, 3) in [0, 1]
FG_DISTANCE = 0.25  # RGB distance from the background above which a pixel belongs to the shape
MIN_ALPHA = 0.25  # coverage below this is treated as background noise
MIN_AREA = 4.0  # pixels (at 64 px); a frame with less coverage shows no shape
# An apex-up triangle's centroid lies h/6 below the middle of its height; circles and squares are centred.
TRIANGLE_OFFSET = 1 / 12  # halfway, as a fraction of the height
# Fill ratio of the footprint: circle pi/4 = 0.785, square 1. Blur rounds a square's corners (a small VAE's
# squares read ~0.86-0.94) and leaves circles at ~0.8, hence a threshold below the midpoint 0.89.
FILL_CIRCLE_SQUARE = 0.84
MIN_TRAVEL = 4.0  # pixels (at 64 px) of centroid or radius change below which a clip is "static"
NO_READING = "none"  # what an attribute reads when no shape is found


@dataclass(frozen=True)
class ClipReading:
    """What the analyser reads from one video; "none" and "static" (and "shrink", unless a prompt asks for
    the new concept) count as wrong."""

    color: str
    shape: str
    motion: str
    consistency: float  # fraction of frames whose own colour and shape match the clip's (0..1)
    jitter: float  # RMS distance of the centroid from its straight-line path, pixels at 64 px


def _as_frames(video: torch.Tensor) -> torch.Tensor:
    if video.ndim != 4 or video.shape[1] != 3 or video.shape[0] < 2:
        raise ValueError(f"video must be (frames >= 2, 3, height, width) in [0, 1], got {tuple(video.shape)}")
    return video.detach().float().cpu().clamp(0, 1)


def _nearest_color(rgb: torch.Tensor) -> list[str]:
    """Names of the domain colours nearest to each of `rgb` (N, 3)."""
    names = list(COLORS)
    return [names[i] for i in torch.cdist(rgb, _PALETTE).argmin(1).tolist()]


def _shape_of(offset: float, fill: float) -> str:
    if offset > TRIANGLE_OFFSET:
        return "triangle"
    return "circle" if fill < FILL_CIRCLE_SQUARE else "square"


def _line_fit(values: torch.Tensor, t: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Least-squares line through (t, values): the change over the whole clip and the residuals."""
    tc = t - t.mean()
    slope = (tc * (values - values.mean())).sum() / tc.square().sum()
    fit = values.mean() + slope * tc
    return float(slope * (t[-1] - t[0])), values - fit


def read_clip(video: torch.Tensor) -> ClipReading:
    """Read colour, shape and motion from one video (F, 3, H, W) in [0, 1] (e.g. pipeline output "pt")."""
    frames = _as_frames(video)
    num_frames, _, height, width = frames.shape
    scale = width / 64  # thresholds are in pixels of a 64-px frame
    pixels = frames.permute(0, 2, 3, 1).contiguous()  # (F, H, W, 3)

    # 1. Background: the median colour of the frame borders (the shape never touches them in the domain).
    border = torch.cat([pixels[:, 0], pixels[:, -1], pixels[:, :, 0], pixels[:, :, -1]], dim=1)  # (F, P, 3)
    background = border.reshape(-1, 3).median(0).values  # (3,)
    mask = (pixels - background).norm(dim=-1) > FG_DISTANCE  # (F, H, W)
    if mask.sum() < MIN_AREA * scale**2:
        return ClipReading(NO_READING, NO_READING, NO_READING, 0.0, 0.0)

    # 2. Colour: the median shape pixel over the clip, and each frame's own.
    color = _nearest_color(pixels[mask].median(0).values[None])[0]
    fg = torch.tensor(COLORS[color])

    # 3. Coverage alpha in [0, 1] from the projection of each pixel onto the background -> colour line, so
    #    anti-aliased edges count fractionally and areas and centroids are sub-pixel.
    axis = fg - background
    alpha = ((pixels - background) @ axis / axis.square().sum()).clamp(0, 1)  # (F, H, W)
    alpha = alpha * (alpha > MIN_ALPHA)
    area = alpha.sum((1, 2))  # (F,)
    valid = area > MIN_AREA * scale**2
    if valid.sum() < 2:
        return ClipReading(color, NO_READING, NO_READING, 0.0, 0.0)
    ys, xs = torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32)
    safe_area = area.clamp_min(1e-6)
    cx = (alpha.sum(1) * xs).sum(1) / safe_area  # (F,)
    cy = (alpha.sum(2) * ys).sum(1) / safe_area
    # The footprint (coverage >= 1/2): its rows and columns give the extents, its pixel count the area.
    footprint = (alpha >= 0.5).float()  # (F, H, W)
    rows, cols = footprint.amax(2), footprint.amax(1)  # (F, H), (F, W)
    extent_h, extent_w = rows.sum(1).clamp_min(1), cols.sum(1).clamp_min(1)
    fill = footprint.sum((1, 2)) / (extent_w * extent_h)  # (F,)
    top = torch.where(rows > 0, ys, torch.inf).amin(1)  # first footprint row
    bottom = torch.where(rows > 0, ys, -torch.inf).amax(1)
    offset = (cy - (top + bottom) / 2) / extent_h  # (F,) centroid below the middle, in heights

    # 4. Shape: from the median offset and fill ratio over the frames that show the shape.
    shape = _shape_of(float(offset[valid].median()), float(fill[valid].median()))

    # 5. Motion: straight-line fits of the centroid and of the equivalent radius sqrt(area / pi).
    t = torch.arange(num_frames, dtype=torch.float32)[valid]
    dx, rx = _line_fit(cx[valid], t)
    dy, ry = _line_fit(cy[valid], t)
    dr, _ = _line_fit((area[valid] / math.pi).sqrt(), t)
    travel = max(abs(dx), abs(dy))
    if abs(dr) > travel / 2 and abs(dr) * 2 > MIN_TRAVEL * scale:  # radius change = half a diameter change
        motion = "grow" if dr > 0 else "shrink"
    elif travel < MIN_TRAVEL * scale:
        motion = "static"
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"  # image rows grow downward

    # 6. Temporal consistency: frames whose own colour and shape agree with the clip's reading.
    shape_px = torch.where(mask[..., None], pixels, torch.nan).flatten(1, 2)  # (F, H*W, 3), NaN off-shape
    frame_colors = _nearest_color(shape_px.nanmedian(1).values.nan_to_num(0))
    agree = [
        bool(valid[f]) and frame_colors[f] == color and _shape_of(float(offset[f]), float(fill[f])) == shape
        for f in range(num_frames)
    ]
    jitter = float((rx.square() + ry.square()).mean().sqrt()) / scale
    return ClipReading(color, shape, motion, sum(agree) / num_frames, jitter)


#################################################################################
#                          Generating and scoring                               #
#################################################################################


@dataclass(frozen=True)
class PromptCase:
    prompt: str
    color: str
    shape: str
    motion: str
    # "seen" (a training combination), "heldout" or "paraphrase" (a held-out one, phrased anew), "shrink" (the
    # motion no training clip of the shipped model shows)
    split: str


PROMPT_SPLITS = ("seen", "heldout", "paraphrase", "shrink")


def prompt_set(num_seen: int = 24, paraphrase: bool = True, shrink: bool = False) -> list[PromptCase]:
    """`num_seen` training combinations spread evenly over the label order, then every held-out one, each
    as the plainest caption ("a red circle moving left"), then (with `paraphrase`) the held-out combinations
    in the paraphrases of `latte.data.synthetic.paraphrase_prompts` ("the box that drifts upwards is cyan"):
    sentence shapes no training caption uses, in words only the rich training vocabulary teaches, then (with
    `shrink`) every colour x shape shrinking ("a red circle shrinking"), the new concept of
    `configs/lora-shapes.yaml`."""
    train = combinations("train")
    if not 1 <= num_seen <= len(train):
        raise ValueError(f"num_seen must be in 1..{len(train)}, got {num_seen}")
    seen = [train[round(i * len(train) / num_seen)] for i in range(num_seen)]
    plain = [
        PromptCase(caption(c, s, m), c, s, m, split)
        for split, combos in (("seen", seen), ("heldout", list(HELDOUT)))
        for c, s, m in combos
    ]
    # Appended, so that the seen and held-out videos (seeded by their index) stay those measured before.
    para = [PromptCase(text, c, s, m, "paraphrase") for text, (c, s, m) in paraphrase_prompts()] if paraphrase else []
    new = [PromptCase(caption(c, s, m), c, s, m, "shrink") for c, s, m in combinations("shrink")] if shrink else []
    return plain + para + new


def score(cases: list[PromptCase], readings: list[ClipReading]) -> dict:
    """Accuracy per attribute (and all three at once) plus the temporal figures, per split and overall."""
    rows = {}
    for split in (*PROMPT_SPLITS, "all"):
        pairs = [(c, r) for c, r in zip(cases, readings, strict=True) if split in ("all", c.split)]
        if not pairs:
            continue
        n = len(pairs)
        hits = {
            attr: sum(getattr(c, attr) == getattr(r, attr) for c, r in pairs) / n
            for attr in ("color", "shape", "motion")
        }
        hits["all"] = sum(
            (c.color, c.shape, c.motion) == (r.color, r.shape, r.motion) for c, r in pairs
        ) / n
        rows[split] = {
            "videos": n, **hits,
            "consistency": sum(r.consistency for _, r in pairs) / n,
            "jitter_px": sum(r.jitter for _, r in pairs) / n,
        }
    return rows


def format_table(rows: dict) -> str:
    """The score rows as a Markdown table (accuracies in percent)."""
    lines = [
        "| split | videos | colour | shape | motion | all three | temporal consistency | jitter (px) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, r in rows.items():
        pct = [f"{100 * r[k]:.1f}%" for k in ("color", "shape", "motion", "all", "consistency")]
        lines.append(f"| {split} | {r['videos']} | " + " | ".join(pct) + f" | {r['jitter_px']:.2f} |")
    return "\n".join(lines)


ATTRIBUTES = ("color", "shape", "motion", "all")


def _hit(video: dict, attr: str) -> bool:
    keys = ("color", "shape", "motion") if attr == "all" else (attr,)
    return all(video["read"][k] == video[k] for k in keys)


def read_adherence(path) -> dict:
    """A result that `latte eval adherence --json` wrote, checked to hold per-video readings."""
    from latte.models.io import read_json

    result = read_json(path)
    videos = result.get("videos") if isinstance(result, dict) else None
    fields = ("split", "prompt", "seed", "color", "shape", "motion", "read")
    if not isinstance(videos, list) or not videos or not all(
        isinstance(v, dict) and all(f in v for f in fields) and isinstance(v["read"], dict)
        and all(a in v["read"] for a in ("color", "shape", "motion")) for v in videos
    ):
        raise ValueError(f"{path} is not a result of `latte eval adherence --json`: it needs a list 'videos' of "
                         f"records with {', '.join(fields)}")
    return result


def pool_adherence(results: list[dict]) -> dict:
    """Several results (e.g. adapters of different training seeds) as one: their videos together, scored."""
    videos = [v for r in results for v in r["videos"]]
    cases = [PromptCase(v["prompt"], v["color"], v["shape"], v["motion"], v["split"]) for v in videos]
    readings = [ClipReading(**v["read"]) for v in videos]
    return {"table": score(cases, readings), "videos": videos}


def video_key(video: dict) -> tuple[str, str, int]:
    """What pairs two results' videos: the same prompt of the same split at the same seed (the same noise)."""
    return (video["split"], video["prompt"], video["seed"])


def videos_by_key(baseline: dict) -> dict:
    """A baseline's videos by `video_key`. Each video must be there once: a baseline may pool results of
    different seeds, not of the same seed (which of the two would a video be compared with?)."""
    index = {video_key(v): v for v in baseline["videos"]}
    if len(index) < len(baseline["videos"]):
        raise ValueError("the baseline holds some video twice (same prompt, split and seed): a baseline pools "
                         "results of different seeds, one per video")
    return index


def _paired(before: dict, after: dict) -> list[tuple[dict, dict]]:
    """(before, after) for each video both results hold (same prompt, split and seed: the same noise)."""
    first = videos_by_key(before)
    pairs = [(first[video_key(v)], v) for v in after["videos"] if video_key(v) in first]
    if not pairs:
        raise ValueError("the two adherence results share no video (same prompt, split and seed): compare runs "
                         "made with the same --seeds, --num-seen and --shrink")
    return pairs


def _change(pairs: list[tuple[dict, dict]], attributes: tuple[str, ...], rng: torch.Generator,
            resamples: int) -> dict:
    """Accuracy before and after on these video pairs per attribute, the videos lost and gained, and a 95%
    interval of the change from a paired bootstrap over prompts."""
    by_prompt: dict[tuple, list] = {}
    for b, a in pairs:
        by_prompt.setdefault((b["split"], b["prompt"]), []).append((b, a))
    prompts = list(by_prompt.values())
    n = len(pairs)
    # A resample sums the drawn prompts' changes in hits and their numbers of videos.
    size = torch.tensor([len(p) for p in prompts], dtype=torch.float64)
    draws = torch.randint(len(prompts), (resamples, len(prompts)), generator=rng)
    row = {"videos": n, "prompts": len(prompts)}
    for attr in attributes:
        delta = torch.tensor([sum(_hit(a, attr) - _hit(b, attr) for b, a in p) for p in prompts],
                             dtype=torch.float64)
        changes = (delta[draws].sum(1) / size[draws].sum(1)).sort().values
        lost = sum(_hit(b, attr) and not _hit(a, attr) for b, a in pairs)
        gained = sum(_hit(a, attr) and not _hit(b, attr) for b, a in pairs)
        hits_before = sum(_hit(b, attr) for b, _ in pairs)
        row[attr] = {
            "before": hits_before / n, "after": (hits_before - lost + gained) / n,
            "change": (gained - lost) / n, "lost": lost, "gained": gained,
            "low": float(changes[int(0.025 * (resamples - 1))]),
            "high": float(changes[int(0.975 * (resamples - 1))]),
        }
    return row


def compare_adherence(before: dict, after: dict, resamples: int = 2000, seed: int = 0) -> dict:
    """Per split and attribute: accuracy before and after (two results of `evaluate_adherence`, e.g. a model
    and its adapter), on the videos both hold (same prompt, split and seed, so the same starting noise).

    Also the videos the change lost and gained, and a 95% interval of the change in accuracy from a paired
    bootstrap over prompts (all seeds of a drawn prompt go together: a prompt's seeds are not independent).
    The interval says what these videos can resolve: a bound such as "no more than 3 points lost" is shown
    only when its lower end lies above -3. Rows: each split, "old" (every split but the new motion, when
    both are present) and "all".
    """
    pairs = _paired(before, after)
    splits = [s for s in PROMPT_SPLITS if any(b["split"] == s for b, _ in pairs)]
    groups = {s: [s] for s in splits}
    if "shrink" in splits and len(splits) > 1:
        groups["old"] = [s for s in splits if s != "shrink"]
    groups["all"] = splits
    rng = torch.Generator().manual_seed(seed)
    return {name: _change([p for p in pairs if p[0]["split"] in members], ATTRIBUTES, rng, resamples)
            for name, members in groups.items()}


def compare_concepts(before: dict, after: dict, resamples: int = 2000, seed: int = 0) -> dict:
    """Per old concept, each colour, shape and motion the old splits' prompts ask for (every split but the new
    motion): how often the videos that ask for it show it, before and after, as `compare_adherence` counts
    them. Forgetting a concept ("square" drawn as circles) shows here wherever it is asked for, while
    `compare_adherence` pools each attribute over the concepts of a split. Rows "color red", "shape square",
    ... in the vocabulary's order."""
    pairs = [p for p in _paired(before, after) if p[0]["split"] != "shrink"]
    rng = torch.Generator().manual_seed(seed)
    vocabulary = {"color": list(COLORS), "shape": list(SHAPES), "motion": list(MOTIONS)}
    rows = {}
    for attr, values in vocabulary.items():
        for value in values:
            asked = [p for p in pairs if p[0][attr] == value]
            if asked:
                rows[f"{attr} {value}"] = _change(asked, (attr,), rng, resamples)
    return rows


def new_motion_drawn(before: dict, after: dict) -> dict:
    """Per old split (and "old", all of them): how many of its videos, before and after, draw a new motion
    (`NEW_MOTIONS`) that none of their prompts asks for. An adapter that learns "shrinking" can make it what
    the model draws for an old prompt it cannot parse; such a video loses its motion in `compare_adherence`,
    and this count says how much of that loss is the new motion taking over (rather than, say, "up" for
    "grow")."""
    pairs = [p for p in _paired(before, after) if p[0]["split"] != "shrink"]
    drawn = lambda video: video["read"]["motion"] in NEW_MOTIONS  # noqa: E731
    splits = [s for s in PROMPT_SPLITS if any(b["split"] == s for b, _ in pairs)]
    groups = {s: [p for p in pairs if p[0]["split"] == s] for s in splits} | {"old": pairs}
    return {name: {"videos": len(ps), "before": sum(drawn(b) for b, _ in ps), "after": sum(drawn(a) for _, a in ps)}
            for name, ps in groups.items() if ps}


def format_new_motion_drawn(rows: dict) -> str:
    """`new_motion_drawn` in one line: "seen 0 -> 0 of 72, ..., old 0 -> 32 of 456"."""
    return ", ".join(f"{name} {r['before']} -> {r['after']} of {r['videos']}" for name, r in rows.items())


def _change_cell(c: dict) -> str:
    return (f"{100 * c['before']:.1f} -> {100 * c['after']:.1f}% ({100 * c['change']:+.1f}; "
            f"-{c['lost']}/+{c['gained']}; [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}])")


def format_comparison(rows: dict) -> str:
    """`compare_adherence` as a Markdown table: before -> after (change in points, videos lost / gained,
    95% interval of the change)."""
    lines = [
        "| split | videos | colour | shape | motion | all three |",
        "|---|---|---|---|---|---|",
    ]
    for split, r in rows.items():
        lines.append(f"| {split} | {r['videos']} | " + " | ".join(_change_cell(r[a]) for a in ATTRIBUTES) + " |")
    return "\n".join(lines)


def format_concepts(rows: dict) -> str:
    """`compare_concepts` as a Markdown table, like `format_comparison`."""
    lines = ["| concept | videos | shown: before -> after |", "|---|---|---|"]
    for name, r in rows.items():
        attr, value = name.split(" ", 1)
        lines.append(f"| {attr} {value} | {r['videos']} | {_change_cell(r[attr])} |")
    return "\n".join(lines)


@torch.no_grad()
def evaluate_adherence(pipeline, cases: list[PromptCase], seeds: list[int], batch_size: int = 8,
                       **call_kwargs) -> dict:
    """Generate one video per (case, seed) and score it; `call_kwargs` go to the pipeline (steps, guidance).

    Video i of seed s draws its noise from `torch.Generator().manual_seed(s * 100_003 + i)`, so results do not
    depend on the batch size. Returns {"table": rows of `score`, "videos": per-video records}.
    """
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    jobs = [(seed, i, case) for seed in seeds for i, case in enumerate(cases)]
    all_cases, readings = [], []
    for start in tqdm(range(0, len(jobs), batch_size), desc="adherence", unit="batch"):
        chunk = jobs[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed * 100_003 + i) for seed, i, _ in chunk]
        videos = pipeline(
            [case.prompt for _, _, case in chunk], generator=generators, output_type="pt", **call_kwargs
        ).frames  # (B, F, 3, H, W) in [0, 1]
        for video, (_, _, case) in zip(videos, chunk, strict=True):
            all_cases.append(case)
            readings.append(read_clip(video))
    records = [
        {"seed": seed, **asdict(case), "read": asdict(reading)}
        for (seed, _, case), reading in zip(jobs, readings, strict=True)
    ]
    return {"table": score(all_cases, readings), "videos": records}


def ground_truth_check(num_clips: int = 500, seed: int = 0) -> dict:
    """Score the analyser on rendered clips of every combination (the answer key is known): the table of
    `score`, where each accuracy should be ~100%."""
    from latte.data.synthetic import SyntheticShapes

    data = SyntheticShapes(num_clips, seed=seed, split="all")
    all_combos, cases, readings = combinations("all"), [], []
    for i in tqdm(range(num_clips), desc="ground truth", unit="clip"):
        item = data[i]
        c, s, m = all_combos[item["label"]]
        cases.append(PromptCase(item["caption"], c, s, m, "heldout" if (c, s, m) in HELDOUT else "seen"))
        readings.append(read_clip((item["video"].transpose(0, 1) + 1) / 2))  # (F, 3, H, W) in [0, 1]
    return score(cases, readings)
