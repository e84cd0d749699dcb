"""A run reads like a tool: a few plain lines without a terminal, everything in the step's log,
a summary with results and the next command, past runs at a glance, words a user can trust."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, clean_env, run

REPO = Path(__file__).resolve().parents[1]
INTERNAL = re.compile(r"seed ?00\d|the seeds|seeds'|种子 ?00\d", re.IGNORECASE)


@pytest.mark.slow
def test_a_run_without_a_terminal_prints_a_few_plain_lines_and_keeps_the_whole_log(tiny_llama, tmp_path):
    out = tmp_path / "run"
    result = run([BIN / "lfkit", "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
                  "template=alpaca", "max_steps=3", "logging_steps=1", f"output_dir={out}"],
                 env=clean_env(COLUMNS="80"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = (result.stdout + result.stderr).splitlines()
    assert len(printed) <= 40, "\n".join(printed)
    assert not any("\x1b" in line or "\r" in line for line in printed)  # no control characters in a pipe
    assert printed[0] == f"lfkit: step train (train) -> {out}"
    assert any(re.fullmatch(r"  train: finished in \d+s \(3/3 steps.*\)", line) for line in printed)
    # the summary: at 80 columns its long result cell does not fit, so each step is a block of lines
    block = printed[printed.index("- step: train") :][:4]
    assert block[1] == "  status: finished" and block[3].startswith("  result: loss ") and str(out) in block[3]
    assert (
        f"next: lfkit run merge-lora model={tiny_llama} adapter={out} output_dir={out}-merged template=alpaca"
        in printed
    )
    # the next commands, pasted, talk to the model in the format it was trained in (they fell back on the family's)
    (evaluate,) = [line[len("next: ") :] for line in printed if line.startswith("next: lfkit eval ")]
    checked = run([*shlex.split(evaluate.replace("lfkit", str(BIN / "lfkit"), 1)), "--dry-run"])
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert json.loads(checked.stdout)["steps"][0]["args"]["template"] == "alpaca"
    log = (out / "output.log").read_text(encoding="utf-8")
    assert "llamafactory" in log and "***** Running training *****" in log and len(log.splitlines()) > 100


@pytest.mark.slow
def test_runs_lists_finished_and_failed_runs_and_show_tells_one(tiny_llama, tmp_path):
    root = tmp_path / "runs"
    common = [BIN / "lfkit", "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", "max_steps=1"]
    ok = run([*common, f"output_dir={root / 'good'}"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = run([*common, "report_to=wandb", f"output_dir={root / 'bad'}"])  # wandb is not installed
    assert bad.returncode == 1
    assert "full log:" in bad.stderr and "requires wandb" in bad.stderr  # the error's own line, and the log
    listed = run([BIN / "lfkit", "runs", str(root), "--json"])
    assert listed.returncode == 0, listed.stderr
    by_folder = {Path(r["folder"]).name: r for r in json.loads(listed.stdout) if Path(r["folder"]).parent == root}
    assert by_folder["good"]["status"] == "finished" and by_folder["good"]["metric"].startswith("loss ")
    assert by_folder["bad"]["status"] == "failed"
    assert all(r["recipe"] == "sft-lora-single" and r["started"] for r in by_folder.values())
    shown = run([BIN / "lfkit", "show", str(root / "good"), "--json"])
    info = json.loads(shown.stdout)
    assert info["steps"][0]["status"] == "finished" and info["steps"][0]["result"].startswith("loss ")
    assert ["train", "max_steps", "1"] in info["changed"]
    not_a_run = run([BIN / "lfkit", "show", str(tmp_path)])
    assert not_a_run.returncode == 2 and not_a_run.stderr.count("\n") == 1


def test_no_internal_document_names_in_what_users_read():
    texts = {name: (REPO / name).read_text(encoding="utf-8") for name in ("README.md", "README_zh.md")}
    texts.update({str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in (REPO / "recipes").glob("*.yaml")})
    for argv in (["--help"], ["run", "--help"], ["plan", "--help"], ["recipes"], ["models"], ["patches", "--json"]):
        result = run([BIN / "lfkit", *argv], env=clean_env(COLUMNS="200"))
        texts[" ".join(argv)] = result.stdout
    found = {name: INTERNAL.findall(text) for name, text in texts.items() if INTERNAL.search(text)}
    assert not found


def test_every_readme_section_has_its_chinese_counterpart():
    """README_zh covers the whole workflow: each `## ` section of README.md is marked with a
    `<!-- section: KEY -->` line, and README_zh.md has the same sections in the same order."""
    anchor = re.compile(r"^<!-- section: ([a-z0-9-]+) -->$")

    def sections(name: str) -> list[str]:
        lines, keys, fenced = (REPO / name).read_text(encoding="utf-8").splitlines(), [], False
        for i, line in enumerate(lines):
            fenced ^= line.startswith("```")
            if not fenced and line.startswith("## "):
                match = anchor.match(lines[i - 1])
                assert match, f"{name}: the section {line!r} has no section line before it"
                keys.append(match.group(1))
        return keys

    english = sections("README.md")
    assert len(english) >= 15 and {"recipes", "families", "evaluation", "llamaboard", "slurm"} <= set(english)
    assert sections("README_zh.md") == english


def test_logging_and_save_steps_are_exported_as_whole_numbers(tiny_llama, tmp_path):
    target = tmp_path / "sft.yaml"
    result = run([BIN / "lfkit", "recipes", "export", "sft-lora-single", f"model={tiny_llama}",
                  "dataset=telecom_demo", f"output_dir={tmp_path / 'o'}", "save_steps=500", "-o", target])  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = target.read_text(encoding="utf-8")
    assert "\nlogging_steps: 10\n" in text and "\nsave_steps: 500\n" in text
    assert "\nlearning_rate: 5.0e-05\n" in text  # a real fraction stays one


def test_a_damaged_run_json_is_one_line_or_an_honest_word(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text("[1, 2]")
    status = run([BIN / "lfkit", "status", folder], env=clean_env())
    assert (status.returncode, status.stderr.strip()) == (
        2, f"lfkit: error: {folder}: unreadable run.json (not a JSON object)"
    )  # fmt: skip
    record = {"recipe": "sft-lora-single", "step": "train", "status": 5, "args": "lr=1",
              "plan": {"train": {"command": "train", "dir": str(folder), "args": "x", "notes": "n"}}}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(record))
    for argv in (["status", folder, "--json"], ["show", folder, "--json"], ["runs", tmp_path, "--json"]):
        result = run([BIN / "lfkit", *argv], env=clean_env())
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        shown = json.loads(result.stdout)
        if isinstance(shown, list):  # runs: also those of other tests, remembered in lfkit's home
            (shown,) = [r for r in shown if r["folder"] == str(folder)]
        assert shown["status"] == "unknown"


def test_tables_read_whole_at_80_columns_without_a_terminal():
    """Headers never cut, cells never folded to a letter a line: what --json holds is in the text whole."""
    for argv, key in ((["patches"], "detail"), (["recipes"], "description"), (["datasets"], "file")):
        text = run([BIN / "lfkit", *argv], env=clean_env(COLUMNS="80")).stdout
        rows = json.loads(run([BIN / "lfkit", *argv, "--json"], env=clean_env()).stdout)
        assert "…" not in text
        for row in rows:
            assert str(row[key]) in text, (argv, row[key])


def test_a_table_too_wide_for_the_width_becomes_blocks_of_lines():
    import io

    from rich.console import Console

    from lfkit.tables import print_table

    note = "a LoRA adapter of rank 8 on all linear layers, with QLoRA 8-bit as DTK's bitsandbytes has it"
    for width, wide in ((80, True), (300, False)):
        out = io.StringIO()
        console = Console(file=out, width=width, force_terminal=False)
        print_table(console, "changes that make it fit", ["add to the command", "peak", "note"],
                    [("finetuning_type=lora quantization_bit=8", "9.1 GiB", note)], numeric=("peak",))  # fmt: skip
        lines = out.getvalue().splitlines()
        if wide:
            assert lines == ["changes that make it fit", "- add to the command: finetuning_type=lora quantization_bit=8",
                             "  peak: 9.1 GiB", f"  note: {note}"]  # fmt: skip
        else:
            assert any(note in line and "9.1 GiB" in line for line in lines)


def test_looking_at_a_step_of_a_running_run_leaves_it_running(tmp_path):
    """A multi-step run holds its output_dir's lock; a step folder is judged by that lock, not its own."""
    from lfkit.locking import acquire
    from lfkit.recipes.run_folder import read_record, settle

    plan = {name: {"command": "train", "dir": str(tmp_path / name)} for name in ("a", "b")}
    (tmp_path / "run.json").write_text(json.dumps({"recipe": "r", "status": "running", "pid": 2**22, "plan": plan}))
    (tmp_path / "a").mkdir()
    step = {"recipe": "r", "step": "a", "status": "running", "pid": 2**22, "plan": plan}
    (tmp_path / "a" / "run.json").write_text(json.dumps(step))
    lock = acquire(tmp_path / ".lfkit.lock", blocking=False)  # the run, alive
    try:
        assert settle(tmp_path / "a")["status"] == settle(tmp_path)["status"] == "running"
    finally:
        os.close(lock)
    assert settle(tmp_path)["status"] == "interrupted"  # gone: the run and its running step say so
    assert read_record(tmp_path / "a")["status"] == "interrupted"


