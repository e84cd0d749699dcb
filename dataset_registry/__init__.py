"""Dataset specs and converters (telecom, sharegpt) registered into LLaMA-Factory by name."""
