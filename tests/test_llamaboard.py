"""LlamaBoard (`llamafactory-cli webui`) with lfkit, driven in a real browser.

The real web UI of the installed LLaMA-Factory runs as a server on a free loopback port; Debian's
chromium (installed by `make test` as root, scripts/install-test-tools.sh) is driven by playwright.
A registered dataset is picked and previewed, the memory plan line follows the batch size, a LoRA
training of a tiny model is started with Start and leaves its adapter and lfkit's patch record, and
the evaluate tab predicts a registered held-out split; with lfkit's web UI patches disabled, the UI
is LLaMA-Factory's own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import BIN, REPO, clean_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("llamaboard"), pytest.mark.both_stacks]
WEBUI_PATCHES = "webui-datasets,webui-dataset-preview,webui-fit-line"
# Where the test's picture of the page is kept for the README (LFKIT_README_SCREENSHOT=1 refreshes it).
SCREENSHOT = REPO / "docs" / "llamaboard.png"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """A headless chromium under playwright; skips without one, fails under CI=true (CI must run it)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e .[test])"
    if reason is None and _chromium() is None:
        reason = "no chromium (as root, scripts/install-test-tools.sh installs Debian's)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no browser: {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        # --no-sandbox: chromium's sandbox needs a user namespace, which a container run as root lacks.
        chromium = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@contextmanager
def webui(folder: Path, **env: str) -> Iterator[str]:
    """`llamafactory-cli webui` started in ``folder`` (its data/ and saves/ are there); its URL."""
    port = free_port()
    log = folder / "webui.log"
    environment = clean_env(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", **env)
    environment["GRADIO_ANALYTICS_ENABLED"] = "False"
    # LlamaBoard starts a training as `llamafactory-cli train`: found on PATH, as in an activated venv.
    environment["PATH"] = f"{BIN}{os.pathsep}{environment.get('PATH', '')}"
    with open(log, "wb") as sink:
        server = subprocess.Popen([BIN / "llamafactory-cli", "webui"], cwd=folder, env=environment, stdout=sink,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert server.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the web UI did not start within 180 s"
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and a training it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _user_data(folder: Path) -> None:
    """A dataset_dir of the user's own, with one dataset: LlamaBoard lists it in any case."""
    data = folder / "data"
    data.mkdir()
    rows = [{"instruction": "hello", "input": "", "output": "world"}] * 4
    (data / "mine.json").write_text(json.dumps(rows), encoding="utf-8")
    (data / "dataset_info.json").write_text(json.dumps({"my_data": {"file_name": "mine.json"}}), encoding="utf-8")


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1900})
    page.goto(url)
    page.get_by_label("Model path").wait_for(timeout=120_000)
    return page


def _dataset_choices(page) -> list[str]:
    dropdown = page.get_by_label("Dataset", exact=True).first  # the train tab's (the evaluate tab's is hidden)
    dropdown.click()
    options = page.locator("ul.options li")
    try:
        options.first.wait_for(timeout=10_000)
    except Exception:  # noqa: BLE001 - an empty list shows no options at all
        return []
    return [text.strip() for text in options.all_inner_texts()]


def _fit_line(page, expected: str) -> str:
    line = page.locator("#lfkit-fit-line")
    deadline = time.monotonic() + 60
    while expected not in (text := line.inner_text()):
        assert time.monotonic() < deadline, f"the plan line still says: {text}"
        time.sleep(0.3)
    return text


def _set_number(page, label: str, value: str) -> None:
    box = page.get_by_role("spinbutton", name=label).first
    box.fill(value)
    box.press("Enter")