def test_a_new_run_waits_for_the_steps_of_a_killed_lfkit_to_let_go_of_the_folder(tmp_path, monkeypatch):
    """kill -9 of lfkit leaves its step holding the inherited lock until the step has ended (it is told
    to end when lfkit dies): the same command run at once waits for that, then takes the folder; a
    step that does not end keeps the folder refused."""
    from lfkit.errors import UsageError
    from lfkit.recipes import run_folder

    def killed_lfkit_with_a_step(seconds: float) -> int:
        # "lfkit" takes the lock (writing its pid), starts a "step" that inherits it, and dies at once.
        code = (
            "import os, subprocess, sys; from pathlib import Path; from lfkit.locking import acquire\n"
            f"fd = acquire(Path({str(tmp_path / '.lfkit.lock')!r}), blocking=False)\n"
            f"step = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep({seconds})'], pass_fds=(fd,),"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "print(step.pid, flush=True); os._exit(0)\n"
        )
        lfkit = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), check=True
        )
        return int(lfkit.stdout)

    killed_lfkit_with_a_step(2)
    started = time.monotonic()
    fd = run_folder.lock_run_folder(tmp_path)
    os.close(fd)
    assert 1 < time.monotonic() - started < 15, "the lock was taken while the step held it, or waited too long"

    monkeypatch.setattr(run_folder, "ORPHAN_WAIT_SECONDS", 1.0)
    step = killed_lfkit_with_a_step(60)
    try:
        with pytest.raises(UsageError, match="has a run in progress"):
            run_folder.lock_run_folder(tmp_path)
    finally:
        os.kill(step, signal.SIGKILL)


