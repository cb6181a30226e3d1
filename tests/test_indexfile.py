"""The prebuilt index file (connector/indexfile.py): processes on one machine share one file
per catalogue, thesaurus and code; a changed input makes a new one; a damaged file is
rebuilt, never trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.catalogue import load_catalogue
from connector.classify import build_index
from connector.indexfile import (
    CATALOGUE_SUFFIX,
    FOLDER,
    PREBUILT_ABOVE,
    SUFFIX,
    _code_files,
    index_key,
    load_catalogue_cached,
    load_or_build_index,
    read_file,
    read_index,
    write_index,
)

ROOT = Path(__file__).resolve().parents[1]

TICKETS = [
    ("Skriveren skriver ikke ut", "Printer"),
    ("VPN kobler ikke til hjemmefra, AnyConnect feiler", ""),
    ("I need a new laptop dock for the meeting room", "dock"),
    ("Passordet mitt er utløpt og jeg kommer ikke inn", "Passord"),
]

# Run in a process of its own: load (or build) the index, classify the tickets.
CHILD = """
import json, sys
from pathlib import Path
from connector.catalogue import load_catalogue
from connector.indexfile import load_or_build_index
path = Path(sys.argv[1])
index, how = load_or_build_index(load_catalogue(path), path, Path(sys.argv[2]))
tickets = json.loads(sys.argv[3])
matches = [index.classify(body, subject).model_dump(mode="json") for body, subject in tickets]
print(json.dumps({"how": how, "matches": matches}))
"""

WORDS = ["dock", "scanner", "licence", "kiosk", "badge", "camera", "headset", "tablet"]


def large_catalogue(path: Path, extra_keyword: str | None = None) -> Path:
    """The example catalogue padded past PREBUILT_ABOVE services with plain ones."""
    data = yaml.safe_load((ROOT / "catalogue.yaml").read_text(encoding="utf-8"))
    for n in range(PREBUILT_ABOVE + 1 - len(data["services"])):
        word = WORDS[n % len(WORDS)]
        data["services"].append(
            {
                "id": f"extra-{n}",
                "name": {"en": f"{word.title()} service {n}"},
                "keywords": {"en": [word, f"{word} {WORDS[(n + 3) % len(WORDS)]}"]},
                "supported": True,
            }
        )
    if extra_keyword:
        data["services"][0]["keywords"]["en"].append(extra_keyword)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def child(
    catalogue: Path, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(catalogue), str(data_dir), json.dumps(TICKETS)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return answer


def index_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / FOLDER).glob(f"*{SUFFIX}"))


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return large_catalogue(tmp_path_factory.mktemp("catalogue") / "catalogue.yaml")


def test_two_processes_share_one_file_and_the_next_start_loads_it(
    catalogue: Path, tmp_path: Path
) -> None:
    together = [child(catalogue, tmp_path), child(catalogue, tmp_path)]
    first, second = (result(p) for p in together)
    # Started together: one builds and writes, the other waits for it and maps the file.
    assert sorted([first["how"], second["how"]]) == ["built", "loaded"]
    files = index_files(tmp_path)
    assert len(files) == 1
    written = files[0].stat().st_mtime_ns
    later = result(child(catalogue, tmp_path))
    assert later["how"] == "loaded"
    assert index_files(tmp_path) == files and files[0].stat().st_mtime_ns == written
    # The loaded index answers as the built one did, to the byte.
    assert first["matches"] == second["matches"] == later["matches"]
    assert any(m["service"] for m in first["matches"])


def test_a_changed_catalogue_or_thesaurus_makes_a_new_file(catalogue: Path, tmp_path: Path) -> None:
    assert result(child(catalogue, tmp_path))["how"] == "built"
    changed = large_catalogue(tmp_path / "changed.yaml", extra_keyword="fax machine")
    assert result(child(changed, tmp_path))["how"] == "built"
    assert len(index_files(tmp_path)) == 2
    # Another thesaurus: the IT core without the domain packs.
    fewer = result(child(catalogue, tmp_path, {"BPSM_DOMAIN_PACKS": "none"}))
    assert fewer["how"] == "built"
    assert len(index_files(tmp_path)) == 3
    assert result(child(catalogue, tmp_path))["how"] == "loaded"


def test_the_key_covers_the_thesaurus_files_the_code_and_the_pack_choice(
    catalogue: Path,
) -> None:
    text = catalogue.read_bytes()
    sources = list(_code_files())
    key = index_key(text, None, sources)
    thesaurus = next(i for i, (name, _) in enumerate(sources) if "thesaurus" in name)
    name, content = sources[thesaurus]
    edited = [*sources[:thesaurus], (name, content + b"\n# edited\n"), *sources[thesaurus + 1 :]]
    assert index_key(text, None, edited) != key
    code = next(i for i, (name, _) in enumerate(sources) if name.endswith("score.py"))
    name, content = sources[code]
    edited = [*sources[:code], (name, content + b"\n"), *sources[code + 1 :]]
    assert index_key(text, None, edited) != key
    assert index_key(text, "none", sources) != key
    assert index_key(text, "all", sources) == key  # the same selection, written otherwise
    assert index_key(text + b"\n", None, sources) != key


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "garbage"])
def test_a_damaged_file_is_rebuilt_not_trusted(
    catalogue: Path, tmp_path: Path, damage: str
) -> None:
    loaded = load_catalogue(catalogue)
    index, how = load_or_build_index(loaded, catalogue, tmp_path)
    assert how == "built"
    (path,) = index_files(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data[len(data) // 3] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"not an index" * 100)
    # Replaced, as a damaged copy would come (this process maps the old file: changing that
    # in place would pull its pages away; indexfile itself only ever renames over a file).
    damaged = tmp_path / "damaged"
    damaged.write_bytes(bytes(data))
    os.replace(damaged, path)
    with pytest.raises(ValueError):
        read_index(path, loaded)
    again, how = load_or_build_index(loaded, catalogue, tmp_path)
    assert how == "built"
    assert read_index(path, loaded).services == index.services  # a whole file again
    subject, body = TICKETS[0][1], TICKETS[0][0]
    assert again.classify(body, subject) == index.classify(body, subject)


def test_a_written_index_reads_back_with_its_arrays_shared_and_the_same_answers(
    catalogue: Path, tmp_path: Path
) -> None:
    built = build_index(load_catalogue(catalogue))
    path = tmp_path / f"index{SUFFIX}"
    write_index(built, path)
    assert path.stat().st_mode & 0o777 == 0o600  # ticket-free, but in the private data folder
    loaded = read_index(path, built.catalogue)
    assert not loaded.key_services.flags.writeable  # a view of the mapped file, not a copy
    assert not loaded.key_services.flags.owndata
    for body, subject in TICKETS:
        for _ in range(2):  # a word new to the index, then from its memo
            assert loaded.classify(body, subject) == built.classify(body, subject)


def test_a_loaded_index_answers_every_labelled_ticket_as_the_built_one(
    catalogue: Path, tmp_path: Path
) -> None:
    """Its postings and phrases read from the file's columns, a loaded index gives every
    labelled ticket the very match a freshly built one gives, words new to it and memoised."""
    from connector.evaluate import read_labelled

    parsed = load_catalogue(catalogue)
    built = build_index(parsed)
    path = tmp_path / f"index{SUFFIX}"
    write_index(built, path)
    loaded = read_index(path, parsed)
    fresh = build_index(load_catalogue(catalogue))  # its memos as empty as the loaded one's
    tickets = read_labelled(ROOT / "tests" / "data" / "tickets.csv", parsed)
    for _ in range(2):
        for ticket in tickets:
            expected = fresh.classify(ticket.body, ticket.subject)
            assert loaded.classify(ticket.body, ticket.subject) == expected


def test_an_index_file_holds_no_catalogue_and_is_refused_for_another_one(
    catalogue: Path, tmp_path: Path
) -> None:
    """The file refers to the reader's catalogue instead of holding one (the worker has it
    already); read with another catalogue's, it is refused, not matched to wrong services."""
    built = build_index(load_catalogue(catalogue))
    path = tmp_path / f"index{SUFFIX}"
    write_index(built, path)
    # Read with stand-ins for the catalogue and its services, the index holds the stand-ins.
    stand_ins = [object() for _ in range(len(built.services) + 1)]
    ids, index = read_file(path, stand_ins)
    assert index.catalogue is stand_ins[0] and list(index.services) == stand_ins[1:]
    same = load_catalogue(catalogue)  # parsed again: equal, not the same object
    loaded = read_index(path, same)
    assert loaded.catalogue is same and loaded.services == tuple(same.services)
    body, subject = TICKETS[2]
    assert loaded.classify(body, subject) == built.classify(body, subject)
    services = list(same.services)
    fewer = same.model_copy(update={"services": services[:-1]})
    with pytest.raises(ValueError):
        read_index(path, fewer)
    services[-1] = services[-1].model_copy(update={"id": "renamed"})
    renamed = same.model_copy(update={"services": services})
    with pytest.raises(ValueError, match="another catalogue"):
        read_index(path, renamed)


