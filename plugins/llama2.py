"""LLaMA-2: q_proj,v_proj (as the DCU field guide trains it), the llama2 template.

model_type ``llama`` is shared by LLaMA-3 and many derivatives; a plugin for one
of those claims it more precisely (config_match, a name pattern) and wins.
"""

from .family import ModelFamily

FAMILY = ModelFamily(
    name="llama2",
    template="llama2",
    lora_target="q_proj,v_proj",
    model_types=("llama",),
    architectures=("LlamaForCausalLM",),
    names=(r"llama-?2",),
    config_match={"vocab_size": 32000},
    description="Meta LLaMA-2 (7B / 13B / 70B, chat and base)",
)
