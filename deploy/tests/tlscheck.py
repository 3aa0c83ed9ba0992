"""Mutual TLS handshakes in memory (Python's ssl, no sockets) between certificates
the chart generated, as the services make them: the server presents its certificate
and requires a client certificate from the CA; the client verifies the server's
certificate against the CA for the name it dialled and presents its own."""
from __future__ import annotations

import base64
import os
import ssl
import tempfile


class Identity:
    """A certificate, its key and the CA it trusts (PEM, as in a kubernetes.io/tls Secret)."""

    def __init__(self, crt: bytes, key: bytes, ca: bytes) -> None:
        self.dir = tempfile.mkdtemp(prefix="shoal-tls-")
        self.crt, self.key, self.ca = (os.path.join(self.dir, n) for n in ("tls.crt", "tls.key", "ca.crt"))
        for path, data in ((self.crt, crt), (self.key, key), (self.ca, ca)):
            with open(path, "wb") as f:
                f.write(data)

    @classmethod
    def from_secret(cls, secret: dict) -> "Identity":
        d = secret["data"]
        return cls(*(base64.b64decode(d[k]) for k in ("tls.crt", "tls.key", "ca.crt")))


def handshake(server: Identity, client: Identity | None, name: str) -> tuple[str | None, dict | None]:
    """(None, the server certificate as the client saw it) when a client dialling `name`
    completes a mutual handshake with `server`, else (the error, None). `client` None
    presents no certificate."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(server.crt, server.key)
    sctx.load_verify_locations(server.ca)
    sctx.verify_mode = ssl.CERT_REQUIRED
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    cctx.load_verify_locations(server.ca if client is None else client.ca)
    if client is not None:
        cctx.load_cert_chain(client.crt, client.key)
    bios = [ssl.MemoryBIO() for _ in range(4)]  # client->server, server->client
    c = cctx.wrap_bio(bios[0], bios[1], server_hostname=name)
    s = sctx.wrap_bio(bios[2], bios[3], server_side=True)
    done = {"c": False, "s": False}
    try:
        for _ in range(20):
            for side, obj in (("c", c), ("s", s)):
                if not done[side]:
                    try:
                        obj.do_handshake()
                        done[side] = True
                    except ssl.SSLWantReadError:
                        pass
            # shuttle bytes: client out -> server in, server out -> client in
            bios[2].write(bios[1].read())
            bios[0].write(bios[3].read())
            if all(done.values()):
                # TLS 1.3: the server checks the client certificate after the client's
                # handshake ends; a round of application data surfaces a refusal.
                c.write(b"ping")
                bios[2].write(bios[1].read())
                s.read(4)
                return None, c.getpeercert()
        return "handshake did not finish", None
    except (ssl.SSLError, ssl.CertificateError) as e:
        return f"{type(e).__name__}: {e}", None
