"""``vllm-cpu-build image``: one package's runtime image, built with buildah and pushed.

For one package and upstream version: the version comes from the package
index (``--highest-postfix``: the highest ``.postN`` published, as the
original pipeline did), one image per arch the index has a wheel of that
version for (``buildah bud --isolation chroot --platform linux/amd64`` or
``linux/arm64``; an arch other than the host's runs the Dockerfile's RUN
steps under qemu-user-static), joined in one manifest list and pushed to
every ``--repository`` as ``<short>-<version>``, plus ``<short>-latest``
when the version is the package's newest final release on the index.

With ``--custody-only`` only the wheels named by ``--custody FILE=SHA256``
(the master's custody ledger: what this farm built, verified and uploaded)
with exactly that sha256 on the index count; every other file is foreign
and never decides a version, an arch or ``-latest``.  An arch with one such
wheel installs exactly that file (its URL with ``#sha256=``: pip checks it).
Daemonless (no Docker engine).  Registry credentials only through
``--authfile`` (a containers auth.json the Buildbot step writes from a
secret), never on a command line.  The storage buildah uses is its default
or what ``CONTAINERS_STORAGE_CONF`` says.

Result: ``results.ImageResult``.  Exit codes: 0 pushed (or dry run), 1 a
build or push failed, 2 bad input, 3 skipped: the index has no wheel of that
version to build from.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vllm_cpu_build import published
from vllm_cpu_build.cli import ARCH_CHOICES, arches_arg, version_arg
from vllm_cpu_build.enums import Arch, ImageStatus
from vllm_cpu_build.errors import StepFailed, UsageError
from vllm_cpu_build.helptext import describe
from vllm_cpu_build.index import IndexFile
from vllm_cpu_build.results import ImageResult, PushedImage

PLATFORMS = {Arch.X86_64: "linux/amd64", Arch.AARCH64: "linux/arm64"}
DEFAULT_BASE = "docker.io/library/python:3.12-slim"
LOCAL_PREFIX = "localhost/vllm-cpu-image"  # local names of what is built, before the push


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _buildah(*args: str, capture: bool = False, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run buildah; its output goes to stderr (the step's log), stdout stays the JSON document.

    ``capture``: keep stdout; ``quiet``: drop stderr too (a clean-up that may find nothing).
    """
    cmd = ["buildah", *args]
    if not quiet:
        _log("+ " + shlex.join(cmd))
    return subprocess.run(cmd, stdout=subprocess.PIPE if capture or quiet else sys.stderr,
                          stderr=subprocess.DEVNULL if quiet else sys.stderr, text=True, check=False)


