"""Builder and scheduler names, in one place (the sandbox and tests read them too)."""

RELEASE = "release"
RECHECK = "recheck"


def builder_name(package: str, arch: str) -> str:
    return f"{package}-{arch}"


def trigger_name(package: str, arch: str) -> str:
    return f"build-{package}-{arch}"
