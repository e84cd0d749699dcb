"""Shared fixtures: tiny models built once per session, installed test plugins, subprocess runs.

Nothing here downloads: models are built from scratch, plugins are installed from
tests/fixtures, and every subprocess runs with the hub switched off.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BIN = Path(sys.executable).parent
# lfkit's state (registered datasets, cached models) for this test session only: never the
# user's ~/.local/share/lfkit, in this process or in any subprocess.
SESSION_HOME = Path(tempfile.mkdtemp(prefix="lfkit-test-home-"))
os.environ["LFKIT_HOME"] = str(SESSION_HOME)
# The in-process tests too (tiny models, memory plans): see clean_env.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["TORCH_EXTENSIONS_DIR"] = str(SESSION_HOME / "torch_extensions")
atexit.register(shutil.rmtree, SESSION_HOME, True)
# lfkit's caches (facts read from the installed LLaMA-Factory, model shapes, tokenized lengths) are
# shared by the pytest-xdist workers of a run: each entry is keyed by what it depends on and written
# atomically, so a worker reads what another computed instead of importing LLaMA-Factory again. The
# process that makes the folder (the controller, whose environment the workers inherit) removes it.
if "LFKIT_TEST_SHARED_CACHE" not in os.environ:
    os.environ["LFKIT_TEST_SHARED_CACHE"] = tempfile.mkdtemp(prefix="lfkit-test-cache-")
    atexit.register(shutil.rmtree, os.environ["LFKIT_TEST_SHARED_CACHE"], True)
(SESSION_HOME / "cache").symlink_to(os.environ["LFKIT_TEST_SHARED_CACHE"], target_is_directory=True)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: no inherited LFKIT_* settings, hub off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LFKIT_") and k != "PYTHONPATH"}
    env["LFKIT_HOME"] = str(SESSION_HOME)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DISABLE_VERSION_CHECK="1",
        TOKENIZERS_PARALLELISM="false",
        CUDA_VISIBLE_DEVICES="",
        # One thread per process: on the tiny models an OpenMP team costs more than the work
        # (8 LoRA steps: 0.34 s with one thread, 4.5-7.8 s with two, on 2 cores), and a run's
        # processes (lfkit, the step, torchrun's workers) then do not fight over the cores.
        OMP_NUM_THREADS="1",
        # DeepSpeed's ops are built into a folder of this session: a build killed half-way elsewhere
        # leaves a lock file in ~/.cache/torch_extensions that makes every later build wait forever.
        TORCH_EXTENSIONS_DIR=str(SESSION_HOME / "torch_extensions"),
        # The datasets library's cache of this session: the two stacks' datasets releases (3.6 and 4.x)
        # write cache metadata the other cannot read ("Feature type 'List' not found").
        HF_DATASETS_CACHE=str(SESSION_HOME / "hf-datasets"),
    )
    env.update(extra)
    return env


def run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 600, input=None):
    return subprocess.run(
        [str(c) for c in cmd],
        env=env or clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def free_port() -> int:
    """An unused loopback port; the tiny race until a server binds it is acceptable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step_pids(folder: Path) -> list[int]:
    """The step processes training into `folder`. Each runs in its own session (so a signal to lfkit's
    process group does not reach it): freeze or kill it by its own group."""
    found = subprocess.run(["pgrep", "-f", f"lfkit.recipes.step {folder}"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def signal_run(process: subprocess.Popen, folder: Path, sig: int) -> None:
    """Send `sig` to lfkit's process group (started with start_new_session) and to its steps' groups."""
    os.killpg(process.pid, sig)
    for pid in step_pids(folder):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass


def unprivileged(cmd: list) -> list:
    """As root, file modes bind only without CAP_DAC_OVERRIDE: drop it (util-linux setpriv) for this command."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]


def py(code: str, **kwargs):
    """Run python code in a fresh interpreter of this environment (so the .pth applies)."""
    return run([sys.executable, "-c", textwrap.dedent(code)], **kwargs)


def probe(code: str, *, env: dict[str, str], cwd: Path) -> dict:
    """Run a probe script that prints one `REPORT {json}` line; return that JSON."""
    result = py(code, env=env, cwd=cwd)
    line = next((out for out in result.stdout.splitlines() if out.startswith("REPORT ")), None)
    assert line, result.stderr[-3000:]
    return json.loads(line[len("REPORT ") :])


def tail(result, n: int) -> list[str]:
    """The last n stdout lines (LLaMA-Factory logs its own lines to stdout before ours)."""
    return result.stdout.strip().splitlines()[-n:]


def make_dist(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Lay out an installed distribution (dist-info + modules) in ``site``, as pip would."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[lfkit]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    return site


@pytest.fixture(scope="session")
def lfkit_home() -> Path:
    return SESSION_HOME


def _shared_root(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this run sees (the workers' base folders are siblings)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from lfkit.tiny_models import tiny_model

    # One model for all workers (tiny_model builds beside and renames): runs made on one worker
    # (quick_adapter) name the same base model on the other.
    return tiny_model("llama", cache_dir=_shared_root(tmp_path_factory) / "tiny-models")


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> Path:
    from lfkit.tiny_models import tiny_model

    return tiny_model("gemma", cache_dir=_shared_root(tmp_path_factory) / "tiny-models")


# A LoRA run short enough for a test and long enough to log a loss curve.
QUICK_LORA = ["num_train_epochs=1", "max_steps=3", "logging_steps=1", "per_device_train_batch_size=2",
              "gradient_accumulation_steps=1", "cutoff_len=64", "learning_rate=1e-2"]  # fmt: skip


@pytest.fixture(scope="session")
def quick_adapter(tmp_path_factory):
    """``quick_adapter(model) -> (adapter, data)``: a finished `lfkit run sft-lora-single` of QUICK_LORA on
    tiny_alpaca, made once per run and shared by the tests that only read it (so the train -> merge
    -> chat test, the family checks and the nothing-lost checks do not each train the same adapter)."""

    def train(model: Path, folder: Path) -> None:
        data = write_alpaca(folder / "data")
        result = run([BIN / "lfkit", "run", "sft-lora-single", f"model={model}", "dataset=tiny_alpaca",
                      f"dataset_dir={data}", f"output_dir={folder / 'adapter'}", *QUICK_LORA])  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]

    def get(model: Path) -> tuple[Path, Path]:
        folder = built_once(tmp_path_factory, f"adapter-{model.name}", lambda f: train(model, f))
        return folder / "adapter", folder / "data"

    return get


def pip_target(target: Path, *requirements, build_isolation: bool = False) -> Path:
    """pip-install requirements (no dependencies) into a folder of their own, to put on PYTHONPATH.

    Without build isolation an sdist builds with this environment's torch and setuptools.
    """
    flags = [] if build_isolation else ["--no-build-isolation"]
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *flags, "--target", target, *requirements]
    result = run(cmd, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    return target


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder ``name``, built by ``build(folder)`` once for the whole run and read by every
    pytest-xdist worker (each worker's session fixtures are its own, so a costly read-only build,
    such as an sdist install, would otherwise happen once per worker)."""
    from filelock import FileLock

    shared = _shared_root(tmp_path_factory) / "built-once"
    shared.mkdir(exist_ok=True)
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def deepspeed_release(tmp_path_factory, version: str) -> Path:
    """A DeepSpeed release pip-installed into a folder of its own, once per test run."""
    # DeepSpeed ships sdists only; they build against this environment's torch
    return built_once(
        tmp_path_factory, f"deepspeed-{version}", lambda folder: pip_target(folder, f"deepspeed=={version}")
    )


def lora_train_args(model: Path, output_dir: Path, **extra) -> dict:
    """LLaMA-Factory arguments of a 2-step LoRA SFT run on a tiny model, on tiny_alpaca unless told."""
    args = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "q_proj,v_proj",
        "dataset": "tiny_alpaca",
        "template": "default",
        "cutoff_len": 64,
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 2,
        "max_steps": 2,
        "logging_steps": 1,
        "report_to": "none",
    }
    args.update(extra)
    return args


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def hooklog_site(tmp_path_factory) -> Path:
    """The lfkit-hooklog test plugin, pip-installed (with its entry point) into a folder of its own."""
    return built_once(tmp_path_factory, "hooklog-site", lambda folder: pip_target(folder, FIXTURES / "lfkit-hooklog"))


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory) -> Path:
    """A third-party plugin whose import raises."""
    return make_dist(
        tmp_path_factory.mktemp("broken-site"),
        "lfkit-broken",
        "0.3",
        {"broken": "lfkit_broken"},
        {"lfkit_broken": "raise RuntimeError('plugin bug: cannot import me')\n"},
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_alpaca(folder: Path, name: str = "tiny_alpaca", rows: int = 16) -> Path:
    """A small alpaca dataset folder with its dataset_info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    data = [
        {"instruction": f"回答中国电信手机用户的问题,问题{i},应该怎么做？", "input": "", "output": f"取消方式_{i}"}
        for i in range(rows)
    ]
    (folder / f"{name}.json").write_text(json.dumps(data, ensure_ascii=False))
    info = {
        name: {
            "file_name": f"{name}.json",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        }
    }
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


@pytest.fixture(scope="session")
def tiny_baichuan2(tmp_path_factory, tiny_llama) -> Path:
    from remote_models import build_baichuan2

    return build_baichuan2(tmp_path_factory.mktemp("baichuan2") / "Baichuan2-7B-tiny", tiny_llama)


@pytest.fixture(scope="session")
def tiny_baichuan2_alibi(tmp_path_factory, tiny_llama) -> Path:
    from remote_models import build_baichuan2

    return build_baichuan2(tmp_path_factory.mktemp("baichuan2-13b") / "Baichuan2-13B-tiny", tiny_llama, alibi=True)


@pytest.fixture(scope="session")
def tiny_baichuan2_spm(tmp_path_factory) -> Path:
    """Baichuan2 with its own sentencepiece BaichuanTokenizer (remote code), as upstream ships it."""
    from remote_models import build_baichuan2

    return build_baichuan2(tmp_path_factory.mktemp("baichuan2-spm") / "Baichuan2-7B-spm-tiny", None)


@pytest.fixture(scope="session")
def tiny_chatglm3(tmp_path_factory, tiny_llama) -> Path:
    from remote_models import build_chatglm3

    return build_chatglm3(tmp_path_factory.mktemp("chatglm3") / "model", tiny_llama)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory, tiny_llama) -> Path:
    from remote_models import build_qwen2

    return build_qwen2(tmp_path_factory.mktemp("qwen2") / "model", tiny_llama)


@pytest.fixture(scope="session")
def qwen2_site(tmp_path_factory) -> Path:
    """The example third-party family plugin, pip-installed (with its entry point) into a folder of its own."""
    return built_once(tmp_path_factory, "qwen2-site", lambda folder: pip_target(folder, FIXTURES / "lfkit-qwen2"))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A started one-node Slurm cluster for this session; merge ``.env`` into a subprocess's environment.

    Skips where none can run (not root, Slurm not installed), but fails under CI=true: CI must run them.
    """
    from slurm_cluster import SlurmCluster, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no Slurm cluster: {reason}")
        pytest.skip(reason)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the groups into node ids
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``, as `make test` runs): tests go to the workers
    one by one, except those that share something costly or single: the Slurm cluster (one per
    machine) and a module's own fixtures (module or class scope: computed once, on one worker)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        scopes = {d.scope for defs in (info.name2fixturedefs.values() if info else ()) for d in defs}
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))

    # Longest first: the groups (a cluster, a module's shared runs), then the other slow tests, then
    # the quick ones, so the last minutes are many short tests on both workers rather than one long
    # test on one while the other waits. (xdist hands out work in this order.)
    def weight(item) -> int:
        if item.get_closest_marker("xdist_group"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=weight)
