"""A model family: how to recognise it, and what a run on it needs.

Plain data, registered through ``lfkit_register_models(register)`` as
``register(name, ModelFamily(...))``. Detection (``detect``) scores a model
folder against every registered family; the run-time side (``defaults``) fills
the template and lora_target a user did not give, asks for consent before remote
code runs, and stops early on a transformers that cannot load the family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelFamily:
    name: str
    template: str  # LLaMA-Factory chat template
    lora_target: str  # LLaMA-Factory lora_target (comma-separated module names)
    model_types: tuple[str, ...] = ()  # config.json model_type
    architectures: tuple[str, ...] = ()  # config.json architectures
    names: tuple[str, ...] = ()  # regexes on the folder name, lower-cased
    config_match: dict[str, Any] = field(default_factory=dict)  # config.json values that single it out
    remote_code: bool = False  # runs Python from the model folder (trust_remote_code)
    fixes: tuple[str, ...] = ()  # ids of the patches it brings
    requires: dict[str, str] = field(default_factory=dict)  # distribution -> specifier, with the reason in why
    requires_why: str = ""
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "template": self.template,
            "lora_target": self.lora_target,
            "recognised_by": recognised_by(self),
            "remote_code": self.remote_code,
            "fixes": list(self.fixes),
            "requires": dict(self.requires),
            "description": self.description,
        }


def recognised_by(family: ModelFamily) -> list[str]:
    out = [f"model_type={t}" for t in family.model_types]
    out += [f"architecture={a}" for a in family.architectures]
    out += [f"{k}={v}" for k, v in family.config_match.items()]
    out += [f"name~{n}" for n in family.names]
    return out
