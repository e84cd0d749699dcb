"""lfkit's own state never breaks a Python process of the environment, and `lfkit data` keeps names safe.

Each case first builds the state that used to stop `import torch` with exit 2 (a
corrupt registry, a bad name in it, an unreadable or read-only home, a plugin that
raises, a user recipe that does not parse) and then shows the process running on,
with at most one warning line and the problem listed by `lfkit doctor`.
"""

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import BIN, clean_env, py, run, unprivileged

LFKIT = BIN / "lfkit"
IMPORT = "import torch, llamafactory; print('IMPORTED')"


def imports(home, *, privileged=True, **extra):
    cmd = [sys.executable, "-c", IMPORT]
    env = clean_env(LFKIT_HOME=str(home), **extra)
    return run(cmd if privileged else unprivileged(cmd), env=env)


def doctor_problems(home, privileged=True):
    cmd = [str(LFKIT), "doctor", "--json"]
    result = run(cmd if privileged else unprivileged(cmd), env=clean_env(LFKIT_HOME=str(home)))
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)["problems"]


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("lfkit:")]


def test_a_corrupt_registry_is_set_aside_never_deleted(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "datasets.json").write_text('{"telecom_train_400": {"file": ')
    result = imports(home)
    assert result.returncode == 0 and "IMPORTED" in result.stdout, result.stderr[-2000:]
    assert len(warnings_of(result)) == 1 and "corrupt" in warnings_of(result)[0]
    aside = list(home.glob("datasets.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"telecom_train_400": {"file": '
    assert not (home / "datasets.json").exists()
    # every lfkit command goes on too
    assert run([LFKIT, "datasets", "--json"], env=clean_env(LFKIT_HOME=str(home))).returncode == 0


def test_a_registry_saved_as_utf16_is_set_aside_and_data_add_goes_on(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    saved = json.dumps({"old": {"file": "/x.json"}}).encode("utf-16")  # an editor's "Unicode": BOM, UTF-16
    (home / "datasets.json").write_bytes(saved)
    data = tmp_path / "one.json"
    data.write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}]))
    added = run([LFKIT, "data", "add", "mine", data], env=clean_env(LFKIT_HOME=str(home)))
    assert added.returncode == 0, added.stderr[-2000:]
    assert "Traceback" not in added.stderr and "corrupt" in added.stderr
    (aside,) = home.glob("datasets.json.corrupt-*")
    assert aside.read_bytes() == saved
    assert set(json.loads((home / "datasets.json").read_text())) == {"mine"}


def test_a_bad_entry_name_is_left_out_and_can_be_removed(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "one.json"
    data.write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}]))
    entry = {"file": str(data), "formatting": "alpaca"}
    (home / "datasets.json").write_text(json.dumps({"bad name/x": entry, "good": entry}))
    result = imports(home)
    assert result.returncode == 0 and "IMPORTED" in result.stdout, result.stderr[-2000:]
    assert len(warnings_of(result)) == 1 and "'bad name/x'" in warnings_of(result)[0]
    problems = doctor_problems(home)
    assert any("bad name/x" in p["what"] and "lfkit data remove" in p["fix"] for p in problems)
    listed = json.loads(run([LFKIT, "datasets", "--json"], env=clean_env(LFKIT_HOME=str(home))).stdout)
    assert "good" in {d["name"] for d in listed}

    removed = run([LFKIT, "data", "remove", "bad name/x"], env=clean_env(LFKIT_HOME=str(home)))
    assert removed.returncode == 0, removed.stderr
    assert set(json.loads((home / "datasets.json").read_text())) == {"good"} and data.is_file()
    assert warnings_of(imports(home)) == []


def test_data_add_refuses_a_bad_name(tmp_path):
    home = tmp_path / "home"
    data = tmp_path / "one.json"
    data.write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}]))
    result = run([LFKIT, "data", "add", "bad name/x", data], env=clean_env(LFKIT_HOME=str(home)))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lfkit: error: dataset name 'bad name/x': use letters, digits, '_', '-', '.', starting with a letter or digit"
    ]
    assert not (home / "datasets.json").exists()
    assert imports(home).returncode == 0


