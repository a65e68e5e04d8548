"""Build and run the ``vllm serve`` command line that enables Poodle.

Used by ``poodle serve`` (foreground), ``poodle demo`` and the end-to-end tests (background,
with a health wait). No vllm import here: the server is a child process.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poodle_vllm.paths import PoodlePaths, resolve_paths

SERVED_MODEL_NAME = "smollm2"


@dataclass
class ServerSpec:
    """What to launch."""

    model: str
    """Model folder or name."""
    host: str = "127.0.0.1"
    port: int = 8011
    served_model_name: str = SERVED_MODEL_NAME
    poodle: dict[str, Any] | None = field(default_factory=dict)
    """Poodle's section of --additional-config; None launches plain vLLM (no Poodle)."""
    max_model_len: int = 2048
    block_size: int = 32
    kv_cache_gib: int = 2
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def vllm_executable() -> str:
    exe = Path(sys.executable).with_name("vllm")
    if exe.exists():
        return str(exe)
    found = shutil.which("vllm")
    if not found:
        raise FileNotFoundError("the `vllm` command is not installed; run scripts/setup.sh")
    return found


def build_command(spec: ServerSpec) -> tuple[list[str], dict[str, str]]:
    """The exact ``vllm serve`` argv and the environment additions for ``spec``."""
    cmd = [
        vllm_executable(),
        "serve",
        spec.model,
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--served-model-name",
        spec.served_model_name,
        "--max-model-len",
        str(spec.max_model_len),
        "--block-size",
        str(spec.block_size),
        "--dtype",
        "float32",
        "--enforce-eager",
    ]
    env = {"VLLM_CPU_KVCACHE_SPACE": str(spec.kv_cache_gib), **spec.env}
    if spec.poodle is not None:
        # compat has no top-level vllm import, so this module stays light and vllm-free.
        from poodle_vllm.integration.vllm.compat import SCHEDULER_CLS, plugin_allow_list

        cmd += [
            "--scheduler-cls",
            SCHEDULER_CLS,
            "--additional-config",
            json.dumps({"poodle": spec.poodle}),
        ]
        env["VLLM_PLUGINS"] = plugin_allow_list(os.environ.get("VLLM_PLUGINS"))
    cmd += spec.extra_args
    return cmd, env


def format_command(cmd: list[str], env: dict[str, str]) -> str:
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.quote(c) for c in cmd])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A ``vllm serve`` child process with a health wait and a clean stop."""

    def __init__(
        self, spec: ServerSpec, log_path: Path | None = None, paths: PoodlePaths | None = None
    ) -> None:
        self.spec = spec
        self.paths = paths or resolve_paths()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    def start(self, timeout_s: float = 300.0) -> ServerProcess:
        cmd, env_add = build_command(self.spec)
        env = {**os.environ, **env_add}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._write_server_file(cmd, env_add)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base_url + "/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vllm serve not ready after {timeout_s:.0f} s; see {self.log_path}")

    def _write_server_file(self, cmd: list[str], env_add: dict[str, str]) -> None:
        if self.spec.poodle is None:
            return
        self.paths.state.mkdir(parents=True, exist_ok=True)
        info = {
            "url": self.base_url,
            "pid": self.proc.pid if self.proc else None,
            "model": self.spec.served_model_name,
            "command": format_command(cmd, env_add),
            "started_at": time.time(),
        }
        self.paths.server_file.write_text(json.dumps(info, indent=2))

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout_s)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def read_server_file(paths: PoodlePaths | None = None) -> dict[str, Any] | None:
    paths = paths or resolve_paths()
    try:
        return dict(json.loads(paths.server_file.read_text()))
    except (OSError, ValueError):
        return None
