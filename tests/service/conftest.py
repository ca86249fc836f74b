"""Fixtures for service tests: apps over the committed models or a scratch copy of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.app import create_app
from service.settings import Settings
from tests.helpers import MODELS


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings over the committed model repository, ignoring the caller's environment."""
    return Settings.from_env({}, model_repository=MODELS)


@pytest.fixture(scope="session")
def shared_app(settings):
    """One app for read-only tests (model loading is the slow part)."""
    return create_app(settings)


@pytest.fixture
def client(shared_app):
    return shared_app.test_client()


@pytest.fixture
def scratch_repo(tmp_path) -> Path:
    """A writable copy of circles and blobs, for tests that break or add models."""
    for name in ("circles", "blobs"):
        shutil.copytree(MODELS / name, tmp_path / name)
    return tmp_path
