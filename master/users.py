"""Web users: the ``[www] users_file`` of argon2id hashes, its Twisted cred checker and its CLI.

One ``name:hash`` line per user; the hash is argon2id in PHC form
(``$argon2id$v=19$m=...``) made by ``argon2-cffi``.  The file is a secret
like the worker passwords (mode 0600).  Buildbot's own ``HTPasswdAuth``
compares the typed password with the text after the colon, so a stolen
file would be the passwords themselves: this module replaces it.

``python -m master users add NAME`` writes a line (prompting for the
password, or reading it from stdin with ``--password-stdin``; at least 12
characters, no control characters);
``users convert`` hashes the plain-text lines of an old file in place.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import os
import re
import stat
import sys
import tempfile
from pathlib import Path

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import threads
from zope.interface import implementer

USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", re.ASCII)
# Apache htpasswd hashes ($apr1$ MD5, $2y$ bcrypt, $1$/$5$/$6$ crypt, {SHA}): the password is unknown.
_HTPASSWD = re.compile(r"^(\$(apr1|2[abxy]?|1|5|6)\$|\{SHA\})")
_HASHER = PasswordHasher()  # argon2id with the library's current defaults (RFC 9106 low-memory profile)
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsersFileError(ValueError):
    """The users file cannot be used; the message names the file, the line and the fix."""


def hash_password(password: str) -> str:
    if not password:
        raise UsersFileError("empty password")
    return _HASHER.hash(password)


@functools.cache
def _dummy_hash() -> str:
    # Verified when the user is unknown, so a wrong name costs as long as a wrong password.
    return _HASHER.hash("no such user")


def _is_hash(value: str) -> bool:
    """An argon2 PHC string (parsed, not verified: verifying costs the full hash time)."""
    try:
        extract_parameters(value)
    except (InvalidHashError, ValueError):
        return False
    return value.startswith("$argon2")


def path_of(where: str) -> str:
    """The file name in a ``where`` prefix ("www.users_file /srv/users" -> "/srv/users")."""
    return where.removeprefix("www.users_file ")


def parse(text: str, where: str) -> tuple[dict[str, str], list[str]]:
    """``name -> hash`` of a users file's text, and the problems (each naming line and fix)."""
    users: dict[str, str] = {}
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep or not USER_RE.fullmatch(name) or not value:
            problems.append(f"{where} line {n}: expected NAME:ARGON2-HASH (NAME: letters, digits, . _ @ -)")
        elif name in users:
            problems.append(f"{where} line {n}: {name} is listed twice")
        elif _HTPASSWD.match(value):
            problems.append(
                f"{where} line {n} ({name}): an htpasswd hash, not argon2; delete the line and set a new password "
                f"with `python -m master users add {name} --file {path_of(where)}`")
        elif not _is_hash(value):
            problems.append(
                f"{where} line {n} ({name}): not an argon2 hash; plain-text passwords are refused. Convert the "
                f"file with `python -m master users convert --file {path_of(where)}` (hashes every plain-text line "
                f"in place) or set a new password with `python -m master users add {name} --file {path_of(where)}`")
        else:
            users[name] = value
    return users, problems


def check_file(path: Path, admins: tuple[str, ...]) -> list[str]:
    """Everything wrong with the ``[www]`` users file and admins (empty list: usable)."""
    where = f"www.users_file {path}"
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        return [f"{where}: cannot read: {exc.strerror}"]
    problems = []
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(f"{where}: mode {stat.S_IMODE(mode):04o}; it holds password hashes, make it 0600 "
                        "(chmod 600)")
    users, bad = parse(text, where)
    problems += bad
    missing = sorted(set(admins) - set(users))
    if missing:
        problems.append(f"www.admins: {', '.join(missing)} not in {path}")
    if not admins:
        problems.append("www.admins: nobody could force, stop or rebuild; name at least one user")
    return problems


def read(path: Path) -> dict[str, str]:
    users, problems = parse(path.read_text(), str(path))
    if problems:
        raise UsersFileError("; ".join(problems))
    return users


def write(path: Path, users: dict[str, str], comments: list[str] | None = None) -> None:
    """Replace ``path`` atomically with ``users``; mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{c}\n" for c in comments or [])
            fh.writelines(f"{name}:{h}\n" for name, h in users.items())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verify(path: Path, username: str, password: str) -> bool:
    """Whether ``password`` is ``username``'s (blocking: argon2 takes ~0.1-0.5 s on purpose)."""
    try:
        users = read(path)
    except (OSError, UsersFileError):
        users = {}
    try:
        return _HASHER.verify(users.get(username, _dummy_hash()), password) and username in users
    except (VerificationError, InvalidHashError):
        return False


