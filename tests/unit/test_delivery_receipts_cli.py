"""The providers' receipt log and `sluice providers up` flags, without starting servers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.cli import run
from pipelines.providers import (
    HttpProviderConfig,
    ProvidersConfig,
    Receipt,
    ReceiptLog,
    SmtpProviderConfig,
)


def receipt(nid: str, channel: str = "SMS") -> Receipt:
    return Receipt(nid, channel, "+15550001111", None, "text", 1, "p-1")


def test_receipt_log_counts_per_notification_and_finds_duplicates(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path / "receipts.jsonl")
    log.record(receipt("a"))
    log.record(receipt("b", "EMAIL"))
    log.record(receipt("a"))
    log.failed("SMS", "500")
    assert len(log) == 3
    assert log.count("a") == 2
    assert log.count("never") == 0
    assert log.duplicates() == {"a": 2}
    assert [r.notification_id for r in log.receipts("b")] == ["b"]
    assert log.stats() == {
        "received": 3,
        "by_channel": {"SMS": 2, "EMAIL": 1},
        "distinct_notifications": 2,
        "duplicates": 1,
        "failures_injected": {"SMS:500": 1},
    }
    lines = (tmp_path / "receipts.jsonl").read_text().splitlines()
    assert [json.loads(line)["notification_id"] for line in lines] == ["a", "b", "a"]
    assert log.summary() == (
        "received 3 (email 1, sms 2, push 0); 1 failed on purpose; 1 duplicate ids"
    )


def test_receipt_log_is_safe_across_threads() -> None:
    log = ReceiptLog()

    def add(prefix: str) -> None:
        for i in range(500):
            log.record(receipt(f"{prefix}{i}"))

    threads = [threading.Thread(target=add, args=(p,)) for p in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 2_000
    assert log.duplicates() == {}


def test_provider_ids_are_unique() -> None:
    log = ReceiptLog()
    assert len({log.next_provider_id("sms") for _ in range(100)}) == 100


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: SmtpProviderConfig(failure_rate=1.5), "failure_rate"),
        (lambda: SmtpProviderConfig(latency_ms=-1), "latency_ms"),
        (lambda: HttpProviderConfig(timeout_rate=-0.1), "timeout_rate"),
        (lambda: HttpProviderConfig(rate_limit_every=-2), "rate_limit_every"),
        (lambda: HttpProviderConfig(bad_request_recipients="("), "bad_request_recipients"),
        (lambda: ProvidersConfig(smtp_port=70000), "smtp_port"),
        (lambda: ProvidersConfig.model_validate({"colour": "red"}), "colour"),
    ],
)
def test_provider_configs_refuse_bad_values(build: object, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        build()  # type: ignore[operator]


def test_patterns_are_compiled_from_strings() -> None:
    config = SmtpProviderConfig(reject_recipients="^bounce@")
    assert config.reject_recipients is not None
    assert config.reject_recipients.search("bounce@example.com")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["providers", "up", "--failure-rate", "1.5"], "1.5 is not in the range 0<=x<=1"),
        (["providers", "up", "--latency-ms", "-5"], "-5 is not in the range x>=0"),
        (["providers", "up", "--timeout-rate", "2"], "is not in the range"),
        (["providers", "up", "--smtp-port", "70000"], "70000 is not in the range"),
        (["providers", "up", "--rate-limit-every", "-1"], "is not in the range"),
        (["providers", "up", "--reject-recipients", "(unclosed"], "not a regular expression"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_bad_env_values_are_click_errors_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLUICE_PROVIDERS_FAILURE_RATE", "3")
    assert run(["providers", "up"]) == 2
    assert "SLUICE_PROVIDERS_FAILURE_RATE" in capsys.readouterr().err


def test_help_shows_the_env_fallbacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["providers", "up", "--help"]) == 0
    out = capsys.readouterr().out
    for name in (
        "SMTP_PORT",
        "HTTP_PORT",
        "FAILURE_RATE",
        "LATENCY_MS",
        "TIMEOUT_RATE",
        "RATE_LIMIT_EVERY",
        "RETRY_AFTER",
        "RECORD",
        "SEED",
    ):
        assert f"SLUICE_PROVIDERS_{name}" in out
