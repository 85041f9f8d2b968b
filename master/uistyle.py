"""Our CSS in Buildbot's web UI: force-form errors that cannot be missed.

Buildbot 4.3's React force dialog puts a field's errors (the ``-32602``
answer of the force endpoint, one message per field name) in
``div.bb-force-build-modal-field-error`` inside the field's
``div.form-group.has-error``, but ships no CSS for either class (Bootstrap 4
dropped ``has-error``): the message is plain grey text above the field and
the field looks untouched.  Buildbot has no setting for extra CSS (``www
theme`` takes a fixed list of colour variables), so ``install`` wraps
``IndexResource.renderIndex`` (the page every UI route loads) to add one
``<style>`` element before ``</head>``.  The rules only style Buildbot's own
class names; nothing else of the page changes.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from buildbot.www import config as www_config
from twisted.internet import defer

STYLE_ID = "vllm-cpu-style"

# Each erroneous field: red bar on its left, its label red, its input framed in
# red, and its messages (every one) directly under the input in red on pink.
CSS = """
.bb-forcebuild-modal .form-group.has-error{display:flex;flex-direction:column;border-left:4px solid #d9534f;
 padding-left:8px;background:#fff8f8}
.bb-forcebuild-modal .form-group.has-error>.bb-force-build-modal-field-error{order:2;color:#a94442;
 background:#f2dede;border:1px solid #ebccd1;border-radius:3px;padding:2px 8px;margin:4px 15px;font-weight:600;
 overflow-wrap:anywhere}
.bb-forcebuild-modal .form-group.has-error>:not(.bb-force-build-modal-field-error){order:1}
.bb-forcebuild-modal .has-error label{color:#a94442}
.bb-forcebuild-modal .has-error input:not([type=checkbox]),.bb-forcebuild-modal .has-error select,
.bb-forcebuild-modal .has-error textarea{border:2px solid #d9534f;background:#fff5f5;
 box-shadow:0 0 0 .15rem rgba(217,83,79,.25)}
"""

STYLE = f'<style id="{STYLE_ID}">{" ".join(CSS.split())}</style>'


def with_style(page: bytes) -> bytes:
    """The index page with our ``<style>`` before ``</head>`` (once)."""
    if STYLE_ID.encode() in page:
        return page
    return page.replace(b"</head>", STYLE.encode("ascii") + b"</head>", 1)


_original = www_config.IndexResource.renderIndex


@defer.inlineCallbacks
def render_index(self: Any, request: Any) -> Generator[Any, Any, bytes]:
    page = yield _original(self, request)
    return with_style(page)


def install() -> None:
    """Add our CSS to every page of the web UI (idempotent; every (re)config calls it)."""
    www_config.IndexResource.renderIndex = render_index  # type: ignore[method-assign]


def installed() -> bool:
    return www_config.IndexResource.renderIndex is render_index
