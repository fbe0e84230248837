"""A minimal PostgreSQL client over the v3 wire protocol: connect over TCP with SCRAM-SHA-256
(or md5/cleartext/trust), run simple queries with a deadline, and tell exactly whether the
server acknowledged a command. Python 3 standard library only (no psycopg needed).

Used by `scripts/bench-failover` for its write probes, where a precise acknowledgement time and a
bounded wait matter more than features. Not a general-purpose driver: no TLS, no extended
protocol, text results only.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct


class PgError(Exception):
    """The server answered with an ErrorResponse (or broke the protocol)."""

    def __init__(self, message, fields=None):
        super().__init__(message)
        self.fields = fields or {}

    @property
    def sqlstate(self):
        return self.fields.get("C")


class ConnectionLost(Exception):
    """The connection failed, timed out or was closed: the outcome of a command in flight is unknown."""


def _fields(payload):
    out = {}
    for part in payload.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


class Connection:
    """One session. Every blocking call is bounded by the socket timeout in force."""

    def __init__(self, host, port, user, password, database, connect_timeout=1.0, params=None):
        self.notices = []
        try:
            self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as e:
            raise ConnectionLost(f"connect {host}:{port}: {e}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        try:
            self._startup(user, password, database, params or {})
        except (OSError, ConnectionLost) as e:
            self.close()
            raise ConnectionLost(f"startup {host}:{port}: {e}") from None
        except PgError:
            self.close()
            raise

    # -- framing --
    def _send(self, kind, payload):
        head = (kind.encode() if kind else b"") + struct.pack("!i", len(payload) + 4)
        self.sock.sendall(head + payload)

    def _recv_exact(self, n):
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionLost("server closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _read(self):
        kind = self._recv_exact(1).decode()
        (length,) = struct.unpack("!i", self._recv_exact(4))
        return kind, self._recv_exact(length - 4)

    # -- startup and authentication --
    def _startup(self, user, password, database, params):
        body = struct.pack("!i", 196608)
        for k, v in [("user", user), ("database", database), ("application_name", "pgwarden-probe"),
                     *params.items()]:
            body += k.encode() + b"\0" + str(v).encode() + b"\0"
        self._send(None, body + b"\0")
        scram = None
        while True:
            kind, payload = self._read()
            if kind == "R":
                (code,) = struct.unpack("!i", payload[:4])
                if code == 0:
                    pass
                elif code == 3:
                    self._send("p", password.encode() + b"\0")
                elif code == 5:
                    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
                    self._send("p", b"md5" + outer.encode() + b"\0")
                elif code == 10:
                    mechs = [m.decode() for m in payload[4:].split(b"\0") if m]
                    if "SCRAM-SHA-256" not in mechs:
                        raise PgError(f"no supported SASL mechanism among {mechs}")
                    scram = _Scram(password)
                    first = scram.client_first().encode()
                    self._send("p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
                elif code == 11:
                    self._send("p", scram.client_final(payload[4:].decode()).encode())
                elif code == 12:
                    scram.verify(payload[4:].decode())
                else:
                    raise PgError(f"unsupported authentication request {code}")
            elif kind == "E":
                f = _fields(payload)
                raise PgError(f.get("M", "error during startup"), f)
            elif kind == "Z":
                return
            # S (parameter status), K (backend key), N (notice): nothing to do

    # -- queries --
    def query(self, sql, timeout=2.0):
        """Runs `sql` (simple protocol). Returns (command tags, rows); raises PgError when the
        server reported an error (the session stays usable) and ConnectionLost when the answer
        did not arrive in time or the connection broke (close it: the outcome is unknown).
        Notices received are appended to `self.notices`."""
        self.sock.settimeout(timeout)
        try:
            self._send("Q", sql.encode() + b"\0")
            tags, rows, error = [], [], None
            while True:
                kind, payload = self._read()
                if kind == "D":
                    (n,) = struct.unpack("!h", payload[:2])
                    pos, row = 2, []
                    for _ in range(n):
                        (ln,) = struct.unpack("!i", payload[pos:pos + 4])
                        pos += 4
                        if ln < 0:
                            row.append(None)
                        else:
                            row.append(payload[pos:pos + ln].decode())
                            pos += ln
                    rows.append(row)
                elif kind == "C":
                    tags.append(payload.rstrip(b"\0").decode())
                elif kind == "E":
                    f = _fields(payload)
                    error = PgError(f.get("M", "error"), f)
                elif kind == "N":
                    self.notices.append(_fields(payload))
                elif kind == "Z":
                    if error:
                        raise error
                    return tags, rows
        except (OSError, socket.timeout) as e:
            raise ConnectionLost(str(e) or type(e).__name__) from None

    def close(self):
        try:
            self.sock.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class _Scram:
    """SCRAM-SHA-256 (RFC 7677) as PostgreSQL speaks it (the user name comes from the startup message)."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def client_first(self):
        return "n,," + self.first_bare

    def client_final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise PgError("SCRAM: the server's nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        self.auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, self.auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.split(","))
        expected = hmac.new(self.server_key, self.auth_message, hashlib.sha256).digest()
        if "v" not in attrs or base64.b64decode(attrs["v"]) != expected:
            raise PgError("SCRAM: the server's signature does not match (wrong server?)")
