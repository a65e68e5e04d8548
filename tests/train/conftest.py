"""Shared fixtures for the training tests: a tiny random encoder built in a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from poodle_vllm.train.toy import build_tiny_encoder


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT (built in a second) that learns the toy task."""
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))
