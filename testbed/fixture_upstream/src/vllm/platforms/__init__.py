# SPDX-License-Identifier: Apache-2.0
"""Platform selection, in the shape of upstream vLLM 0.11–0.16.

The CPU platform is chosen when the installed distribution called ``vllm``
has "cpu" in its version (upstream's CPU wheels are ``X.Y.Z+cpu``).
"""

import importlib
import logging
import traceback
from typing import TYPE_CHECKING

from .interface import Platform, PlatformEnum, UnspecifiedPlatform

logger = logging.getLogger(__name__)


def vllm_version_matches_substr(substr: str) -> bool:
    """
    Check to see if the vLLM version matches a substring.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        vllm_version = version("vllm")
    except PackageNotFoundError as e:
        logger.warning(
            "The vLLM package was not found, so its version could not be "
            "inspected. This may cause platform detection to fail."
        )
        raise e
    return substr in vllm_version


def cpu_platform_plugin() -> str | None:
    is_cpu = False
    logger.debug("Checking if CPU platform is available.")
    try:
        is_cpu = vllm_version_matches_substr("cpu")
        if is_cpu:
            logger.debug("Confirmed CPU platform is available because vLLM is built with CPU.")
        if not is_cpu:
            import sys

            is_cpu = sys.platform.startswith("darwin")
            if is_cpu:
                logger.debug("Confirmed CPU platform is available because the machine is MacOS.")

    except Exception as e:
        logger.debug("CPU platform is not available because: %s", str(e))

    return "vllm.platforms.cpu.CpuPlatform" if is_cpu else None


builtin_platform_plugins = {
    "cpu": cpu_platform_plugin,
}


def resolve_current_platform_cls_qualname() -> str:
    activated = [name for name, func in builtin_platform_plugins.items() if func() is not None]
    if len(activated) == 1:
        return builtin_platform_plugins[activated[0]]()
    logger.info("No platform detected, vLLM is running on UnspecifiedPlatform")
    return "vllm.platforms.interface.UnspecifiedPlatform"


def _resolve_obj_by_qualname(qualname: str):
    module_name, obj_name = qualname.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), obj_name)


_current_platform = None
_init_trace: str = ""

if TYPE_CHECKING:
    current_platform: Platform


def __getattr__(name: str):
    if name == "current_platform":
        # lazy init current_platform, like upstream.
        global _current_platform
        if _current_platform is None:
            _current_platform = _resolve_obj_by_qualname(resolve_current_platform_cls_qualname())()
            global _init_trace
            _init_trace = "".join(traceback.format_stack())
        return _current_platform
    elif name in globals():
        return globals()[name]
    else:
        raise AttributeError(f"No attribute named '{name}' exists in {__name__}.")


__all__ = ["Platform", "PlatformEnum", "UnspecifiedPlatform", "current_platform", "_init_trace"]
