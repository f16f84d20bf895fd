import argparse
import json
from types import SimpleNamespace

import pytest
import torch

from latte.cli import evaluate as evaluate_cli
from latte.cli.main import main
from latte.data.synthetic import HELDOUT, PARAPHRASES_PER_COMBINATION, combinations, paraphrase_prompts, render_clip
from latte.evaluation.adherence import (
    compare_adherence,
    compare_concepts,
    evaluate_adherence,
    format_concepts,
    format_new_motion_drawn,
    format_table,
    ground_truth_check,
    new_motion_drawn,
    prompt_set,
    read_clip,
)
from tiny_components import build_tiny_pipeline_folder


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """Dataset layout (3, F, H, W) in [-1, 1] -> analyser layout (F, 3, H, W) in [0, 1]."""
    return (video.transpose(0, 1) + 1) / 2


def test_analyser_is_right_on_ground_truth_clips():
    table = ground_truth_check(num_clips=100, seed=5)["all"]
    assert table["videos"] == 100
    for attr in ("color", "shape", "motion", "all", "consistency"):
        assert table[attr] >= 0.99, (attr, table)
    assert table["jitter_px"] < 0.5


def test_analyser_tolerates_noise_and_blur():
    g = torch.Generator().manual_seed(0)
    clips = [
        ("purple", "triangle", "down", "gray"), ("yellow", "square", "grow", "white"),
        ("cyan", "circle", "left", "black"), ("red", "square", "right", "white"),
    ]
    for color, shape, motion, bg in clips:
        video = frames_of(render_clip(color, shape, motion, bg, shape_size="large", start=(0.4, 0.6)))
        video = torch.nn.functional.avg_pool2d(video, 3, stride=1, padding=1, count_include_pad=False)  # blur
        video = video + 0.04 * torch.randn(video.shape, generator=g)
        reading = read_clip(video)
        assert (reading.color, reading.shape, reading.motion) == (color, shape, motion)
        assert reading.consistency > 0.9


def test_blank_and_static_videos_read_as_wrong():
    blank = read_clip(torch.zeros(16, 3, 64, 64))
    assert (blank.color, blank.shape, blank.motion, blank.consistency) == ("none", "none", "none", 0.0)
    still = frames_of(render_clip("red", "circle", "left"))[:1].repeat(16, 1, 1, 1)
    assert read_clip(still).motion == "static"
    reverse = frames_of(render_clip("red", "circle", "grow")).flip(0)
    assert read_clip(reverse).motion == "shrink"
    with pytest.raises(ValueError, match="frames"):
        read_clip(torch.zeros(3, 16, 64))


def test_prompt_set_covers_seen_heldout_and_paraphrase():
    cases = prompt_set(num_seen=10)
    seen = [c for c in cases if c.split == "seen"]
    held = [c for c in cases if c.split == "heldout"]
    para = [c for c in cases if c.split == "paraphrase"]
    assert len(seen) == 10 and len(held) == len(HELDOUT)
    assert all((c.color, c.shape, c.motion) in combinations("train") for c in seen)
    assert {(c.color, c.shape, c.motion) for c in held} == set(HELDOUT)
    assert cases[0].prompt == f"a {cases[0].color} {cases[0].shape} moving {cases[0].motion}"
    # The paraphrases: the held-out targets, phrased as no training caption is; last, so the seen and
    # held-out videos keep their seeds.
    assert cases[-len(para):] == para and len(para) == PARAPHRASES_PER_COMBINATION * len(HELDOUT)
    assert [(c.prompt, (c.color, c.shape, c.motion)) for c in para] == paraphrase_prompts()
    assert prompt_set(num_seen=10, paraphrase=False) == cases[: -len(para)]
    with pytest.raises(ValueError, match="num_seen"):
        prompt_set(num_seen=0)


def test_prompt_set_with_the_new_concept():
    cases = prompt_set(num_seen=4, shrink=True)
    shrink = [c for c in cases if c.split == "shrink"]
    assert cases[: -len(shrink)] == prompt_set(num_seen=4)  # appended: the other videos keep their seeds
    assert [(c.color, c.shape, c.motion) for c in shrink] == combinations("shrink")
    assert shrink[0].prompt == "a red circle shrinking"
    result = evaluate_adherence(RenderingPipeline(shrink), shrink, seeds=[0], batch_size=18)
    assert list(result["table"]) == ["shrink", "all"] and result["table"]["shrink"]["all"] == 1.0
    assert "| shrink | 18 |" in format_table(result["table"])


