"""``vllm-cpu-build patch``: turn an upstream vLLM tree into one variant's source.

Edits, each checked against an anchor in the upstream file (a missing anchor
is exit 1 naming the file and the expected text, never a silent no-op):

* ``pyproject.toml`` ``[project]``: name, description, keywords, Python
  classifiers, readme (README.md rendered from variants.json); the PEP 639
  license metadata is kept and checked.
* ``setup.py``: no ``+cpu`` local version: where the release has
  ``VLLM_VERSION_OVERRIDE`` the build env sets it (and the anchor is checked),
  otherwise the ``version += f"{sep}cpu"`` line is neutralised.
* ``cmake/cpu_extension.cmake``: reads the pinned ``vllm_cpu_pinned_cpuinfo.txt``
  instead of the build host's ``/proc/cpuinfo``; the ISA switches the release
  line claims are checked against what the file reads.
* ``vllm/__init__.py``: the CPU platform fix (vllm_cpu_build/platform_fix.py).
* ``.vllm-cpu-build.json``: stamp for the build step.

Every edit converges to the wanted state, so a second run changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from vllm_cpu_build import jsondoc, platform_fix, specs, upstream
from vllm_cpu_build.cli import ARCH_CHOICES, arch_arg, version_arg
from vllm_cpu_build.enums import Arch
from vllm_cpu_build.errors import StepFailed, UsageError
from vllm_cpu_build.helptext import describe
from vllm_cpu_build.hostcpu import host_arch
from vllm_cpu_build.results import PatchResult
from vllm_cpu_build.variants import ARCHES, Variant, load

STAMP = ".vllm-cpu-build.json"
PINNED_CPUINFO = "cmake/vllm_cpu_pinned_cpuinfo.txt"
CMAKE = "cmake/cpu_extension.cmake"

CMAKE_BEGIN = "# >>> vllm-cpu-build: pinned ISA >>>"
CMAKE_END = "# <<< vllm-cpu-build: pinned ISA <<<"
# Code lines only: a comment may quote the anchor.
_CAT_ORIG = re.compile(r"^([ \t]*)execute_process\(\s*COMMAND\s+cat\s+/proc/cpuinfo\b", re.M)
_CAT_PINNED = 'execute_process(COMMAND cat "${VLLM_CPU_PINNED_CPUINFO}"'
_CPU_SUFFIX = re.compile(r'^(?P<indent>[ \t]*)version\s*\+=\s*f(?P<q>["\'])\{sep\}cpu(?P=q)[ \t]*(?:#.*)?$', re.M)
_NEUTRALISED = "pass  # vllm-cpu-build: no +cpu local version (PyPI refuses local versions)"
_CMAKE_ARCH = {"x86_64": "x86_64|AMD64|amd64", "aarch64": "aarch64|arm64|ARM64"}


@dataclass(frozen=True)
class Stamp:
    """What ``patch`` made of the tree, for ``build`` (``.vllm-cpu-build.json``)."""

    variant: str
    arch: Arch
    version: str  # upstream's
    postfix: str
    full_version: str  # the wheel's
    release_line: str
    python_versions: list[str]
    pinned_flags: list[str]
    env: dict[str, str]

    def dumps(self) -> str:
        return json.dumps(jsondoc.dump(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, src: Path) -> Stamp:
        """The stamp of a patched tree; UsageError when there is none or it is damaged."""
        path = src / STAMP
        if not path.is_file():
            raise UsageError(f"{src}: not patched (no {STAMP}); run `vllm-cpu-build patch` first")
        try:
            return jsondoc.load(cls, json.loads(path.read_text()), STAMP)
        except (json.JSONDecodeError, jsondoc.DocumentError) as exc:
            raise UsageError(f"{path}: damaged stamp ({exc}); patch the tree again") from None


class AnchorMissing(StepFailed):
    """An upstream file lacks the text an edit relies on (exit 1: upstream changed, nothing was written)."""

    def __init__(self, file: str, expected: str, detail: str = ""):
        self.file, self.expected = file, expected
        super().__init__(f"{file}: expected {expected}" + (f" ({detail})" if detail else ""),
                         file=file, expected=expected)


@dataclass
class Tree:
    """The files of one source tree, read once, written only when every edit succeeded."""

    root: Path
    original: dict[str, bytes] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)

    def read(self, rel: str, *, required: bool = True) -> str:
        if rel not in self.text:
            p = self.root / rel
            if not p.is_file():
                if not required:
                    return ""
                raise AnchorMissing(rel, "the file to exist", "not an upstream vLLM tree?")
            self.original[rel] = p.read_bytes()
            self.text[rel] = self.original[rel].decode()
        return self.text[rel]

    def set(self, rel: str, text: str) -> None:
        self.read(rel, required=False)
        self.text[rel] = text

    def changed(self) -> list[str]:
        return [r for r, t in self.text.items() if t.encode() != self.original.get(r)]

    def write(self) -> None:
        for rel in self.changed():
            p = self.root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(self.text[rel])


# --- version and arch --------------------------------------------------------


def detect_version(src: Path) -> str:
    """Upstream version of a tree: PKG-INFO (sdist) or the exact ``vX.Y.Z`` git tag."""
    pkg_info = src / "PKG-INFO"
    if pkg_info.is_file():
        m = re.search(r"^Version:\s*(\S+)\s*$", pkg_info.read_text(errors="replace"), re.M)
        if m:
            return m.group(1)
    if (src / ".git").exists():
        out = subprocess.run(["git", "-C", str(src), "describe", "--tags", "--exact-match", "--match", "v*"],
                             capture_output=True, text=True, check=False)
        if out.returncode == 0:
            return out.stdout.strip().removeprefix("v")
        raise UsageError(f"{src}: HEAD is not at a release tag vX.Y.Z ({out.stderr.strip()}); pass --version")
    raise UsageError(f"{src}: no PKG-INFO and not a git checkout; pass --version")


def full_version(version: str, postfix: str) -> str:
    try:
        return specs.final_version(version, postfix)
    except specs.SpecError as exc:
        raise UsageError(f"--version / --version-postfix: {exc}") from None


# --- edits ------------------------------------------------------------------


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _toml_array(items: list[str]) -> str:
    return "[\n" + "".join(f"    {_toml_str(i)},\n" for i in items) + "]"


def _project_table(text: str) -> tuple[int, int]:
    m = re.search(r"^\[project\][ \t]*$", text, re.M)
    if not m:
        raise AnchorMissing("pyproject.toml", "a [project] table")
    nxt = re.search(r"^\[", text[m.end():], re.M)
    return m.end(), (m.end() + nxt.start()) if nxt else len(text)


def _set_key(text: str, key: str, value: str, *, array: bool = False, insert_after: str | None = None) -> str:
    start, end = _project_table(text)
    body = text[start:end]
    pat = (rf"^{key}[ \t]*=[ \t]*\[.*?\][ \t]*$" if array else rf'^{key}[ \t]*=[ \t]*"[^"\n]*"[ \t]*$')
    m = re.search(pat, body, re.M | re.S)
    line = f"{key} = {value}"
    if m:
        body = body[:m.start()] + line + body[m.end():]
    elif insert_after:
        a = re.search(rf"^{insert_after}[ \t]*=.*$", body, re.M)
        if not a:
            raise AnchorMissing("pyproject.toml", f"{insert_after} = ... in [project]")
        body = body[:a.end()] + "\n" + line + body[a.end():]
    else:
        shape = f"{key} = [...]" if array else f'{key} = "..."'
        raise AnchorMissing("pyproject.toml", f"{shape} in [project]")
    return text[:start] + body + text[end:]


def patch_pyproject(tree: Tree, variant: Variant, keywords: list[str], pythons: list[str]) -> list[str]:
    rel = "pyproject.toml"
    text = tree.read(rel)
    data = tomllib.loads(text)
    project = data.get("project")
    if not isinstance(project, dict):
        raise AnchorMissing(rel, "a [project] table")
    for key in ("name", "description", "readme", "requires-python", "classifiers"):
        if key not in project:
            raise AnchorMissing(rel, f"{key} in [project]")
    license_ = project.get("license")
    if not isinstance(license_, str):
        raise AnchorMissing(rel, 'license = "<SPDX expression>" in [project] (PEP 639)')
    for pattern in project.get("license-files", []):
        if not any(tree.root.glob(pattern)):
            raise AnchorMissing(rel, f"license-files {pattern!r} to match a file in the tree")
    classifiers = [c for c in project["classifiers"]
                   if not re.match(r"Programming Language :: Python :: 3\.\d+$", c)
                   and not c.startswith("License ::")]  # PEP 639: the expression is the licence
    at = next((i for i, c in enumerate(project["classifiers"]) if c.startswith("Programming Language")), 0)
    classifiers[at:at] = [f"Programming Language :: Python :: {p}" for p in pythons]
    text = _set_key(text, "name", _toml_str(variant.package))
    text = _set_key(text, "description", _toml_str(variant.summary))
    text = _set_key(text, "readme", _toml_str("README.md"))
    text = _set_key(text, "keywords", _toml_array(keywords), array=True, insert_after="description")
    text = _set_key(text, "classifiers", _toml_array(classifiers), array=True)
    # Prove the edit: the file still parses and says exactly what we meant.
    got = tomllib.loads(text)["project"]
    want = {"name": variant.package, "description": variant.summary, "readme": "README.md",
            "keywords": keywords, "classifiers": classifiers, "license": license_}
    bad = [k for k, v in want.items() if got.get(k) != v]
    if bad:  # pragma: no cover - a bug in the editing above
        raise AnchorMissing(rel, "an editable [project] table", f"edit of {', '.join(bad)} did not take")
    tree.set(rel, text)
    return [f"{rel}: name={variant.package}, description, keywords, classifiers for Python "
            f"{', '.join(pythons)}, readme=README.md (license {license_} kept)"]


def patch_readme(tree: Tree, variant: Variant) -> list[str]:
    from vllm_cpu_build import readme

    tree.set("README.md", readme.render(variant))
    return ["README.md: the variant's package README"]


def patch_setup(tree: Tree, line: upstream.ReleaseLine) -> list[str]:
    rel = "setup.py"
    text = tree.read(rel)
    notes = []
    if line.version_override:
        if not re.search(r"""os\.(?:getenv|environ\.get)\(\s*["']VLLM_VERSION_OVERRIDE["']""", text):
            raise AnchorMissing(rel, 'os.getenv("VLLM_VERSION_OVERRIDE")',
                                f"release line {line.name} is recorded as having it")
        notes.append("VLLM_VERSION_OVERRIDE")
        if line.skip_version_suffix:
            if "VLLM_SKIP_VERSION_SUFFIX" not in text:
                raise AnchorMissing(rel, "envs.VLLM_SKIP_VERSION_SUFFIX",
                                    f"release line {line.name} is recorded as having it")
            notes.append("VLLM_SKIP_VERSION_SUFFIX")
        return [f"{rel}: unchanged; the build env sets {' and '.join(notes)} (no +cpu)"]
    n = len(_CPU_SUFFIX.findall(text))
    if n == 0:
        if _NEUTRALISED in text:
            return [f"{rel}: +cpu suffix line already neutralised"]
        raise AnchorMissing(rel, 'a line  version += f"{sep}cpu"', "the +cpu local version must be removed")
    if n > 1:
        raise AnchorMissing(rel, 'exactly one line  version += f"{sep}cpu"', f"found {n}")
    tree.set(rel, _CPU_SUFFIX.sub(lambda m: m.group("indent") + _NEUTRALISED, text))
    return [f'{rel}: neutralised version += f"{{sep}}cpu" (no +cpu local version)']


def _cmake_block(variant: Variant, arch: Arch, line: upstream.ReleaseLine, flags: list[str],
                 min_gcc: str | None) -> str:
    lines = [
        CMAKE_BEGIN,
        "# The build host's /proc/cpuinfo must not choose the wheel's ISA (upstream",
        "# turns on AVX-512/VNNI/BF16/AMX or +bf16/i8mm when the host has them):",
        "# read the variant's flags, written by `vllm-cpu-build patch`, instead.",
        'set(VLLM_CPU_PINNED_CPUINFO "${CMAKE_CURRENT_LIST_DIR}/vllm_cpu_pinned_cpuinfo.txt")',
        'if (NOT EXISTS "${VLLM_CPU_PINNED_CPUINFO}")',
        '    message(FATAL_ERROR "vllm-cpu-build: ${VLLM_CPU_PINNED_CPUINFO} is missing; run vllm-cpu-build patch")',
        "endif()",
        f'if (NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^({_CMAKE_ARCH[arch]})$")',
        f'    message(FATAL_ERROR "vllm-cpu-build: tree patched for {arch}, '
        'building for ${CMAKE_SYSTEM_PROCESSOR}")',
        "endif()",
        f'message(STATUS "vllm-cpu-build: ISA pinned for {variant.package} ({arch}): '
        f'CPU flags \\"{" ".join(flags)}\\" from ${{VLLM_CPU_PINNED_CPUINFO}}, not /proc/cpuinfo")',
    ]
    f = variant.isa_flags
    if min_gcc and arch == "x86_64" and not line.unified_x86 and (
            f["avx512vnni"] or f["avx512bf16"] or f["amxbf16"]):
        # Upstream silently drops VNNI/BF16/AMX below this compiler version; fail instead.
        lines += [
            'if (NOT (CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND '
            f'CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL {min_gcc}))',
            f'    message(FATAL_ERROR "vllm-cpu-build: {variant.package} needs gcc/g++ >= {min_gcc} '
            '(got ${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}); upstream would drop VNNI/BF16/AMX")',
            "endif()",
        ]
    lines.append(CMAKE_END)
    return "\n".join(lines) + "\n"


def check_switches(text: str, line: upstream.ReleaseLine) -> None:
    """The ISA switches of ``line`` are exactly those the tree's cmake reads."""
    read = set(re.findall(r"\$ENV\{(VLLM_CPU_\w+)\}", text))
    claimed = set(line.switches())
    missing = sorted(claimed - read)
    if missing:
        raise AnchorMissing(CMAKE, " and ".join(f"$ENV{{{m}}}" for m in missing),
                            f"vllm_cpu_build/upstream.py release line {line.name} relies on it")
    unknown = sorted(read - claimed - upstream.FOREIGN_SWITCHES)
    if unknown:
        raise AnchorMissing(CMAKE, f"no ISA switches beyond {', '.join(sorted(claimed)) or 'none'}",
                            f"it also reads {', '.join(unknown)}: teach vllm_cpu_build/upstream.py "
                            f"release line {line.name} about them")


def patch_cmake(tree: Tree, variant: Variant, arch: Arch, line: upstream.ReleaseLine) -> list[str]:
    text = tree.read(CMAKE)
    check_switches(text, line)
    flags = upstream.pinned_flags(variant, arch)
    # The compiler version below which upstream's ISA logic quietly turns extensions off.
    m = re.search(r"CMAKE_CXX_COMPILER_VERSION\s+VERSION_GREATER_EQUAL\s+(\d+(?:\.\d+)*)", text)
    block = _cmake_block(variant, arch, line, flags, m.group(1) if m else None)
    n_orig = len(_CAT_ORIG.findall(text))
    if n_orig + text.count(_CAT_PINNED) != 1:
        raise AnchorMissing(CMAKE, "exactly one  execute_process(COMMAND cat /proc/cpuinfo",
                            f"found {n_orig} unpatched, {text.count(_CAT_PINNED)} patched")
    if CMAKE_BEGIN in text:
        if text.count(CMAKE_BEGIN) != 1 or text.count(CMAKE_END) != 1:
            raise AnchorMissing(CMAKE, "one pinned-ISA block", "markers damaged; restore the upstream file")
        start = text.rfind("\n", 0, text.index(CMAKE_BEGIN)) + 1
        stop = text.index("\n", text.index(CMAKE_END)) + 1
        indent = text[start:text.index(CMAKE_BEGIN)]
        text = text[:start] + text[stop:]
    else:
        indent = None
    if n_orig:
        text = _CAT_ORIG.sub(lambda m: m.group(1) + _CAT_PINNED, text)
    at = text.rfind("\n", 0, text.index(_CAT_PINNED)) + 1
    indent = text[at:text.index(_CAT_PINNED)] if indent is None else indent
    text = text[:at] + "".join(indent + ln + "\n" for ln in block.splitlines()) + text[at:]
    tree.set(CMAKE, text)
    tree.set(PINNED_CPUINFO, upstream.pinned_cpuinfo(variant, arch))
    return [f"{CMAKE}: reads {PINNED_CPUINFO} instead of /proc/cpuinfo",
            f"{PINNED_CPUINFO}: {upstream.CPUINFO_KEY[arch]}: {' '.join(flags)}"]


_PLATFORM_CHECK = (re.compile(r"""version\(\s*["']vllm["']\s*\)"""), re.compile(r"""["']cpu["']"""))


def patch_init(tree: Tree, line: upstream.ReleaseLine) -> list[str]:
    plat = tree.read("vllm/platforms/__init__.py")
    if not all(p.search(plat) for p in _PLATFORM_CHECK):
        raise AnchorMissing("vllm/platforms/__init__.py", 'a CPU check on version("vllm") containing "cpu"',
                            "the platform fix relies on it")
    rel = "vllm/__init__.py"
    try:
        tree.set(rel, platform_fix.inject(tree.read(rel), line.runtime_target_device))
    except platform_fix.FixError as exc:
        raise AnchorMissing(rel, "a Python module to inject the CPU platform fix into", str(exc)) from None
    return [f"{rel}: CPU platform fix (writes vllm-0.0.0.dist-info with version +cpu on first import)"]


# --- driver -----------------------------------------------------------------


def patch_tree(src: Path, variant: Variant, arch: Arch, version: str, postfix: str = "",
               python_versions: str = "auto") -> PatchResult:
    """Patch ``src`` in place.  Raises UsageError (bad input) or AnchorMissing (upstream changed)."""
    if arch not in variant.arches:
        raise UsageError(f"{variant.package} is not built for {arch} (only {', '.join(variant.arches)})")
    full = full_version(version, postfix)
    try:
        line = upstream.release_line(version)
        env = upstream.build_env(variant, arch, version, full[len(str(Version(version))):])
    except upstream.UnsupportedRelease as exc:
        raise UsageError(str(exc)) from None
    tree = Tree(src)
    requires = tomllib.loads(tree.read("pyproject.toml")).get("project", {}).get("requires-python")
    if not requires:
        raise AnchorMissing("pyproject.toml", "requires-python in [project]")
    try:
        pythons = specs.pythons_for(requires, python_versions, strict=False)
        asked = specs.parse_pythons(python_versions) or []
    except specs.SpecError as exc:
        raise UsageError(f"--python-versions: {exc}") from None
    dropped = [p for p in asked if p not in pythons]
    if dropped:
        print(f"warning: Python {', '.join(dropped)} not allowed by requires-python {requires!r}; skipped",
              file=sys.stderr)
    catalog = load()
    keywords = list(dict.fromkeys([*catalog.project["keywords"], *variant.keywords]))
    notes: list[str] = []
    notes += patch_pyproject(tree, variant, keywords, pythons)
    notes += patch_readme(tree, variant)
    notes += patch_setup(tree, line)
    notes += patch_cmake(tree, variant, arch, line)
    notes += patch_init(tree, line)
    stamp = Stamp(variant.package, arch, str(Version(version)), postfix, full, line.name, pythons,
                  upstream.pinned_flags(variant, arch), env)
    tree.set(STAMP, stamp.dumps())
    changed = set(tree.changed())
    # Report only what this run changed; a re-run reports nothing.
    changes = [n for n in notes if n.split(":", 1)[0] in changed]
    if STAMP in changed:
        changes.append(f"{STAMP}: build stamp")
    tree.write()
    return PatchResult(variant.package, arch, str(Version(version)), full, line.name, pythons, changes,
                       upstream.pinned_flags(variant, arch), env)


def run(args: argparse.Namespace) -> PatchResult:
    src = Path(args.src)
    if not src.is_dir():
        raise UsageError(f"--src {src}: not a directory")
    variant = load().get(args.variant)
    name = args.arch or host_arch()
    if name not in ARCHES:
        raise UsageError(f"--arch: this host is {name}; known: {', '.join(ARCHES)}")
    arch = Arch(name)
    version = args.version or detect_version(src)
    out = sys.stderr if args.json else sys.stdout
    res = patch_tree(src, variant, arch, version, args.version_postfix or "", args.python_versions)
    print(f"patch {res.variant} ({res.arch}) on vLLM {res.version} -> {res.full_version}, "
          f"upstream recipe {res.release_line} (for {upstream.release_line(res.version).span}), "
          f"Python {', '.join(res.python_versions)}", file=out)
    for c in res.changes:
        print(f"  {c}", file=out)
    if not res.changes:
        print("  nothing to change: the tree is already patched for this variant", file=out)
    print(f"  ISA pinned: {' '.join(res.pinned_flags)}", file=out)
    return res


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("patch", help="patch an upstream vLLM tree for one variant",
                       description=describe(__doc__, "Exit 1 when an upstream anchor is missing (nothing is "
                                                     "written then)."))
    p.add_argument("--variant", required=True, help="package name from variants.json")
    p.add_argument("--src", required=True, help="upstream source tree (sdist or git checkout)")
    p.add_argument("--arch", type=arch_arg, help=f"target arch, one of {', '.join(ARCH_CHOICES)} (default: this host)")
    p.add_argument("--version", type=version_arg, help="upstream version (default: from PKG-INFO or the git tag)")
    p.add_argument("--version-postfix", default="", help=".postN, .devN, aN, bN or rcN")
    p.add_argument("--python-versions", default="auto", help="auto | 3.11 | 3.10,3.12 | 3.10-3.13")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)
