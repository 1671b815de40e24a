"""Delivering an alarm by email through the operator's SMTP server (settings ``smtp_*``)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from opencbr.config import Settings

TIMEOUT_SECONDS = 10.0


def send(settings: Settings, to: str, subject: str, text: str) -> None:
    """Send one message; SMTP errors and refused recipients raise (the delivery is retried)."""
    if not settings.smtp_host:
        raise OSError("no SMTP server is configured (setting smtp_host)")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_SECONDS) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        smtp.send_message(message)
