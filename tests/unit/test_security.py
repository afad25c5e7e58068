"""Security without a broker: the ACL roles, the generated TLS/SCRAM material, diagnosis."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import SecretStr

from pipelines import acls
from pipelines.catalog import APP_IDS, CATALOG, INTERNAL
from pipelines.clientdiag import explain
from pipelines.errors import AuthenticationFailed, BrokerUnavailable
from pipelines.localkafka.nodes import layout, server_properties
from pipelines.localkafka.secure import CLIENTS, PRINCIPALS, SecureMaterial
from pipelines.settings import SecuritySettings, Settings

SCRAM = SecuritySettings(
    protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    username="orders",
    password=SecretStr("s3cret-value"),
)


def _allowed(principal: str, operation: str, topic: str, prefix: str = "") -> bool:
    """Would the grants let `principal` do `operation` on `topic` (ALL covers everything)?"""
    for g in acls.grants(prefix):
        if g.principal != principal or g.resource != "topic":
            continue
        matches = topic == g.name if g.pattern == "literal" else topic.startswith(g.name)
        if matches and g.operation in (operation, "ALL"):
            return True
    return False


@pytest.mark.parametrize(
    ("principal", "topic"),
    [
        ("notifications", "orders.placed"),
        ("notifications", "orders.confirmed"),
        ("analytics", "orders.placed"),
        ("analytics", "notifications.email"),
        ("producer", "orders.confirmed"),
        ("producer", "inventory.reservations"),
        ("orders", "orders.placed"),
        ("orders", "notifications.results"),
        ("orders", "sluice-notifications-attempts-changelog"),
    ],
)
def test_no_stage_may_write_what_is_not_its_output(principal: str, topic: str) -> None:
    assert not _allowed(principal, "WRITE", topic)


def test_every_stage_may_read_its_inputs_and_write_its_outputs() -> None:
    assert _allowed("producer", "WRITE", "orders.placed")
    assert _allowed("orders", "READ", "orders.placed")
    for channel in acls.CHANNELS:
        assert _allowed("orders", "WRITE", channel)
        assert _allowed("notifications", "READ", channel)
    assert _allowed("notifications", "WRITE", "notifications.results")
    assert _allowed("analytics", "READ", "notifications.results")
    assert _allowed("analytics", "WRITE", "analytics.windows")


def test_internal_topics_belong_to_their_stage_only() -> None:
    for stage, specs in INTERNAL.items():
        for spec in specs:
            owners = {p for p in CLIENTS if _allowed(p, "WRITE", spec.name)}
            assert owners == {stage}, spec.name


def test_every_catalog_topic_is_someones_output_and_the_prefix_applies() -> None:
    for spec in CATALOG:
        assert any(_allowed(p, "WRITE", spec.name) for p in CLIENTS), spec.name
    assert _allowed("orders", "READ", "p1.orders.placed", prefix="p1.")
    assert not _allowed("orders", "READ", "orders.placed", prefix="p1.")


def test_groups_are_the_stages_own() -> None:
    groups = {(g.principal, g.name, g.operation) for g in acls.grants() if g.resource == "group"}
    assert ("orders", APP_IDS["orders"], "READ") in groups
    assert ("orders", APP_IDS["notifications"], "DESCRIBE") in groups  # backpressure lag only
    assert not any(
        p == "orders" and n == APP_IDS["notifications"] and op == "READ" for p, n, op in groups
    )
    assert ("producer", APP_IDS["orders"], "DESCRIBE") in groups


def test_stage_specs_cover_what_each_worker_touches() -> None:
    names = {s.name for s in acls.stage_specs("notifications")}
    assert "notifications.sms" in names
    assert "notifications.results" in names
    assert "orders.placed" not in names
    assert {s.name for s in INTERNAL["notifications"]} <= names


def test_material_is_made_once_private_and_valid_for_loopback(tmp_path: Path) -> None:
    material = SecureMaterial(tmp_path / "secure").ensure()
    first = material.passwords()
    assert set(first) == set(PRINCIPALS)
    assert SecureMaterial(tmp_path / "secure").ensure().passwords() == first  # reused
    for private in (material.ca_key, material.broker_pem, material.users_file):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    cert = x509.load_pem_x509_certificate(
        material.broker_pem.read_bytes().split(b"-----END PRIVATE KEY-----\n")[1]
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    context = ssl.create_default_context(cafile=str(material.ca_cert))
    assert context.cert_store_stats()["x509_ca"] == 1


def test_client_env_files_hold_a_working_settings_and_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    material = SecureMaterial(tmp_path / "secure").ensure()
    (path,) = [p for p in material.write_env_files("127.0.0.1:9999") if p.stem == "analytics"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for line in path.read_text().splitlines():
        key, value = line.split("=", 1)
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.security.username == "analytics"
    assert settings.security.protocol == "SASL_SSL"
    conf = settings.confluent()
    assert conf["sasl.password"] == material.passwords()["analytics"]
    assert conf["ssl.ca.location"] == str(material.ca_cert)


def test_secure_nodes_have_no_plaintext_listener(tmp_path: Path) -> None:
    material = SecureMaterial(tmp_path / "secure").ensure()
    nodes = layout(tmp_path, 3, 20000)
    props = server_properties(nodes[0], nodes, 6, material.server_properties())
    assert "PLAINTEXT" not in props.split("listener.security.protocol.map=")[1].splitlines()[0]
    assert "listeners=SASL_SSL://127.0.0.1:20000,CONTROLLER://127.0.0.1:20001" in props
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in props
    assert "allow.everyone.if.no.acl.found=false" in props
    args = material.scram_format_args()
    assert args.count("--add-scram") == len(PRINCIPALS)


def test_explain_names_the_cause_and_never_the_password() -> None:
    refused = "FAIL [x] sasl_ssl://h:1/bootstrap: SASL authentication error: Authentication failed"
    error = explain("h:1", SCRAM, [refused])
    assert isinstance(error, AuthenticationFailed)
    assert "user 'orders'" in str(error)
    assert "s3cret" not in str(error)
    tls = (
        "FAIL [x] h:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
        "certificate verify failed (after 3ms in state SSL_HANDSHAKE)"
    )
    assert "certificate verify failed" in str(explain("h:1", SCRAM, [tls]))
    plain = (
        "FAIL [x] h:1/bootstrap: Disconnected: connection closed by peer "
        "(after 1ms in state APIVERSION_QUERY)"
    )
    found = explain("h:1", SecuritySettings(), [plain])
    assert isinstance(found, BrokerUnavailable)
    assert "TLS/SASL" in str(found)
    assert explain("h:1", SecuritySettings(), ["FAIL something else"]) is None


def test_secrets_stay_hidden_in_reprs_and_dumps() -> None:
    settings = Settings(security=SCRAM)
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())
    assert "s3cret" not in settings.security.describe()
    assert (
        settings.as_env()["SLUICE_SECURITY"].count("s3cret-value") == 1
    )  # child processes need it


def test_repeated_client_complaints_show_once_per_window() -> None:
    import logging

    from pipelines.clientdiag import RepeatFilter

    now = [0.0]
    repeat = RepeatFilter(window_s=30, clock=lambda: now[0])

    def shown(message: str) -> bool:
        record = logging.LogRecord("sluice.kafka", logging.ERROR, "", 0, message, None, None)
        return repeat.filter(record)

    refused = "FAIL [thrd:127.0.0.1:{}/1]: Connect to ipv4#127.0.0.1:{} failed (after {}ms)"
    assert shown(refused.format(9092, 9092, 0))
    assert not shown(refused.format(9092, 9092, 3))  # the same complaint, other numbers
    assert shown("FAIL something else entirely")
    now[0] = 31.0
    assert shown(refused.format(9092, 9092, 7))