def test_one_bad_record_is_one_line_in_the_listing_and_a_missing_root_is_refused(tmp_path):
    """A run.json edited by hand (a time without its zone, a string where a number belongs, a list where
    a mapping belongs) used to end `lfkit runs` in a traceback, so that no run was listed."""
    root = tmp_path / "runs"
    records = {
        "naive": {"recipe": "sft-lora-single", "status": "finished", "started": "2026-01-02T03:04:05",
                  "finished": "2026-01-02T04:04:05+00:00"},
        "string-seconds": {"recipe": "sft-lora-single", "status": "failed", "started": "2026-01-03T00:00:00+00:00",
                           "seconds": "twelve"},
        "odd-steps": {"recipe": "demo", "status": "finished", "started": 7, "steps": {"a": 1}},
    }  # fmt: skip
    for name, record in records.items():
        (root / name).mkdir(parents=True)
        (root / name / "run.json").write_text(json.dumps(record), encoding="utf-8")
    env = clean_env(LFKIT_HOME=str(tmp_path / "home"))
    listed = run([BIN / "lfkit", "runs", root, "--json"], env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    found = {Path(r["folder"]).name: r for r in json.loads(listed.stdout)}
    assert set(found) == set(records)
    assert found["string-seconds"]["seconds"] is None and found["naive"]["seconds"] is not None
    table = run([BIN / "lfkit", "runs", root], env=clean_env(LFKIT_HOME=str(tmp_path / "home"), COLUMNS="200"))
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr[-2000:]
    assert all(name in table.stdout for name in records)
    missing = run([BIN / "lfkit", "runs", tmp_path / "nonexistent"], env=env)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"lfkit: error: {tmp_path / 'nonexistent'}: no such folder (give the folder your runs are under, "
        "or nothing for ./runs)"
    ]


