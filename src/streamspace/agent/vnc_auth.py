"""A session's VNC password, which only the agent holds, and the tunnel's side of it.

A VNC server started with a password (``-SecurityTypes VncAuth -PasswordFile``) answers
only those who know it. The agent answers its challenge when a tunnel opens, then presents
the viewer with security type None: the viewer needs only its connect token, and nobody
else who reaches the port (another host account, a session whose network is the host's)
gets past the challenge.

VNC authentication is DES (RFB 6.2.2): the response is the 16-byte challenge encrypted
with the password as the key, each key byte's bits in reverse order. The password file
(what ``vncpasswd`` writes) is the password encrypted the same way with a fixed key.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from websockets.asyncio.connection import Connection

PASSWORD_BYTES = 8
"""DES keys are 8 bytes; VNC uses no more of a password."""
_FILE_KEY = bytes([23, 82, 107, 6, 35, 78, 88, 7])
"""The fixed key VNC password files are obfuscated with (TigerVNC's, as vncpasswd uses)."""
HANDSHAKE_TIMEOUT = 10.0
RFB_38 = b"RFB 003.008\n"
VNC_AUTH, NO_AUTH = 2, 1
OK = b"\0\0\0\0"


class VncAuthError(Exception):
    """The VNC server or the viewer broke the handshake; the message says how."""


def new_password() -> bytes:
    """8 random bytes, none of them NUL (the server reads the password as a C string)."""
    return bytes(secrets.randbelow(255) + 1 for _ in range(PASSWORD_BYTES))


def password_file(password: bytes) -> bytes:
    """The content of ``-PasswordFile`` for ``password`` (up to 8 bytes)."""
    return _des(_FILE_KEY, password[:PASSWORD_BYTES].ljust(PASSWORD_BYTES, b"\0"))


def password_from_file(content: bytes) -> bytes:
    """The password a ``-PasswordFile`` holds (the inverse of :func:`password_file`)."""
    decryptor = _cipher(_FILE_KEY).decryptor()
    return (decryptor.update(content[:PASSWORD_BYTES]) + decryptor.finalize()).rstrip(b"\0")


def challenge_response(password: bytes, challenge: bytes) -> bytes:
    """The answer to a 16-byte VNC authentication challenge."""
    return _des(password, challenge)


def _cipher(key: bytes) -> Cipher[modes.ECB]:
    key = key[:PASSWORD_BYTES].ljust(PASSWORD_BYTES, b"\0")
    mirrored = bytes(int(f"{byte:08b}"[::-1], 2) for byte in key)
    return Cipher(TripleDES(mirrored * 3), modes.ECB())  # DES: the same key three times


def _des(key: bytes, data: bytes) -> bytes:
    encryptor = _cipher(key).encryptor()
    return encryptor.update(data) + encryptor.finalize()


async def authenticate(ws: Connection, vnc: socket.socket, password: bytes) -> None:
    """Log in to the VNC server on ``vnc`` with ``password``, then hand the viewer on ``ws``
    a server without authentication; afterwards both carry on from ClientInit."""
    async with asyncio.timeout(HANDSHAKE_TIMEOUT):
        await log_in(vnc, password)
        early = await _welcome_viewer(ws)
        if early:  # the viewer's ClientInit may come in the message with its choice
            await asyncio.get_running_loop().sock_sendall(vnc, early)


async def log_in(vnc: socket.socket, password: bytes) -> None:
    """RFB 3.8 up to a successful SecurityResult with VNC authentication (the server then
    waits for ClientInit); :class:`VncAuthError` when it offers none or refuses."""
    loop = asyncio.get_running_loop()

    async def read(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = await loop.sock_recv(vnc, count - len(data))
            if not chunk:
                raise VncAuthError("the VNC server closed the connection during authentication")
            data += chunk
        return data

    banner = await read(len(RFB_38))
    if not banner.startswith(b"RFB 003."):
        raise VncAuthError(f"not a VNC server: it sent {banner!r}")
    await loop.sock_sendall(vnc, RFB_38)
    types = await read((await read(1))[0])
    if VNC_AUTH not in types:
        raise VncAuthError(f"the VNC server offers no password authentication: {list(types)}")
    await loop.sock_sendall(vnc, bytes([VNC_AUTH]))
    await loop.sock_sendall(vnc, challenge_response(password, await read(16)))
    if await read(4) != OK:
        (length,) = struct.unpack(">I", await read(4))
        reason = (await read(min(length, 1024))).decode(errors="replace")
        raise VncAuthError(f"the VNC server refused the session's password: {reason}")


async def _welcome_viewer(ws: Connection) -> bytes:
    """RFB's opening as a server without authentication; returns the viewer's bytes that
    came after it (ClientInit), to be passed on."""
    buffer = bytearray()

    async def read(count: int) -> bytes:
        while len(buffer) < count:
            message = await ws.recv()
            if isinstance(message, str):
                raise VncAuthError("the viewer sent text: binary frames only")
            buffer.extend(message)
        data = bytes(buffer[:count])
        del buffer[:count]
        return data

    await ws.send(RFB_38)
    version = await read(len(RFB_38))
    if not version.startswith(b"RFB 003.") or not version[8:11].isdigit():
        raise VncAuthError(f"the viewer sent no RFB version: {version!r}")
    minor = int(version[8:11])
    if minor < 7:  # RFB 3.3: the server names the security type, no result follows
        await ws.send(struct.pack(">I", NO_AUTH))
        return bytes(buffer)
    await ws.send(bytes([1, NO_AUTH]))
    if (choice := await read(1)) != bytes([NO_AUTH]):
        raise VncAuthError(f"the viewer chose security type {choice[0]}, not None")
    if minor >= 8:  # only RFB 3.8 sends a SecurityResult for None
        await ws.send(OK)
    return bytes(buffer)
