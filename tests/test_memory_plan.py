"""The memory plan: from config.json alone, checked against real tensors, the published model sizes
and what the field reports found on 16 GB cards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import BIN, FIXTURES, REPO, clean_env, py, run

CONFIGS = FIXTURES / "model_configs"
GIB = 2**30
# Parameter counts as their model cards publish them.
PUBLISHED = {
    "Llama-2-7b-hf": 6_738_415_616,
    "chatglm3-6b": 6_243_584_000,
    "Baichuan2-7B-Chat": 7_505_973_248,
    "gemma-2b": 2_506_172_416,
    "Mistral-7B-v0.1": 7_241_732_096,
    "pythia-6.9b": 6_857_302_016,  # GPT-NeoX, which no plugin lays out: transformers gives the shape
}


@pytest.fixture(scope="module")
def seed_models(tmp_path_factory, tiny_llama) -> dict[str, Path]:
    """Each shipped config.json beside the tiny tokenizer: the plan tokenizes the telecom data with it."""
    root = tmp_path_factory.mktemp("seed-models")
    out = {}
    for name in PUBLISHED:
        folder = root / name
        folder.mkdir()
        shutil.copy(CONFIGS / name / "config.json", folder / "config.json")
        for file in tiny_llama.glob("tokenizer*"):
            shutil.copy(file, folder / file.name)
        out[name] = folder
    return out


def plans(recipe: str, *assignments: str):
    from lfkit.cli.plan import step_plans
    from lfkit.cli.recipes import plan_for

    plan = plan_for(recipe, [*assignments, "output_dir=/nonexistent/plan-only"], None)
    return step_plans(plan)


def sft_single(model: Path, *extra: str):
    """The hand-written sft_single.sh of the DCU field guide, on a 16 GiB card."""
    (step,) = plans(
        "sft-lora-single",
        f"model={model}",
        "dataset=telecom_demo",
        "template=default",
        "trust_remote_code=true",
        "gpu_memory=16GiB",
        *extra,
    )
    return step


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameters_from_config_json_alone_match_the_published_counts(name):
    from lfkit.planning.shapes import model_shape

    shape = model_shape(CONFIGS / name)
    assert shape.parameters == PUBLISHED[name]
    assert not list((CONFIGS / name).glob("*.safetensors"))


@pytest.mark.parametrize("name", ["Llama-2-7b-hf", "chatglm3-6b"])
def test_full_and_freeze_of_a_7b_model_do_not_fit_16_gib_and_lora_does(seed_models, name):
    lora = sft_single(seed_models[name])
    assert lora.fits is True, lora.as_dict()
    assert lora.estimate.setting.seq_len < 128  # the telecom questions, tokenized, not cutoff_len
    assert lora.estimate.setting.seq_source.startswith("longest of 400 samples")
    for method in ("full", "freeze"):
        step = sft_single(seed_models[name], f"finetuning_type={method}")
        assert step.fits is False and step.refused
        assert step.suggestions, f"{method}: no change offered"
        assert all(s.estimate.needed <= 16 * GIB for s in step.suggestions)
        assert step.suggestions[0].change.get("finetuning_type") == "lora"


def test_gemma_2b_with_the_tuned_rank_128_dora_settings(seed_models):
    (step,) = plans("sft-lora-tuned", f"model={seed_models['gemma-2b']}", "dataset=telecom_demo", "gpu_memory=16GiB")
    # q_proj and v_proj of 18 layers (the gemma family's target): rank x (in + out), plus DoRA's
    # magnitude vector of out values; gemma-2b: hidden 2048, one key/value head of 256.
    per_layer = 128 * (2048 + 2048) + 2048 + 128 * (2048 + 256) + 256
    assert step.estimate.parameters["trainable"] == 18 * per_layer == 14_787_072
    rows = step.estimate.rows
    assert rows["weights"] == 2 * PUBLISHED["gemma-2b"]  # bf16, as gemma-2b's config.json says
    assert rows["trainable"] == rows["gradients"] == 4 * 14_787_072  # upcast to float32
    # 256k vocabulary: at micro-batch 8 the logits outweigh everything trained
    assert rows["logits"] > 5 * rows["optimizer"]
    # and the blocks that batches of varying length leave behind follow the vocabulary too
    assert rows["lengths"] > rows["logits"] / 2
    assert step.fits and 5 * GIB < step.estimate.needed < 14 * GIB
    # blocks of earlier lengths show in nvidia-smi, but the allocator hands them back before out-of-memory
    assert step.estimate.reading == step.estimate.needed + rows["lengths"] + rows["cached"]


def test_a_shorter_cutoff_changes_the_sequence_the_plan_uses(seed_models):
    step = sft_single(seed_models["Llama-2-7b-hf"], "cutoff_len=16")
    assert step.estimate.setting.seq_len == 16
    assert not step.estimate.setting.seq_source.startswith("cutoff_len")


def test_batches_of_varying_length_add_the_allocators_blocks_of_earlier_lengths(seed_models):
    """The telecom questions differ in length, so LLaMA-Factory's batches do (each padded to its own longest):
    the allocator keeps blocks of earlier lengths, 4.5 float32 logits of the longest batch. Cut to 16 tokens,
    every sample is 16 long; packed, every sequence is cutoff_len long: no such blocks."""
    from lfkit.planning.memory import VARYING_LENGTH_LOGITS, estimate
    from lfkit.planning.shapes import model_shape

    model = seed_models["Llama-2-7b-hf"]
    step = sft_single(model).estimate.setting
    assert step.lengths_vary and "batch lengths vary" in step.describe()

    shape, args = model_shape(model), {"finetuning_type": "lora", "bf16": True, "per_device_train_batch_size": 2}
    varied = estimate(shape, args, {}, 100, "cutoff_len", "gpu", lengths_vary=True)
    same = estimate(shape, args, {}, 100, "cutoff_len", "gpu", lengths_vary=False)
    assert varied.rows["lengths"] == int(VARYING_LENGTH_LOGITS * 2 * 100 * 32000 * 4) and same.rows["lengths"] == 0
    assert {k: v for k, v in varied.rows.items() if k != "lengths"} == {
        k: v for k, v in same.rows.items() if k != "lengths"
    }
    assert varied.tensors == same.tensors  # blocks the allocator keeps, not tensors
    assert varied.needed == same.needed  # and they stop no run
    cut = sft_single(model, "cutoff_len=16").estimate.setting
    assert cut.seq_len == 16 and not cut.lengths_vary and "batches all of the longest length" in cut.describe()
    packed = sft_single(model, "packing=true", "cutoff_len=256").estimate.setting
    assert packed.seq_len == 256 and not packed.lengths_vary


def test_a_chatglm3_plan_says_what_its_own_eager_attention_would_add():
    """ChatGLM3's modelling code picks its own attention, and the chat model's code of early 2024 kept
    seq x seq scores in training: a plan with efficient attention says how much more that code needs
    (the difference to flash_attn=disabled, which plans it), once it is more than 1 GiB."""
    from lfkit.planning.memory import FRAGMENTATION_FRACTION, estimate
    from lfkit.planning.shapes import model_shape

    args = {"finetuning_type": "lora", "bf16": True, "per_device_train_batch_size": 1}
    glm, llama = model_shape(CONFIGS / "chatglm3-6b"), model_shape(CONFIGS / "Llama-2-7b-hf")
    efficient = estimate(glm, args, {}, 4096, "cutoff_len", "gpu")
    eager = estimate(glm, {**args, "flash_attn": "disabled"}, {}, 4096, "cutoff_len", "gpu")
    (note,) = [n for n in efficient.notes if "ChatGLM3's modelling code" in n]
    added = (eager.rows["activations"] - efficient.rows["activations"]) * (1 + FRAGMENTATION_FRACTION) / GIB
    assert added > 5 and f"about {added:.1f} GiB more" in note, note
    assert not any("attention scores" in n for n in eager.notes)  # planned with the scores: nothing to add
    short = estimate(glm, args, {}, 1024, "cutoff_len", "gpu")
    assert not any("attention scores" in n for n in short.notes)  # under 1 GiB at 1024 tokens
    assert not any("attention scores" in n for n in estimate(llama, args, {}, 4096, "cutoff_len", "gpu").notes)


def test_without_a_tokenizer_the_plan_assumes_every_batch_at_cutoff_len_and_says_so():
    """One worst case, not two: every batch at cutoff_len leaves no blocks of shorter, earlier lengths."""
    (step,) = plans("sft-lora-single", f"model={CONFIGS / 'Llama-2-7b-hf'}", "dataset=telecom_demo",
                    "gpu_memory=16GiB", "cutoff_len=1024")  # fmt: skip
    s = step.estimate.setting
    assert s.seq_len == 1024 and not s.lengths_vary and step.estimate.rows["lengths"] == 0
    assert s.seq_source == "cutoff_len, assumed for every batch (no tokenizer in the model folder)"
    assert "assumed for every batch" in s.describe()


def test_checkpointing_zero_and_qlora_move_the_rows_they_should(seed_models):
    model = seed_models["Llama-2-7b-hf"]
    base = sft_single(model, "cutoff_len=2048", "finetuning_type=full").estimate
    no_checkpointing = sft_single(model, "finetuning_type=full", "disable_gradient_checkpointing=true").estimate
    assert no_checkpointing.rows["activations"] > base.rows["activations"]
    zero3 = sft_single(model, "finetuning_type=full", "deepspeed=z3", "nproc_per_node=4").estimate
    # float32 master weights and Adam's two states, 12 bytes a value, split over 4 workers: 3 against 8
    assert zero3.rows["optimizer"] < base.rows["optimizer"] / 2
    assert zero3.rows["trainable"] == base.rows["trainable"] // 2 // 4  # half precision, split over 4
    qlora4 = sft_single(model, "quantization_bit=4").estimate
    qlora8 = sft_single(model, "quantization_bit=8").estimate
    lora = sft_single(model).estimate
    assert qlora4.rows["weights"] < qlora8.rows["weights"] < lora.rows["weights"]


def test_dtk_is_offered_8_bit_qlora_only():
    from lfkit.planning.memory import estimate
    from lfkit.planning.shapes import model_shape
    from lfkit.planning.suggest import suggestions

    shape = model_shape(CONFIGS / "Baichuan2-7B-Chat")
    args = {"finetuning_type": "freeze", "per_device_train_batch_size": 1, "fp16": True}

    def plan_with(variant, own):
        return estimate(shape, variant, own, 64, "test", "gpu")

    for kind, bits in (("dtk", {8}), ("rocm", {8})):
        found = suggestions(args, {}, plan_with, 16 * GIB, kind)
        assert {s.change.get("quantization_bit") for s in found} - {None} == bits
    tight = suggestions(args, {}, plan_with, 8 * GIB, "rocm")  # 8 bits are not enough there
    assert {s.change.get("quantization_bit") for s in tight} - {None} == {4}
    assert {s.change.get("quantization_bit") for s in suggestions(args, {}, plan_with, 8 * GIB, "dtk")} <= {None}


def test_lfkit_plan_json_and_table(seed_models, lfkit_home):
    model = seed_models["Llama-2-7b-hf"]
    argv = [BIN / "lfkit", "plan", "sft-lora-single", f"model={model}", "dataset=telecom_demo", "template=default",
            "finetuning_type=full", "gpu_memory=16GiB"]  # fmt: skip
    result = run([*argv, "--json"])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["parameters"] == {"total": PUBLISHED["Llama-2-7b-hf"], "trainable": PUBLISHED["Llama-2-7b-hf"]}
    (step,) = data["steps"]
    assert step["step"] == "train" and step["fits"] is False and step["target_bytes"] == 16 * GIB
    assert set(step["rows"]) == {"weights", "trainable", "gradients", "buckets", "gathered", "optimizer",
                                 "activations", "logits", "step", "overhead", "fragmentation"}  # fmt: skip
    assert set(step["reading_rows"]) == {"cached", "lengths"}
    assert step["needed_bytes"] == sum(step["rows"].values())
    assert step["reading_bytes"] == step["needed_bytes"] + sum(step["reading_rows"].values())
    assert step["suggestions"] and all(set(s) >= {"change", "needed_bytes"} for s in step["suggestions"])
    assert step["assumes"]["dtype"] == "float16" and step["assumes"]["trainable_dtype"] == "float32"
    table = run(argv, env=clean_env(COLUMNS="100"))
    assert table.returncode == 0, table.stderr
    assert "does NOT fit" in table.stdout and "finetuning_type=lora" in table.stdout
    assert "gradient checkpointing on" in table.stdout
    assert "needed: what must be free on the card" in table.stdout and "reading: what nvidia-smi shows" in table.stdout


PLAN_AND_SAY_IF_TORCH_LOADED = """
import sys
from lfkit.cli.main import main
sys.argv = ["lfkit", "plan", "sft-lora-single", {model!r}, "dataset=telecom_demo", "template=default", "--json"]
try:
    main()
