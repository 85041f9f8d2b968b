"""The release report: one row per variant × arch build, and the table of them."""

from __future__ import annotations


def short_isa(summary: str) -> str:
    """The ISA part of verify's summary ("all 7 checks passed; ISA ok: X" -> "ISA ok X")."""
    at = summary.find("ISA")
    return (summary[at:] if at > 0 else summary).replace("ISA ok: ", "ISA ok ")


def row_from_properties(props: dict, result: str) -> dict:
    """One line of the release table from a variant build's properties."""
    wheels = [w.rsplit("/", 1)[-1] for w in props.get("wheels") or []]
    verify = props.get("verify") or {}
    smoke = props.get("smoke") or {}
    isa = "; ".join(short_isa(v.get("summary", "")) for v in verify.values()) or "-"
    uploaded = props.get("uploaded")
    if props.get("dry_run"):
        up = "dry run"
    elif props.get("skip_upload"):
        up = "skipped"
    else:
        up = "yes" if uploaded else "no"
    return {
        "variant": props.get("variant", "?"), "arch": props.get("arch", "?"),
        "wheel": ", ".join(wheels) or "-", "isa": isa,
        "verify": ("ok" if verify and all(v.get("ok") for v in verify.values()) else "FAILED") if verify else "-",
        "smoke": ", ".join(sorted({v.get("status", "?") for v in smoke.values()})) or "-",
        "uploaded": up, "result": result,
    }


def format_table(rows: list[dict], columns: tuple[str, ...] = ("variant", "arch", "wheel", "isa", "verify",
                                                                "smoke", "uploaded", "result")) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"
