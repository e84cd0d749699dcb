"""Gemma: q_proj,v_proj (as the DCU field guide trains it), the gemma template; needs transformers 4.38."""

from .family import ModelFamily

FAMILY = ModelFamily(
    name="gemma",
    template="gemma",
    lora_target="q_proj,v_proj",
    model_types=("gemma",),
    architectures=("GemmaForCausalLM",),
    names=(r"gemma",),
    requires={"transformers": ">=4.38.0"},
    requires_why="GemmaTokenizer and the Gemma model arrived in transformers 4.38.0; older environments must upgrade",
    description="Google Gemma (2B / 7B)",
)