def test_small_catalogues_and_no_data_folder_build_without_a_file(tmp_path: Path) -> None:
    small = ROOT / "catalogue.yaml"
    _, how = load_or_build_index(load_catalogue(small), small, tmp_path)
    assert how == "built, not kept"
    assert not (tmp_path / FOLDER).exists()


def test_bpsm_prebuild_index_writes_the_file_workers_then_load(
    catalogue: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "BPSM_DATA_DIR": str(tmp_path)}
    bpsm = Path(sys.executable).parent / "bpsm"
    command = [str(bpsm), "prebuild-index", "--catalogue", str(catalogue)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ": built in" in done.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert ": loaded in" in again.stdout
    assert len(list((tmp_path / FOLDER).glob(f"*{CATALOGUE_SUFFIX}"))) == 1  # parsed, kept
    assert result(child(catalogue, tmp_path))["how"] == "loaded"


def test_a_large_catalogue_is_parsed_once_while_its_file_is_unchanged(
    catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarting worker of a 10,000-service catalogue would spend ~20 s in the YAML
    parser: the parsed catalogue is kept beside the index, by the file's hash."""
    first = load_catalogue_cached(catalogue, tmp_path)
    assert first == load_catalogue(catalogue)
    (kept,) = (tmp_path / FOLDER).glob(f"*{CATALOGUE_SUFFIX}")

    def no_parse(path: Path) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr("connector.indexfile.load_catalogue", no_parse)
    assert load_catalogue_cached(catalogue, tmp_path) == first
    monkeypatch.undo()
    # A changed file is parsed again (and kept under a new name); a damaged one too.
    changed = large_catalogue(tmp_path / "changed.yaml", extra_keyword="hoverboard")
    assert "hoverboard" in load_catalogue_cached(changed, tmp_path).services[0].keywords["en"]
    assert len(list((tmp_path / FOLDER).glob(f"*{CATALOGUE_SUFFIX}"))) == 2
    kept.write_bytes(kept.read_bytes()[:-10])
    assert load_catalogue_cached(catalogue, tmp_path) == first
    # A small catalogue, or no data folder: nothing kept.
    small = tmp_path / "small"
    load_catalogue_cached(ROOT / "catalogue.yaml", small)
    load_catalogue_cached(catalogue, None)
    assert not (small / FOLDER).exists()
