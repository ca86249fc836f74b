"""service.settings: one frozen object from SERVING_* variables."""

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from service.settings import Settings, SettingsError


def test_defaults():
    s = Settings.from_env({})
    assert s.bind == "127.0.0.1:8000"
    assert s.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert s.default_model == "fashion-mnist"
    assert s.model_repository.name == "models"


def test_environment_values_are_typed():
    s = Settings.from_env(
        {
            "SERVING_WORKERS": "4",
            "SERVING_PROVIDERS": "CPUExecutionProvider",
            "SERVING_VERIFY_CHECKSUMS": "false",
            "SERVING_MODEL_REPOSITORY": "/srv/models",
            "SERVING_MAX_INSTANCES": "8",
            "UNRELATED": "x",
        }
    )
    assert s.workers == 4
    assert s.providers == ("CPUExecutionProvider",)
    assert s.verify_checksums is False
    assert s.model_repository == Path("/srv/models")
    assert s.max_instances == 8


def test_overrides_win_over_environment():
    assert Settings.from_env({"SERVING_WORKERS": "4"}, workers=1).workers == 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SERVING_WORKERS", "many", "SERVING_WORKERS='many'"),
        ("SERVING_WORKERS", "0", "must be positive"),
        ("SERVING_VERIFY_CHECKSUMS", "maybe", "expected true/false"),
    ],
)
def test_bad_values_are_named(key, value, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({key: value})


def test_frozen_and_described():
    s = Settings.from_env({})
    with pytest.raises(FrozenInstanceError):
        s.workers = 3
    described = s.describe()
    assert described["SERVING_BIND"] == "127.0.0.1:8000"
    assert len(described) == len(s.__dataclass_fields__)


def test_the_docs_document_every_setting():
    from tests.helpers import ROOT

    page = (ROOT / "docs" / "settings.md").read_text()
    for variable in Settings.from_env({}).describe():
        assert f"| `{variable}` |" in page, variable
