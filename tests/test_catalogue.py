from datetime import timedelta
from pathlib import Path

import pytest

from connector.catalogue import (
    CatalogueError,
    check_catalogue,
    load_catalogue,
    parse_duration,
    pick_text,
)
from connector.yamlsource import parse_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "catalogues"
UNIVERSITY = Path(__file__).parent / "fixtures" / "catalogues" / "university.yaml"


def test_example_catalogue_loads_and_meets_the_product_card():
    cat = load_catalogue("catalogue.yaml")
    assert len(cat.services) >= 25
    unsupported = [s for s in cat.services if not s.supported]
    assert len(unsupported) >= 5
    assert all(s.reason and s.alternative for s in unsupported)
    assert all({"en", "nb"} <= set(s.name) for s in cat.services)
    assert any(s.maintenance for s in cat.services)


def test_ten_mistakes_are_all_reported_with_their_lines():
    problems = [p for p in check_catalogue(FIXTURES / "ten_mistakes.yaml") if p.severity == "error"]
    found = {(p.line, p.path) for p in problems}
    expected = {
        (4, "defaults.sla.response"),
        (8, "services[0].keyword"),
        (10, "services[1].id"),
        (14, "services[2].supported"),
        (15, "services[3].id"),
        (16, "services[3].name"),
        (17, "services[3].supported"),
        (19, "services[3].maintenance[0].every"),
        (21, "services[4].name"),
        (22, "services[4].sla"),
        (23, "services[5].id"),
        (24, "improvement.threshold"),
    }
    assert expected <= found, sorted(found)
    text = [str(p) for p in problems]
    assert any(
        "ten_mistakes.yaml:4: defaults.sla.response: '4 hours' is not a duration" in t for t in text
    )


def test_load_raises_with_every_problem():
    with pytest.raises(CatalogueError) as info:
        load_catalogue(FIXTURES / "ten_mistakes.yaml")
    assert len(info.value.problems) >= 10


def test_duplicate_yaml_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nservices:\n  - id: a\n    name: A\n    name: B\n")
    problems = check_catalogue(path)
    assert any(p.line == 5 and "duplicate key 'name'" in p.message for p in problems)


def test_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nservices:\n  - id: a\n    name: [A\n")
    problems = check_catalogue(path)
    assert problems and problems[0].message.startswith("YAML syntax error")
    assert problems[0].line >= 4


def test_missing_file_and_bad_utf8(tmp_path):
    assert "file not found" in str(check_catalogue(tmp_path / "nope.yaml")[0])
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\nservices: \xff\n")
    assert "not valid UTF-8" in str(check_catalogue(bad)[0])


def test_unsupported_without_alternative_is_a_warning_only(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "version: 1\nservices:\n  - id: mac\n    name: Mac\n    supported: false\n"
        "    reason: {en: Windows only}\n"
    )
    problems = check_catalogue(path)
    assert [p.severity for p in problems] == ["warning"]
    assert load_catalogue(path).services[0].reason == {"en": "Windows only"}


def test_minimal_catalogue_uses_defaults():
    cat = load_catalogue(FIXTURES / "minimal.yaml")
    service = cat.services[0]
    assert cat.sla_for(service).response == timedelta(hours=4)
    assert cat.improvement.threshold == 5
    assert pick_text(service.name, "nb") == "Printing"  # plain string fits every language


@pytest.mark.parametrize(
    "text,expected",
    [
        ("30m", timedelta(minutes=30)),
        ("4h", timedelta(hours=4)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["4 hours", "0h", "h", "-1d", "1y", ""])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_university_catalogue_is_valid():
    cat = load_catalogue(UNIVERSITY)
    assert len(cat.services) == 20


def test_lines_of_nested_items():
    doc = parse_yaml("a:\n  - x: 1\n  - y: 2\n", "f.yaml")
    assert doc.line_of(("a", 1, "y")) == 3
    assert doc.line_of(("a", 5, "z")) == 1  # unknown item: nearest known ancestor


MERGE_CATALOGUE = """\
version: 1
languages: [en]
defaults:
  sla: &std {response: 4h, resolution: 3d}
services:
  - id: printing
    name: {en: Printing}
    sla: {<<: *std, response: 2h}
  - id: email
    name: {en: E-mail}
    sla:
      <<: [{resolution: 1d}, *std]
"""


def test_yaml_merge_keys_are_supported(tmp_path):
    path = tmp_path / "catalogue.yaml"
    path.write_text(MERGE_CATALOGUE)
    cat = load_catalogue(path)
    printing, email = cat.services
    # A key written beside the merge key wins; otherwise the anchored mapping's value.
    assert (printing.sla.response, printing.sla.resolution) == (
        timedelta(hours=2),
        timedelta(days=3),
    )
    # Of several merged mappings the first one wins.
    assert (email.sla.response, email.sla.resolution) == (timedelta(hours=4), timedelta(days=1))


def test_mistakes_behind_a_merge_key_name_file_and_line(tmp_path):
    path = tmp_path / "catalogue.yaml"
    path.write_text(
        MERGE_CATALOGUE.replace("resolution: 3d}", "resolution: 3 days}")
        + "  - id: scanning\n    name: {en: Scanning}\n    sla: {<<: 3, bogus: 1}\n"
    )
    problems = [str(p) for p in check_catalogue(path)]
    # The bad value is reported on the anchor's line, where the admin can fix it, for the
    # anchored mapping and for the service that merged it in.
    assert [p for p in problems if "3 days" in p] == [
        f"{path}:4: {where}.resolution: '3 days' is not a duration like 30m, 4h, 2d or 1w"
        for where in ("defaults.sla", "services[0].sla")
    ]
    assert (
        f"{path}:15: services[2].sla: a merge key (<<) must name a mapping, e.g. <<: *defaults"
        in problems
    )
    assert f"{path}:15: services[2].sla.bogus: unknown key 'bogus' (check the spelling)" in problems


def test_an_unknown_yaml_tag_is_a_problem_with_its_line():
    doc = parse_yaml("version: 1\nservices:\n  - !!python/name:os.system x\n", "f.yaml")
    assert [str(p) for p in doc.problems] == [
        "f.yaml:3: YAML error: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/name:os.system'"
    ]


@pytest.mark.parametrize("written", ["false", "no", "off", "'0'"])
def test_an_unsupported_service_written_any_way_must_give_a_reason(tmp_path, written):
    path = tmp_path / "catalogue.yaml"
    path.write_text(
        f"version: 1\nservices:\n  - id: games\n    name: {{en: Games}}\n    supported: {written}\n"
    )
    problems = [p for p in check_catalogue(path) if p.severity == "error"]
    assert [(p.line, p.path, p.message) for p in problems] == [
        (5, "services[0].supported", "an unsupported service must give a reason")
    ]


def test_change_cues_are_keyed_by_language_code(tmp_path):
    path = tmp_path / "catalogue.yaml"
    path.write_text(
        "version: 1\nchange_cues:\n  english: [roll out]\n"
        "services:\n  - id: mail\n    name: {en: Mail}\n"
    )
    problems = [p for p in check_catalogue(path) if p.severity == "error"]
    assert len(problems) == 1 and problems[0].line == 2
    assert "'english' is not a language code" in problems[0].message
