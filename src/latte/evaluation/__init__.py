"""Evaluation: prompt adherence on the synthetic shapes domain (`adherence`)."""
