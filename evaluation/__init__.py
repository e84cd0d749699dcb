"""Measuring a model on a test split: generate answers, score them against the references.

LLaMA-Factory 0.9.5's own ``eval`` command raises NotImplementedError; the telecom fine-tune's
author judged answers by eye. ``metrics`` scores, ``generate`` produces the
answers through LLaMA-Factory's own loader and template, ``runner`` ties them to
a dataset and writes predictions.jsonl and metrics.json.
"""
