"""Configuration from the environment: *_FILE secrets, clear errors, secrets never shown."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import ConfigError, load_settings
from connector.hosts import settings_models
from connector.logs import JsonFormatter


def test_secret_from_file_and_host_configured_by_url(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret-value\n")
    settings = load_settings(
        {"BPSM_ZAMMAD_URL": "https://z.example.org/", "BPSM_ZAMMAD_TOKEN_FILE": str(secret)},
        hosts=settings_models("zammad"),
    )
    zammad = settings.host("zammad")
    assert zammad.configured and zammad.url == "https://z.example.org"
    assert zammad.token is not None and zammad.token.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(zammad)
    assert settings.effective_mode() == "route"


def test_without_any_helpdesk_the_mode_is_dry_run():
    assert load_settings({}, hosts=settings_models("zammad")).effective_mode() == "dry-run"


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"BPSM_MODE": "yolo"}, "BPSM_MODE: 'yolo' is not one of route, shadow, dry-run"),
        ({"BPSM_MAX_BODY_BYTES": "lots"}, "BPSM_MAX_BODY_BYTES: 'lots' is not a number"),
        (
            {"BPSM_ZAMMAD_TOKEN_FILE": "/nonexistent/token"},
            "BPSM_ZAMMAD_TOKEN_FILE: cannot read /nonexistent/token",
        ),
    ],
)
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        load_settings(env, hosts=settings_models("zammad"))


def test_cli_reports_configuration_errors_with_their_own_exit_status(monkeypatch):
    monkeypatch.setenv("BPSM_MODE", "yolo")
    result = CliRunner().invoke(main, ["decisions"])
    assert result.exit_code == 78  # EX_CONFIG; 2 is click's for a bad option
    assert "configuration error: BPSM_MODE" in result.output


def test_json_logs_carry_fields():
    record = logging.makeLogRecord(
        {"msg": "queued", "levelname": "INFO", "name": "bpsm.web", "host": "zammad", "ticket": "7"}
    )
    line = JsonFormatter().format(record)
    assert '"host": "zammad"' in line and '"ticket": "7"' in line and '"msg": "queued"' in line