def _ok(r: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if r.returncode != 0:
        raise StepFailed(f"{what} failed (buildah exit {r.returncode}); see the log above")
    return r


def _trusted(wheels: list[published.PublishedWheel], custody: dict[str, str] | None,
             res: ImageResult) -> list[published.PublishedWheel]:
    """The wheels the custody ledger holds with the sha256 the index lists (all without a ledger)."""
    if custody is None:
        return wheels
    ours = [w for w in wheels if w.sha256 and custody.get(w.filename) == w.sha256]
    res.foreign = sorted(w.filename for w in wheels if w not in ours)
    for name in res.foreign:
        _log(f"foreign, not used: {name} (not built and verified by this farm)")
    return ours


def plan(package: str, version: str, simple_url: str, highest_postfix: bool = False,
         arches: list[Arch] | None = None,
         lister: Callable[[str, str], list[IndexFile]] | None = None,
         custody: dict[str, str] | None = None) -> ImageResult:
    """What would be built: version, arches and tags, from variants.json and the index (with ``custody``
    ({file: sha256}), only the index's wheels it holds)."""
    from vllm_cpu_build.variants import load

    variant = load().get(package)
    if not variant.applies_to(version):
        raise UsageError(f"{variant.package} is not built for vLLM {version} (variants.json releases "
                         f"{variant.releases})")
    res = ImageResult(package=variant.package, short=variant.short, requested=version)
    kwargs = {"lister": lister} if lister else {}
    wheels = _trusted(published.wheels(simple_url, variant.package, **kwargs), custody, res)
    versions = {w.version for w in wheels}
    chosen = published.pick_version(versions, version, highest_postfix)
    if chosen is None:
        res.status = ImageStatus.NOTHING_PUBLISHED
        res.reason = (f"the index has no wheel of {variant.package} {version}"
                      + (" or a .postN of it" if highest_postfix else "") + f" ({simple_url})")
        return res
    res.version = chosen
    have = {a for w in wheels if w.version == chosen for a in w.arches}
    wanted = [a for a in variant.arches if a in have and (not arches or a in arches)]
    if not wanted:
        res.status = ImageStatus.NOTHING_PUBLISHED
        res.reason = (f"{variant.package} {chosen}: no wheel on the index for "
                      f"{', '.join(arches or variant.arches)} (has: {', '.join(sorted(have)) or 'none'})")
        return res
    res.arches = wanted
    for a in wanted:
        mine = [w for w in wheels if w.version == chosen and a in w.arches]
        if custody is not None and len(mine) == 1:
            res.wheels[str(a)] = f"{mine[0].url}#sha256={mine[0].sha256}"
    res.latest = published.is_newest(versions, chosen)
    tags = variant.docker_tags(chosen)
    res.tags = tags if res.latest else tags[:1]
    return res


def build_args(res: ImageResult, base_image: str, index_url: str, torch_index_url: str,
               arch: str | None = None) -> dict[str, str]:
    """The Dockerfile's ARGs for one image (``arch``'s pinned wheel, when there is one)."""
    args = {"BASE_IMAGE": base_image, "PACKAGE": res.package, "VERSION": res.version, "INDEX_URL": index_url,
            "TORCH_INDEX_URL": torch_index_url}
    if arch and str(arch) in res.wheels:
        args["WHEEL_URL"] = res.wheels[str(arch)]
    return args


def build_and_push(res: ImageResult, *, repositories: list[str], dockerfile: Path, context: Path,
                   base_image: str, index_url: str, torch_index_url: str, tls_verify: bool = True,
                   authfile: Path | None = None, keep: bool = False) -> ImageResult:
    """Build ``res.arches`` images, join them in a manifest list and push every tag to every repository."""
    local_list = f"{LOCAL_PREFIX}/{res.short}:{res.version}"
    tls = [f"--tls-verify={'true' if tls_verify else 'false'}"]
    auth = ["--authfile", str(authfile)] if authfile else []
    built: list[str] = []
    try:
        for arch in res.arches:
            arg_list = [a for k, v in build_args(res, base_image, index_url, torch_index_url, arch).items()
                        for a in ("--build-arg", f"{k}={v}")]
            platform = PLATFORMS[arch]
            local = f"{local_list}-{platform.split('/')[1]}"
            t = time.monotonic()
            # --pull=always: the base is one name for every arch; never reuse another arch's copy.
            _ok(_buildah("bud", "--isolation", "chroot", "--platform", platform, "--pull=always", "--layers=false",
                         *tls, *auth, *arg_list, "-f", str(dockerfile), "-t", local, str(context)),
                f"image build for {arch}")
            built.append(local)
            got = _ok(_buildah("inspect", "--type", "image", "--format", "{{.OCIv1.Architecture}}", local,
                               capture=True), "inspect").stdout.strip()
            if got != platform.split("/")[1]:
                raise StepFailed(f"the {arch} image has architecture {got!r}: the base image "
                                 f"{base_image} has no {platform} variant")
            res.seconds[f"build_{arch}"] = round(time.monotonic() - t, 1)
        _buildah("manifest", "rm", local_list, quiet=True)  # left by an earlier run: start afresh
        _ok(_buildah("manifest", "create", local_list, capture=True), "manifest create")
        for local in built:
            _ok(_buildah("manifest", "add", local_list, f"containers-storage:{local}", capture=True), "manifest add")
        t = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            for repo in repositories:
                for tag in res.tags:
                    ref = f"{repo}:{tag}"
                    digestfile = Path(tmp) / "digest"
                    _ok(_buildah("manifest", "push", "--all", *tls, *auth, "--digestfile", str(digestfile),
                                 local_list, f"docker://{ref}"), f"push of {ref}")
                    res.pushed.append(PushedImage(ref, digestfile.read_text().strip()))
        res.seconds["push"] = round(time.monotonic() - t, 1)
    finally:
        if not keep:  # runtime images are large (torch): keep only the cached base layers
            _buildah("manifest", "rm", local_list, quiet=True)
            for local in built:
                _buildah("rmi", local, quiet=True)
    res.status = ImageStatus.PUSHED
    return res


def _run(args: argparse.Namespace) -> ImageResult:
    from vllm_cpu_build.variants import load

    if not args.repository and not args.dry_run:
        raise UsageError("--repository: at least one image repository to push to (or --dry-run)")
    dockerfile = Path(args.dockerfile)
    if not dockerfile.is_file():
        raise UsageError(f"--dockerfile: {dockerfile}: no such file")
    context = Path(args.context) if args.context else dockerfile.parent
    authfile = Path(args.authfile) if args.authfile else None
    if authfile and not authfile.is_file():
        raise UsageError(f"--authfile: {authfile}: no such file")
    t0 = time.monotonic()
    custody = dict(args.custody) if args.custody_only else None
    res = plan(args.package, args.version, args.simple_url, args.highest_postfix, args.arches, custody=custody)
    if res.status is ImageStatus.NOTHING_PUBLISHED:
        _log(f"skipped: {res.reason}")
    elif args.dry_run:
        res.status = ImageStatus.DRY_RUN
        _log(f"dry run: would build {res.package} {res.version} for {', '.join(res.arches)} and push "
             + ", ".join(f"{r}:{t}" for r in args.repository or ["<repository>"] for t in res.tags))
    else:
        torch = args.torch_index_url or load().project["torch_index_url"]
        build_and_push(res, repositories=args.repository, dockerfile=dockerfile, context=context,
                       base_image=args.base_image, index_url=args.index_url or args.simple_url,
                       torch_index_url=torch, tls_verify=args.tls_verify, authfile=authfile, keep=args.keep)
        for p in res.pushed:
            _log(f"pushed {p.ref} {p.digest}")
    res.seconds["total"] = round(time.monotonic() - t0, 1)
    return res


def _custody_arg(value: str) -> tuple[str, str]:
    name, _, sha = value.partition("=")
    if not name.endswith(".whl") or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise argparse.ArgumentTypeError(f"{value!r}: expected WHEEL_FILE=SHA256 (64 lower-case hex digits)")
    return name, sha


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("image", help="build a package's runtime image (buildah) from its published wheels and push it",
                       description=describe(__doc__))
    p.add_argument("--package", required=True, help="package name from variants.json")
    p.add_argument("--version", type=version_arg, required=True,
                   help="upstream vLLM version (or a published version with postfix)")
    p.add_argument("--highest-postfix", action="store_true",
                   help="use the highest .postN of the version on the index (0.12.0 -> 0.12.0.post3)")
    p.add_argument("--simple-url", required=True, help="the index's simple API root: versions, arches, pip index")
    p.add_argument("--index-url", help="pip index inside the image (default: --simple-url)")
    p.add_argument("--torch-index-url", help="extra index with CPU torch (default: variants.json torch_index_url)")
    p.add_argument("--repository", action="append", default=[],
                   help="image repository to push to, registry/name without tag; repeat for several")
    p.add_argument("--arches", type=arches_arg,
                   help=f"only these arches (comma-separated, of {', '.join(ARCH_CHOICES)}; default: every arch "
                        "the index has)")
    p.add_argument("--base-image", default=DEFAULT_BASE, help=f"FROM image, multi-arch (default {DEFAULT_BASE})")
    p.add_argument("--dockerfile", default="docker/Dockerfile", help="the Dockerfile (default docker/Dockerfile)")
    p.add_argument("--context", help="build context (default: the Dockerfile's directory)")
    p.add_argument("--no-tls-verify", dest="tls_verify", action="store_false",
                   help="plain HTTP / unverified TLS for base pulls and pushes (a registry on 127.0.0.1)")
    p.add_argument("--authfile", help="containers auth.json with the registries' credentials")
    p.add_argument("--keep", action="store_true", help="keep the built images in local storage")
    p.add_argument("--custody", action="append", default=[], type=_custody_arg, metavar="FILE=SHA256",
                   help="a wheel this farm built, verified and uploaded (the master's custody ledger); repeat")
    p.add_argument("--custody-only", action="store_true",
                   help="use only the --custody wheels with that sha256 on the index; others are foreign")
    p.add_argument("--dry-run", action="store_true", help="resolve version, arches and tags; build nothing")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=_run)
