"""``roomkey lockme`` argument handling (the full login runs against the simulator in e2e)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from roomkey.cli.app import app


def test_login_needs_a_loopback_http_redirect(tmp_path: Path) -> None:
    for redirect in ("https://example.com/cb", "http://10.1.2.3:8080/cb"):
        result = CliRunner().invoke(
            app,
            [
                "lockme",
                "login",
                "--client-id",
                "x",
                "--client-secret",
                "s",
                "--redirect-uri",
                redirect,
                "--token-file",
                str(tmp_path / "t.json"),
                "--no-browser",
            ],
        )
        assert result.exit_code == 2
        assert "loopback" in result.output


def test_calls_without_a_token_fail_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "lockme",
            "me",
            "--client-id",
            "x",
            "--api-domain",
            "http://127.0.0.1:9",
            "--token-file",
            str(tmp_path / "none.json"),
        ],
    )
    assert result.exit_code == 1
    assert "NoTokenError" in result.output
    assert "log in first" in result.output


def test_bad_api_version_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "lockme",
            "test",
            "--client-id",
            "x",
            "--api-version",
            "v2/../x",
            "--token-file",
            str(tmp_path / "t.json"),
        ],
    )
    assert result.exit_code == 2
