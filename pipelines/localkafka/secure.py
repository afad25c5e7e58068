"""Throwaway TLS and SCRAM material for a secure local cluster (`sluice kafka up --secure`).

On first use this writes, under `<kafka root>/secure/`:

- `ca.pem` / `ca-key.pem`: a private CA, valid for a year, trusted by every client;
- `broker.pem`: the nodes' key (PKCS#8, unencrypted, mode 0600) and certificate for
  127.0.0.1/localhost, signed by the CA; its CN `broker` is also the nodes' principal on
  the mutual-TLS controller listener;
- `users.json` (0600): one random SCRAM-SHA-512 password per principal;
- `<principal>.env` (0600): the environment a client of that principal needs, so
  `set -a; . .../orders.env; set +a` turns any `sluice` command into that principal.

The material is made once and reused, so restarting the cluster keeps every client's
credentials valid. It is meant for a laptop or CI, not production: a real deployment
brings its own CA and secrets (see the README's Security section).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipelines.localkafka.nodes import HOST

#: The broker's own principal (inter-broker SASL and controller mTLS); a super user.
BROKER = "broker"
#: Who may create topics and ACLs; a super user, like a cluster operator.
ADMIN = "admin"
#: The principals clients log in as, one per role (see `pipelines.acls`).
CLIENTS = ("producer", "orders", "notifications", "analytics")
PRINCIPALS = (ADMIN, BROKER, *CLIENTS)
MECHANISM = "SCRAM-SHA-512"
VALID_DAYS = 365


@dataclass(frozen=True)
class SecureMaterial:
    """Paths and passwords of one secure local cluster."""

    home: Path

    @property
    def ca_cert(self) -> Path:
        return self.home / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.home / "ca-key.pem"

    @property
    def broker_pem(self) -> Path:
        return self.home / "broker.pem"

    @property
    def users_file(self) -> Path:
        return self.home / "users.json"

    def env_file(self, principal: str) -> Path:
        return self.home / f"{principal}.env"

    def ensure(self) -> SecureMaterial:
        """Create whatever is missing (CA, broker certificate, passwords); keep the rest."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        if not (self.ca_cert.is_file() and self.ca_key.is_file()):
            _write_ca(self.ca_cert, self.ca_key)
        if not self.broker_pem.is_file():
            _write_broker(self.ca_cert, self.ca_key, self.broker_pem)
        if not self.users_file.is_file():
            users = {name: secrets.token_urlsafe(24) for name in PRINCIPALS}
            write_private(self.users_file, json.dumps(users, indent=2) + "\n")
        return self

    def passwords(self) -> dict[str, str]:
        """Every principal's password (read from `users.json`)."""
        raw: dict[str, str] = json.loads(self.users_file.read_text())
        return raw

    def client_env(self, principal: str, bootstrap: str) -> dict[str, str]:
        """Environment variables that make Sluice's settings log in as `principal`."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SLUICE_SECURITY__PROTOCOL": "SASL_SSL",
            "SLUICE_SECURITY__SASL_MECHANISM": MECHANISM,
            "SLUICE_SECURITY__USERNAME": principal,
            "SLUICE_SECURITY__PASSWORD": self.passwords()[principal],
            "SLUICE_SECURITY__CA_FILE": str(self.ca_cert),
        }

    def write_env_files(self, bootstrap: str) -> list[Path]:
        """One `<principal>.env` per client principal and admin (0600); returns their paths."""
        written = []
        for principal in (ADMIN, *CLIENTS):
            env = self.client_env(principal, bootstrap)
            text = "".join(f"{key}={value}\n" for key, value in env.items())
            write_private(self.env_file(principal), text)
            written.append(self.env_file(principal))
        return written

    def scram_format_args(self) -> list[str]:
        """`kafka-storage format` arguments that create every SCRAM user at bootstrap.

        KRaft keeps SCRAM credentials in the metadata log, so the broker's own user must
        exist before the first inter-broker connection; formatting with them is the
        documented way (there is no broker to call an admin API on yet).
        """
        args = []
        for name, password in self.passwords().items():
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return args

    def server_properties(self) -> dict[str, str]:
        """Broker settings for the SASL_SSL client listener and the mTLS controller listener."""
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER}" password="{self.passwords()[BROKER]}";'
        )
        return {
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.broker_pem),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_cert),
            "listener.name.controller.ssl.client.auth": "required",
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{BROKER};User:{ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
        }


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sluice local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(
        now + dt.timedelta(days=VALID_DAYS)
    )


def _write_ca(cert_path: Path, key_path: Path) -> None:
    key = _new_key()
    name = _name("Sluice local CA")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    cert = _validity(builder).sign(key, hashes.SHA256())
    write_private(key_path, _pkcs8(key).decode())
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_broker(ca_cert_path: Path, ca_key_path: Path, out: Path) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = _new_key()
    san = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
    )
    usage = x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(BROKER))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(san, critical=False)
        .add_extension(usage, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    cert = _validity(builder).sign(ca_key, hashes.SHA256())
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert_path.read_bytes()
    write_private(out, _pkcs8(key).decode() + chain.decode())


def _pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM: the one private-key form Kafka's PEM keystore reads."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, text: str) -> None:
    """Write a secret readable by its owner only, created that way (no window at 0644)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)
