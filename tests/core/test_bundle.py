"""Reading bundles: modules, data mounting, content version, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlock.core.bundle import MAX_BUNDLE_BYTES, load_bundle
from interlock.errors import BundleError

POLICY = "package p\nimport rego.v1\nallow if input.x == 1\n"


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def test_modules_tests_and_nested_data_are_separated(tmp_path: Path) -> None:
    src = load_bundle(
        write(
            tmp_path,
            {
                "p.rego": POLICY,
                "p_test.rego": "package p_test\ntest_x if true\n",
                "data.json": '{"top": 1}',
                "a/b/data.json": '{"deep": true}',
                ".hidden/x.rego": "not even rego",
            },
        )
    )
    assert set(src.modules) == {"p.rego"}
    assert set(src.tests) == {"p_test.rego"}
    assert src.data == {"top": 1, "a": {"b": {"deep": True}}}


def test_version_is_content_hash(tmp_path: Path) -> None:
    a = load_bundle(write(tmp_path / "a", {"p.rego": POLICY, "data.json": '{"k": 1}'}))
    b = load_bundle(write(tmp_path / "b", {"p.rego": POLICY, "data.json": '{"k": 1}'}))
    c = load_bundle(write(tmp_path / "c", {"p.rego": POLICY, "data.json": '{"k": 2}'}))
    assert a.version == b.version
    assert a.version != c.version
    assert len(a.version) == 64


def test_version_changes_when_a_file_is_renamed(tmp_path: Path) -> None:
    a = load_bundle(write(tmp_path / "a", {"p.rego": POLICY}))
    b = load_bundle(write(tmp_path / "b", {"q.rego": POLICY}))
    assert a.version != b.version


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no .rego policy modules"),
        ({"p.rego": POLICY, "data.json": "{not json"}, r"data.json:1:2"),
        ({"p.rego": POLICY, "data.json": "[1, 2]"}, "must hold a JSON object"),
        ({"p.rego": b"package p\n\xff\xfe\n"}, "not UTF-8"),
        (
            {"p.rego": POLICY, "data.json": '{"a": {"b": 1}}', "a/data.json": '{"b": 2}'},
            "defined twice",
        ),
        ({"p.rego": POLICY, "data.json": '{"a": 1}', "a/data.json": '{"b": 2}'}, "defined twice"),
        (
            {"p.rego": POLICY, "a/data.json": '{"b": 2}', "a/b/data.json": '{"c": 3}'},
            "defined twice",
        ),
        ({"p.rego": POLICY, "x/data.json": '{"y": 2}', "x/y/data.json": '{"d": 3}'}, "collides"),
    ],
)
def test_unusable_bundles_are_refused_with_the_reason(
    tmp_path: Path, files: dict[str, str | bytes], message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        load_bundle(write(tmp_path, files))


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nope")


def test_oversized_bundle_is_refused(tmp_path: Path) -> None:
    big = "# " + "x" * (MAX_BUNDLE_BYTES + 1) + "\n" + POLICY
    with pytest.raises(BundleError, match="larger than"):
        load_bundle(write(tmp_path, {"p.rego": big}))
