"""The chart's generated etcd certificates and TLS flags, run by a real etcd (the binary the Rust tests use, from
the etcd-bin-vendored crate): a client with the components' certificate is served, one without is refused."""

from __future__ import annotations

import base64
import glob
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import render

TLS_DIR = "/etc/etcd/tls"


def etcd_binary() -> str:
    if os.environ.get("SLUICE_ETCD_BIN"):
        return os.environ["SLUICE_ETCD_BIN"]
    cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    found = sorted(glob.glob(f"{cargo_home}/registry/src/*/etcd-bin-vendored-linux-amd64-*/bin/etcd"))
    if not found:
        pytest.fail("no etcd binary: build the workspace first (cargo fetches etcd-bin-vendored) or set SLUICE_ETCD_BIN")
    return found[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curl(url: str, ca: Path, cert: Path | None = None, key: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = ["curl", "-sS", "--max-time", "5", "--cacert", str(ca)]
    if cert and key:
        args += ["--cert", str(cert), "--key", str(key)]
    return subprocess.run([*args, url], capture_output=True, text=True, check=False)


def test_a_real_etcd_takes_the_generated_certificates(tmp_path: Path) -> None:
    rendered = render()
    sts = rendered.one("StatefulSet", "sluice-etcd")
    container = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "etcd")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    files = {}
    for secret in (volumes["tls"]["secret"]["secretName"], "sluice-etcd-client-tls"):
        for key, value in rendered.one("Secret", secret)["data"].items():
            files[(secret, key)] = tmp_path / f"{secret}-{key}"
            files[(secret, key)].write_bytes(base64.b64decode(value))
    server = volumes["tls"]["secret"]["secretName"]
    for (secret, key), path in files.items():
        if secret == server:
            (tmp_path / "tls").mkdir(exist_ok=True)
            (tmp_path / "tls" / key).write_bytes(path.read_bytes())
    # The chart's own TLS flags, with the Secret's mount moved to the temporary directory; one member on loopback.
    tls_flags = [
        a.replace(TLS_DIR, str(tmp_path / "tls"))
        for a in container["args"]
        if a.startswith(("--cert-file", "--key-file", "--trusted-ca-file", "--client-cert-auth", "--peer-"))
    ]
    assert len(tls_flags) == 8, tls_flags
    client, peer = free_port(), free_port()
    cmd = [
        etcd_binary(),
        "--name=m0",
        f"--data-dir={tmp_path / 'data'}",
        f"--listen-client-urls=https://127.0.0.1:{client}",
        f"--advertise-client-urls=https://127.0.0.1:{client}",
        f"--listen-peer-urls=https://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=https://127.0.0.1:{peer}",
        f"--initial-cluster=m0=https://127.0.0.1:{peer}",
        "--log-level=error",
        *tls_flags,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ca = files[("sluice-etcd-client-tls", "ca.crt")]
        cert, key = files[("sluice-etcd-client-tls", "tls.crt")], files[("sluice-etcd-client-tls", "tls.key")]
        url = f"https://127.0.0.1:{client}/health"
        deadline = time.monotonic() + 30
        answer = curl(url, ca, cert, key)
        while '"health":"true"' not in answer.stdout:
            assert proc.poll() is None, f"etcd exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            assert time.monotonic() < deadline, f"etcd never answered with the client certificate: {answer}"
            time.sleep(0.2)
            answer = curl(url, ca, cert, key)
        refused = curl(url, ca)
        assert refused.returncode != 0 and "health" not in refused.stdout, refused
        plain = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{client}/health"],
                               capture_output=True, text=True, check=False)
        assert "health" not in plain.stdout, plain
    finally:
        proc.kill()
        proc.wait()
