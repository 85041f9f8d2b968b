"""Builder and scheduler names, in one place (the sandbox and tests read them too)."""

RELEASE = "release"
RECHECK = "recheck"
IMAGES = "images"  # runtime images of a release (settings [images])
IMAGES_TRIGGER = "images-trigger"


def builder_name(package: str, arch: str) -> str:
    return f"{package}-{arch}"


def trigger_name(package: str, arch: str) -> str:
    return f"build-{package}-{arch}"


def reproduce_builder(arch: str) -> str:
    """The builder that rebuilds a variant build's wheels to compare them (``[build] reproduce``)."""
    return f"reproduce-{arch}"


def reproduce_trigger(arch: str) -> str:
    return f"reproduce-{arch}-trigger"
