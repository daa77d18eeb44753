"""The Lockme client the service builds from its config, and its encrypted token file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from test_runtime_harness import config_text

from roomkey.lockme import FileTokenStore, Token
from roomkey.service.config import parse_config
from roomkey.service.crypto import DecryptionError, SecretBox, generate_key
from roomkey.service.lockme_gateway import (
    EncryptedFileTokenStore,
    build_lockme_client,
    oauth_config,
    token_store,
)

TOKEN = Token(access_token="at-very-secret-123", refresh_token="rt-very-secret-456", expires=2e9)


def test_token_is_encrypted_at_rest(tmp_path: Path) -> None:
    box = SecretBox([generate_key()])
    store = EncryptedFileTokenStore(tmp_path / "tok.json", box)
    assert store.load() is None
    store.save(TOKEN)
    text = store.path.read_text()
    assert text.startswith("fernet:")
    assert "very-secret" not in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    loaded = store.load()
    assert loaded is not None
    assert loaded.access_token == TOKEN.access_token
    assert loaded.refresh_token == TOKEN.refresh_token
    assert "very-secret" not in repr(store)


def test_a_plain_token_file_is_read_and_encrypted_on_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    FileTokenStore(path).save(TOKEN)
    store = EncryptedFileTokenStore(path, SecretBox([generate_key()]))
    loaded = store.load()
    assert loaded is not None
    assert loaded.access_token == TOKEN.access_token
    store.save(loaded)
    assert path.read_text().startswith("fernet:")


def test_wrong_key_is_a_clear_error_without_secrets(tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    EncryptedFileTokenStore(path, SecretBox([generate_key()])).save(TOKEN)
    with pytest.raises(DecryptionError) as info:
        EncryptedFileTokenStore(path, SecretBox([generate_key()])).load()
    assert "ROOMKEY_SECRET_KEY" in str(info.value)
    assert "very-secret" not in str(info.value)


async def test_client_is_built_from_the_config(tmp_path: Path) -> None:
    config = parse_config(config_text(101, 102), base_dir=tmp_path)
    oauth = oauth_config(config)
    assert oauth.client_id == "roomkey"
    assert oauth.api_domain == "http://lockme.test"
    assert "client-secret" not in repr(oauth)
    plain = token_store(config)
    assert isinstance(plain, FileTokenStore)
    assert plain.path == tmp_path / "data" / "lockme-token.json"
    sealed = token_store(config, SecretBox([generate_key()]))
    assert isinstance(sealed, EncryptedFileTokenStore)
    client = build_lockme_client(config, clock=lambda: 0.0)
    try:
        assert str(client.venue_tz) == "Europe/Warsaw"
    finally:
        await client.aclose()
