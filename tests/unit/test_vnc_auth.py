"""VNC authentication's DES, against the values vncpasswd and the RFB spec give."""

from __future__ import annotations

from streamspace.agent.vnc_auth import (
    challenge_response,
    new_password,
    password_file,
    password_from_file,
)


def test_the_password_file_is_what_vncpasswd_writes() -> None:
    assert password_file(b"password").hex() == "dbd83cfd727a1458"  # vncpasswd -f
    assert password_from_file(bytes.fromhex("dbd83cfd727a1458")) == b"password"


def test_a_short_password_is_padded_with_nul_like_the_server_pads_it() -> None:
    challenge = bytes(range(16))
    assert challenge_response(b"abc", challenge) == challenge_response(b"abc\0\0\0\0\0", challenge)
    assert password_from_file(password_file(b"abc")) == b"abc"


def test_new_passwords_are_random_eight_bytes_without_nul() -> None:
    passwords = {new_password() for _ in range(200)}
    assert len(passwords) == 200
    assert all(len(p) == 8 and 0 not in p for p in passwords)