@implementer(ICredentialsChecker)
class HashedUsersChecker:
    """Twisted cred checker for HTTP basic auth against the users file.

    The file is read at every login, so ``users add`` takes effect without a
    reconfig; argon2 runs in threads of its own (``loginlimit.hash_pool``),
    away from the reactor and from the pool that encodes REST answers.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def requestAvatarId(self, credentials):
        def check() -> bytes:
            try:
                name = credentials.username.decode()
                password = credentials.password.decode()
            except UnicodeDecodeError:
                raise UnauthorizedLogin() from None
            if not USER_RE.fullmatch(name) or not verify(self.path, name, password):
                raise UnauthorizedLogin()
            return credentials.username

        from twisted.internet import reactor

        from master.loginlimit import hash_pool

        return threads.deferToThreadPool(reactor, hash_pool(), check)


# --------------------------------------------------------------------------- CLI


MIN_PASSWORD, MAX_PASSWORD = 12, 1024


def check_new_password(password: str) -> str:
    """A new password, or UsersFileError saying what is wrong with it (never echoing it).

    At least 12 characters (NIST SP 800-63B asks for 8 at least; these users
    can start releases), at most 1024, no control characters: a stray ``\\r``
    from a Windows editor or ``echo`` would otherwise become part of it.
    """
    if not password:
        raise UsersFileError("empty password")
    if len(password) < MIN_PASSWORD:
        raise UsersFileError(f"password too short: {len(password)} characters, at least {MIN_PASSWORD}")
    if len(password) > MAX_PASSWORD:
        raise UsersFileError(f"password too long: at most {MAX_PASSWORD} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise UsersFileError("password holds a control character (a carriage return or tab?): type it again")
    return password


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        # One line; its line ending (LF or CRLF) is not part of the password.
        return check_new_password(sys.stdin.readline().removesuffix("\n").removesuffix("\r"))
    first = getpass.getpass(f"password for {args.name}: ")
    if first != getpass.getpass("again: "):
        raise UsersFileError("the passwords differ")
    return check_new_password(first)


def _existing(path: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(hashed users, plain-text users, comment lines) of an existing file; missing file = empty."""
    if not path.exists():
        return {}, {}, []
    hashed: dict[str, str] = {}
    plain: dict[str, str] = {}
    comments = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("#"):
            comments.append(line)
            continue
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not USER_RE.fullmatch(name) or not value:
            raise UsersFileError(f"{path} line {n}: expected NAME:ARGON2-HASH; fix it by hand first")
        if _HTPASSWD.match(value):
            raise UsersFileError(f"{path} line {n} ({name}): an htpasswd hash cannot be converted (the password "
                                 f"is unknown); delete the line, then `users add {name}`")
        if _is_hash(value):
            hashed[name] = value
        else:
            plain[name] = value
    return hashed, plain, comments


def main(argv: list[str] | None = None) -> int:
    from farm import settings as settings_mod
    from vllm_cpu_build.helptext import Parser

    p = Parser(
        prog="python -m master users", description="Manage the web users file ([www] users_file): argon2 "
        "hashes, mode 0600.", epilog="exit codes: 0 done, 1 the file could not be read or written, 2 bad input")
    p.add_argument("--file", type=Path, default=None,
                   help="users file (default: [www] users_file of $VLLM_CPU_BUILDBOT_SETTINGS)")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="add a user or set a user's password")
    a.add_argument("name")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")
    r = sub.add_parser("remove", help="remove a user")
    r.add_argument("name")
    sub.add_parser("list", help="list the users (names only)")
    sub.add_parser("convert", help="hash every plain-text user:password line of the file in place")
    args = p.parse_args(argv)
    try:
        path = args.file or settings_mod.load().www.users_file
    except settings_mod.SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if path is None:
        print("error: --file: no users file given and [www] users_file is not set", file=sys.stderr)
        return EXIT_USAGE
    try:
        hashed, plain, comments = _existing(path)
        if args.cmd == "list":
            for name in [*hashed, *plain]:
                print(name + ("  (plain text: run `users convert`)" if name in plain else ""))
            return EXIT_OK
        if plain and args.cmd != "convert":
            raise UsersFileError(f"{path}: plain-text line(s) for {', '.join(plain)}; run "
                                 f"`python -m master users convert --file {path}` first")
        if args.cmd == "add":
            if not USER_RE.fullmatch(args.name):
                raise UsersFileError(f"name {args.name!r}: use letters, digits, . _ @ - (at most 64)")
            hashed[args.name] = hash_password(_password(args))
            done = f"{args.name}: password hash written to {path} (0600)"
        elif args.cmd == "remove":
            if hashed.pop(args.name, None) is None:
                raise UsersFileError(f"name {args.name!r}: not in {path}")
            done = f"{args.name}: removed from {path}"
        else:
            hashed.update({name: hash_password(pw) for name, pw in plain.items()})
            done = f"{len(plain)} plain-text password(s) hashed in {path} (0600)"
    except UsersFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAIL
    try:
        write(path, hashed, comments)
    except OSError as exc:
        print(f"error: {path}: cannot write: {exc.strerror}", file=sys.stderr)
        return EXIT_FAIL
    print(done)
    return EXIT_OK
