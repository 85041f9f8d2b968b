"""On-demand workers in the registry: ``[worker.ec2]`` / ``[worker.local]``, ``workers add --ec2-*``, user-data."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from farm.settings import ENV_VAR
from master.latent import USER_DATA_LIMIT, user_data
from workers import launch, registry

REPO = Path(__file__).resolve().parents[2]
EC2 = {"region": "us-east-1", "ami": "ami-0123456789abcdef0", "instance_type": "c7g.4xlarge", "keypair": "vllm",
       "master": "buildbot.example.org:9989", "security_group": "vllm-cpu-worker"}
ADD = ["add", "--name", "graviton-9", "--arch", "arm64", "--admin", "ops@example.org",
       "--ec2-region", "us-east-1", "--ec2-ami", "ami-0123456789abcdef0", "--ec2-instance-type", "c7g.4xlarge",
       "--ec2-keypair", "vllm", "--ec2-master", "buildbot.example.org:9989", "--ec2-security-group", "sg-name"]


def _registry(tmp_path: Path, ec2: dict | None = None, extra: str = "") -> Path:
    p = tmp_path / "registry.toml"
    lines = ['[[worker]]', 'name = "graviton-9"', 'arch = "aarch64"', 'admin = "ops"', extra]
    if ec2 is not None:
        lines.append("[worker.ec2]")
        for k, v in ec2.items():
            lines.append(f"{k} = {v!r}".replace("'", '"').replace("True", "true").replace("False", "false"))
    p.write_text("\n".join(lines) + "\n")
    return p


def test_a_complete_ec2_entry_loads(tmp_path: Path) -> None:
    (e,) = registry.load(_registry(tmp_path, {**EC2, "spot": True, "max_spot_price": 0.35, "idle_timeout": 300}))
    assert isinstance(e.launch, launch.Ec2Launch)
    assert (e.launch.ami, e.launch.instance_type, e.launch.spot, e.launch.max_spot_price) == \
        ("ami-0123456789abcdef0", "c7g.4xlarge", True, 0.35)
    assert e.launch.idle_timeout == 300 and e.launch.price_multiplier == 0.0


@pytest.mark.parametrize("missing", ["region", "ami", "instance_type", "keypair", "master"])
def test_an_incomplete_ec2_entry_is_refused_naming_the_field(tmp_path: Path, missing: str) -> None:
    with pytest.raises(registry.RegistryError, match=rf"^worker graviton-9\.ec2\.{missing}: required"):
        registry.load(_registry(tmp_path, {k: v for k, v in EC2.items() if k != missing}))


@pytest.mark.parametrize(("change", "field"), [
    ({"spot": True}, "max_spot_price"),  # a spot bid needs its ceiling
    ({"ami": "ubuntu-24.04"}, "ami"),
    ({"master": "buildbot.example.org"}, "master"),  # no port
    ({"subnet": "subnet-1"}, "security_group"),  # both a group name and a VPC subnet
    ({"security_group": "", "subnet": "subnet-1"}, "security_group_ids"),
    ({"idle_timeout": "10m"}, "idle_timeout"),
    ({"max_spot_price": -1}, "max_spot_price"),
    ({"endpoint_url": "127.0.0.1:5000"}, "endpoint_url"),
    ({"start_timeout": 5}, "start_timeout"),
])
def test_an_invalid_ec2_entry_is_refused_naming_the_field(tmp_path: Path, change: dict, field: str) -> None:
    with pytest.raises(registry.RegistryError, match=rf"^worker graviton-9\.ec2\.{field}: "):
        registry.load(_registry(tmp_path, {**EC2, **change}))


def test_unknown_keys_and_two_launch_tables_are_refused(tmp_path: Path) -> None:
    with pytest.raises(registry.RegistryError, match=r"graviton-9\.ec2: unknown key\(s\) instance; known: region"):
        registry.load(_registry(tmp_path, {**EC2, "instance": "x"}))
    p = _registry(tmp_path, EC2)
    p.write_text(p.read_text() + '[worker.local]\ncommand = ["true"]\n')
    with pytest.raises(registry.RegistryError, match="both ec2 and local"):
        registry.load(p)
    p.write_text('[[worker]]\nname = "w"\narch = "x86_64"\nadmin = "a"\n[worker.local]\ncommand = []\n')
    with pytest.raises(registry.RegistryError, match=r"^worker w\.local\.command: required"):
        registry.load(p)


def test_to_toml_reads_back_every_launch_field(tmp_path: Path) -> None:
    ec2 = launch.Ec2Launch(region="eu-west-1", ami="ami-0abcdef0123456789", instance_type="m7i.8xlarge",
                           keypair="k", master="10.0.0.5:9989", subnet="subnet-1", security_group_ids=("sg-1", "sg-2"),
                           spot=True, max_spot_price=1.25, price_multiplier=1.1, instance_profile="builder",
                           endpoint_url="http://127.0.0.1:5000", idle_timeout=120, start_timeout=900)
    local = launch.LocalLaunch(("buildbot-worker", "start", "--nodaemon", "/srv/w x"), idle_timeout=5)
    entries = [registry.WorkerEntry("amx-1", "x86_64", 2, "ops", "Sapphire Rapids", launch=ec2),
               registry.WorkerEntry("local-1", "x86_64", 1, "ops", launch=local),
               registry.WorkerEntry("plain", "aarch64", 1, "ops", python="/usr/bin/python3.12")]
    p = tmp_path / "r.toml"
    p.write_text("\n".join(registry.to_toml(e) for e in entries))
    assert registry.load(p) == entries


def _workers(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    return subprocess.run([sys.executable, "-m", "workers", "--registry", str(tmp_path / "workers.toml"),
                           "--secrets-dir", str(tmp_path / "secrets"), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_workers_add_writes_an_ec2_entry(tmp_path: Path) -> None:
    r = _workers(tmp_path, *ADD, "--ec2-spot", "--ec2-max-spot-price", "0.4", "--idle-timeout", "300")
    assert r.returncode == 0, r.stderr
    (e,) = registry.load(tmp_path / "workers.toml")
    assert e.launch == launch.Ec2Launch(region="us-east-1", ami="ami-0123456789abcdef0", instance_type="c7g.4xlarge",
                                        keypair="vllm", master="buildbot.example.org:9989", security_group="sg-name",
                                        spot=True, max_spot_price=0.4, idle_timeout=300)
    secret = tmp_path / "secrets" / "worker-graviton-9"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text() not in r.stdout + r.stderr
    assert "c7g.4xlarge" in r.stdout and "terminated 300s after its last build" in r.stdout
    listed = _workers(tmp_path, "list")
    assert "on demand (ec2)" in listed.stdout


@pytest.mark.parametrize(("drop", "extra", "option"), [
    ("--ec2-keypair", [], "--ec2-keypair: required"),
    ("--ec2-master", [], "--ec2-master: required"),
    (None, ["--ec2-spot"], "--ec2-max-spot-price: required with spot"),
    ("--ec2-security-group", ["--ec2-subnet", "subnet-1"], "--ec2-security-group-id: required with subnet"),
])
def test_workers_add_names_the_missing_option(tmp_path: Path, drop: str | None, extra: list[str],
                                              option: str) -> None:
    args = list(ADD)
    if drop:
        i = args.index(drop)
        del args[i:i + 2]
    r = _workers(tmp_path, *args, *extra)
    assert r.returncode == 2 and option in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "workers.toml").exists() and not (tmp_path / "secrets").exists()


def test_idle_timeout_alone_is_not_an_ec2_worker(tmp_path: Path) -> None:
    r = _workers(tmp_path, *ADD[:7], "--idle-timeout", "60")
    assert r.returncode == 2 and "give --ec2-*" in r.stderr


def test_user_data_runs_provision_with_the_password_in_a_0600_file(tmp_path: Path) -> None:
    text = user_data("graviton-9", "buildbot.example.org:9989", "s3cret-pw", 1200)
    assert len(text.encode()) < USER_DATA_LIMIT
    # Run the script's file-writing part in a scratch HOME: the password file and provision.sh as written.
    head = text.split("umask 022\n")[0].replace("/root", str(tmp_path))
    subprocess.run(["sh", "-c", head], check=True, env={"PATH": os.environ["PATH"]})
    pw = tmp_path / ".vllm-cpu-worker-password"
    assert pw.read_text().strip() == "s3cret-pw" and stat.S_IMODE(pw.stat().st_mode) == 0o600
    assert (tmp_path / "provision.sh").read_text().strip() == (REPO / "workers" / "provision.sh").read_text().strip()
    assert text.rstrip().endswith("WORKER_NAME=graviton-9 MASTER=buildbot.example.org:9989 CONNECT_TIMEOUT=1200 "
                                  "sh /root/provision.sh")


def test_an_on_demand_worker_counts_as_usable_while_not_connected() -> None:
    from farm.report import has_usable_worker

    latent = {"name": "graviton-9", "connected_to": [], "paused": False, "on_demand": True}
    assert has_usable_worker([latent])
    assert not has_usable_worker([{**latent, "on_demand": False}])  # its start failed: in quarantine
    assert not has_usable_worker([{**latent, "paused": True}])
    assert has_usable_worker([{"name": "x", "connected_to": [{"masterid": 1}], "paused": False}])
