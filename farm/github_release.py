"""The GitHub release of one vLLM version: notes, wheels attached, never an asset twice.

``release_notes()`` writes the body from what the index holds (the wheels,
their sha256) and what this master's builds recorded (ISA found, verify,
smoke, provenance); ``publish()`` creates the release for the tag or updates
it, then uploads each wheel the release does not have yet, through PyGithub
(the maintained GitHub REST client: ``GET .../releases/tags/{tag}``,
``POST .../releases``, ``PATCH .../releases/{id}``, ``GET
.../releases/{id}/assets``, ``POST {upload_url}``).  Blocking: the
``github_release`` step runs it in a thread.  The token never appears in a
message or log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from vllm_cpu_build.provenance import Digest, ProvenanceError
from vllm_cpu_build.variants import Catalog

if TYPE_CHECKING:
    from github import Github  # imported where used: only the step that publishes needs PyGithub

WHEEL_TYPE = "application/zip"  # a wheel is a zip archive; GitHub serves assets with this type
_DIGEST_KEYS = tuple(f.name for f in fields(Digest))


@dataclass
class WheelRecord:
    """One published wheel and what the build that made it recorded (``-`` when no build of this master did)."""

    package: str
    arch: str
    filename: str
    url: str
    sha256: str
    version: str
    isa: str = "-"
    verify: str = "-"
    smoke: str = "-"
    floor: str = "-"  # the smoke on the package's oldest CPU: "Haswell-v4: passed", "native only"
    source_date_epoch: str = "-"  # the build's clock (the tag commit's time): what a rebuild must set
    rebuild_sha256: str = ""  # [build] reproduce: the sha256 of the rebuild the master compared ("" = none)
    build_url: str = ""
    # What the build recorded: upstream tag/commit, checks, build link, and the record's digest
    # (vllm_cpu_build.provenance.Digest: torch, torch_matches, platform, compiler).
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class Notes:
    tag: str
    name: str
    body: str
    prerelease: bool
    make_latest: bool


@dataclass
class PublishResult:
    url: str = ""
    created: bool = False
    updated: bool = False
    uploaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already attached with the same size
    conflicts: list[str] = field(default_factory=list)  # attached under that name with another size: left alone

    def summary(self) -> str:
        what = "created" if self.created else ("updated" if self.updated else "unchanged")
        parts = [f"release {what}"]
        if self.uploaded:
            parts.append(f"{len(self.uploaded)} wheel(s) attached")
        if self.present:
            parts.append(f"{len(self.present)} already attached")
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} CONFLICT(S): " + ", ".join(self.conflicts))
        return "; ".join(parts)


class GitHubReleaseError(RuntimeError):
    """The release could not be made; the message says why (never the token)."""


# Markdown's specials; "_" only where it could open or close emphasis (not inside a wheel name).
_MD_SPECIAL = re.compile(r"([\\`*\[\]()<>|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def md_text(value: object) -> str:
    """Text from a build or the index as one Markdown table cell: specials escaped, one line.

    Worker results and index listings are not ours to trust: a smoke reason
    must not become a link, an image or a new table row in the notes.
    """
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def md_code(value: object) -> str:
    """A code span of untrusted text: no backtick to close it, no pipe to split the cell, one line."""
    text = " ".join(str(value).replace("`", "'").split()).replace("|", "\\|")
    return f"`{text}`" if text else "-"


def md_link(label: object, url: str) -> str:
    """``[label](url)``, the URL only when it is http(s) and cannot leave the parentheses."""
    if not re.match(r"^https?://[^\s()<>]+$", url):
        return md_text(label)
    return f"[{md_text(label)}]({url})"


def release_tag(version: str) -> str:
    return f"v{version}"


def install_command(package: str, version: str, torch_index_url: str, index_url: str | None) -> str:
    extra = f" --index-url {index_url}" if index_url else ""
    return f"pip install {package}=={version}{extra} --extra-index-url {torch_index_url}"


def release_notes(upstream_version: str, versions: dict[str, str], records: list[WheelRecord], catalog: Catalog,
                  torch_index_url: str, index_url: str | None = None, images: dict[str, list[str]] | None = None,
                  newest: bool = True, upstream_tag: str = "") -> Notes:
    """The release for ``versions`` (package -> published version) of upstream ``upstream_version``.

    ``index_url``: pip's ``--index-url`` for the install commands (None for PyPI).
    ``images``: package -> image references pushed for it.  ``newest``: mark it GitHub's latest release.
    """
    top = max((Version(v) for v in versions.values()), default=Version(upstream_version))
    tag = release_tag(str(top))
    lines = [f"CPU builds of vLLM {upstream_version}"
             + (f" (upstream tag {md_code(upstream_tag)})" if upstream_tag else "") + ", one package per CPU family.",
             "Pick yours with `pip install vllm-cpu-detect && vllm-cpu-detect`.", "",
             "## Install", "", "| package | for CPUs | install |", "|---|---|---|"]
    for v in catalog.variants:
        if v.package in versions:
            cmd = install_command(v.package, versions[v.package], torch_index_url, index_url)
            lines.append(f"| `{v.package}` | {v.target_cpus} | `{cmd}` |")
    rebuilt = any(r.rebuild_sha256 for r in records)
    lines += ["", "## Wheels", "", "Floor: the smoke test again on the oldest CPU the package promises (emulated "
              "with QEMU; \"native only\" where QEMU cannot be that CPU). SOURCE_DATE_EPOCH: the time the build "
              "wrote into the wheel; rebuild it from the tag with the same value and `vllm-cpu-build compare` "
              "shows it is the same bytes."
              + (" Rebuild sha256: the same wheel built again on another worker before upload." if rebuilt else ""),
              "", "| package | arch | wheel | ISA found | verify | smoke | floor | SOURCE_DATE_EPOCH | sha256 |"
              + (" rebuild sha256 |" if rebuilt else ""), "|---" * (10 if rebuilt else 9) + "|"]
    for r in records:
        cells = [md_code(r.package), md_text(r.arch), md_link(r.filename, r.url), md_text(r.isa), md_text(r.verify),
                 md_text(r.smoke), md_text(r.floor), md_text(r.source_date_epoch), md_code(r.sha256 or "-")]
        if rebuilt:
            cells.append(md_code(r.rebuild_sha256) if r.rebuild_sha256 else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if images:
        lines += ["", "## Container images", ""]
        for pkg, refs in images.items():
            lines.append(f"- {md_code(pkg)}: " + ", ".join(md_code(ref) for ref in refs))
    lines += ["", "## Provenance", "", "One record per wheel: the upstream source, the pinned ISA switches, what the "
              "audit found and the build that made it.", "", "```json",
              json.dumps([_provenance_entry(r) for r in records], indent=2, sort_keys=True),
              "```", ""]
    pre = top.is_prerelease or top.is_devrelease
    return Notes(tag=tag, name=f"vLLM CPU {top}", body="\n".join(lines), prerelease=pre,
                 make_latest=newest and not pre)


def _provenance_entry(r: WheelRecord) -> dict[str, Any]:
    """One wheel's provenance in the notes; the build record's digest is read through its type."""
    entry = {"wheel": r.filename, "sha256": r.sha256, "package": r.package, "version": r.version, "arch": r.arch,
             **r.provenance}
    digest = {k: r.provenance[k] for k in _DIGEST_KEYS if k in r.provenance}
    if digest:  # built by this master: the digest BuildWheel wrote
        try:
            entry.update(Digest.from_json(digest, f"{r.filename} provenance").to_json())
        except ProvenanceError as exc:  # shown, not hidden: the notes still go out
            entry["provenance_error"] = str(exc)
    return entry


def _client(api_url: str, token: str, timeout: int, retries: int, throttle: bool) -> Github:
    from github import Auth, Github, GithubRetry

    kwargs: dict[str, Any] = {} if throttle else {"seconds_between_requests": None, "seconds_between_writes": None}
    # GithubRetry retries 5xx and rate-limit 403s (GET and POST) with backoff.
    return Github(auth=Auth.Token(token), base_url=api_url.rstrip("/"), timeout=timeout, lazy=True,
                  retry=GithubRetry(total=retries, backoff_factor=0.5), **kwargs)


def _explain(exc: Exception, repository: str) -> GitHubReleaseError:
    from github import BadCredentialsException, GithubException, UnknownObjectException

    if isinstance(exc, BadCredentialsException):
        return GitHubReleaseError("GitHub refused the token (401 Bad credentials): check the token secret")
    if isinstance(exc, UnknownObjectException):
        return GitHubReleaseError(f"GitHub answered 404 for {repository}: no such repository, "
                                  "or the token cannot see it")
    if isinstance(exc, GithubException):
        msg = exc.data.get("message") if isinstance(exc.data, dict) else str(exc.data)
        hint = " (the token needs contents: write)" if exc.status == 403 else ""
        return GitHubReleaseError(f"GitHub answered {exc.status}: {msg}{hint}")
    return GitHubReleaseError(f"GitHub not reachable: {type(exc).__name__}: {exc}")


def publish(api_url: str, token: str, repository: str, notes: Notes, assets: list[Path],
            timeout: int = 60, retries: int = 4, throttle: bool = True,
            log: Callable[[str], None] = lambda _msg: None) -> PublishResult:
    """Create or update the release ``notes.tag`` in ``repository`` and attach the ``assets`` it lacks.

    Idempotent: a re-run changes the body only when it differs and uploads
    only names not attached yet.  An asset of the same name but another size
    is reported as a conflict and left alone (a published wheel never changes).
    """
    import github
    from github import GithubException

    if not token:
        raise GitHubReleaseError("no GitHub token (the token secret is empty)")
    res = PublishResult()
    gh = _client(api_url, token, timeout, retries, throttle)
    try:
        repo = gh.get_repo(repository)  # lazy: no request until a release is asked for
        try:
            rel = repo.get_release(notes.tag)
        except github.UnknownObjectException:
            rel = None
        if rel is None:
            log(f"creating release {notes.tag} in {repository}")
            rel = repo.create_git_release(notes.tag, name=notes.name, message=notes.body,
                                          prerelease=notes.prerelease,
                                          make_latest="true" if notes.make_latest else "false")
            res.created = True
        elif (rel.body or "") != notes.body or rel.name != notes.name or rel.prerelease != notes.prerelease:
            log(f"updating release {notes.tag} (id {rel.id})")
            rel = rel.update_release(name=notes.name, message=notes.body, prerelease=notes.prerelease,
                                     draft=False, make_latest="true" if notes.make_latest else "false")
            res.updated = True
        else:
            log(f"release {notes.tag} is up to date")
        res.url = rel.html_url
        attached = {a.name: a.size for a in rel.get_assets()}
        for path in assets:
            size = path.stat().st_size
            if path.name in attached:
                (res.present if attached[path.name] == size else res.conflicts).append(path.name)
                continue
            log(f"uploading {path.name} ({size} bytes)")
            try:
                rel.upload_asset(str(path), content_type=WHEEL_TYPE, name=path.name)
            except GithubException as exc:
                # A retried upload whose first try did arrive: 422 already_exists. Look again.
                if exc.status != 422:
                    raise
                again = {a.name: a.size for a in rel.get_assets()}
                if again.get(path.name) != size:
                    raise
            res.uploaded.append(path.name)
    except GitHubReleaseError:
        raise
    except Exception as exc:  # PyGithub, requests and urllib3 errors: one clear line
        raise _explain(exc, repository) from None
    finally:
        gh.close()
    return res
