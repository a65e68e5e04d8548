"""The general plugin is cheap, idempotent and inert unless asked."""

from __future__ import annotations

import subprocess
import sys


def test_register_is_idempotent_and_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from poodle_vllm.integration.vllm.register import register, is_registered\n"
        "register(); register()\n"
        "print(is_registered(), 'vllm.entrypoints.cli.serve' in sys.modules, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


def test_entry_points_are_declared() -> None:
    from importlib.metadata import entry_points

    general = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    endpoint = {ep.name: ep.value for ep in entry_points(group="vllm.endpoint_plugins")}
    assert general["poodle"] == "poodle_vllm.integration.vllm.register:register"
    assert endpoint["poodle_endpoints"] == "poodle_vllm.integration.vllm.endpoints:make_endpoint_plugin"