def test_a_registered_dataset_is_picked_previewed_and_trained_on_from_the_web_ui(browser, tmp_path, tiny_llama):
    _user_data(tmp_path)
    with webui(tmp_path) as url:
        page = _open(browser, url)
        page.get_by_label("Model name").click()  # LlamaBoard starts only with a model name
        page.get_by_label("Model name").fill("Llama-2-7B")
        page.get_by_role("option", name="Llama-2-7B", exact=True).click()
        path = page.get_by_label("Model path")
        deadline = time.monotonic() + 30
        while not path.input_value():  # the name fills in its hub id first: type the folder after that
            assert time.monotonic() < deadline, "choosing a model name did not fill the model path"
            time.sleep(0.2)
        path.fill(str(tiny_llama))
        path.press("Enter")

        choices = _dataset_choices(page)
        assert "my_data" in choices and "telecom_demo (lfkit)" in choices and "sharegpt_single (lfkit)" in choices
        page.locator("ul.options li", has_text="telecom_demo (lfkit)").first.click()
        page.keyboard.press("Escape")

        page.get_by_role("button", name="Preview dataset").click()
        from lfkit.dataset_registry import BUNDLED

        first = json.loads(BUNDLED["telecom_demo"].file.read_text(encoding="utf-8"))[0]
        preview = page.locator(".modal-box")
        preview.get_by_text(first["output"][:12]).first.wait_for(timeout=30_000)
        preview.get_by_role("button", name="Close").click()

        before = _fit_line(page, "micro-batch 2")
        assert "GiB per card" in before and "type a card size" in before
        _set_number(page, "Batch size", "4")
        _fit_line(page, "micro-batch 4")
        target = page.locator("#lfkit-fit-target textarea, #lfkit-fit-target input").first
        target.fill("16")
        target.press("Enter")
        fits = _fit_line(page, "of 16 GiB per card: fits")
        target.fill("0.5")
        target.press("Enter")
        too_small = _fit_line(page, "of 0.5 GiB per card: does not fit")
        if os.environ.get("LFKIT_README_SCREENSHOT"):
            target.fill("16")
            target.press("Enter")
            _fit_line(page, "fits (")
            page.screenshot(path=str(SCREENSHOT), full_page=True)

        # A short LoRA training of the tiny model, started with Start.
        _set_number(page, "Batch size", "2")
        _set_number(page, "Cutoff length", "64")
        page.get_by_label("Max samples").first.fill("8")
        page.get_by_text("Extra configurations").first.click()
        extra = page.get_by_label("Extra arguments").first
        extra.fill(json.dumps({"optim": "adamw_torch", "max_steps": 2, "report_to": "none"}))
        page.get_by_label("Compute type").first.click()
        page.locator("ul.options li", has_text="fp32").first.click()
        page.get_by_role("button", name="Start").click()

        deadline = time.monotonic() + 300
        while not (adapters := list((tmp_path / "saves").glob("*/lora/*/adapter_model.safetensors"))):
            log = (tmp_path / "webui.log").read_text(errors="replace")
            assert time.monotonic() < deadline and "Traceback" not in log, log[-3000:]
            time.sleep(1)
        run_dir = adapters[0].parent
        report = run_dir / "lfkit-patches.json"
        while not report.is_file():  # left as the training process exits
            assert time.monotonic() < deadline, "no lfkit-patches.json in the output folder"
            time.sleep(0.5)
        statuses = {p["id"]: p["status"] for p in json.loads(report.read_text(encoding="utf-8"))["patches"]}
        assert statuses["lf-dataset-lookup"] == "applied"  # telecom_demo was found through it
        log = (run_dir / "trainer_log.jsonl").read_text(encoding="utf-8")
        assert '"current_steps": 2' in log

        # The evaluate tab: the held-out split, also registered with lfkit, predicted by the model.
        page.get_by_text("Finished", exact=False).first.wait_for(timeout=120_000)  # LlamaBoard is idle again
        page.get_by_role("tab", name="Evaluate & Predict").click()
        dropdown = page.get_by_role("textbox", name="Dataset", exact=True)  # the visible tab's
        dropdown.click()
        page.get_by_role("option", name="telecom_demo_test (lfkit)", exact=True).click()
        page.keyboard.press("Escape")
        page.get_by_role("textbox", name="Max samples").fill("4")
        _set_number(page, "Maximum new tokens", "8")
        page.get_by_role("textbox", name="Output dir").fill("eval_ui")
        page.get_by_role("button", name="Start", exact=True).click()
        deadline = time.monotonic() + 300
        predictions = tmp_path / "saves" / "Llama-2-7B" / "lora" / "eval_ui" / "generated_predictions.jsonl"
        while not predictions.is_file():
            log = (tmp_path / "webui.log").read_text(errors="replace")
            assert time.monotonic() < deadline and "Traceback" not in log, log[-3000:]
            time.sleep(1)
        assert len(predictions.read_text(encoding="utf-8").splitlines()) == 4
    print(before, fits, too_small, sep="\n")


def test_with_the_web_ui_patches_disabled_the_dropdown_is_llamafactorys_own(browser, tmp_path):
    _user_data(tmp_path)
    with webui(tmp_path, LFKIT_DISABLE_PATCHES=WEBUI_PATCHES) as url:
        page = _open(browser, url)
        assert _dataset_choices(page) == ["my_data"]
        assert page.locator("#lfkit-fit-line").count() == 0
        assert "lfkit" not in page.locator("body").inner_text()


def test_the_plan_line_names_the_cheapest_change_that_keeps_the_global_batch():
    """The line's words for a 7B LoRA that does not fit 20 GiB (no browser: the line's own function)."""
    from lfkit.llamaboard.fit_line import plan_line

    args = dict(model_name_or_path=str(REPO / "tests/fixtures/model_configs/Llama-2-7b-hf"), stage="sft",
                do_train=True, finetuning_type="lora", lora_target="all", per_device_train_batch_size=8,
                gradient_accumulation_steps=2, cutoff_len=2048, bf16=True, dataset="telecom_demo")  # fmt: skip
    line = plan_line(args, "20")
    assert re.search(r"needs \d+\.\d GiB of 20 GiB per card: does not fit \(2048 tokens x micro-batch 8\)", line), line
    assert "cheapest change: micro-batch 2 x accumulation 8 (" in line  # 8 x 2 = 2 x 8
    assert "fits (2048 tokens x micro-batch 1)" in plan_line({**args, "per_device_train_batch_size": 1}, "20")
    assert "type a card size" in plan_line(args, "")
    assert "give the card size in GiB" in plan_line(args, "sixteen")
    assert "not known" in plan_line({**args, "model_name_or_path": "meta-llama/Llama-2-7b-hf"}, "16")
