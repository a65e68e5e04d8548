"""`poodle serve --dry-run` prints the exact vllm serve command with Poodle enabled."""

from __future__ import annotations

import json
import shlex

import pytest

from poodle_vllm.cli.main import main
from poodle_vllm.launcher import ServerSpec, build_command


def test_dry_run_prints_the_vllm_command(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    rc = main(
        [
            "serve",
            str(tmp_path),
            "--port",
            "8123",
            "--config",
            '{"worker": false}',
            "--dry-run",
            "--",
            "--max-num-seqs",
            "4",
        ]
    )
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    argv = shlex.split(line)
    env = dict(
        a.split("=", 1) for a in argv if "=" in a and not a.startswith("-") and a.split("=")[0].isupper()
    )
    assert "poodle_endpoints" in env["VLLM_PLUGINS"].split(",")
    cmd = argv[len(env) :]
    assert cmd[1:3] == ["serve", str(tmp_path)]
    for flag, value in (
        ("--host", "127.0.0.1"),
        ("--port", "8123"),
        ("--block-size", "32"),
        ("--dtype", "float32"),
        ("--scheduler-cls", "poodle_vllm.integration.vllm.scheduler.PoodleScheduler"),
    ):
        assert cmd[cmd.index(flag) + 1] == value
    assert "--enforce-eager" in cmd and cmd[-2:] == ["--max-num-seqs", "4"]
    cfg = json.loads(cmd[cmd.index("--additional-config") + 1])["poodle"]
    assert cfg["worker"] is False and cfg["serving"]["policy"] == "offer"


def test_bad_config_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["serve", str(tmp_path), "--config", '{"bogus": 1}', "--dry-run"]) == 1
    assert "unknown key" in capsys.readouterr().err


def test_plain_spec_has_no_poodle() -> None:
    cmd, env = build_command(ServerSpec(model="m", poodle=None))
    assert "--scheduler-cls" not in cmd and "VLLM_PLUGINS" not in env


def test_unwritable_state_dir_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("POODLE_STATE_DIR", str(blocker / "state"))
    assert main(["serve", str(tmp_path), "--dry-run"]) == 1
    assert "POODLE_STATE_DIR" in capsys.readouterr().err
