"""``poodle logs`` list / tail / export / purge, in process and as the installed command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from poodle_vllm.arrowlog import ArrowLogWriter
from poodle_vllm.cli.main import main
from poodle_vllm.config import LogConfig
from poodle_vllm.paths import REPO_ROOT


@pytest.fixture
def state_dir(tmp_path, monkeypatch, make_record):
    monkeypatch.setenv("POODLE_STATE_DIR", str(tmp_path))
    with ArrowLogWriter(tmp_path / "logs", LogConfig(batch_rows=5, rotate_bytes=1)) as writer:
        for i in range(12):
            writer.submit(make_record(i, prompt_text=("long words " * 40) if i == 11 else f"prompt {i}"))
    return tmp_path


def _run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["logs", *argv])
    return rc, capsys.readouterr().out


def test_list_json_uses_the_state_dir(state_dir, capsys):
    rc, out = _run(capsys, "list", "--json")
    data = json.loads(out)
    assert rc == 0 and data["directory"] == str(state_dir / "logs")
    assert data["total"]["rows"] == 12 and data["total"]["files"] == len(data["files"]) >= 3
    assert {f["schema_version"] for f in data["files"]} == {1}
    assert all(f["closed"] and not f["torn"] for f in data["files"])
    rc, out = _run(capsys, "list")
    assert rc == 0 and "12 row(s)" in out


def test_tail_shows_the_last_records_shortened(state_dir, capsys):
    rc, out = _run(capsys, "tail", "-n", "3", "--json", "--width", "40")
    entries = json.loads(out)
    assert rc == 0 and [e["request_id"] for e in entries] == ["req-00009", "req-00010", "req-00011"]
    assert len(entries[-1]["prompt"]) == 40 and entries[-1]["prompt"].endswith("...")
    assert entries[0]["output"] == "Positive." and entries[0]["num_output_tokens"] == 3
    rc, out = _run(capsys, "tail", "-n", "2")
    assert rc == 0 and "req-00011" in out and "prompt:" in out


def test_export_and_purge(state_dir, tmp_path, capsys):
    out_file = tmp_path / "out.parquet"
    rc, _ = _run(capsys, "export", "--format", "parquet", str(out_file))
    assert rc == 0 and pq.read_table(out_file).num_rows == 12
    rc, out = _run(capsys, "export", str(tmp_path / "out.jsonl"), "--json")
    assert rc == 0 and json.loads(out)["format"] == "jsonl" and json.loads(out)["rows"] == 12
    rc, out = _run(capsys, "purge", "--task", "task-a", "--json")
    assert rc == 0 and json.loads(out)["rows_removed"] == 6
    rc, out = _run(capsys, "list", "--json")
    assert json.loads(out)["total"]["rows"] == 6


def test_dir_option_overrides_the_state_dir(state_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POODLE_STATE_DIR", str(tmp_path / "elsewhere"))
    rc, out = _run(capsys, "list", "--json")
    assert json.loads(out)["total"]["rows"] == 0
    rc, out = _run(capsys, "--dir", str(state_dir / "logs"), "list", "--json")
    assert json.loads(out)["total"]["rows"] == 12
    rc, out = _run(capsys, "list", "--json", "--dir", str(state_dir / "logs"))
    assert json.loads(out)["total"]["rows"] == 12


def test_installed_command(state_dir):
    exe = REPO_ROOT / ".venv" / "bin" / "poodle"
    if not exe.exists():
        pytest.skip("no .venv/bin/poodle")
    env = dict(os.environ, POODLE_STATE_DIR=str(state_dir))
    done = subprocess.run(
        [str(exe), "logs", "list", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"]["rows"] == 12


def test_arrowlog_and_cli_import_neither_torch_nor_vllm():
    code = (
        "import sys, poodle_vllm.arrowlog, poodle_vllm.cli.logs; "
        "bad = [m for m in ('torch', 'vllm', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)
