"""Two real Myelin servers that federate over TLS on loopback.

Each server is named `localhost:<tls port>` (as under Sytest) and serves its TLS port with
one self-signed certificate made here with `openssl`; both trust it through
`SSL_CERT_FILE`, which Python's default TLS context reads.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, free_port, start_server


@dataclass
class Peer:
    server: ServerProcess
    name: str

    @property
    def base_url(self) -> str:
        return self.server.base_url


def make_cert(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def start_peer(data_dir: Path, cert: Path, key: Path) -> Peer:
    tls_port = free_port()
    name = f"localhost:{tls_port}"
    server = start_server(
        data_dir,
        server_name=name,
        tls_port=tls_port,
        tls_cert=cert,
        tls_key=key,
        registration="open",
        env={"SSL_CERT_FILE": str(cert)},
    )
    return Peer(server, name)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Peer]]:
    base = tmp_path_factory.mktemp("federation")
    cert, key = make_cert(base)
    a = start_peer(base / "a", cert, key)
    try:
        b = start_peer(base / "b", cert, key)
    except BaseException:
        a.server.stop()
        raise
    try:
        yield a, b
    finally:
        codes = (a.server.stop(), b.server.stop())
        assert codes == (0, 0), (a.server.stderr_lines, b.server.stderr_lines)
