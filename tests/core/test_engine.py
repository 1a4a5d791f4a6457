"""Choosing the engine: the configured one, or the other when its wheel is missing."""

from __future__ import annotations

import sys

import pytest

from interlock.config import Config
from interlock.core.engine import EngineName
from interlock.core.engines import fallback_note, make_engine
from interlock.runtime import banner, build


def test_the_default_engine_is_regorus() -> None:
    engine = make_engine()
    assert engine.name == "regorus"
    assert fallback_note("regorus", engine) is None


@pytest.mark.parametrize(
    ("wanted", "module", "serving"),
    [
        ("regorus", "interlock.core.regorus_engine", "rego-cpp"),
        ("rego-cpp", "interlock.core.rego", "regorus"),
    ],
)
def test_a_missing_wheel_falls_back_to_the_other_engine(
    monkeypatch: pytest.MonkeyPatch, wanted: EngineName, module: str, serving: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it raises ImportError
    engine = make_engine(wanted)
    assert engine.name == serving
    note = fallback_note(wanted, engine)
    assert note is not None
    assert note.startswith(f"policy engine {wanted} is not installed here; using {serving}")


def test_interlock_up_says_which_engine_serves_and_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setitem(sys.modules, "interlock.core.regorus_engine", None)
    config = Config.model_validate({"data_dir": str(tmp_path)})
    text = banner(build(config))
    assert "rego-cpp" in text.splitlines()[0]
    assert "warning: policy engine regorus is not installed here; using rego-cpp" in text
