"""The sequence length a train step will really see: its longest sample, tokenized.

LLaMA-Factory pads each batch to its longest sample, so the peak comes from the longest
sample after the chat template and cutoff_len, not from cutoff_len itself (a telecom
question is a few dozen tokens, not 2048). Batches also differ in length unless packing
fills them or most samples reach the longest length (cut to cutoff_len): then the longest
batch comes within the first steps and every later one fits the blocks it left. The data
goes through LLaMA-Factory's own pipeline with the model's tokenizer; the answer is cached
in $LFKIT_HOME by the data's fingerprint and the keys that change tokenization. Without
data or a tokenizer, the plan assumes every batch is cutoff_len long and says so: one
worst case, not two (batches that long leave no blocks of shorter, earlier lengths).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfkit.atomic import write_json
from lfkit.errors import UsageError
from lfkit.flags import truthy
from lfkit.locking import locked
from lfkit.paths import lfkit_home
from lfkit.state_files import MODEL_FILE_LIMIT, number, read_json_bounded

# The keys that change what a tokenized sample looks like.
TOKENIZE_KEYS = (
    "model_name_or_path", "dataset", "dataset_dir", "template", "cutoff_len", "stage", "train_on_prompt",
    "mask_history", "max_samples", "packing", "neat_packing", "default_system", "enable_thinking", "streaming",
)  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "merges.txt")


class DataUnusable(Exception):
    """LLaMA-Factory's own pipeline cannot load or tokenize the step's data: the run would fail the same way."""


@dataclass(frozen=True)
class Lengths:
    """What a step's batches look like to the plan."""

    tokens: int  # the longest, which sets the peak
    source: str  # where that figure comes from
    vary: bool  # batches differ in length (so the allocator keeps blocks of earlier lengths)


def _cache_file() -> Path:
    return lfkit_home() / "cache" / "sequence-lengths.json"


