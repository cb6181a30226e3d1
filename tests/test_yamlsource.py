"""yamlsource: libyaml composes, and what it gives is what the pure-Python loader gives."""

from __future__ import annotations

import pytest
import yaml

from connector import yamlsource
from connector.yamlsource import Yaml12Loader, parse_yaml

CATALOGUE = """\
version: 1
languages: [en, no]
defaults: &std
  sla: {response: 1h, resolution: 1d}
  supported: yes
services:
  - id: printing
    <<: *std
    name: {en: Printing, no: Utskrift}
    keywords:
      en: [printer, toner]
      no: [skriver]
  - id: email
    name: {en: E-mail}
    name: {en: Mail}
    on: true
"""


def _parsed(composer: type, monkeypatch: pytest.MonkeyPatch) -> yamlsource.YamlDocument:
    monkeypatch.setattr(yamlsource, "COMPOSER", composer)
    return parse_yaml(CATALOGUE, "catalogue.yaml")


def test_libyaml_gives_the_same_data_lines_and_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    assert yaml.__with_libyaml__, "PyYAML's wheels ship libyaml; the fast path must be taken"
    composer = yamlsource.COMPOSER
    assert composer is not Yaml12Loader
    fast = _parsed(composer, monkeypatch)
    plain = _parsed(Yaml12Loader, monkeypatch)
    assert fast.data == plain.data
    assert fast.lines == plain.lines
    assert fast.problems == plain.problems
    # YAML 1.2 booleans on both: "no" is Norwegian and "yes" a string, "true" a boolean.
    assert fast.data["languages"] == ["en", "no"]
    assert fast.data["defaults"]["supported"] == "yes"
    assert fast.data["services"][1]["on"] is True
    # The duplicate key is reported with both lines, the merge key's values are in.
    assert [p.line for p in fast.problems] == [15]
    assert "first on line 14" in fast.problems[0].message
    assert fast.data["services"][0]["sla"] == {"response": "1h", "resolution": "1d"}
    assert fast.line_of(("services", 0, "keywords", "no")) == 12


def test_a_syntax_error_is_reported_as_the_python_loader_words_it() -> None:
    broken = "services:\n  - id: printing\n    name: {en: Printing\n  - id: email\n"
    doc = parse_yaml(broken, "catalogue.yaml")
    with pytest.raises(yaml.MarkedYAMLError) as python_error:
        yaml.compose(broken, Loader=Yaml12Loader)
    assert doc.data is None
    assert len(doc.problems) == 1
    problem = doc.problems[0]
    assert problem.message == f"YAML syntax error: {python_error.value.problem}"
    mark = python_error.value.problem_mark
    assert mark is not None and problem.line == mark.line + 1
