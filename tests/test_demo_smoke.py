"""`lfkit demo`: the README's main job, until the demo recipe lands."""

import pytest

from conftest import BIN, clean_env, run

pytestmark = pytest.mark.slow
LFKIT = BIN / "lfkit"


def test_demo_trains_and_never_overwrites_a_finished_run(tmp_path, lfkit_home):
    out = tmp_path / "demo"
    env = clean_env(LFKIT_HOME=str(lfkit_home))
    result = run([LFKIT, "demo", "--output-dir", out], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "training_loss.png").is_file()
    assert "last_loss" in result.stdout

    again = run([LFKIT, "demo", "--output-dir", out], env=env)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"lfkit: error: {out} already holds a run; pick another --output-dir or pass --overwrite"
    ]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()  # untouched
