"""Domain packs of the thesaurus: valid files, the selection switch, a domain's wording."""

from __future__ import annotations

from importlib import resources

import pytest
from click.testing import CliRunner

from connector.catalogue import Catalogue
from connector.classify import (
    PACKS_VARIABLE,
    build_index,
    domain_packs,
    parse_packs,
    shipped_thesaurus,
)
from connector.cli import main
from connector.exitcodes import CONFIG
from connector.yamlsource import load_data
from tests.e2e import ROOT
from tests.test_cli import run


def _thesaurus_documents() -> list[tuple[str, dict[str, object]]]:
    folder = resources.files("connector").joinpath("data/thesaurus")
    return [
        (entry.name, load_data(entry.read_text(encoding="utf-8")))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    ]


def _pack_concepts() -> list[tuple[str, dict[str, object]]]:
    return [
        (name, concept)
        for name, raw in _thesaurus_documents()
        if raw.get("domain")
        for concept in raw["concepts"]  # type: ignore[attr-defined]
    ]


def test_the_promised_packs_ship():
    assert {"healthcare", "education", "municipal", "finance", "manufacturing"} <= set(
        domain_packs()
    )
    assert {"retail", "research", "logistics", "legal", "energy"} <= set(domain_packs())


def test_concept_ids_are_unique_across_every_thesaurus_file():
    seen: dict[str, str] = {}
    for name, raw in _thesaurus_documents():
        for concept in raw["concepts"]:  # type: ignore[attr-defined]
            assert concept["id"] not in seen, f"{concept['id']} in {name} and {seen[concept['id']]}"
            seen[concept["id"]] = name


def test_every_pack_concept_has_english_and_norwegian_terms_and_no_empty_one():
    concepts = _pack_concepts()
    assert len(concepts) >= 60
    for name, concept in concepts:
        where = f"{name}: {concept['id']}"
        for language in ("en", "nb"):
            terms = concept.get(language)
            assert isinstance(terms, list) and terms, f"{where} has no {language} terms"
            for term in terms:
                assert isinstance(term, str) and term.strip() == term != "", f"{where}: {term!r}"
            assert len(set(terms)) == len(terms), f"{where} repeats a {language} term"
        label = concept.get("label")
        assert isinstance(label, dict) and label.get("en") and label.get("nb"), where


def test_pack_concepts_load_with_the_core_and_only_when_selected():
    everything = {c.id for c in shipped_thesaurus()}
    core = {c.id for c in shipped_thesaurus(packs=())}
    healthcare = {c.id for c in shipped_thesaurus(packs={"healthcare"})}
    assert "hc-nurse-call" in everything and "hc-nurse-call" not in core
    assert "vpn" in core and core < healthcare < everything
    assert "mun-building-permits" not in healthcare


def test_pack_selection_is_parsed_and_a_typo_is_an_error_naming_the_packs():
    assert parse_packs("all") == parse_packs("") == frozenset(domain_packs())
    assert parse_packs("none") == frozenset()
    assert parse_packs(" Healthcare, municipal ") == {"healthcare", "municipal"}
    with pytest.raises(ValueError, match=r"helthcare.*known: .*healthcare"):
        parse_packs("helthcare,municipal")


HOSPITAL = Catalogue.model_validate(
    {
        "version": 1,
        "languages": ["en", "nb"],
        "services": [
            # Named only formally, with no keywords: what real catalogues often look like.
            {
                "id": "epr",
                "name": {
                    "en": "Electronic patient record (EPR)",
                    "nb": "Elektronisk pasientjournal (EPJ)",
                },
            },
            {
                "id": "ris-pacs",
                "name": {
                    "en": "Radiology information and picture archiving (RIS/PACS)",
                    "nb": "Radiologisystem og bildearkiv (RIS/PACS)",
                },
            },
            {
                "id": "nurse-call",
                "name": {"en": "Nurse call system", "nb": "Pasientsignalanlegg"},
            },
            {
                "id": "printing",
                "name": {"en": "Printing", "nb": "Utskrift"},
                "keywords": {"en": ["printer"], "nb": ["skriver"]},
            },
            {
                "id": "email",
                "name": {"en": "E-mail", "nb": "E-post"},
                "keywords": {"en": ["outlook"], "nb": ["innboks"]},
            },
        ],
    }
)

