"""The wheel built from the project: only `interlock` inside, and it runs without a checkout."""

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOOKUP = """
import sys
from pathlib import Path
import interlock
from interlock.testing import services
prefix = Path(sys.prefix)
assert Path(interlock.__file__).is_relative_to(prefix), interlock.__file__
for name in ("envoy.yaml", "nginx-auth-request.conf"):
    assert (services.DEPLOY / name).is_file(), services.DEPLOY / name
print("ok")
"""


def test_the_wheel_holds_only_interlock_and_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    assert importlib.util.find_spec("setuptools"), "offline build: pip install -e '.[test]'"
    # A copy of what the Dockerfile copies, so the build leaves no build/ in the checkout.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "interlock", src / "interlock", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index"]
    build += ["--no-build-isolation", "-w", str(wheels), str(src)]
    subprocess.run(build, check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("interlock-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"interlock"}
    assert "interlock/bench/runner.py" in names
    assert "interlock/deploy/envoy.yaml" in names

    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*install, "--no-deps", "--no-index", str(wheel)], check=True)
    # Dependencies from this interpreter's site-packages; `interlock` only from the wheel.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    env.pop("PYTHONSAFEPATH", None)
    ran = subprocess.run(
        [venv / "bin" / "interlock", "bench", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--suite" in ran.stdout
    looked = subprocess.run(
        [python, "-c", LOOKUP], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert looked.returncode == 0, looked.stderr
    assert looked.stdout.strip() == "ok"