@pytest.mark.parametrize("how", ["unreadable", "read-only", "a file"])
def test_an_unusable_home_folder_never_stops_a_process(how, tmp_path):
    home = tmp_path / "home"
    if how == "a file":
        home.write_text("not a folder")
    else:
        home.mkdir()
        (home / "datasets.json").write_text(json.dumps({"x": {"file": str(tmp_path / "x.json")}}))
        (home / "recipes").mkdir()
        home.chmod(0 if how == "unreadable" else stat.S_IRUSR | stat.S_IXUSR)
    try:
        result = imports(home, privileged=False)
        assert result.returncode == 0 and "IMPORTED" in result.stdout, result.stderr[-2000:]
        assert len(warnings_of(result)) <= 1
        if how == "unreadable":
            assert "cannot read the dataset registry" in warnings_of(result)[0]
            assert any("cannot read" in p["what"] for p in doctor_problems(home, privileged=False))
    finally:
        if home.is_dir():
            home.chmod(0o755)


def test_a_raising_plugin_never_stops_a_process(tmp_path, broken_site):
    result = imports(tmp_path / "home", PYTHONPATH=str(broken_site))
    assert result.returncode == 0 and "IMPORTED" in result.stdout, result.stderr[-2000:]
    assert len(warnings_of(result)) == 1 and "plugin broken" in warnings_of(result)[0]


def test_a_user_recipe_that_does_not_parse_is_left_out(tmp_path):
    home = tmp_path / "home"
    (home / "recipes").mkdir(parents=True)
    (home / "recipes" / "mine.yaml").write_text("name: mine\ncommand: train\nargs: {stage: sft\n")
    (home / "recipes" / "good.yaml").write_text("name: my-chat\ncommand: chat\nargs: {model_name_or_path: x}\n")
    result = imports(home)
    assert result.returncode == 0 and "IMPORTED" in result.stdout, result.stderr[-2000:]
    assert len(warnings_of(result)) == 1 and "mine.yaml" in warnings_of(result)[0]
    listed = run([LFKIT, "recipes", "--json"], env=clean_env(LFKIT_HOME=str(home)))
    assert listed.returncode == 0 and "my-chat" in {r["name"] for r in json.loads(listed.stdout)}
    assert any("mine.yaml" in p["fix"] for p in doctor_problems(home))


def test_unknown_names_in_the_switches_are_reported(tmp_path):
    env = clean_env(LFKIT_HOME=str(tmp_path), LFKIT_DISABLE_PATCHES="lf-dataset-lookpu", LFKIT_PLUGINS="nosuch")
    result = py("import torch", env=env)
    assert result.returncode == 0
    (line,) = warnings_of(result)
    assert "LFKIT_DISABLE_PATCHES names 'lf-dataset-lookpu', which is no patch here" in line
    assert "did you mean lf-dataset-lookup?" in line and "(+1 more)" in line
    strict = py("import torch", env={**env, "LFKIT_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2
    assert strict.stderr.strip().splitlines()[-1].startswith("lfkit: error: LFKIT_DISABLE_PATCHES names")


def test_registry_writes_are_locked_so_parallel_adds_keep_every_entry(tmp_path):
    home = tmp_path / "home"
    data = tmp_path / "one.json"
    data.write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}]))
    env = clean_env(LFKIT_HOME=str(home))
    procs = [
        subprocess.Popen([str(LFKIT), "data", "add", f"set_{i}", str(data)], env=env, stderr=subprocess.PIPE)
        for i in range(8)
    ]
    assert [p.wait() for p in procs] == [0] * 8, [p.stderr.read() for p in procs]
    assert set(json.loads((home / "datasets.json").read_text())) == {f"set_{i}" for i in range(8)}


