"""Typed configuration: defaults, nested sections, clear errors, docstrings per field."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json

import pytest

from poodle_vllm import config as config_module
from poodle_vllm.config import PoodleConfig, config_from_additional, config_to_dict, load_config


def test_defaults_and_nested_sections() -> None:
    cfg = load_config({"serving": {"policy": "auto", "gate_target": 0.8}, "detection": {"min_requests": 3}})
    assert cfg.serving.policy == "auto" and cfg.serving.gate_target == 0.8
    assert cfg.detection.min_requests == 3 and cfg.log.batch_rows == PoodleConfig().log.batch_rows


def test_round_trip_through_json() -> None:
    cfg = load_config({"worker": False, "development": {"base_model": "x"}})
    again = load_config(json.dumps(config_to_dict(cfg)))
    assert again == cfg


def test_unknown_keys_name_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown key.*'polcy'.*valid"):
        load_config({"serving": {"polcy": "auto"}})
    with pytest.raises(ValueError, match="must be an object"):
        load_config({"serving": 3})


def test_additional_config_without_poodle_is_inert() -> None:
    assert config_from_additional(None) is None
    assert config_from_additional({"other": 1}) is None
    assert config_from_additional({"poodle": {}}) == PoodleConfig()


def test_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POODLE_CONFIG", '{"worker": false}')
    assert load_config().worker is False


def test_every_field_has_a_docstring() -> None:
    tree = ast.parse(inspect.getsource(config_module))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "dataclass" for d in node.decorator_list
        ):
            body = node.body
            for i, stmt in enumerate(body):
                if isinstance(stmt, ast.AnnAssign):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), (
                        f"{node.name}.{stmt.target.id} has no docstring"  # type: ignore[attr-defined]
                    )
    assert all(dataclasses.is_dataclass(c) for c in (PoodleConfig,))