def _key(args: dict[str, Any], datasets: dict[str, dict[str, str]]) -> str:
    model = Path(str(args.get("model_name_or_path")))
    tokenizer = {name: (model / name).stat().st_mtime_ns for name in TOKENIZER_FILES if (model / name).is_file()}
    material = {
        "args": {k: args.get(k) for k in TOKENIZE_KEYS},
        "data": {name: d.get("sha256") for name, d in datasets.items()},
        "tokenizer": tokenizer,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read_cache() -> dict[str, Any]:
    try:
        data = read_json_bounded(_cache_file())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cached(entry: Any) -> tuple[int, int, int] | None:
    """(tokens, at_longest, samples) of a cache entry; None for a damaged one (measured again)."""
    if not isinstance(entry, dict):
        return None
    tokens, samples = number(entry.get("tokens")), number(entry.get("samples"))
    at_longest = number(entry.get("at_longest", 0))  # entries from before it was kept: taken to vary
    if tokens is None or samples is None or at_longest is None or tokens < 1 or samples < 1:
        return None
    return int(tokens), int(at_longest), int(samples)


def _measure(args: dict[str, Any]) -> tuple[int, int, int]:
    """(longest sample, samples of that length, samples) through LLaMA-Factory's own data pipeline."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its warnings go to the stderr it found at import, past any redirect
    # datasets logs a file it cannot parse as an error of its own, before raising what the plan reports
    datasets_logger = logging.getLogger("datasets")
    level = datasets_logger.level
    datasets_logger.setLevel(logging.CRITICAL)
    try:
        return _tokenized_lengths(args)
    finally:
        hf_logging.set_verbosity(verbosity)
        datasets_logger.setLevel(level)


def _tokenized_lengths(args: dict[str, Any]) -> tuple[int, int, int]:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    keep = {k: args[k] for k in (*TOKENIZE_KEYS, "trust_remote_code", "cache_dir") if args.get(k) is not None}
    keep.pop("streaming", None)
    with tempfile.TemporaryDirectory(prefix="lfkit-plan-") as scratch:
        keep.update({"output_dir": scratch, "do_train": True, "report_to": "none", "finetuning_type": "lora",
                     "stage": args.get("stage") or "sft", "overwrite_output_dir": True})  # fmt: skip
        model_args, data_args, training_args, _, _ = get_train_args(keep)
        tokenizer_module = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
        try:
            module = get_dataset(template, model_args, data_args, training_args, keep["stage"], **tokenizer_module)
        except OSError:
            raise  # a hub dataset out of reach, a file not readable here: the run's machine may do better
        except Exception as exc:  # noqa: BLE001 - the data itself: a parse error, fields of the wrong type
            raise DataUnusable(_innermost(exc)) from exc
    lengths = [len(ids) for ids in module["train_dataset"]["input_ids"]]
    longest = max(lengths)
    return longest, lengths.count(longest), len(lengths)


def _innermost(exc: BaseException) -> str:
    """The error and, where it wraps another (datasets around pyarrow), the one that says what is wrong."""
    chain, seen = [exc], {id(exc)}
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None and id(inner) not in seen:
        chain.append(inner)
        seen.add(id(inner))

    def words(e: BaseException) -> str:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"{type(e).__name__}: {text}" if text else type(e).__name__

    said = words(exc)
    return said if len(chain) == 1 else f"{said} ({words(chain[-1])})"


def _tokenizer_is_folder_code(model: Path) -> bool:
    """The folder brings its tokenizer as code (a tokenization_*.py, or auto_map naming AutoTokenizer in
    tokenizer_config.json or config.json, which transformers both read), as ChatGLM3 and Baichuan2 do."""
    if any(model.glob("tokenization_*.py")):
        return True
    for name in ("tokenizer_config.json", "config.json"):
        try:
            config = read_json_bounded(model / name, MODEL_FILE_LIMIT)
        except (OSError, ValueError):
            continue
        auto_map = config.get("auto_map") if isinstance(config, dict) else None
        if isinstance(auto_map, dict) and "AutoTokenizer" in auto_map:
            return True
    return False


def longest_sample(args: dict[str, Any], datasets: dict[str, dict[str, str]]) -> Lengths:
    """The longest sample of a train step, where that figure comes from, and whether batch lengths vary
    (where the data is not read, every batch is taken at cutoff_len)."""
    cutoff = int(args.get("cutoff_len") or 2048)
    if truthy(args.get("packing")) or truthy(args.get("neat_packing")):
        return Lengths(cutoff, "cutoff_len (packing fills every sequence)", vary=False)
    if not args.get("dataset"):
        return _assumed(cutoff, "no dataset given")
    if truthy(args.get("streaming")):
        return _assumed(cutoff, "a streamed dataset is not read ahead")
    model = Path(str(args.get("model_name_or_path")))
    if model.is_dir() and not any((model / name).is_file() for name in TOKENIZER_FILES):
        return _assumed(cutoff, "no tokenizer in the model folder")
    if model.is_dir() and _tokenizer_is_folder_code(model) and not truthy(args.get("trust_remote_code")):
        return _assumed(cutoff, "the tokenizer is the model folder's code: trust_remote_code=true reads the data")
    key = _key(args, datasets)
    cached = _cached(_read_cache().get(key))
    if cached:
        tokens, at_longest, samples = cached
        return Lengths(tokens, f"longest of {samples} samples, tokenized (cached)", vary=_vary(at_longest, samples))
    try:
        # LLaMA-Factory prints a training example and progress bars while it tokenizes; a plan shows none
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            tokens, at_longest, samples = _measure(args)
    except DataUnusable as exc:
        raise UsageError(
            f"LLaMA-Factory cannot load dataset {args.get('dataset')}: {str(exc)[:300]}; the run would fail the same "
            "way (check the file against LLaMA-Factory's data/README.md, or register it with `lfkit data add`, "
            "which checks it)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the plan goes on with the bound; the reason is shown
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _assumed(cutoff, f"the data could not be tokenized here: {reason[:120]}")
    try:
        cache = _cache_file()
        cache.parent.mkdir(parents=True, exist_ok=True)
        with locked(cache.with_name(cache.name + ".lock")):
            entries = _read_cache()
            entries[key] = {"tokens": tokens, "at_longest": at_longest, "samples": samples}
            write_json(cache, entries)
    except OSError:
        pass  # a read-only LFKIT_HOME only costs the next plan the same measurement
    return Lengths(tokens, f"longest of {samples} samples, tokenized", vary=_vary(at_longest, samples))


def _assumed(cutoff: int, why: str) -> Lengths:
    """Lengths not read: every batch taken at cutoff_len. Shorter batches would need less; they would
    only show more in nvidia-smi (blocks of earlier lengths, which the allocator hands back)."""
    return Lengths(cutoff, f"cutoff_len, assumed for every batch ({why})", vary=False)


def _vary(at_longest: int, samples: int) -> bool:
    """Whether the allocator sees batches grow over the run: unless most samples are of the longest length."""
    return 2 * at_longest < samples
