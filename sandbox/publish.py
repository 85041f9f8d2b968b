"""The publishing side of the sandbox: a real OCI registry, a base image, the detector on the index.

* ``OciRegistry``: Debian's ``docker-registry`` (the CNCF distribution
  registry) on 127.0.0.1, storage in a directory.
* ``push_base_image()``: a small multi-arch Debian base (python3, venv,
  libnuma1, libgomp1) made once per arch with mmdebstrap, cached under
  ``~/.cache/vllm-cpu-buildbot/image-base/``, imported with buildah and
  pushed to the registry as one manifest list: the sandbox's stand-in for
  ``python:3.12-slim`` (no Docker Hub here).  arm64 needs qemu-user-static.
* ``detector_wheel()``: ``vllm-cpu-detect`` as a wheel, for the index the
  images install from (the image's entrypoint runs it).

Buildah's storage is whatever ``CONTAINERS_STORAGE_CONF`` names
(``storage_conf()`` writes one), so the sandbox never touches the host's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "libnuma1", "libgomp1", "ca-certificates")
CACHE = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vllm-cpu-buildbot" / "image-base")
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
BASE_NAME = "vllm-cpu-base"


def _say(msg: str) -> None:
    print(f"[publish] {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OciRegistry:
    """``docker-registry serve`` on 127.0.0.1 with its storage in ``root``."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        if not shutil.which("docker-registry"):
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        self.root = root
        self.port = port or _free_port()
        (root / "data").mkdir(parents=True, exist_ok=True)
        conf = root / "config.yml"
        conf.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                        f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
                        f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.log = (root / "registry.log").open("ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self.proc.returncode}; see {root / 'registry.log'}")
            try:
                if requests.get(self.url + "/v2/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"registry at {self.url} did not answer")
            time.sleep(0.2)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def tags(self, name: str) -> list[str]:
        r = requests.get(f"{self.url}/v2/{name}/tags/list", timeout=30)
        return sorted(r.json().get("tags") or []) if r.status_code == 200 else []

    def manifest(self, name: str, ref: str) -> dict:
        accept = ", ".join(["application/vnd.oci.image.index.v1+json",
                            "application/vnd.docker.distribution.manifest.list.v2+json",
                            "application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])
        r = requests.get(f"{self.url}/v2/{name}/manifests/{ref}", headers={"Accept": accept}, timeout=30)
        r.raise_for_status()
        return r.json()

    def platforms(self, name: str, ref: str) -> list[str]:
        """``os/arch`` of each image under a manifest list (one entry for a plain image)."""
        doc = self.manifest(name, ref)
        return sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in doc.get("manifests", []))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def storage_conf(dest: Path, graphroot: Path) -> Path:
    """A containers-storage.conf keeping buildah's images under ``graphroot``."""
    graphroot.mkdir(parents=True, exist_ok=True)
    dest.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{graphroot}"\nrunroot = "{graphroot}-run"\n')
    return dest


def release_storage(graphroot: Path, env: dict[str, str]) -> None:
    """Remove the storage's working containers and undo its mounts: a tree with mounts cannot be deleted."""
    subprocess.run(["buildah", "rm", "--all"], env=env, capture_output=True, check=False)
    prefix = str(graphroot.resolve())
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1] == prefix or line.split()[1].startswith(prefix + "/")]
    for target in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", target], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def base_tarball(arch: str, log=_say) -> Path:
    """The cached Debian root of ``arch`` for the base image (mmdebstrap on first use)."""
    from testbed.debroot import mmdebstrap_tarball

    key = hashlib.sha256("\n".join([SUITE, arch, *BASE_PACKAGES]).encode()).hexdigest()[:12]
    return mmdebstrap_tarball(CACHE / f"{SUITE}-{GOARCH[arch]}-{key}.tar",
                              [f"--arch={GOARCH[arch]}", "--variant=apt", f"--include={','.join(BASE_PACKAGES)}"],
                              SUITE, what="once; minutes for an emulated arch", log=log)


def _buildah(*args: str, env: dict[str, str]) -> str:
    r = subprocess.run(["buildah", *args], capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args[:2])} failed: {r.stderr.strip()[-1500:]}")
    return r.stdout.strip()


def push_base_image(registry: OciRegistry, arches: list[str], env: dict[str, str], log=_say) -> str:
    """Import the cached roots as one multi-arch image and push it; returns its reference."""
    ref = f"{registry.host}/{BASE_NAME}:{SUITE}"
    local = f"localhost/{BASE_NAME}:{SUITE}"
    with tempfile.TemporaryDirectory() as tmp:
        containerfile = Path(tmp) / "Containerfile"
        subprocess.run(["buildah", "manifest", "rm", local], capture_output=True, env=env, check=False)
        _buildah("manifest", "create", local, env=env)
        for arch in arches:
            tar = base_tarball(arch, log)
            containerfile.write_text(f"FROM scratch\nADD {tar.name} /\nCMD [\"/bin/bash\"]\n")
            image = f"{local}-{GOARCH[arch]}"
            _buildah("bud", "--isolation", "chroot", "--platform", f"linux/{GOARCH[arch]}", "-f", str(containerfile),
                     "-t", image, str(tar.parent), env=env)
            _buildah("manifest", "add", local, f"containers-storage:{image}", env=env)
        _buildah("manifest", "push", "--all", "--tls-verify=false", local, f"docker://{ref}", env=env)
    log(f"base image {ref} ({', '.join(GOARCH[a] for a in arches)})")
    return ref


def detector_wheel(dest: Path) -> Path:
    """``vllm-cpu-detect`` built from ``detector/`` into ``dest`` (a copy: the tree stays clean)."""
    from farm.settings import REPO_ROOT

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(shutil.copytree(REPO_ROOT / "detector", Path(tmp) / "detector",
                                   ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")))
        dest.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(dest), str(src)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"building vllm-cpu-detect failed: {r.stderr.strip()[-1500:]}")
    return next(dest.glob("vllm_cpu_detect-*.whl"))
