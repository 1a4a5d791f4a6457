"""`interlock host` refuses a config it cannot enforce before touching the firewall."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlock.cli import main


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ("[state]\nstore = 'redis://127.0.0.1:1/0'\n", "needs a [host] section"),
        ("[host.agents]\ncoder = { uid = 1001 }\n", "set [state] store"),
        (
            "[state]\nstore = 'redis://127.0.0.1:1/0'\n[http]\nlisten = '127.0.0.1:0'\n[host]\n",
            "the http proxy listens on port 0",
        ),
    ],
)
def test_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, error: str
) -> None:
    file = tmp_path / "interlock.toml"
    file.write_text(f"data_dir = '{tmp_path / 'data'}'\n{config}")
    assert main(["host", "-c", str(file)]) == 2
    assert error in capsys.readouterr().err