def test_a_registered_name_is_replaced_only_with_replace(tmp_path):
    home = tmp_path / "home"
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    for path in (first, second):
        path.write_text(json.dumps([{"instruction": "q", "input": "", "output": path.name}]))
    env = clean_env(LFKIT_HOME=str(home))
    assert run([LFKIT, "data", "add", "mine", first], env=env).returncode == 0
    again = run([LFKIT, "data", "add", "mine", second], env=env)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"lfkit: error: dataset 'mine' is already registered for {first}; pass --replace to point it at {second}"
    )
    assert json.loads((home / "datasets.json").read_text())["mine"]["file"] == str(first)
    assert run([LFKIT, "data", "add", "mine", second, "--replace"], env=env).returncode == 0
    assert json.loads((home / "datasets.json").read_text())["mine"]["file"] == str(second)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_lfkit_files_follow_the_umask(umask, tmp_path):
    from lfkit.atomic import write_json

    previous = os.umask(umask)
    try:
        write_json(tmp_path / "record.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "record.json").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "record.json").chmod(0o640)
    write_json(tmp_path / "record.json", {"a": 2})  # a replaced file keeps the mode it had
    assert stat.S_IMODE((tmp_path / "record.json").stat().st_mode) == 0o640


@pytest.mark.slow
@pytest.mark.parametrize("disabled", ["all", "lf-dataset-lookup"])
def test_lfkit_runs_find_registered_datasets_without_the_lookup_patch(disabled, tmp_path, tiny_llama):
    out = tmp_path / "out"
    env = clean_env(LFKIT_DISABLE_PATCHES=disabled)
    result = run([LFKIT, "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", f"output_dir={out}",
                  "max_steps=1", "max_samples=4", "cutoff_len=32"], env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "lfkit-data" / "dataset_info.json").read_text())
    assert os.path.isabs(info["telecom_demo"]["file_name"])
    statuses = {p["id"]: p["status"] for p in json.loads((out / "run.json").read_text())["patches"]}
    assert statuses["lf-dataset-lookup"] == "disabled"


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "sparse-4GiB"])
def test_a_registry_that_is_no_regular_file_never_hangs_nor_fills_a_python_start(tmp_path, kind):
    """A FIFO used to block `import torch` for ever, /dev/zero to eat the memory until the kernel killed
    it, a 4 GiB sparse file to make it peak at 8 GB: only a regular file of a sane size is read."""
    home = tmp_path / "home"
    home.mkdir()
    registry = home / "datasets.json"
    if kind == "fifo":
        os.mkfifo(registry)
    elif kind == "dev-zero":
        registry.symlink_to("/dev/zero")
    else:
        with open(registry, "wb") as sparse:
            sparse.truncate(4 * 2**30)
    result = run([sys.executable, "-c", IMPORT], env=clean_env(LFKIT_HOME=str(home)), timeout=120)
    assert result.returncode == 0 and "IMPORTED" in result.stdout, result.stderr[-2000:]
    (warning,) = warnings_of(result)
    reason = (
        "4,294,967,296 bytes, more than the 16,777,216 bytes lfkit reads"
        if kind.startswith("sparse")
        else "not a regular file"
    )
    assert f"cannot read the dataset registry {registry} ({reason})" in warning, warning
    (problem,) = doctor_problems(home)
    assert reason in problem["what"] and "LFKIT_HOME" in problem["fix"]
    listed = run([LFKIT, "datasets", "--json"], env=clean_env(LFKIT_HOME=str(home)), timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert registry.exists() or registry.is_symlink()  # nothing of the user's is moved or deleted


def test_doctor_names_a_registry_set_aside_and_the_way_back(tmp_path):
    """The process that found the registry corrupt renamed it; a later `lfkit doctor` still says where
    it is and how to have its datasets back, until the user removes it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "datasets.json").write_text('{"mine": {"file": "/data/mine.json"}, ')
    assert imports(home).returncode == 0
    (aside,) = home.glob("datasets.json.corrupt-*")
    (problem,) = doctor_problems(home)
    assert str(aside) in problem["what"] and "datasets.json" in problem["fix"], problem
    assert "lfkit data add" in problem["fix"]
    aside.unlink()
    assert doctor_problems(home) == []


def test_a_plain_python_start_creates_no_home_it_was_not_given(tmp_path):
    """HOME naming a folder that does not exist, or a relative LFKIT_HOME: `import torch` used to create
    ~/.local/share/lfkit/cache, or a cache folder wherever the user stood."""
    missing = tmp_path / "no-such-home"
    env = clean_env(HOME=str(missing))
    env.pop("LFKIT_HOME")
    result = run([sys.executable, "-c", IMPORT], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not missing.exists()
    where = tmp_path / "elsewhere"
    where.mkdir()
    result = run([sys.executable, "-c", IMPORT], env=clean_env(LFKIT_HOME="relative-home"), cwd=where)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(where.iterdir()) == []
    refused = run([LFKIT, "datasets"], env=clean_env(LFKIT_HOME="relative-home"), cwd=where)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "lfkit: error: LFKIT_HOME=relative-home is a relative path; give an absolute one (e.g. $PWD/relative-home)"
    ], refused.stderr


def _alias_bomb(levels: int = 8) -> str:
    """A dozen lines of YAML that stand for 9**8 (43 million) values once its aliases are expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join([*lines, "name: bomb", f"steps: *a{levels}"]) + "\n"


def test_no_file_lfkit_reads_at_a_python_start_hangs_it_fills_it_or_outlives_a_mend(tmp_path):
    """Beyond the registry: a user recipe that is a FIFO hung `import torch`, one linked to /dev/zero ate the
    memory, a YAML alias bomb hung it expanding, one nested 5000 deep dropped every later recipe; a cache of
    the right name but the wrong shape left every process "running without lfkit" for good."""
    home = tmp_path / "home"
    recipes = home / "recipes"
    recipes.mkdir(parents=True)
    os.mkfifo(recipes / "fifo.yaml")
    (recipes / "zero.yaml").symlink_to("/dev/zero")
    (recipes / "bomb.yaml").write_text(_alias_bomb())
    (recipes / "deep.yaml").write_text("name: deep\nsteps: " + "[" * 5000 + "]" * 5000 + "\n")
    (recipes / "zz-good.yaml").write_text("name: my-chat\ncommand: chat\nargs: {model_name_or_path: x}\n")
    (home / "datasets.json").write_text("[" * 100_000 + "]" * 100_000)  # set aside as corrupt, as any
    first = run([sys.executable, "-c", IMPORT], env=clean_env(LFKIT_HOME=str(home)), timeout=120)
    assert first.returncode == 0 and "IMPORTED" in first.stdout, first.stderr[-2000:]
    listed = run([LFKIT, "recipes", "--json"], env=clean_env(LFKIT_HOME=str(home)), timeout=120)
    assert listed.returncode == 0 and "my-chat" in {r["name"] for r in json.loads(listed.stdout)}, listed.stderr
    fixes = {p["fix"]: p["what"] for p in doctor_problems(home)}
    for name, why in [("fifo", "not a regular file"), ("zero", "not a regular file"), ("deep", "nested too deeply"),
                      ("bomb", "more than 100,000 values once its YAML aliases are expanded")]:  # fmt: skip
        (what,) = [w for fix, w in fixes.items() if f"{name}.yaml" in fix]
        assert what.endswith(f"{name}.yaml: {why}"), what
    assert list(home.glob("datasets.json.corrupt-*"))
    # caches lfkit wrote, damaged in place: each is read again and replaced, not trusted for ever
    caches = sorted((home / "cache").glob("installed-*.json")) + sorted((home / "cache").glob("recipe-file-*.json"))
    assert caches
    for cache in caches:
        kept = json.loads(cache.read_text())
        kept["value"] = {"entry_points": 5, "versions": {"torch": 5}} if "installed" in cache.name else {"data": 5}
        cache.write_text(json.dumps(kept))
    again = run([sys.executable, "-c", IMPORT], env=clean_env(LFKIT_HOME=str(home)), timeout=120)
    assert again.returncode == 0 and "running without lfkit" not in again.stderr, again.stderr[-2000:]
    assert "my-chat" in run([LFKIT, "recipes"], env=clean_env(LFKIT_HOME=str(home), COLUMNS="200")).stdout
    assert all("value" in json.loads(c.read_text()) and json.loads(c.read_text())["value"] != {"data": 5}
               for c in caches)  # fmt: skip
