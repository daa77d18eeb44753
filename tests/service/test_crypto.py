"""Secrets at rest: round trip, wrong key, rotation, missing/invalid key errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomkey.service.crypto import (
    SECRET_KEY_ENV,
    DecryptionError,
    SecretBox,
    SecretKeyError,
    generate_key,
)


@settings(max_examples=30, deadline=None)
@given(value=st.text(max_size=200))
def test_round_trip(value: str) -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt(value)
    assert box.decrypt(token) == value
    if len(value) >= 4:
        assert value not in token


def test_json_round_trip_and_no_clear_text() -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt_json({"key_secret": "S3CRET", "n": 1})
    assert "S3CRET" not in token
    assert box.decrypt_json(token) == {"key_secret": "S3CRET", "n": 1}


def test_wrong_key_and_tampering_raise_decryption_error() -> None:
    token = SecretBox([generate_key()]).encrypt("x")
    with pytest.raises(DecryptionError) as info:
        SecretBox([generate_key()]).decrypt(token)
    assert token not in str(info.value)
    box = SecretBox([generate_key()])
    good = box.encrypt("x")
    with pytest.raises(DecryptionError):
        box.decrypt(good[:-4] + "AAAA")
    with pytest.raises(DecryptionError):
        box.decrypt("not a token")


def test_rotation() -> None:
    old, new = generate_key(), generate_key()
    token = SecretBox([old]).encrypt("secret")
    both = SecretBox([new, old])
    assert both.decrypt(token) == "secret"
    rotated = both.rotate(token)
    assert SecretBox([new]).decrypt(rotated) == "secret"
    with pytest.raises(DecryptionError):
        SecretBox([old]).decrypt(rotated)


def test_from_env_missing_and_invalid() -> None:
    with pytest.raises(SecretKeyError, match=SECRET_KEY_ENV):
        SecretBox.from_env({})
    with pytest.raises(SecretKeyError, match="not a valid Fernet key") as info:
        SecretBox.from_env({SECRET_KEY_ENV: "short-and-secret"})
    assert "short-and-secret" not in str(info.value)
    with pytest.raises(SecretKeyError):
        SecretBox([])
    k1, k2 = generate_key(), generate_key()
    box = SecretBox.from_env({SECRET_KEY_ENV: f" {k1} , {k2} "})
    assert SecretBox([k2]).decrypt(SecretBox([k2]).encrypt("a")) == "a"
    assert box.decrypt(SecretBox([k2]).encrypt("b")) == "b"
    assert k1 not in repr(box)
    assert repr(box) == "SecretBox(keys=2)"


def test_generate_key_is_fresh_and_valid() -> None:
    a, b = generate_key(), generate_key()
    assert a != b
    SecretBox([a])


def test_missing_key_message_says_how_to_create_one() -> None:
    with pytest.raises(SecretKeyError) as info:
        SecretBox.from_env({SECRET_KEY_ENV: "  "})
    assert "generate_key" in str(info.value)