def test_an_unreadable_run_json_gets_the_same_words_in_every_command(tmp_path):
    """A run.json cut short (a full disk, a copy interrupted) was silence in `lfkit runs`, "not an lfkit run
    folder" in show, "not a run record (not a JSON object)" in status and "holds files that are not an lfkit
    run" for a run into the folder; a FIFO in its place made show hang."""
    root = tmp_path / "runs"
    whole = json.dumps({"recipe": "sft-lora-single", "status": "finished", "step": "train",
                        "started": "2026-01-02T03:04:05+00:00", "args": {"learning_rate": 1e-4}}, indent=1)  # fmt: skip
    cases = {"cut": whole.encode()[: len(whole) // 2], "list": b"[1, 2]", "latin1": b'{"recipe": "caf\xe9"}'}
    for name, data in cases.items():
        (root / name).mkdir(parents=True)
        (root / name / "run.json").write_bytes(data)
    (root / "multi" / "train").mkdir(parents=True)  # a step's record cut short is its run's business, not a run
    (root / "multi" / "run.json").write_text(json.dumps({"recipe": "demo", "status": "failed"}), encoding="utf-8")
    (root / "multi" / "train" / "run.json").write_bytes(cases["cut"])
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / "run.json")
    env = clean_env(LFKIT_HOME=str(tmp_path / "home"))
    words = {"cut": "unreadable run.json (not JSON: Unterminated string starting at: line 5",
             "list": "unreadable run.json (not a JSON object)", "latin1": "unreadable run.json (not UTF-8 text)",
             "fifo": "unreadable run.json (not a regular file)"}  # fmt: skip
    listed = run([BIN / "lfkit", "runs", root, "--json"], env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    found = {Path(r["folder"]).name: r["status"] for r in json.loads(listed.stdout)}
    assert found.keys() == {"cut", "list", "latin1", "multi"}  # the FIFO is no file to list; show names it
    for name, said in words.items():
        if name in found:
            assert found[name].startswith(said), found[name]
        for command in (["show"], ["status"], ["logs"]):
            answer = run([BIN / "lfkit", *command, root / name], env=env, timeout=60)
            assert answer.returncode == 2, (command, answer.stderr)
            (line,) = answer.stderr.strip().splitlines()
            assert line.startswith(f"lfkit: error: {root / name}: {said}"), (command, line)
        into = run([BIN / "lfkit", "run", "sft-lora-single", "model=tiny:llama", "dataset=telecom_demo",
                    f"output_dir={root / name}", "--dry-run", "--overwrite"], env=env, timeout=120)  # fmt: skip
        assert into.returncode == 2
        assert into.stderr.strip().splitlines()[-1].startswith(f"lfkit: error: {root / name}: {said}")
    assert (root / "cut" / "run.json").read_bytes() == cases["cut"]  # left as it was


def _finished_record(**extra) -> dict:
    return {"recipe": "sft-lora-single", "step": "train", "command": "train", "status": "finished",
            "started": "2026-01-02T03:04:05+00:00", "seconds": 12.0, "args": {"learning_rate": 1e-4},
            "plan": {"train": {"command": "train", "dir": None, "args": {}}}, **extra}  # fmt: skip


def test_damaged_records_beside_a_run_never_hang_or_break_a_listing(tmp_path):
    """Records a listing reads besides run.json: a FIFO trainer log hung runs and show; a loss of "abc", a list
    for a plan, a string for seconds ended show in a traceback; an escape sequence in a record reached the
    terminal; a FIFO runs.json in lfkit's home hung every `lfkit run`; a FIFO manifest hung --overwrite."""
    root, home = tmp_path / "runs", tmp_path / "home"
    cases = {
        "fifo-log": (_finished_record(), lambda f: os.mkfifo(f / "trainer_log.jsonl")),
        "bad-log": (_finished_record(), lambda f: (f / "trainer_log.jsonl").write_text(
            '[1, 2]\n{"loss": "abc", "current_steps": 1}\n{"loss": 2.5, "current_steps": 2}\n{"loss": 1.')),
        "bad-results": (_finished_record(), lambda f: (f / "all_results.json").write_text('{"train_loss": "abc"}')),
        "fifo-metrics": (_finished_record(command="eval"), lambda f: os.mkfifo(f / "metrics.json")),
        "bad-metrics": (_finished_record(command="eval"),
                        lambda f: (f / "metrics.json").write_text('{"exact_match": "x", "f1": null}')),
        "bad-answer": (_finished_record(command="chat"), lambda f: (f / "answer.json").write_text('{"answer": 5}')),
        "list-plan": (_finished_record(plan=[1], steps=[5]), None),
        "bad-seconds": (_finished_record(seconds="x", plan={"train": {"dir": 5}}), None),
        "escapes": (_finished_record(recipe="\x1b]0;owned\x07\x1b[2J[/bold]"), None),
    }  # fmt: skip
    for name, (record, damage) in cases.items():
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps(record))
        if damage:
            damage(folder)
    home.mkdir()
    os.mkfifo(home / "runs.json")
    env = clean_env(LFKIT_HOME=str(home), COLUMNS="200")
    listed = run([BIN / "lfkit", "runs", root], env=env, timeout=60)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-2000:]
    assert "\x1b" not in listed.stdout and all(name in listed.stdout for name in cases)
    assert "loss 2.5" in listed.stdout  # the last readable loss of the damaged log
    for name in cases:
        for command in (["show"], ["status"], ["logs"], ["show", "--json"]):
            answer = run([BIN / "lfkit", *command, root / name], env=env, timeout=60)
            assert answer.returncode == 0 and "Traceback" not in answer.stderr, (name, command, answer.stderr)
            assert "\x1b" not in answer.stdout, (name, command)
    dry = run([BIN / "lfkit", "run", "sft-lora-single", "model=tiny:llama", "dataset=telecom_demo",
               f"output_dir={root / 'fifo-log'}", "--dry-run", "--overwrite"], env=env, timeout=120)  # fmt: skip
    assert "Traceback" not in dry.stderr, dry.stderr[-2000:]
    os.mkfifo(root / "escapes" / ".lfkit-outputs.json")
    overwrite = run([BIN / "lfkit", "run", "sft-lora-single", "model=tiny:llama", "dataset=telecom_demo",
                     f"output_dir={root / 'escapes'}", "--dry-run", "--overwrite"], env=env, timeout=120)  # fmt: skip
    assert "Traceback" not in overwrite.stderr, overwrite.stderr[-2000:]
