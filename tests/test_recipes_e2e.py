"""Recipes end to end on tiny models: train -> merge -> chat, nothing lost, resume after a kill."""

import json
import signal
import subprocess
import time

import pytest
import yaml

from conftest import BIN, QUICK_LORA, clean_env, run, signal_run, step_pids, write_alpaca
from lfkit.recipes.run_folder import last_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.both_stacks]
LFKIT = BIN / "lfkit"
QUICK = QUICK_LORA
PROMPT = "回答中国电信手机用户的问题,问题3,应该怎么做？"


def lfkit(*args, **kwargs):
    return run([LFKIT, *args], env=clean_env(), **kwargs)


def answer_of(result) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return next(line[3:] for line in result.stdout.splitlines() if line.startswith("=> "))


def record(folder):
    return json.loads((folder / "run.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_train_merge_chat(family, tmp_path, request, quick_adapter):
    model = request.getfixturevalue(f"tiny_{family}")
    # `lfkit run sft-lora-single model=MODEL dataset=tiny_alpaca dataset_dir=DATA output_dir=ADAPTER *QUICK`,
    # shared with the family checks (it exits 0 or the fixture fails)
    adapter, data = quick_adapter(model)
    merged = tmp_path / "merged"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "training_loss.png").is_file()  # LLaMA-Factory's loss plot
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(model)  # absolute, unlike seed 000's
    rec = record(adapter)
    assert (rec["recipe"], rec["step"], rec["status"], rec["exit_code"]) == ("sft-lora-single", "train", "finished", 0)
    assert rec["args"]["learning_rate"] == 1e-2 and rec["args"]["save_steps"] == 1000
    assert rec["versions"]["llamafactory"] and rec["platform"]["kind"] == "cpu" and rec["seconds"] > 0
    statuses = {p["id"]: p["status"] for p in rec["patches"]}
    assert statuses["lf-hook-prepare-args"] == "applied" and statuses["lf-dataset-lookup"] == "applied"
    assert yaml.safe_load((adapter / "llamafactory.yaml").read_text())["output_dir"] == str(adapter)

    # a finished run is never overwritten without --overwrite
    weights = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    again = lfkit("run", "sft-lora-single", f"model={model}", "dataset=tiny_alpaca", f"dataset_dir={data}",
                  f"output_dir={adapter}", *QUICK)  # fmt: skip
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"lfkit: error: output_dir {adapter} holds a finished run of sft-lora-single; pass --overwrite to replace it"
    ]
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == weights

    merge = lfkit("run", "merge-lora", f"model={model}", f"adapter={adapter}", f"output_dir={merged}")
    assert merge.returncode == 0, merge.stderr[-3000:]
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    assert record(merged)["status"] == "finished"

    # one-shot chat: greedy on base + adapter equals greedy on the merge; seeded sampling repeats itself
    # (the chat recipe's own seed, the same for every family: checked once, each chat is a process)
    if family == "llama":
        sampled = [answer_of(lfkit("run", "chat", f"model={merged}", f"prompt={PROMPT}", "seed=7", "max_new_tokens=8"))
                   for _ in range(2)]  # fmt: skip
        assert sampled[0] == sampled[1]
    greedy = ["do_sample=false", "max_new_tokens=8", f"prompt={PROMPT}"]
    with_adapter = answer_of(lfkit("run", "chat", f"model={model}", f"adapter={adapter}", *greedy))
    assert answer_of(lfkit("run", "chat", f"model={merged}", *greedy)) == with_adapter


def test_interactive_chat_reads_the_terminal(tmp_path, tiny_llama):
    """Typed as a person types: "exit" comes after the answer has been printed, not in the same
    instant. (LLaMA-Factory generates in a daemon thread; an "exit" read while that thread is still
    in torch's C++ code can end the interpreter under it: "terminate called without an active
    exception", exit code -6, seen once on a loaded machine.)"""
    import threading

    chat = subprocess.Popen([str(LFKIT), "run", "chat", f"model={tiny_llama}", "max_new_tokens=4"], env=clean_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=s, into=into: into.extend(iter(lambda: s.read(1), "")), daemon=True)
               for s, into in ((chat.stdout, out), (chat.stderr, err))]  # fmt: skip
    for reader in readers:
        reader.start()
    chat.stdin.write("你好\n")
    chat.stdin.flush()
    deadline = time.monotonic() + 300
    while "".join(out).count("User:") < 2 and chat.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the answer is printed and the next prompt waits
    assert "".join(out).count("User:") >= 2, "".join(out)[-2000:] + "".join(err)[-2000:]
    time.sleep(1)
    chat.stdin.write("exit\n")
    chat.stdin.close()
    chat.wait(timeout=300)
    for reader in readers:
        reader.join(10)
    assert chat.returncode == 0, "".join(err)[-3000:]
    assert "Assistant:" in "".join(out)