EVERYDAY = [
    ("Får ikke signert notatet mitt", "epr"),
    ("Can't sign note, it says document locked", "epr"),
    ("Arbeidslisten min er tom", "epr"),
    ("Røntgenbildene vises ikke", "ris-pacs"),
    ("Images won't load in the viewer", "ris-pacs"),
    ("Snortrekket på badet gir ikke alarm", "nurse-call"),
]


@pytest.fixture(scope="module")
def hospital_indexes():
    return build_index(HOSPITAL, packs={"healthcare"}), build_index(HOSPITAL, packs=())


@pytest.mark.parametrize(("text", "service"), EVERYDAY)
def test_a_formally_named_service_catches_everyday_wording_from_the_pack(
    hospital_indexes, text, service
):
    with_pack, without = hospital_indexes
    match = with_pack.classify(text)
    assert match.service == service
    assert any(e.source.startswith("thesaurus:hc-") for e in match.evidence)
    # The pack is what does it: the core thesaurus alone does not know the wording.
    assert without.classify(text).service != service


def test_the_environment_variable_selects_packs_when_the_caller_does_not(monkeypatch):
    text = "Snortrekket på badet gir ikke alarm"
    monkeypatch.setenv(PACKS_VARIABLE, "none")
    assert build_index(HOSPITAL).classify(text).service is None
    monkeypatch.setenv(PACKS_VARIABLE, "municipal,healthcare")
    assert build_index(HOSPITAL).classify(text).service == "nurse-call"
    monkeypatch.delenv(PACKS_VARIABLE)
    assert build_index(HOSPITAL).classify(text).service == "nurse-call"  # default: all


def test_cli_packs_option_selects_and_rejects_unknown_names(tmp_path, monkeypatch):
    monkeypatch.delenv(PACKS_VARIABLE, raising=False)
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(HOSPITAL.model_dump_json(exclude_none=True), encoding="utf-8")
    text = "Snortrekket på badet gir ikke alarm"
    code, out = run("classify", text, "--catalogue", str(catalogue), "--packs", "healthcare")
    assert code == 0 and "service:    nurse-call" in out
    code, out = run("classify", text, "--catalogue", str(catalogue), "--packs", "none")
    assert code == 0 and "service:    -" in out
    code, out = run("classify", text, "--catalogue", str(catalogue), "--packs", "helthcare")
    assert code == 2 and "unknown domain pack helthcare" in out


def test_a_bad_pack_name_in_the_environment_stops_the_worker_as_a_configuration_error(
    tmp_path, monkeypatch
):
    for name in ("BPSM_MODE", "BPSM_DATABASE_URL", "BPSM_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BPSM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BPSM_CATALOGUE", str(ROOT / "catalogue.yaml"))
    monkeypatch.setenv(PACKS_VARIABLE, "helthcare")
    result = CliRunner().invoke(main, ["worker"])
    assert result.exit_code == CONFIG
    assert f"configuration error: {PACKS_VARIABLE}: unknown domain pack helthcare" in (
        result.stderr
    )


def test_the_pack_names_read_from_the_files_are_those_of_the_parsed_thesaurus():
    """domain_packs() reads each file's `domain:` line without parsing the file (a worker
    that maps a prebuilt index names it by the packs and need not parse 50 files)."""
    from connector.classify.thesaurus import _thesaurus_files

    parsed = tuple(sorted({domain for domain, _ in _thesaurus_files() if domain}))
    assert domain_packs() == parsed and "healthcare" in parsed