class RenderingPipeline:
    """Stands in for LattePipeline: renders what each prompt of `cases` asks for (optionally with the wrong
    colour)."""

    def __init__(self, cases, wrong_color: bool = False):
        self.targets = {case.prompt: (case.color, case.shape, case.motion) for case in cases}
        self.wrong_color, self.calls = wrong_color, []

    def __call__(self, prompts, generator, output_type, **kwargs):
        assert output_type == "pt" and len(generator) == len(prompts)
        self.calls.append(kwargs)
        videos = []
        for prompt in prompts:
            color, shape, motion = self.targets[prompt]
            color = "blue" if self.wrong_color and color != "blue" else color
            videos.append(frames_of(render_clip(color, shape, motion)))
        return SimpleNamespace(frames=torch.stack(videos))


def test_evaluate_adherence_scores_each_attribute():
    cases = prompt_set(num_seen=4)
    result = evaluate_adherence(RenderingPipeline(cases), cases, seeds=[0, 1], batch_size=5, num_inference_steps=3)
    table = result["table"]
    assert table["all"]["videos"] == 2 * len(cases) == len(result["videos"])
    assert table["paraphrase"]["videos"] == 2 * PARAPHRASES_PER_COMBINATION * len(HELDOUT)
    assert table["seen"]["all"] == table["heldout"]["all"] == table["paraphrase"]["all"] == 1.0
    wrong = evaluate_adherence(RenderingPipeline(cases, wrong_color=True), cases, seeds=[0])["table"]
    for split in ("paraphrase", "all"):
        assert wrong[split]["color"] < 0.3 and wrong[split]["shape"] == 1.0 and wrong[split]["motion"] == 1.0
    assert list(table) == ["seen", "heldout", "paraphrase", "all"]
    assert "| seen |" in format_table(table) and "| paraphrase | 48 |" in format_table(table)
    with pytest.raises(ValueError, match="seeds"):
        evaluate_adherence(RenderingPipeline(cases), cases, seeds=[])


def test_cli_ground_truth(capsys, tmp_path):
    parser = argparse.ArgumentParser()
    evaluate_cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "gt.json"
    args = parser.parse_args(["eval", "adherence", "--ground-truth", "12", "--json", str(out)])
    assert args.run(args) == 0
    assert "| all | 12 | 100.0% | 100.0% | 100.0% |" in capsys.readouterr().out
    assert out.is_file()


def test_cli_reports_the_paraphrase_split_of_a_model(capsys, tmp_path):
    """A tiny random pipeline: the numbers mean nothing, the rows and the words it cannot represent do."""
    folder = build_tiny_pipeline_folder(tmp_path / "tiny")
    out = tmp_path / "adherence.json"
    assert main(["eval", "adherence", "--model", str(folder), "--seeds", "0", "--num-seen", "1", "--steps", "1",
                 "--batch-size", "33", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    paraphrases = PARAPHRASES_PER_COMBINATION * len(HELDOUT)
    for row in ("| seen | 1 |", f"| heldout | {len(HELDOUT)} |", f"| paraphrase | {paraphrases} |"):
        assert row in printed, printed
    assert "| shrink |" not in printed  # only with --shrink
    report = json.loads(out.read_text())
    assert [v["split"] for v in report["videos"]].count("paraphrase") == paraphrases
    # The tiny tokenizer never saw the domain's rarer words: they are named once, and in the report.
    unknown = report["settings"]["unrepresented_words"]
    assert "disc" in unknown and "words of the prompts this model's tokenizer cannot represent" in printed


def test_cli_reports_the_shrink_split(capsys, tmp_path):
    folder = build_tiny_pipeline_folder(tmp_path / "tiny")
    assert main(["eval", "adherence", "--model", str(folder), "--seeds", "0", "--num-seen", "1", "--steps", "1",
                 "--batch-size", "64", "--shrink"]) == 0
    assert f"| shrink | {len(combinations('shrink'))} |" in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "precision"), [(["--dtype", "bf16"], "bf16"),
                                                 (["--quantize", "int8-dynamic"], "fp32, int8-dynamic")])
