"""Recipe files (YAML) wrapping LLaMA-Factory's train / export / chat entry points, and their loader."""