def test_an_exported_recipe_runs_under_plain_llamafactory_cli(tmp_path, tiny_llama):
    data = write_alpaca(tmp_path / "data")
    out, config = tmp_path / "adapter", tmp_path / "sft.yaml"
    exported = lfkit("recipes", "export", "sft-lora-single", f"model={tiny_llama}", "dataset=tiny_alpaca",
                     f"dataset_dir={data}", f"output_dir={out}", *QUICK, "-o", config)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    result = run([BIN / "llamafactory-cli", "train", config], env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file()


def _logged_steps(where) -> list[int]:
    """The steps whose loss a run folder's trainer_log.jsonl (or a log file) holds; complete lines only
    (the run's last line, its summary, has no loss)."""
    log = where / "trainer_log.jsonl" if where.is_dir() else where
    entries = [
        json.loads(line) for line in (log.read_text().splitlines() if log.is_file() else []) if line.endswith("}")
    ]
    return [entry["current_steps"] for entry in entries if "loss" in entry]


def _kill_between_checkpoints(process, out, first_checkpoint: int) -> tuple[int, int]:
    """SIGKILL the run (lfkit and its step) once a step after its last checkpoint is logged; freeze both
    (SIGSTOP) to look, so the kill lands between checkpoints, not on one, and nothing is logged after
    the look. -> (checkpoint, last logged)."""
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        if (out / f"checkpoint-{first_checkpoint}" / "trainer_state.json").is_file():
            signal_run(process, out, signal.SIGSTOP)
            checkpoint = last_checkpoint(out)
            logged = max(_logged_steps(out), default=0)
            if checkpoint is not None and logged > int(checkpoint.name.rpartition("-")[2]):
                signal_run(process, out, signal.SIGKILL)
                process.wait()
                while step_pids(out):
                    assert time.monotonic() < deadline, "the step outlived a SIGKILL"
                    time.sleep(0.05)
                return int(checkpoint.name.rpartition("-")[2]), logged
            signal_run(process, out, signal.SIGCONT)
        time.sleep(0.05)


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, tiny_llama):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "adapter"
    # Enough steps after checkpoint-10 that the run is still going when the probe looks (it polls every
    # 0.05 s; a step takes longer), few enough that the resumed run is short.
    steps = 60
    argv = [LFKIT, "run", "sft-lora-single", f"model={tiny_llama}", "dataset=tiny_alpaca", f"dataset_dir={data}",
            f"output_dir={out}", f"max_steps={steps}", "save_steps=10", "logging_steps=1",
            "per_device_train_batch_size=1", "gradient_accumulation_steps=1", "cutoff_len=64"]  # fmt: skip
    process = subprocess.Popen([str(a) for a in argv], env=clean_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoint, logged = _kill_between_checkpoints(process, out, 10)
    assert record(out)["status"] == "running"  # killed: never marked finished
    assert not (out / "adapter_model.safetensors").exists()

    other = run([*argv, "learning_rate=1e-3"], env=clean_env())
    assert other.returncode == 2
    assert "holds an unfinished run with other arguments (train.learning_rate: 5e-05 -> 0.001)" in other.stderr

    dry = run([*argv, "--dry-run"], env=clean_env())
    resumed = run(argv, env=clean_env())
    from lfkit.known_broken import resume_torch_load

    refused = resume_torch_load()
    if refused is not None:  # transformers 4.52 on torch < 2.6 cannot resume: one line before the model loads
        line = f"lfkit: error: step train: cannot resume from {out / f'checkpoint-{checkpoint}'}: {refused.what}"
        assert resumed.returncode == 2 and resumed.stderr.strip() == f"{line}; fix: {refused.fix}", resumed.stderr
        # the dry-run says so too (it said the run would continue)
        assert dry.returncode == 2 and dry.stderr.strip().splitlines()[-1] == f"{line}; fix: {refused.fix}"
        assert (out / f"checkpoint-{checkpoint}").is_dir()  # nothing of the killed run is lost
        return
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rec = record(out)
    assert rec["status"] == "finished"
    assert rec["resumed_from"] == str(out / f"checkpoint-{checkpoint}") and checkpoint >= 10
    assert rec["args"]["resume_from_checkpoint"] == rec["resumed_from"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == steps
    assert f"resuming from checkpoint-{checkpoint}" in resumed.stdout
    # the log goes on from the checkpoint, each step once: the steps the killed run logged after its
    # checkpoint (run again on resume) are set aside, not lost
    assert _logged_steps(out) == list(range(1, steps + 1))
    aside = out / f"trainer_log.after-checkpoint-{checkpoint}.jsonl"
    assert _logged_steps(aside) == list(range(checkpoint + 1, logged + 1))
    assert f"steps logged after checkpoint-{checkpoint} kept in {aside.name}" in resumed.stdout
    assert (out / "adapter_model.safetensors").is_file()
