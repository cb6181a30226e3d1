"""Nothing in the repository may refer to files outside it: a user's clone has only itself.

Every git-tracked file is scanned for the sibling folder of the development machine and for
absolute filesystem paths, except the system paths a program or a guide may name on any
machine (`/usr/bin/env`, `/etc/bpsm/…`, `/dev/null`, `/proc/…`, the documented install
prefix, …).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Built from parts so that this file does not contain what it looks for.
SIBLING = "../" + "shared"
WORK_SHARED = "/work" + "/shared"

# The top-level folders of a Linux filesystem (FHS) and of this machine: a path starting with
# one of them is a filesystem path, not a URL path such as /api/v1/tickets or /hooks/zammad.
FHS_TOP = {
    "bin", "boot", "dev", "etc", "home", "lib", "lib64", "media", "mnt", "opt", "proc",
    "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var", "work", "Users", "nix", "snap",
}  # fmt: skip

# Paths every machine has, or that the guides tell the admin to create.
ALLOWED = (
    "/usr/",
    "/etc/",
    "/dev/",
    "/proc",
    "/sys/",
    "/bin/",
    "/sbin/",
    "/lib",
    "/run/",
    "/tmp",
    "/var/lib/",
    "/var/run/",
    "/var/log/",
    "/var/tmp/",
    "/var/cache/",
    "/opt/bpsm-connector",  # the install prefix of deploy/bpsm-connector.service
)

# A path starts after a quote, a space, a bracket, '=' or the line start; not inside a URL
# (`https://host/usr/…`), a relative path (`docs/etc/…`, `$(VENV)/bin`) or a word.
PATH = re.compile(r"(?<![\w.~:/\@)}$-])/(?P<top>[A-Za-z0-9_.+-]+)(?:/[\w.@+*-]*)*")


def outside_references(text: str, roots: set[str]) -> list[str]:
    """The references to files outside the repository in `text`."""
    found = [marker for marker in (SIBLING, WORK_SHARED) if marker in text]
    for match in PATH.finditer(text):
        path = match.group(0)
        if match.group("top") in roots and not (path + "/").startswith(ALLOWED):
            found.append(path)
    return found


def filesystem_roots() -> set[str]:
    try:
        return FHS_TOP | {name for name in os.listdir("/") if name not in ("app", "data")}
    except OSError:
        return set(FHS_TOP)


def tracked_files() -> list[Path]:
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listing.split("\0") if name]


def test_no_tracked_file_refers_to_a_path_outside_the_repository() -> None:
    roots = filesystem_roots()
    offenders: list[str] = []
    files = tracked_files()
    assert len(files) > 100  # the listing worked
    for path in files:
        if not path.is_file() or path == Path(__file__).resolve():  # deleted; its examples
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        for line_no, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            for ref in outside_references(line, roots):
                offenders.append(f"{path.relative_to(ROOT)}:{line_no}: {ref}")
    assert not offenders, "files outside the repository are named:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "line",
    [
        'CONTRACT = Path("' + WORK_SHARED + '/contracts/glpi/x.json")',
        "ROOT.parent / " + repr(SIBLING.split("/")[1]) + " # " + SIBLING + "/data",
        "bpsm evaluate --catalogue " + SIBLING + "/data/university/catalogue.yaml",
        'open("/home/alice/tickets.csv")',
        "see /srv/data/catalogue.yaml",
        "EnvironmentFile=/opt/other/env",
        "--password-file /root/secret",
    ],
)
def test_the_scan_finds_outside_paths(line: str) -> None:
    assert outside_references(line, FHS_TOP), line


@pytest.mark.parametrize(
    "line",
    [
        "#!/usr/bin/env bash",
        'chromium = "/usr/bin/chromium"',
        "cmd > /dev/null 2>&1",
        "not dest.startswith('/etc')",
        "open('/proc/self/statm')",
        "--token-file /etc/bpsm/zammad-token",
        'session.post(f"{base}/api/v1/tickets")',
        "curl -s -X POST localhost:8080/hooks/demo",
        "https://example.org/usr/home/x",
        "connector/hosts/glpi/fixtures/contract/glpi.md",
        "ReadWritePaths=/var/lib/bpsm",
        "ExecStart=/opt/bpsm-connector/.venv/bin/bpsm serve",
        "a tmp_path / 'data' / 'home'",
        "BIN = $(VENV)/bin",
    ],
)
def test_the_scan_lets_system_and_url_paths_pass(line: str) -> None:
    assert not outside_references(line, FHS_TOP), line