finally:
    print("torch loaded:", "torch" in sys.modules, file=sys.stderr)
"""


def test_a_second_plan_of_the_same_model_takes_its_shape_from_the_cache(seed_models, tmp_path):
    """The meta-device model (torch and transformers: seconds) is built once per config.json and
    transformers version; the next plan of it, with other settings, loads neither."""
    code = PLAN_AND_SAY_IF_TORCH_LOADED.format(model=f"model={seed_models['pythia-6.9b']}")
    env = clean_env(LFKIT_HOME=str(tmp_path / "home"))
    first, second = py(code, env=env), py(code.replace("--json", 'per_device_train_batch_size=2", "--json'), env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert "torch loaded: True" in first.stderr and "torch loaded: False" in second.stderr, second.stderr[-2000:]
    one, other = json.loads(first.stdout), json.loads(second.stdout)
    assert one["parameters"]["total"] == other["parameters"]["total"] == PUBLISHED["pythia-6.9b"]
    assert one["steps"][0]["rows"]["weights"] == other["steps"][0]["rows"]["weights"]


def test_preflight_stops_a_run_that_will_not_fit_before_anything_loads(seed_models, tmp_path):
    out = tmp_path / "run"
    result = run([BIN / "lfkit", "run", "sft-lora-single", f"model={seed_models['Llama-2-7b-hf']}",
                  "dataset=telecom_demo", "finetuning_type=full", "gpu_memory=16GiB", f"output_dir={out}"])  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("lfkit: error: step train needs about ") and "try finetuning_type=lora" in line
    assert float(line.split("about ")[1].split(" GiB")[0]) > 100  # a 7B model's full fine-tune
    assert "--no-preflight" in line
    assert not out.exists()
    # the dry-run shows the plan, then refuses with the same line (it exited 0 with "does NOT fit")
    dry = run([*result.args, "--dry-run"])
    assert dry.returncode == 2 and dry.stderr.strip().splitlines()[-1] == line
    assert json.loads(dry.stdout)["steps"][0]["memory"]["fits"] is False
    assert run([*result.args, "--dry-run", "--no-preflight"]).returncode == 0
    assert not out.exists()


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs sbatch (make test installs slurm-wlm as root)")
def test_preflight_stops_a_slurm_submission_before_sbatch(seed_models, tmp_path):
    out = tmp_path / "job"
    result = run([BIN / "lfkit", "run", "sft-lora-single", f"model={seed_models['chatglm3-6b']}",
                  "dataset=telecom_demo", "finetuning_type=freeze", "gpu_memory=16GiB", "trust_remote_code=true",
                  f"output_dir={out}", "--slurm", "gres=dcu:1"])  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("lfkit: error: step train needs about ") and "try " in result.stderr
    assert "GiB per worker; gpu_memory=16GiB has 16.0 GiB" in result.stderr
    assert not (out / "job.sbatch").exists()


@pytest.mark.slow
def test_no_preflight_runs_anyway(tiny_llama, tmp_path):
    out = tmp_path / "run"
    argv = [BIN / "lfkit", "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
            "gpu_memory=1MiB", "max_steps=1", f"output_dir={out}"]  # fmt: skip
    refused = run(argv)
    assert refused.returncode == 2 and "1.0 MiB" not in refused.stderr and "GiB" in refused.stderr
    ran = run([*argv, "--no-preflight"])
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


@pytest.mark.both_stacks
@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "freeze", "full"])
def test_plan_bytes_equal_the_real_tensors_of_a_trained_step(tiny_llama, tmp_path, method):
    """weights, trainable parameters, gradients and optimizer states: byte for byte, after a real step."""
    common = [f"model={tiny_llama}", "dataset=telecom_demo", f"finetuning_type={method}",
              "freeze_trainable_layers=1", "lora_target=all"]  # fmt: skip
    out = tmp_path / method
    result = run([BIN / "lfkit", "run", "sft-lora-single", *common, "max_steps=2", f"output_dir={out}"])
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads((out / "run.json").read_text())["memory"]["measured"]
    planned = run([BIN / "lfkit", "plan", "sft-lora-single", *common, "--json"])
    assert planned.returncode == 0, planned.stderr
    rows = json.loads(planned.stdout)["steps"][0]["rows"]
    for row in ("weights", "trainable", "gradients", "optimizer"):
        assert rows[row] == measured[row], (row, rows[row], measured[row])
    assert measured["trainable"] > 0 and (method != "full" or measured["weights"] == 0)


@pytest.mark.both_stacks
def test_a_plan_of_a_remote_code_family_needs_no_consent(tiny_chatglm3, tmp_path):
    """A plan reads config.json (the family plugin gives the shape): no code of the folder runs, so no
    trust_remote_code is asked; the run itself still asks, and the tokenizer (the folder's code) is not loaded."""
    argv = ["sft-lora-single", f"model={tiny_chatglm3}", "dataset=telecom_demo", "gpu_memory=16GiB"]
    planned = run([BIN / "lfkit", "plan", *argv, "--json"])
    assert planned.returncode == 0, planned.stderr
    (step,) = json.loads(planned.stdout)["steps"]
    assert step["model"]["model_type"] == "chatglm" and step["fits"] is True
    assert "trust_remote_code=true reads the data" in step["sequence"]["source"]
    refused = run([BIN / "lfkit", "run", *argv, f"output_dir={tmp_path / 'out'}", "--dry-run"])
    assert refused.returncode == 2 and "pass trust_remote_code=true to allow it" in refused.stderr


def test_fit_finds_the_longest_sequence_and_the_largest_micro_batch_at_the_boundary():
    """--fit's answers sit exactly on the boundary of the plan itself: one token (or the next micro-batch
    that keeps the global batch) more does not fit."""
    from lfkit.errors import UsageError

    common = ["sft-lora-single", f"model={CONFIGS / 'Llama-2-7b-hf'}", "dataset=telecom_demo", "cutoff_len=1024"]
    (step,) = plans(*common, "gpu_memory=16GiB")
    assert step.fits is False and step.fit is None
    from lfkit.cli.plan import step_plans
    from lfkit.cli.recipes import plan_for

    plan = plan_for(common[0], [*common[1:], "gpu_memory=16GiB", "output_dir=/nonexistent/plan-only"], None)
    (fitted,) = step_plans(plan, fit=True)
    fit = fitted.fit
    assert (fit.micro_batch, fit.accumulation, fit.data_tokens) == (4, 4, 1024)
    assert 128 < fit.longest_tokens < 1024 and fit.limit == 4096  # Llama-2's max_position_embeddings
    (at,) = plans(*common[:3], f"cutoff_len={fit.longest_tokens}", "gpu_memory=16GiB")
    (above,) = plans(*common[:3], f"cutoff_len={fit.longest_tokens + 1}", "gpu_memory=16GiB")
    assert at.fits is True and above.fits is False and at.estimate.needed == fit.longest_needed
    assert (fit.best_micro_batch, fit.best_accumulation) == (2, 8)  # 16 rows per optimizer step kept
    (best,) = plans(*common, "per_device_train_batch_size=2", "gradient_accumulation_steps=8", "gpu_memory=16GiB")
    assert best.fits is True and best.estimate.needed == fit.best_needed
    assert "longest sequence at micro-batch 4" in fit.lines()[0] and "fit" in fitted.as_dict()
    no_target = plan_for(common[0], [*common[1:], "output_dir=/nonexistent/plan-only"], None)
    with pytest.raises(UsageError, match="--fit needs a card to fit: give gpu_memory="):
        step_plans(no_target, fit=True)


def test_a_sweep_checks_every_variant_before_the_first_starts(tmp_path):
    out = tmp_path / "sweep"
    argv = [BIN / "lfkit", "sweep", "sft-lora-single", f"model={CONFIGS / 'Llama-2-7b-hf'}", "dataset=telecom_demo",
            "cutoff_len=64", "gpu_memory=16GiB", "--grid", "finetuning_type=lora,full", "--eval", "telecom_demo_test",
            "-o", out]  # fmt: skip
    result = run(argv)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("lfkit: error: variant finetuning_type=full: step train needs about ")
    assert "finetuning_type=lora:" not in line  # the variant that fits is not named
    assert not out.exists()


LAYOUTS = {
    "llama": {"model_type": "llama"},
    "llama with biases and grouped heads": {"model_type": "llama", "attention_bias": True, "mlp_bias": True,
                                            "num_key_value_heads": 2},
    "llama tied, own head_dim": {"model_type": "llama", "tie_word_embeddings": True, "head_dim": 32},
    "gemma": {"model_type": "gemma", "head_dim": 16, "num_key_value_heads": 1},
    "gemma untied": {"model_type": "gemma", "tie_word_embeddings": False, "head_dim": 8, "num_key_value_heads": 2},
    "mistral": {"model_type": "mistral", "num_key_value_heads": 2},
    "qwen2": {"model_type": "qwen2", "num_key_value_heads": 2},
}  # fmt: skip


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_decoder_layouts_equal_the_meta_model_of_transformers(layout, tmp_path, tiny_llama, tiny_gemma):
    """A plan of LLaMA, Gemma, Mistral or Qwen2 takes its shape from config.json without torch: every
    parameter's name, size and Linear-ness as transformers builds them, on small configs of each variant,
    the tiny models and the published 7B / 2B configs."""
    from lfkit.planning.shapes import _from_transformers, read_config
    from lfkit.plugins.decoder_shape import shape

    small = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "vocab_size": 100, **LAYOUTS[layout]}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(small))
    folders = [tmp_path]
    if layout == "llama":
        folders += [CONFIGS / "Llama-2-7b-hf", tiny_llama]
    if layout == "gemma":
        folders += [CONFIGS / "gemma-2b", tiny_gemma]
    if layout in {"mistral", "qwen2"}:
        folders += [CONFIGS / {"mistral": "Mistral-7B-v0.1", "qwen2": "Qwen2-7B-Instruct"}[layout]]
    for folder in folders:
        config = read_config(folder)
        mine, theirs = shape(config), _from_transformers(folder, config)
        assert mine is not None, folder
        assert sorted((t.name, t.shape, t.linear) for t in mine.tensors) == sorted(
            (t.name, t.shape, t.linear) for t in theirs.tensors
        ), folder
        assert mine.as_dict() == {**theirs.as_dict(), "source": mine.source}


