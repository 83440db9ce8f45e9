"""The wheel is complete: a normal (non-editable) install finds its JSON Schemas.

Builds the wheel from a copy of the sources (no network: the running
environment's setuptools, ``--no-build-isolation``), checks what it carries,
then runs ``validate`` from the unpacked wheel in a folder outside the
checkout. ``scripts/test.sh`` also installs the wheel into a fresh venv.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import reconciler
from reconciler.model import Kind

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "reconciler", src / "reconciler", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("virt_reconcile-*.whl")
    return found


def test_wheel_carries_schemas_license_and_one_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f"virt_reconcile-{reconciler.__version__}.dist-info"
        metadata = email.message_from_bytes(zf.read(f"{dist_info}/METADATA"))
    assert {f"reconciler/schemas/{k.value}.json" for k in Kind} <= names
    assert f"{dist_info}/licenses/LICENSE" in names
    assert "reconciler/py.typed" in names
    assert not any(n.startswith(("tests/", "schemas/")) for n in names)
    assert metadata["Version"] == reconciler.__version__  # pyproject reads it from there
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])


def test_validate_from_the_unpacked_wheel_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(REPO / "examples" / "manifests", elsewhere / "manifests")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import reconciler; "
        "assert reconciler.__file__.startswith(sys.argv[1]), reconciler.__file__; "
        "from reconciler.cli import main; sys.exit(main(['validate', 'manifests']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "file(s) are valid" in done.stdout