def test_cli_evaluates_the_pipeline_in_the_precision_asked(capsys, tmp_path, flags, precision):
    """`--dtype` / `--quantize` run the pipeline as `latte generate` would, and the report says which."""
    folder = build_tiny_pipeline_folder(tmp_path / "tiny")
    out = tmp_path / "report.json"
    assert main(["eval", "adherence", "--model", str(folder), "--seeds", "0", "--num-seen", "1", "--steps", "1",
                 "--batch-size", "64", "--json", str(out), *flags]) == 0
    assert f"tiny ({precision}): " in capsys.readouterr().out
    settings = json.loads(out.read_text())["settings"]
    assert f"{settings['dtype']}" + (f", {settings['quantize']}" if settings["quantize"] else "") == precision


def _random_adapter(model_folder, out):
    """A rank-2 adapter with random weights for the transformer of `model_folder`, saved in peft's format."""
    from latte import LatteT2VTransformer
    from latte.models import lora

    torch.manual_seed(0)
    model = LatteT2VTransformer.from_pretrained(model_folder / "transformer")
    config = lora.lora_config(2)
    lora.add_adapter(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    out.mkdir()
    lora.save_adapter(out, config, lora.adapter_state_dict(model))
    return out


def test_cli_evaluates_a_model_with_lora_adapters(capsys, tmp_path):
    """`--lora PATH:SCALE` fuses the adapter as `latte generate --lora` does: at scale 0 every reading is the base
    model's; the adapter is named in the report; one trained on another model is refused in one line."""
    folder = build_tiny_pipeline_folder(tmp_path / "tiny")
    adapter = _random_adapter(folder, tmp_path / "adapter")
    args = ["eval", "adherence", "--model", str(folder), "--seeds", "0", "--num-seen", "1", "--steps", "1",
            "--batch-size", "64"]
    assert main([*args, "--json", str(tmp_path / "base.json")]) == 0
    assert main([*args, "--lora", f"{adapter}:0", "--json", str(tmp_path / "zero.json"), "--baseline",
                 str(tmp_path / "base.json")]) == 0
    assert f"+ LoRA {adapter}:0 (fp32):" in capsys.readouterr().out
    base, zero = (json.loads((tmp_path / name).read_text()) for name in ("base.json", "zero.json"))
    assert zero["videos"] == base["videos"] and zero["settings"]["lora"] == [f"{adapter}:0"]
    unchanged = zero["baseline"]["comparison"]["all"]  # compared with the base model's videos: nothing moved
    assert all((unchanged[a]["lost"], unchanged[a]["gained"]) == (0, 0) for a in ("color", "shape", "motion"))

    deeper = build_tiny_pipeline_folder(tmp_path / "deeper", num_layers=4)
    stranger = _random_adapter(deeper, tmp_path / "stranger")
    capsys.readouterr()  # the folder's saving progress
    assert main([*args, "--lora", str(stranger)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latte eval: error: adapter ") and "does not fit" in err and err.count("\n") == 1, err


def _record(prompt, seed, right, split="heldout"):
    """An adherence record of a red circle moving left, read right or as a square."""
    read = {"color": "red", "shape": "circle" if right else "square", "motion": "left", "consistency": 1.0,
            "jitter": 0.0}
    return {"split": split, "prompt": prompt, "seed": seed, "color": "red", "shape": "circle", "motion": "left",
            "read": read}


def test_comparison_counts_what_was_lost_and_gained_per_prompt():
    """Ten prompts x 2 seeds; after the change prompt 0 loses both seeds, prompt 1 gains one: -1 / 20 = -5
    points of shape. The bootstrap draws whole prompts, so its interval holds the change, and an unchanged
    attribute (colour) has an interval of exactly zero."""
    before = {"videos": [_record(f"p{i}", s, right=i != 1 or s == 1) for i in range(10) for s in (0, 1)]}
    after = {"videos": [_record(f"p{i}", s, right=i != 0) for i in range(10) for s in (0, 1)]}
    row = compare_adherence(before, after)["heldout"]
    shape = row["shape"]
    assert (row["videos"], row["prompts"], shape["lost"], shape["gained"]) == (20, 10, 2, 1)
    assert shape["before"] == 0.95 and shape["after"] == 0.9 and shape["change"] == pytest.approx(-0.05)
    assert -0.5 < shape["low"] < -0.05 < shape["high"] < 0.25  # the extremes: -1 (all draws prompt 0), +0.5
    assert row["color"] == {"before": 1.0, "after": 1.0, "change": 0.0, "lost": 0, "gained": 0,
                            "low": 0.0, "high": 0.0}


def test_comparison_pairs_videos_and_adds_the_old_splits():
    """Only videos in both results are compared (same split, prompt and seed); with the new motion present an
    'old' row pools the other splits; results with nothing in common are refused."""
    before = {"videos": [_record("a", 0, True), _record("a", 1, True), _record("s", 0, False, split="shrink")]}
    after = {"videos": [_record("a", 0, False), _record("s", 0, True, split="shrink"), _record("a", 7, False)]}
    rows = compare_adherence(before, after)
    assert list(rows) == ["heldout", "shrink", "old", "all"]
    assert rows["old"]["videos"] == 1 and rows["old"]["shape"]["change"] == -1.0
    assert rows["all"]["videos"] == 2 and rows["all"]["shape"]["change"] == 0.0
    with pytest.raises(ValueError, match="share no video"):
        compare_adherence(before, {"videos": [_record("b", 0, True)]})
    with pytest.raises(ValueError, match="the baseline holds some video twice"):
        compare_adherence({"videos": before["videos"] * 2}, after)


def test_concepts_count_each_old_concept_where_it_is_asked():
    """Squares drawn as circles after the change: 'shape square' loses them over every old split that asks
    for squares, 'shape circle' is unchanged, colours and motions keep their readings, and the new motion's
    split is left out (its prompts ask for old colours and shapes too, but in a motion the model never saw)."""
    def video(split, prompt, seed, shape, read_shape):
        read = {"color": "red", "shape": read_shape, "motion": "left", "consistency": 1.0, "jitter": 0.0}
        return {"split": split, "prompt": prompt, "seed": seed, "color": "red", "shape": shape, "motion": "left",
                "read": read}

    asked = [("seen", "a red square moving left", "square"), ("heldout", "a red circle moving left", "circle"),
             ("paraphrase", "the box sliding left is red", "square"), ("shrink", "a red square shrinking", "square")]
    before = {"videos": [video(sp, p, s, sh, sh) for sp, p, sh in asked for s in (0, 1)]}
    after = {"videos": [video(sp, p, s, sh, "circle") for sp, p, sh in asked for s in (0, 1)]}
    rows = compare_concepts(before, after)
    assert list(rows) == ["color red", "shape circle", "shape square", "motion left"]
    assert rows["shape square"]["videos"] == 4 and rows["shape square"]["prompts"] == 2
    square = rows["shape square"]["shape"]
    assert (square["before"], square["after"], square["lost"], square["gained"]) == (1.0, 0.0, 4, 0)
    assert rows["shape circle"]["shape"]["change"] == 0.0 and rows["color red"]["videos"] == 6
    assert set(rows["color red"]) == {"videos", "prompts", "color"}  # only the attribute that names the concept
    table = format_concepts(rows)
    assert "| shape square | 4 | 100.0 -> 0.0% (-100.0; -4/+0; [-100.0, -100.0]) |" in table


def test_new_motion_drawn_counts_old_videos_that_show_it():
    """An old prompt drawn shrinking is counted in its split and in "old"; a video of the new motion's own
    split is not (it asks for shrinking), and neither is another wrong motion."""
    def video(split, seed, read_motion):
        record = _record(f"{split} prompt", seed, True, split)
        record["read"]["motion"] = read_motion
        return record

    before = {"videos": [video(s, k, "left") for s in ("seen", "paraphrase", "shrink") for k in (0, 1)]}
    after = {"videos": [video("seen", 0, "left"), video("seen", 1, "up"), video("paraphrase", 0, "shrink"),
                        video("paraphrase", 1, "shrink"), video("shrink", 0, "shrink"), video("shrink", 1, "shrink")]}
    rows = new_motion_drawn(before, after)
    assert rows == {"seen": {"videos": 2, "before": 0, "after": 0},
                    "paraphrase": {"videos": 2, "before": 0, "after": 2}, "old": {"videos": 4, "before": 0, "after": 2}}
    assert format_new_motion_drawn(rows) == "seen 0 -> 0 of 2, paraphrase 0 -> 2 of 2, old 0 -> 2 of 4"


def test_cli_prints_old_videos_drawn_with_the_new_motion(capsys, tmp_path):
    shrinking = {"split": "shrink", "prompt": "a red circle shrinking", "motion": "shrink"}
    before = {"videos": [_record("p", 0, True, "paraphrase"), _record("s", 0, True) | shrinking]}
    after = json.loads(json.dumps(before))
    after["videos"][0]["read"]["motion"] = "shrink"
    for name, result in (("before", before), ("after", after)):
        (tmp_path / f"{name}.json").write_text(json.dumps(result))
    assert main(["eval", "adherence", "--from", str(tmp_path / "after.json"), "--baseline",
                 str(tmp_path / "before.json")]) == 0
    assert "which none of their prompts asks for: paraphrase 0 -> 1 of 1, old 0 -> 1 of 1" in capsys.readouterr().out


def test_cli_compares_saved_results(capsys, tmp_path):
    """`--from` reads results instead of generating (repeated: pooled, e.g. two training seeds), `--baseline`
    prints the comparison and keeps it in the --json report; a file that is no result is named in one line."""
    before = {"videos": [_record(f"p{i}", 0, True) for i in range(4)]}
    after = [{"videos": [_record(f"p{i}", 0, i != k) for i in range(4)]} for k in (0, 1)]
    paths = []
    for name, result in (("before", before), ("after0", after[0]), ("after1", after[1])):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(result))
    out = tmp_path / "cmp.json"
    assert main(["eval", "adherence", "--from", str(paths[1]), "--from", str(paths[2]), "--baseline",
                 str(paths[0]), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| heldout | 8 | 100.0% | 75.0% |" in printed  # the pooled table: 2 of 8 videos lose their shape
    assert "| heldout | 8 | 100.0 -> 100.0% (+0.0; -0/+0; [+0.0, +0.0]) | 100.0 -> 75.0% (-25.0; -2/+0; " in printed
    assert "| shape circle | 8 | 100.0 -> 75.0% (-25.0; -2/+0; " in printed  # per old concept
    report = json.loads(out.read_text())
    assert report["baseline"]["comparison"]["heldout"]["shape"]["lost"] == 2
    assert report["baseline"]["concepts"]["shape circle"]["shape"]["lost"] == 2

    (tmp_path / "other.json").write_text(json.dumps({"table": {}}))
    assert main(["eval", "adherence", "--from", str(paths[1]), "--baseline", str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err
    assert "other.json is not a result of `latte eval adherence --json`" in err and err.count("\n") == 1, err


def test_cli_pools_baselines_of_other_seeds(capsys, tmp_path):
    """Repeated --baseline pools results of other seeds (e.g. before with seeds 0-5 and with 6-11) and pairs
    each video with its own seed; a video in two baselines is refused in one line, before any generation."""
    def write(name, videos):
        (tmp_path / name).write_text(json.dumps({"videos": videos}))
        return str(tmp_path / name)

    base0 = write("b0.json", [_record(f"p{i}", 0, True) for i in range(4)])
    base1 = write("b1.json", [_record(f"p{i}", 1, i != 0) for i in range(4)])
    after = write("a.json", [_record(f"p{i}", s, i == 0) for i in range(4) for s in (0, 1)])
    out = tmp_path / "cmp.json"
    assert main(["eval", "adherence", "--from", after, "--baseline", base0, "--baseline", base1,
                 "--json", str(out)]) == 0
    heldout = json.loads(out.read_text())["baseline"]["comparison"]["heldout"]
    shape = heldout["shape"]
    # before: 7 of 8 right (p0 at seed 1 wrong); after: p0 right at both seeds, the rest wrong
    assert (heldout["videos"], shape["lost"], shape["gained"]) == (8, 6, 1)
    assert abs(shape["change"] - (2 / 8 - 7 / 8)) < 1e-9
    assert f"against {base0}, {base1}" in capsys.readouterr().out
    assert main(["eval", "adherence", "--from", after, "--baseline", base0, "--baseline", base0]) == 2
    err = capsys.readouterr().err
    assert f"--baseline {base0} {base0}: the baseline holds some video twice" in err and err.count("\n") == 1, err
