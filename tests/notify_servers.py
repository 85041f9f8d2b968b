"""Real servers for the notification tests, on 127.0.0.1 only: an SMTP sink and an IRC server.

``SmtpSink``: aiosmtpd's Controller with a handler that keeps every message
(optionally requiring AUTH with one user/password).  ``IrcServer``: Debian's
``ngircd`` run in the foreground from a generated config.  ``IrcClient``: a
few lines of raw IRC (NICK/USER/JOIN) that collects what it reads.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.e2e.services import stop_process

# AUTH without TLS is what we want on loopback; aiosmtpd warns on every connection.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    auth_user: str | None


@dataclass
class _Collector:
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd hook name
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        user = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content or envelope.content, msg, user))
        return "250 OK"


class SmtpSink:
    """aiosmtpd on 127.0.0.1: keeps every message; with ``user``/``password`` AUTH is required."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.port = free_port()
        self.collector = _Collector()
        self.failed_logins = 0
        kwargs: dict = {}
        if user is not None:
            def authenticator(server, session, envelope, mechanism, auth_data):
                if (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
                        and auth_data.password.decode() == password):
                    return AuthResult(success=True, auth_data=auth_data)
                self.failed_logins += 1
                return AuthResult(success=False, handled=False)

            # Plain-text AUTH is fine on loopback; production uses TLS.
            kwargs = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
        self.controller = Controller(self.collector, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    @property
    def messages(self) -> list[Received]:
        with self.collector.lock:
            return list(self.collector.messages)

    def wait(self, count: int = 1, timeout: float = 60) -> list[Received]:
        return wait_for(lambda: self.messages if len(self.messages) >= count else None, timeout,
                        f"{count} mail(s) at 127.0.0.1:{self.port}")

    def stop(self) -> None:
        self.controller.stop()


class IrcServer:
    """``ngircd -n -f conf`` on 127.0.0.1 with a server password; a temporary directory holds its files."""

    def __init__(self, password: str | None = None, exe: str | None = None) -> None:
        self.exe = exe or shutil.which("ngircd") or "/usr/sbin/ngircd"
        self.port = free_port()
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="ngircd-"))
        (self.dir / "motd").write_text("vllm-cpu test IRC server\n")
        conf = self.dir / "ngircd.conf"
        conf.write_text(f"""\
[Global]
Name = irc.test.local
Info = vllm-cpu notification tests
Listen = 127.0.0.1
Ports = {self.port}
MotdFile = {self.dir / 'motd'}
PidFile = {self.dir / 'ngircd.pid'}
{f'Password = {password}' if password else ''}
[Limits]
MaxNickLength = 30
PingTimeout = 120
PongTimeout = 60
[Options]
PAM = no
DNS = no
Ident = no
""")
        self.log = (self.dir / "ngircd.log").open("wb")
        self.proc = subprocess.Popen([self.exe, "-n", "-f", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._listening, 20, f"ngircd on 127.0.0.1:{self.port}")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"ngircd exited {self.proc.returncode}: {(self.dir / 'ngircd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class IrcClient:
    """A raw-socket IRC user: registers, joins channels, answers PINGs and records every line it reads."""

    def __init__(self, port: int, nick: str, channels: list[str], password: str | None = None) -> None:
        self.nick = nick
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._stop = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if password:
            self.send(f"PASS {password}")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :notification test client")
        wait_for(lambda: self.find(" 001 "), 20, "IRC registration (001)")
        for c in channels:
            self.send(f"JOIN {c}")
            wait_for(lambda c=c: self.find(f"JOIN :{c}") or self.find(f"JOIN {c}"), 20, f"joining {c}")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def _read(self) -> None:
        buf = b""
        self.sock.settimeout(0.5)
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r\n" in buf:
                raw, buf = buf.split(b"\r\n", 1)
                line = raw.decode(errors="replace")
                if line.startswith("PING"):
                    self.send("PONG" + line[4:])
                with self._lock:
                    self.lines.append(line)

    def find(self, text: str) -> list[str]:
        with self._lock:
            return [line for line in self.lines if text in line]

    def privmsgs(self, channel: str, sender: str | None = None) -> list[str]:
        """Texts of PRIVMSG/NOTICE lines to ``channel`` (from ``sender``'s nick if given)."""
        out = []
        with self._lock:
            lines = list(self.lines)
        for line in lines:
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[1] in ("PRIVMSG", "NOTICE") and parts[2] == channel:
                nick = parts[0].lstrip(":").split("!", 1)[0]
                if sender is None or nick == sender:
                    out.append(parts[3].removeprefix(":"))
        return out

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.send("QUIT :done")
        self.sock.close()
        self._reader.join(5)
