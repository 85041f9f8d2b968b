"""How the master starts a build host on demand: a registry entry's ``[worker.ec2]`` or ``[worker.local]``.

A worker with neither is always on (it connects by itself).  One with a
launch table is a Buildbot latent worker: the master starts it when a build
for its arch is queued and stops it ``idle_timeout`` seconds after its last
build.

* ``[worker.ec2]``: an EC2 instance (Buildbot's ``EC2LatentWorker``) whose
  user-data runs ``workers/provision.sh`` with the worker's password (the
  master renders it from the worker's secret when it starts the instance).
* ``[worker.local]``: a worker process on the master's own host, ``command``
  running ``buildbot-worker start --nodaemon DIR`` (or anything that does it,
  e.g. in a chroot): the sandbox's and the tests' stand-in for a cloud host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_IDLE_TIMEOUT = 600  # seconds without a build before the host is stopped
EC2_START_TIMEOUT = 1800  # boot + provision.sh (apt, pip) until the worker connects
LOCAL_START_TIMEOUT = 300


class LaunchError(ValueError):
    """An invalid launch table; the message names the field."""


@dataclass(frozen=True)
class Ec2Launch:
    """An EC2 instance per substantiation; AWS credentials come from boto3's chain on the master host."""

    region: str
    ami: str  # an image of the worker's arch (checked against EC2's ``architecture`` at start)
    instance_type: str  # e.g. c7g.4xlarge (Graviton3), m7i.4xlarge (Sapphire Rapids: AMX)
    keypair: str  # EC2 key pair name (Buildbot creates it when missing)
    master: str  # host:port at which the instance reaches the master's worker port
    security_group: str = ""  # security group name (default VPC); or subnet + security_group_ids
    subnet: str = ""
    security_group_ids: tuple[str, ...] = ()
    spot: bool = False  # a spot instance (an interrupted build is retried on a new one)
    max_spot_price: float = 0.0  # USD per hour: the highest bid (required with spot)
    price_multiplier: float = 0.0  # bid = 24 h average spot price x this (capped); 0 = bid max_spot_price
    instance_profile: str = ""  # IAM instance profile name; "" = none
    endpoint_url: str = ""  # the EC2 API endpoint; "" = AWS's for the region (tests: a local server)
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT
    start_timeout: int = EC2_START_TIMEOUT

    kind = "ec2"


@dataclass(frozen=True)
class LocalLaunch:
    """A worker process on the master's host; its worker directory (and password) exists beforehand."""

    command: tuple[str, ...]  # argv running the worker in the foreground
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT
    start_timeout: int = LOCAL_START_TIMEOUT

    kind = "local"


Launch = Ec2Launch | LocalLaunch
KINDS: dict[str, type[Ec2Launch] | type[LocalLaunch]] = {"ec2": Ec2Launch, "local": LocalLaunch}
_REQUIRED = {"ec2": ("region", "ami", "instance_type", "keypair", "master"), "local": ("command",)}
_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
_HOSTPORT = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")


def _typed(where: str, name: str, hint: object, val: object) -> object:
    if hint in ("str", str):
        if not isinstance(val, str):
            raise LaunchError(f"{where}.{name}: must be a string, got {val!r}")
        return val
    if hint in ("int", int):
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise LaunchError(f"{where}.{name}: must be a non-negative integer (seconds), got {val!r}")
        return val
    if hint in ("float", float):
        if not isinstance(val, int | float) or isinstance(val, bool) or val < 0:
            raise LaunchError(f"{where}.{name}: must be a non-negative number, got {val!r}")
        return float(val)
    if hint in ("bool", bool):
        if not isinstance(val, bool):
            raise LaunchError(f"{where}.{name}: must be true or false, got {val!r}")
        return val
    if not isinstance(val, list) or not all(isinstance(x, str) and x for x in val):
        raise LaunchError(f"{where}.{name}: must be a list of non-empty strings, got {val!r}")
    return tuple(val)


def parse(where: str, kind: str, raw: object) -> Launch:
    """The ``[worker.<kind>]`` table ``raw`` of the entry ``where`` (e.g. ``worker graviton-1``)."""
    where = f"{where}.{kind}"
    if not isinstance(raw, dict):
        raise LaunchError(f"{where}: must be a table")
    cls = KINDS[kind]
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise LaunchError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for key in _REQUIRED[kind]:
        if not raw.get(key):
            raise LaunchError(f"{where}.{key}: required (the entry is incomplete without it)")
    values = {f.name: _typed(where, f.name, f.type, raw[f.name]) for f in fields(cls) if f.name in raw}
    launch = cls(**values)  # type: ignore[arg-type]
    _check(where, launch)
    return launch


def _check(where: str, launch: Launch) -> None:
    if launch.start_timeout < 30:
        raise LaunchError(f"{where}.start_timeout: at least 30 seconds (the worker has to start and connect)")
    if not isinstance(launch, Ec2Launch):
        return
    if not _AMI.match(launch.ami):
        raise LaunchError(f"{where}.ami: {launch.ami!r} is not an AMI id (ami-0123456789abcdef0)")
    if not _HOSTPORT.match(launch.master):
        raise LaunchError(f"{where}.master: {launch.master!r} must be host:port (the master's worker port)")
    if bool(launch.security_group) == bool(launch.subnet):
        raise LaunchError(f"{where}.security_group: give security_group (default VPC) or subnet with "
                          "security_group_ids, not both and not neither")
    if launch.subnet and not launch.security_group_ids:
        raise LaunchError(f"{where}.security_group_ids: required with subnet")
    if launch.spot and launch.max_spot_price <= 0:
        raise LaunchError(f"{where}.max_spot_price: required with spot = true (USD per hour, the highest bid)")
    if launch.endpoint_url and not re.match(r"^https?://", launch.endpoint_url):
        raise LaunchError(f"{where}.endpoint_url: must be an http(s) URL, got {launch.endpoint_url!r}")


def from_entry(where: str, raw: Mapping[str, Any]) -> Launch | None:
    """The launch table of a raw registry entry (at most one), or None for an always-on worker."""
    present = [k for k in KINDS if k in raw]
    if len(present) > 1:
        raise LaunchError(f"{where}: both {' and '.join(present)}: a worker is started one way")
    return parse(where, present[0], raw[present[0]]) if present else None


def to_toml(launch: Launch, quote: Callable[[str], str]) -> str:
    """The ``[worker.<kind>]`` table (every field that differs from its default), ``quote``: a TOML string."""
    lines = [f"[worker.{launch.kind}]"]
    default = {f.name: f.default for f in fields(launch)}
    for f in fields(launch):
        val = getattr(launch, f.name)
        if f.name in _REQUIRED[launch.kind] or val != default[f.name]:
            if isinstance(val, bool):
                text = "true" if val else "false"
            elif isinstance(val, int | float):
                text = repr(val)
            elif isinstance(val, tuple):
                text = "[" + ", ".join(quote(v) for v in val) + "]"
            else:
                text = quote(val)
            lines.append(f"{f.name} = {text}")
    return "\n".join(lines) + "\n"
