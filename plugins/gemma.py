"""Gemma: q_proj,v_proj (seed 000), the gemma template; GemmaTokenizer needs transformers 4.38."""

from .family import ModelFamily

FAMILY = ModelFamily(
    name="gemma",
    template="gemma",
    lora_target="q_proj,v_proj",
    model_types=("gemma",),
    architectures=("GemmaForCausalLM",),
    names=(r"gemma",),
    requires={"transformers": ">=4.38.0"},
    requires_why="GemmaTokenizer and the Gemma model arrived in transformers 4.38.0; seed 000 upgraded for them",
    description="Google Gemma (2B / 7B)",
)
