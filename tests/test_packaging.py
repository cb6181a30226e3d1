"""The package alone is enough: a wheel installed outside the repository can start a site."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from tests.e2e import ROOT


def test_init_writes_the_starting_files_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    first = CliRunner().invoke(main, ["init", str(site)])
    assert first.exit_code == 0, first.output
    assert (site / "catalogue.yaml").read_bytes() == (ROOT / "catalogue.yaml").read_bytes()
    for mapping in (ROOT / "mappings").glob("*.yaml"):
        assert (site / "mappings" / mapping.name).read_bytes() == mapping.read_bytes()
    (site / "catalogue.yaml").write_text("version: 1\nservices: []\n")  # the admin's edit
    again = CliRunner().invoke(main, ["init", str(site)])
    assert again.exit_code == 0
    assert f"kept (exists): {site / 'catalogue.yaml'}" in again.output
    assert (site / "catalogue.yaml").read_text() == "version: 1\nservices: []\n"

    # In the folder it wrote, the defaults (./catalogue.yaml) find it.
    fresh = tmp_path / "fresh"
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["init", "fresh"]).exit_code == 0
    monkeypatch.chdir(fresh)
    monkeypatch.delenv("BPSM_CATALOGUE", raising=False)
    classified = CliRunner().invoke(main, ["classify", "skriveren virker ikke"])
    assert classified.exit_code == 0, classified.output
    assert "printing" in classified.output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    return next(out.glob("bpsm_connector-*.whl"))


def test_the_wheel_carries_licence_examples_and_its_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = archive.read(metadata).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "connector/examples/catalogue.yaml" in names
    # Each helpdesk package whole: its default mapping, its guide and its recorded fixtures.
    packages = [
        p for p in (ROOT / "connector" / "hosts").iterdir() if (p / "mapping.yaml").exists()
    ]
    assert {p.name for p in packages} >= {"zammad", "glpi", "rt", "django_helpdesk"}
    for package in packages:
        shipped = [package / "mapping.yaml", package / "guide.md"]
        shipped += [f for f in (package / "fixtures").rglob("*") if f.is_file()]
        for path in shipped:
            assert path.relative_to(ROOT).as_posix() in names, path
    assert "License-Expression: MIT" in meta
    assert "Requires-Dist: click>=" in meta  # imported by connector.cli
    assert "Classifier: Programming Language :: Python :: 3.11" in meta


def test_an_installed_wheel_works_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)  # what pip install does for a pure-Python wheel
    # The dependencies come from this interpreter's site-packages; its editable install of
    # the repository is not active there (a .pth file on PYTHONPATH is not read).
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BPSM_")},
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
    }
    site = tmp_path / "site"
    python = str(venv / "bin" / "python")
    where = subprocess.run(
        [python, "-c", "import connector; print(connector.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert where.startswith(target), where  # the wheel's copy, not the checkout
    init = subprocess.run(
        [python, "-m", "connector.cli", "init", str(site)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert init.returncode == 0, init.stderr
    written = sorted(p.name for p in (site / "mappings").iterdir())
    assert written == ["django-helpdesk.yaml", "glpi.yaml", "rt.yaml", "zammad.yaml"]
    classified = subprocess.run(
        [python, "-m", "connector.cli", "classify", "skriveren virker ikke"],
        capture_output=True,
        text=True,
        env=env,
        cwd=site,
        timeout=300,
    )
    assert classified.returncode == 0, classified.stderr
    assert "printing" in classified.stdout
