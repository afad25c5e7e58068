"""Where notifications go: one frozen model for the SMTP and HTTP providers.

It nests into the main `Settings` as `settings.delivery` (environment variables such as
`SLUICE_DELIVERY__SMTP__HOST`), and `senders_for` is the one place that turns it into
senders. Defaults point at the local providers (`sluice providers up`), so the demo works
with no configuration; credentials are `SecretStr` end to end.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from pipelines.delivery.senders import HttpSender, Sender, SmtpSender

_HTTP_URL = r"^https?://[^\s/]+(/\S*)?$"


class SmtpSettings(BaseModel):
    """The SMTP server email goes through."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8025, ge=1, le=65535)
    starttls: bool = Field(False, description="Upgrade with STARTTLS after connecting.")
    use_tls: bool = Field(False, description="Connect with TLS from the start (SMTPS).")
    validate_certs: bool = True
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = Field("orders@sluice.example", pattern=r"^[^@\s]+@[^@\s]+$")
    timeout_s: float = Field(10.0, gt=0, description="Per connect and per SMTP command.")

    @model_validator(mode="after")
    def _coherent(self) -> SmtpSettings:
        if self.starttls and self.use_tls:
            raise ValueError("smtp starttls and use_tls exclude each other")
        if (self.username is None) != (self.password is None):
            raise ValueError("smtp username and password go together")
        return self


class HttpSettings(BaseModel):
    """The HTTP providers SMS and push go through."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sms_url: str = Field("http://127.0.0.1:8026/sms", pattern=_HTTP_URL)
    push_url: str = Field("http://127.0.0.1:8026/push", pattern=_HTTP_URL)
    auth_header: str | None = Field(None, pattern=r"^[A-Za-z0-9-]+$", examples=["Authorization"])
    auth_value: SecretStr | None = None
    timeout_s: float = Field(5.0, gt=0, description="Whole request, connect to last byte.")

    @model_validator(mode="after")
    def _auth_pair(self) -> HttpSettings:
        if (self.auth_header is None) != (self.auth_value is None):
            raise ValueError("http auth_header and auth_value go together")
        return self


class DeliverySettings(BaseModel):
    """Every provider the notifications stage delivers to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)


def senders_for(settings: DeliverySettings) -> dict[str, Sender]:
    """One sender per channel (`EMAIL`, `SMS`, `PUSH`) for these settings."""
    smtp, http = settings.smtp, settings.http
    return {
        "EMAIL": SmtpSender(
            smtp.host,
            smtp.port,
            from_address=smtp.from_address,
            starttls=smtp.starttls,
            use_tls=smtp.use_tls,
            username=smtp.username,
            password=smtp.password,
            timeout_s=smtp.timeout_s,
            validate_certs=smtp.validate_certs,
        ),
        "SMS": _http_sender("SMS", http.sms_url, http),
        "PUSH": _http_sender("PUSH", http.push_url, http),
    }


def _http_sender(channel: str, url: str, http: HttpSettings) -> HttpSender:
    return HttpSender(
        channel,
        url,
        timeout_s=http.timeout_s,
        auth_header=http.auth_header,
        auth_value=http.auth_value,
    )
