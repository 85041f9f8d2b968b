"""The text of the release announcements: pure functions over data-API build dicts.

``format_release`` / ``format_variant`` (mail subject and body) and
``release_irc_line`` / ``variant_irc_line`` (one IRC line each), and
``wants`` (which finished builds the settings' events ask for).  No
master here: ``master/notify.py`` fetches the builds and delivers the text
through Buildbot's reporters; ``master/readiness_mail.py`` is the readiness
builds' mail.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from farm.custody import FOREIGN_PROPERTY, from_property, mail_lines
from farm.logscan import log_excerpt
from farm.report import child_row, flatten, format_table, result_name
from farm.states import BAD, OK, Result, label

RELEASE_KIND, VARIANT_KIND, READINESS_KIND = "release", "variant", "readiness"
Build = dict[str, Any]  # a data-API build dict (properties, steps, ...), or ``report.children``'s child

# --------------------------------------------------------------------------- pure text


def wants(events: Iterable[str], kind: str | None, results: int | None) -> bool:
    """Whether ``events`` (settings' mail_events / irc_events) ask for this finished build."""
    result = Result.of(results)
    if result is Result.RETRY:  # interrupted (a master restart, a lost worker): it runs again and is announced then
        return False
    ev = set(events)
    if kind == RELEASE_KIND:
        return "release_finished" in ev or ("release_failed" in ev and result in BAD)
    if kind == VARIANT_KIND:
        return ("variant_failed" in ev and result in BAD) or ("variant_warnings" in ev and result is Result.WARNINGS)
    return False


def _release_name(props: dict[str, Any]) -> str:
    return f"vLLM {props.get('version', '?')}{props.get('postfix') or ''}"


def _mode(props: dict[str, Any]) -> str:
    if props.get("dry_run"):
        return "dry run"
    if props.get("skip_upload"):
        return "no upload"
    return ""


def _attention(rows: list[dict[str, Any]]) -> list[str]:
    """What a release engineer must look at: failures first, builds waiting for a worker, skipped smoke tests."""
    out = []
    for r in rows:
        where = f"{r['variant']} {r['arch']}"
        if r["build_result"] not in OK and not r["waiting"]:
            out.append(f"{where}: {r['result'].upper()}" + (f": {r['state']}" if r["state"] else ""))
    for r in rows:
        if r["waiting"]:
            out.append(f"{r['variant']} {r['arch']}: {r['state']}: still queued; it builds when such a worker "
                       "connects and is announced on its own")
    for r in rows:
        if "skipped" in r["smoke"]:
            out.append(f"{r['variant']} {r['arch']}: smoke test skipped (this worker's CPU lacks the ISA): "
                       "the wheel passed verify but was never run")
    return out


def _failed_steps(build: Build) -> list[str]:
    return [f"{s['name']}: {s.get('state_string', '')}" for s in build.get("steps") or []
            if s.get("results") in BAD]


def format_release(release: Build, children: list[Build], build_url: str, title: str,
                   upload_url: str) -> tuple[str, str] | None:
    """(subject, body) of the mail for a finished release build; None when there is nothing to say.

    ``release``: data-API build dict (properties, optionally steps); ``children``:
    the variant builds it triggered, each a build dict plus ``builder`` and ``url``
    (a request still waiting has ``complete`` False).
    """
    props = flatten(release.get("properties"))
    results = release.get("results")
    rows = [child_row(c) for c in sorted(children, key=lambda c: (flatten(c.get("properties")).get("variant", ""),
                                                                  flatten(c.get("properties")).get("arch", "")))]
    foreign = from_property(props.get(FOREIGN_PROPERTY))
    if not rows and results in OK and not foreign:
        return None  # everything was already published: not a release, no mail
    ok = sum(1 for r in rows if r["build_result"] in OK)
    skipped = [f"{r['variant']} {r['arch']}" for r in rows if "skipped" in r["smoke"]]
    mode = _mode(props)
    name = _release_name(props)
    status = label(results).upper()
    subject = f"[{title}] {name}{f' ({mode})' if mode else ''}: {status}"
    if rows:
        subject += f", {ok}/{len(rows)} variant builds ok"
    else:
        failed = [s["name"] for s in release.get("steps") or [] if s.get("results") in BAD]
        subject += " before any variant build" + (f" (at {failed[0]})" if failed else "")
    waiting = [r for r in rows if r["waiting"]]
    if waiting:
        subject += f", {len(waiting)} waiting for a worker"
    if skipped:
        subject += f", smoke skipped on {len(skipped)}"
    subject += f", {len(foreign)} FOREIGN file(s) on the index" if foreign else ""
    lines = [
        f"{name} release {status}" + (f" ({mode})" if mode else ""),
        f"Tag: {props.get('tag', '?')}    release build: {build_url}",
    ]
    if props.get("dry_run"):
        lines.append("Upload: none (dry run: built, verified and smoke-tested only)")
    elif props.get("skip_upload"):
        lines.append("Upload: skipped on request")
    else:
        lines.append(f"Upload: {upload_url}")
    if props.get("reason"):
        lines.append(f"Reason: {props['reason']}")
    lines += ["", *mail_lines(props.get(FOREIGN_PROPERTY))]
    if rows:
        lines.append(format_table(rows, ("variant", "arch", "result", "verify", "smoke", "uploaded")).rstrip())
        lines.append("")
        attention = _attention(rows)
        if attention:
            lines.append("Needs attention:")
            lines += [f"  - {a}" for a in attention]
            lines.append("")
        lines.append("Per variant build:")
        for r in rows:
            lines.append(f"  {r['variant']} {r['arch']}: {r['result']}")
            if r["url"]:
                lines.append(f"    build:   {r['url']}")
            lines.append(f"    wheel:   {r['wheel']}")
            lines += [f"    verify:  {v}" for v in r["verify_detail"]] or ["    verify:  -"]
            lines += [f"    smoke:   {s}" for s in r["smoke_detail"]] or ["    smoke:   -"]
            lines += [f"    upload:  {u}" for u in r["uploaded_urls"]] or [f"    upload:  {r['uploaded']}"]
    else:
        lines.append("No variant build was started.")
        lines += [f"  failed step {s}" for s in _failed_steps(release)]
        if release.get("state_string"):
            lines.append(f"  build state: {release['state_string']}")
    return subject, "\n".join(lines) + "\n"


def format_variant(build: Build, builder: str, build_url: str, title: str,
                   release_url: str | None, failed_log: tuple[str, str] | None = None,
                   after_release: bool = False) -> tuple[str, str]:
    """(subject, body) of the mail for one variant × arch build that failed or had warnings.

    ``failed_log`` is (log name, text) of the first failed step: its
    compiler errors and last lines go in the mail, which then tells what
    broke without a click.  ``after_release``: the build finished after its
    release was reported (it waited for a worker), so this mail is its only
    announcement, whatever its result.
    """
    props = flatten(build.get("properties"))
    row = child_row({**build, "url": build_url})
    status = result_name(build).upper()
    subject = (f"[{title}] {props.get('variant', builder)} {props.get('arch', '')} {status} "
               f"for {_release_name(props)}" + (" (after its release)" if after_release else ""))
    state = build.get("state_string") or ""
    lines = [
        f"{subject[len(title) + 3:]}" + (f" ({_mode(props)})" if _mode(props) else ""),
        f"Builder: {builder}    build: {build_url}",
    ]
    if release_url:
        lines.append(f"Release build: {release_url}"
                     + (" (finished earlier, reporting this build as waiting for a worker)" if after_release else ""))
    if state:
        lines.append(f"State: {state}")
    lines.append("")
    steps = _failed_steps(build)
    if steps:
        lines.append("Failed steps:")
        lines += [f"  - {s}" for s in steps]
    if failed_log:
        lines += log_lines(*failed_log)
    warn = [f"{s['name']}: {s.get('state_string', '')}" for s in build.get("steps") or []
            if s.get("results") == Result.WARNINGS]
    if warn:
        lines.append("Warnings:")
        lines += [f"  - {s}" for s in warn]
    lines += ["", f"wheel:   {row['wheel']}"]
    lines += [f"verify:  {v}" for v in row["verify_detail"]] or ["verify:  -"]
    lines += [f"smoke:   {s}" for s in row["smoke_detail"]] or ["smoke:   -"]
    lines.append(f"upload:  {', '.join(row['uploaded_urls']) or row['uploaded']}")
    return subject, "\n".join(lines) + "\n"


def release_irc_line(release: Build, children: list[Build], build_url: str) -> str | None:
    """One IRC line for a finished release; None when it had nothing to build and succeeded."""
    props = flatten(release.get("properties"))
    results = release.get("results")
    rows = [child_row(c) for c in children]
    if not rows and results in OK:
        return None
    ok = sum(1 for r in rows if r["build_result"] in OK)
    mode = _mode(props)
    text = (f"{_release_name(props)} release {label(results) if results is not None else 'unfinished'}"
            f"{f' ({mode})' if mode else ''}: ")
    text += f"{ok}/{len(rows)} variant builds ok" if rows else "before any variant build"
    bad = sorted(f"{r['variant']} {r['arch']}" for r in rows
                 if r["build_result"] not in OK and not r["waiting"])
    waiting = sorted(f"{r['variant']} {r['arch']}" + (f" since {r['since']}" if r["since"] else "")
                     for r in rows if r["waiting"])
    skipped = sorted(f"{r['variant']}" for r in rows if "skipped" in r["smoke"])
    if bad:
        text += "; FAILED: " + ", ".join(bad)
    if waiting:
        text += "; waiting for a worker: " + ", ".join(waiting)
    if skipped:
        text += "; smoke skipped: " + ", ".join(skipped)
    if not rows:
        text += "".join(f"; {s}" for s in _failed_steps(release)[:1]) or f"; {release.get('state_string', '')}"
    return f"{text} - {build_url}"


def variant_irc_line(build: Build, builder: str, build_url: str, after_release: bool = False) -> str:
    props = flatten(build.get("properties"))
    state = build.get("state_string") or ""
    return (f"{props.get('variant', builder)} {props.get('arch', '')} {result_name(build)} for "
            f"{_release_name(props)}{' (after its release)' if after_release else ''}"
            f"{': ' + state if state else ''} - {build_url}")


def log_lines(name: str, text: str) -> list[str]:
    """A failed step's log in a mail: its error lines and its last lines, each cut at 300 characters."""
    errors, tail = log_excerpt(text)
    out: list[str] = []
    if errors:
        out += ["", f"Errors in {name}:"] + [f"  | {line[:300]}" for line in errors]
    if tail:
        out += ["", f"Last lines of {name}:"] + [f"  | {line[:300]}" for line in tail]
    return out
