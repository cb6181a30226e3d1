"""The `bpsm` command line as DESIGN.md fixes it: check, classify, evaluate (text and JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from tests.e2e import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "catalogues"
CATALOGUE = str(ROOT / "catalogue.yaml")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_check_good_catalogue_and_mappings():
    code, out = run("check", CATALOGUE, str(ROOT / "mappings" / "zammad.yaml"))
    assert code == 0
    assert "catalogue.yaml: ok (catalogue)" in out and "zammad.yaml: ok (mapping)" in out


def test_check_reports_every_mistake_with_file_and_line():
    code, out = run("check", str(FIXTURES / "ten_mistakes.yaml"))
    assert code == 1
    errors = [line for line in out.splitlines() if "warning" not in line]
    assert len(errors) >= 10
    assert all(line.startswith(str(FIXTURES / "ten_mistakes.yaml") + ":") for line in errors)


def test_check_bad_mapping(tmp_path):
    mapping = tmp_path / "mappings" / "zammad.yaml"
    mapping.parent.mkdir()
    mapping.write_text("processes:\n  reactiv: X\nconfidence_threshold: 2\n")
    code, out = run("check", str(mapping))
    assert code == 1
    assert f"{mapping}:2: processes.reactiv" in out
    assert f"{mapping}:3: confidence_threshold" in out


def test_classify_text_and_json():
    code, out = run("classify", "skriveren på 3. etasje virker ikke", "--catalogue", CATALOGUE)
    assert code == 0 and "printing" in out and "evidence:" in out and "Rutet til" in out
    code, out = run(
        "classify",
        "Outlook asks for my password",
        "--subject",
        "Outlook",
        "--json",
        "--catalogue",
        CATALOGUE,
    )
    data = json.loads(out)
    assert data["match"]["service"] == data["decision"]["service"]
    assert 0 <= data["match"]["confidence"] <= 1 and data["match"]["evidence"]


def test_classify_with_a_broken_catalogue_fails_cleanly():
    code, out = run("classify", "x", "--catalogue", str(FIXTURES / "ten_mistakes.yaml"))
    assert code == 1 and "ten_mistakes.yaml:4:" in out


def write_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "body", "service", "process"])
        writer.writerows(rows)
    return path


def test_evaluate_json_contract_and_recomputable_predictions(tmp_path):
    data = write_csv(
        tmp_path / "t.csv",
        [
            ("Printer", "The printer on the 2nd floor keeps jamming", "printing", "reactive"),
            (
                "Mac",
                "Does IT support Macs? I want my own MacBook with macOS",
                "mac-computers",
                "relation",
            ),
            ("Canteen", "The canteen menu for tomorrow?", "", "relation"),
            ("Wrong", "The printer on the 2nd floor keeps jamming", "email", "change"),
        ],
    )
    code, out = run("evaluate", str(data), "--json", "--catalogue", CATALOGUE)
    assert code == 0
    result = json.loads(out)
    assert result["n"] == 4
    predictions = result["predictions"]
    assert [p["service"] for p in predictions[:3]] == ["printing", "mac-computers", None]
    # Recompute the headline figures from the predictions, as anyone can.
    gold = [
        ("printing", "reactive"),
        ("mac-computers", "relation"),
        (None, "relation"),
        ("email", "change"),
    ]
    service_ok = sum(p["service"] == g[0] for p, g in zip(predictions, gold, strict=True))
    process_ok = sum(p["process"] == g[1] for p, g in zip(predictions, gold, strict=True))
    assert result["service_accuracy"] == service_ok / 4 == 0.75
    assert result["process_accuracy"] == process_ok / 4 == 0.75
    # Macro-F1 over the labels in the file: reactive 2/3, relation 1, change 0.
    assert result["process_macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-3)
    assert all(0 <= p["confidence"] <= 1 for p in predictions)
    # Calibration, recomputed from the predictions' confidence the same way.
    assert sum(b["n"] for b in result["reliability"]) == 4
    gap = sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in result["reliability"])
    assert result["ece"] == pytest.approx(gap / 4, abs=1e-3)
    assert set(result["routable"]) == {"0.90", "0.95"}


def test_evaluate_text_has_a_confusion_table_and_sweep():
    code, out = run(
        "evaluate",
        str(ROOT / "tests" / "data" / "tickets.csv"),
        "--sweep",
        "--catalogue",
        CATALOGUE,
    )
    assert code == 0
    assert "confusion (rows: labelled, columns: predicted)" in out
    assert "threshold  routed" in out
    assert "calibration (expected calibration error" in out
    assert "largest share routed at ≥ 95% service accuracy" in out


def test_evaluate_errors_lists_each_misrouted_ticket_and_why(tmp_path):
    data = write_csv(
        tmp_path / "t.csv",
        [
            ("Printer", "The printer on the 2nd floor keeps jamming", "printing", "reactive"),
            ("Wrong", "The printer on the 2nd floor keeps jamming", "email", "change"),
            ("Chair", "My office chair is broken, the lever is loose", "", "relation"),
            ("Chair", "My office chair is broken, the lever is loose", "printing", "reactive"),
        ],
    )
    code, out = run("evaluate", str(data), "--errors", "--catalogue", CATALOGUE)
    assert code == 0
    errors = out.split("misrouted: ")[1].splitlines()
    assert errors[0] == "2 of 4 (labelled → predicted service/process)"
    assert errors[1].startswith("line 3: email/change → printing/reactive")
    assert "printer" in errors[1] and "'Wrong'" in errors[1]
    assert errors[2].startswith("line 5: printing/reactive → -/relation")
    assert "outside IT (furniture)" in errors[2]


def test_evaluate_bad_csv_names_lines(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "subject,body,service,process\na,b,printing,reactive\nc,d,nope,reactive\n"
        "e,f,printing,broken\n"
    )
    code, out = run("evaluate", str(bad), "--catalogue", CATALOGUE)
    assert code == 1
    assert f"{bad}:3: service: 'nope' is not a service id" in out
    assert f"{bad}:4: process: 'broken' is not one of" in out
    missing = tmp_path / "cols.csv"
    missing.write_text("subject,text\nx,y\n")
    code, out = run("evaluate", str(missing), "--catalogue", CATALOGUE)
    assert code == 1 and "missing column(s): body, service, process" in out
