"""The shipped deployment files: a hardened systemd unit and a reproducible container image."""

from __future__ import annotations

import re
import shutil
import subprocess

from connector.exitcodes import CONFIG
from tests.e2e import ROOT

UNIT = ROOT / "deploy" / "bpsm-connector.service"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_rates_the_unit_ok() -> None:
    # scripts/ensure-services.sh installs Debian's systemd package when this is missing.
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: run scripts/ensure-services.sh (make test does)"
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.5, result.stdout


def test_the_unit_does_not_restart_on_a_configuration_error() -> None:
    settings = unit_settings()
    assert settings["Restart"] == ["on-failure"]
    assert str(CONFIG) in settings["RestartPreventExitStatus"][0].split()


def test_the_unit_keeps_files_private_and_secrets_out_of_reach() -> None:
    settings = unit_settings()
    assert settings["UMask"] == ["0077"]
    assert settings["StateDirectoryMode"] == ["0700"]
    assert settings["Environment"].count("BPSM_DATA_DIR=/var/lib/bpsm") == 1
    # Every *_FILE secret comes from a credential systemd loads, not from a path in /etc.
    credentials = {v.split(":", 1)[0] for v in settings["LoadCredential"]}
    files = [v for v in settings["Environment"] if "_FILE=" in v]
    assert files
    for value in files:
        assert value.split("=", 1)[1].removeprefix("%d/") in credentials, value


def test_the_image_is_pinned_runs_as_a_fixed_user_and_carries_no_catalogue() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    base = next(line for line in lines if line.startswith("FROM "))
    assert re.fullmatch(r"FROM python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert "USER 10001:10001" in lines
    assert 'VOLUME ["/data"]' in lines
    assert any("--constraint constraints.txt" in line for line in lines)
    assert (ROOT / "constraints.txt").is_file()
    # The example catalogue only builds the package (bpsm init); nothing lands where the
    # service reads its configuration, and the build folder is removed.
    copies = [line.split()[-1] for line in lines if line.startswith("COPY ")]
    assert copies and not any(dest.startswith("/etc") for dest in copies)
    assert "BPSM_CATALOGUE=/etc/bpsm/catalogue.yaml" in text  # mounted by the admin
    assert any("rm -rf /build" in line for line in lines)