def test_a_plan_of_a_llama_or_gemma_config_loads_neither_torch_nor_transformers(tmp_path):
    """config.json alone gives the shape (no meta model), and no tokenizer is there to read. The first
    plan in a new home may read LLaMA-Factory's argument kinds (once per installed version); the
    plan of another model after it loads nothing heavy."""
    env = clean_env(LFKIT_HOME=str(tmp_path))
    for name in ("Llama-2-7b-hf", "gemma-2b"):
        code = PLAN_AND_SAY_IF_TORCH_LOADED.format(model=f"model={CONFIGS / name}")
        result = py(code, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads(result.stdout)["parameters"]["total"] == PUBLISHED[name]
    assert "torch loaded: False" in result.stderr and not list((tmp_path / "cache").glob("model-shape-*"))


def test_the_plan_holds_the_published_peaks_of_real_runs():
    """benchmarks/published_peaks.json: measured peaks of 6-8B fine-tunes with their sources. The plan
    is within 0.9-1.3 of every reading it holds (the whole plan beside nvidia-smi / reserved, its tensors
    beside max_memory_allocated); every point it leaves out or does not hold says why."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("published_peaks", REPO / "benchmarks" / "published_peaks.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    points = json.loads(bench.POINTS.read_text(encoding="utf-8"))
    rows = [row for point in points if bench.usable(point) for row in bench.compare(point)]
    held = {r["id"]: round(r["ratio"], 3) for r in rows if r["held"]}
    assert len(held) >= 49 and {"p01", "p05", "p14", "p20", "p24", "p27a", "p28", "p30a", "p35", "p36"} <= set(held)
    assert all(0.9 <= ratio <= 1.3 for ratio in held.values()), held
    # the same runs in two versions of one table, which differ only in how samples were cut to max_length:
    # most batches at the cap (December: p60, p61, p22, p64, p65) or each as long as its sample (January)
    # both are held, the plan counting the allocator's blocks of earlier lengths for January only
    assert {"p60", "p09", "p61", "p50", "p22", "p10", "p64", "p16", "p65", "p17"} <= set(held)
    # a LLaMA-Factory user's run of Qwen2-7B at 1024 and 2048 tokens (issue 7409)
    assert {"p24", "p25", "p26"} <= set(held)
    # ChatGLM3-6B in ms-swift's January table at 512 to 8192 tokens, planned with the eager attention its
    # code of then ran (the rows grow as kept scores do)
    assert {"p52", "p53", "p16", "p54", "p55"} <= set(held)
    lengths = {r["seq_len"] for r in rows if r["held"]}
    assert min(lengths) <= 512 and max(lengths) >= 8192
    assert {r["method"] for r in rows if r["held"]} == {"lora", "qlora", "full"}
    for point in points:
        if not bench.usable(point) and point.get("measured_value") != "OOM":
            assert len(point.get("excluded", "")) > 40, point["id"]
        if point.get("not_held"):
            assert len(point["not_held"]) > 40, point["id"]
    # a run that did not fit: Qwen-7B full fine-tuning at 8192 tokens on an 80 GB A100
    assert bench.plan_bytes(next(p for p in points if p["id"] == "p23")) > 80 * 2**30


@pytest.mark.slow
def test_a_step_traced_on_fake_tensors_holds_the_bytes_of_the_same_step_on_real_ones(tiny_llama):
    """planning/trace.py on the CPU: the same two AdamW steps, once on fake tensors and once on real ones.
    Parameters and optimizer states agree byte for byte; the fake peak is never below the real one and
    at most 5 % above it (3.3 % with SDPA here): fake tensors hold no values, so a shortcut that reads
    them (leaving out an attention mask of ones, the CPU's fused attention kernel) is not taken."""
    from lfkit.planning.trace import trace_layers

    for args in ({"finetuning_type": "lora", "lora_target": "all"}, {"finetuning_type": "freeze"},
                 {"finetuning_type": "full", "flash_attn": "disabled"}):  # fmt: skip
        fake, real = (trace_layers(tiny_llama, args, 64, 2, 2, "float32", fake=f) for f in (True, False))
        assert real["activations"] > 0 and real["optimizer"] > 0, (args, real)
        assert fake["parameters"] == real["parameters"] and fake["optimizer"] == real["optimizer"], (args, fake, real)
        assert sum(real.values()) <= sum(fake.values()) <= 1.05 * sum(real.values()), (args, fake, real)


@pytest.mark.both_stacks
def test_lfkit_plan_trace_answers_and_the_formula_agrees_with_it():
    """`lfkit plan --trace` on Llama-2-7B's config.json: 2 of its 32 layers traced, the rest extrapolated."""
    from lfkit.cli.plan import as_json, step_plans
    from lfkit.cli.recipes import plan_for

    args = [f"model={CONFIGS / 'Llama-2-7b-hf'}", "dataset=telecom_demo", "cutoff_len=2048", "template=default",
            "per_device_train_batch_size=1", "gpu_memory=16GiB", "output_dir=/nonexistent/plan-only"]  # fmt: skip
    plan = plan_for("sft-lora-single", args, None, runs_model_code=True)
    from lfkit.planning.trace import refusal

    if refusal({}) is not None:  # a torch without MemTracker (torch 2.1, the DCU stack's): one line, nothing traced
        from lfkit.errors import UsageError

        with pytest.raises(UsageError, match=r"^--trace needs torch's MemTracker .*, which torch 2\.\d"):
            step_plans(plan, trace=True)
        return
    (step,) = step_plans(plan, trace=True)
    traced, e = step.traced, step.estimate
    assert step.answered_by == "trace" and traced.layers == 32 and traced.traced_layers == (1, 2)
    tensors = e.tensors
    assert 0.9 <= tensors / traced.peak <= 1.1, (tensors, traced.peak)
    assert traced.kinds["parameters"] == e.parameters["total"] * 2 + e.parameters["trainable"] * 4  # bf16, f32 LoRA
    data = as_json([step])["steps"][0]
    assert data["answered_by"] == "trace" and data["needed_bytes"] == step.needed != data["formula_needed_bytes"]
    assert data["reading_bytes"] == step.reading >= step.needed
    # the table names whose totals it shows: the headline's is the trace's, the rows are the formula's
    from io import StringIO

    from rich.console import Console

    from lfkit.cli.plan import gib, show

    shown = StringIO()
    show([step], Console(file=shown, width=200))
    text = shown.getvalue()
    assert f"needs {gib(step.needed)} per worker" in text and "answered by the trace" in text
    assert "needed: what must be free on the card (formula)" in text
    assert "needed, as the trace answers" in text and gib(step.needed) in text.split("as the trace answers")[1]
    assert data["trace"]["by_layers"]["1"]["parameters"] < data["trace"]["by_layers"]["2"]["parameters"]


def test_yes_and_no_are_read_as_llamafactorys_parser_reads_them():
    """`bf16=t` on the command line is bf16 to LLaMA-Factory (HfArgumentParser's string_to_bool), so it is
    to the plan, the patches and the plugins too; `on` is for lfkit's own switches."""
    from transformers.hf_argparser import string_to_bool

    from lfkit.flags import truthy
    from lfkit.recipes.lf_args import coerce

    for word in ("yes", "true", "t", "y", "1", "no", "false", "f", "n", "0", "True", "YES", "F"):
        assert truthy(word) == string_to_bool(word), word
        # and a recipe's `bf16=WORD` resolves to what LLaMA-Factory would read
        assert coerce("train", "bf16", word, "test") is string_to_bool(word), word
    assert truthy(True) and not truthy(False) and not truthy(None) and not truthy("")
    assert truthy("on") and not truthy("off")


@pytest.mark.both_stacks
def test_quantized_layers_keep_their_inputs_as_the_installed_bitsandbytes_does():
    """What the QLoRA rows assume, against the real bitsandbytes here: after the forward pass a frozen 16-bit
    Linear lets its input go, the 8-bit layer keeps it, the 4-bit layer keeps it only before 0.43.2. The plan
    adds those inputs (two normed hidden states and the MLP's inner product) per layer kept for backward."""
    import gc
    import weakref
    from importlib import metadata

    import bitsandbytes as bnb
    import torch
    from packaging.version import Version

    from lfkit.planning.memory import BNB_4BIT_DROPS_INPUTS, estimate
    from lfkit.planning.shapes import model_shape
    from lfkit.rocm_patches.bitsandbytes_pin import DTK_PIN

    def keeps_input(layer, dtype) -> bool:
        x = torch.randn(2, 8, 64, dtype=dtype, requires_grad=True)
        hidden = x * 1  # an activation inside a model, as a decoder layer hands it on
        out = layer(hidden)
        ref = weakref.ref(hidden)
        del hidden
        gc.collect()
        kept = ref() is not None
        out.float().sum().backward()
        return kept

    def quantized(cls, **kwargs):
        layer = cls(64, 128, bias=False, **kwargs)
        layer.load_state_dict(torch.nn.Linear(64, 128, bias=False).state_dict())
        return layer.to("cpu")  # quantizes the weight

    assert not keeps_input(
        torch.nn.Linear(64, 128, bias=False).to(torch.bfloat16).requires_grad_(False), torch.bfloat16
    )
    installed = metadata.version("bitsandbytes")  # 0.38.1 has no bitsandbytes.__version__
    eight = quantized(bnb.nn.Linear8bitLt, has_fp16_weights=False, threshold=6.0)
    if installed == DTK_PIN:
        # The DTK stack's pin quantizes and multiplies int8 on the GPU only (its CPU library holds blockwise
        # quantization alone, and its matmul asks the CUDA device's capability), and has no 4-bit layer: on this
        # CPU no layer of it can run. What holds here: off the GPU its weight stays unquantized, and 4-bit is
        # absent, as the pin table says ("8-bit only"). The rows below are checked all the same.
        assert eight.weight.dtype == torch.float32 and not hasattr(bnb.nn, "Linear4bit"), installed
    else:
        assert eight.weight.dtype == torch.int8, installed
        assert keeps_input(eight, torch.float16), f"bitsandbytes {installed}: the 8-bit layer let its input go"
        # Linear4bit came in 0.39: every release but the DTK pin has it.
        four = quantized(bnb.nn.Linear4bit, compute_dtype=torch.bfloat16, quant_type="nf4")
        assert four.weight.dtype == torch.uint8
        assert keeps_input(four, torch.bfloat16) == (Version(installed) < Version(BNB_4BIT_DROPS_INPUTS)), installed

    shape = model_shape(CONFIGS / "Llama-2-7b-hf")
    args = {"finetuning_type": "lora", "bf16": True, "per_device_train_batch_size": 1, "lora_target": "q_proj,v_proj"}

    def activations(bits: int, version: str, checkpointing: bool) -> int:
        given = {**args, "quantization_bit": bits, "disable_gradient_checkpointing": not checkpointing}
        return estimate(shape, given, {}, 1304, "cutoff_len", "gpu", bitsandbytes=version).rows["activations"]

    per_layer = 2 * (2 * 4096 + 11008) * 1304  # bf16: two hidden states of 4096 and the MLP's 11008 per token
    assert activations(4, "0.41.1", False) - activations(4, "0.49.2", False) == 32 * per_layer
    assert activations(4, "0.41.1", True) - activations(4, "0.49.2", True) == per_layer  # the recomputed layer
    assert activations(8, "0.49.2", False) == activations(4, "0.41.1", False)
