"""Sending the validation e-mails of `.../email/requestToken` over SMTP.

The stdlib's `smtplib` blocks, so each message is sent in a worker thread
(`asyncio.to_thread`); the request that asked waits for the send, so a client learns
when the server could not reach its mail relay (M_UNKNOWN, 500) instead of waiting for
a message that never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from myelin.errors import MatrixError

# smtplib and email are imported when a message is sent: most servers never send one.
if TYPE_CHECKING:
    from email.message import EmailMessage

SMTP_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Mailer:
    host: str
    port: int
    sender: str
    #: STARTTLS before sending (a relay on the Internet); off for a loopback relay.
    starttls: bool = False

    def _send(self, message: EmailMessage) -> None:
        import smtplib

        smtp = smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT_S)
        try:
            if self.starttls:
                smtp.starttls()
            smtp.send_message(message)
            # Once the message is accepted, a relay that answers QUIT oddly (Sytest's
            # minimal one knows no QUIT) has not lost anything: do not fail the request.
            with contextlib.suppress(smtplib.SMTPException):
                smtp.quit()
        finally:
            smtp.close()

    async def send(self, to: str, subject: str, text: str) -> None:
        """Send a plain-text message; 500 M_UNKNOWN if the relay refuses or is away."""
        import smtplib
        from email.message import EmailMessage
        from email.utils import formatdate, make_msgid

        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid()
        message.set_content(text)
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MatrixError(500, "M_UNKNOWN", f"Could not send e-mail: {exc}") from None
