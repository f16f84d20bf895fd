"""Evaluation: FVD / FID / IS under pinned protocols (`metrics`, `protocol`, `detectors`, `frechet`) and prompt
adherence on the synthetic shapes domain (`adherence`)."""
