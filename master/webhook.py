"""``POST /change_hook/github``: a signed tag push from the upstream (or a mirror) becomes a change.

GitHub (and Gitea/Forgejo, which send the same headers) sign a webhook's
body with the shared secret: ``X-Hub-Signature-256: sha256=<HMAC-SHA256
hex>``.  Buildbot 4.3's own ``github`` dialect checks only the SHA-1
``X-Hub-Signature`` and accepts unsigned posts unless ``strict``; it also
copies payload fields into change properties.  This handler, plugged into
Buildbot's change hook resource as that dialect's ``custom_class``:

* refuses (HTTP 400, the message names the cause) a post without a valid
  ``X-Hub-Signature-256`` for the secret ``[upstream] webhook_secret``;
* answers ``ping``; refuses other events than ``push``;
* ignores (200, says why) branch pushes, deleted tags and pre-release tags
  the settings do not build;
* refuses a tag that does not match ``upstream.tag_regex`` or that the
  upstream (``git ls-remote`` of ``upstream.url``, not the payload's
  repository) does not have;
* starts nothing new (200, says why) for a delivery id (``X-GitHub-Delivery``)
  it has seen before, kept in Buildbot's database (``object_state``), or for
  a tag whose release is queued, running or done (``farm.decisions
  .release_of_tag``): replays and redeliveries make no change; the
  periodic re-check (or a force) is the way to retry a release;
* turns the tag into one change: ``branch`` = the tag name, category ``tag``,
  repository = ``upstream.url``, **no properties** (a change never carries
  build properties; see ``farm/inputs.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from buildbot.process.properties import Properties
from buildbot.www.hooks.base import BaseHookHandler
from twisted.internet import defer, threads
from twisted.python import log

from farm.decisions import release_of_tag
from farm.names import RELEASE
from steps.collect import finished_builds, release_requests
from vllm_cpu_build import specs

DIALECT = "github"
SIGNATURE = b"X-Hub-Signature-256"
EVENT = b"X-GitHub-Event"
DELIVERY = b"X-GitHub-Delivery"
DELIVERIES = ("vllm-cpu-webhook-deliveries", "master.webhook.TagWebhook")  # object_state's (name, class)
HISTORY = 200  # newest finished release builds read for "is this tag's release done?"


def signature(secret: bytes, body: bytes) -> str:
    """The header value a sender computes: ``sha256=`` + HMAC-SHA256(secret, body) in hex."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


async def seen_before(master: Any, delivery: str, tag: str) -> str | None:
    """Record ``delivery``; the tag it first came with when it was recorded before (None: new)."""
    db = master.db.state
    oid = await db.getObjectId(*DELIVERIES)
    mark = secrets.token_hex(8)
    first = await db.atomicCreateState(oid, delivery, lambda: {"tag": tag, "mark": mark})
    return None if isinstance(first, dict) and first.get("mark") == mark else str((first or {}).get("tag", "?"))


def check_signature(secret: bytes, body: bytes, header: bytes | None) -> None:
    """Raise ValueError (-> HTTP 400) unless ``header`` is the body's signature under ``secret``."""
    if not header:
        raise ValueError("X-Hub-Signature-256 missing: sign the webhook with the shared secret "
                         "([upstream] webhook_secret)")
    if not hmac.compare_digest(header, signature(secret, body).encode()):
        raise ValueError("X-Hub-Signature-256 does not match the body: wrong secret or altered body")


class TagWebhook(BaseHookHandler):
    def _options(self) -> dict[str, Any]:
        # Buildbot keeps one handler per dialect across reconfigs: read the current options.
        www = getattr(getattr(self.master, "config", None), "www", None) or {}
        return (www.get("change_hook_dialects") or {}).get(DIALECT) or self.options or {}

    @defer.inlineCallbacks
    def _secret(self, secret: Any):
        props = Properties()
        props.master = self.master
        try:
            value = yield props.render(secret)
        except Exception as exc:  # missing file: every post is refused until it exists
            log.msg(f"vllm-cpu webhook: secret not available: {exc}")
            value = None
        if not value:
            raise ValueError("the webhook secret is not configured on the master; refusing every post")
        return value.encode() if isinstance(value, str) else value

    async def _nothing_new(self, tag: str, version: str, delivery: str, tag_version: Any) -> str | None:
        """Why this signed, valid tag push starts nothing (None: it makes its change)."""
        if delivery:
            first = await seen_before(self.master, delivery, tag)
            if first is not None:
                return f"delivery {delivery} was seen before (tag {first})"
        queued = await release_requests(self.master, RELEASE, "fan_out", older_than=2**62)
        done = await finished_builds(self.master, RELEASE, limit=HISTORY)
        return release_of_tag(version, queued, done, tag_version)

    @defer.inlineCallbacks
    def getChanges(self, request):
        try:
            changes = yield self._changes(request)
        except ValueError as exc:
            log.msg(f"vllm-cpu webhook: refused: {exc}")
            raise
        return changes, "git"

    @defer.inlineCallbacks
    def _changes(self, request) -> Any:
        opts = self._options()
        max_bytes = int(opts.get("max_bytes", 65536))
        body = request.content.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise ValueError(f"request body over www.max_request_bytes ({max_bytes} bytes)")
        secret = yield self._secret(opts.get("secret"))
        check_signature(secret, body, request.getHeader(SIGNATURE))
        event = (request.getHeader(EVENT) or b"").decode("ascii", "replace")
        if event == "ping":
            request.write(b"pong: signature ok; ")
            return []
        if event != "push":
            raise ValueError(f"X-GitHub-Event {event!r}: only push events are handled; "
                             "configure the webhook to send push events only")
        if (request.getHeader(b"Content-Type") or b"").split(b";")[0].strip() != b"application/json":
            raise ValueError("Content-Type must be application/json (set the webhook's content type to JSON)")
        try:
            payload = json.loads(body)
        except ValueError:
            raise ValueError("body is not JSON") from None
        ref = payload.get("ref") if isinstance(payload, dict) else None
        if not isinstance(ref, str) or not ref:
            raise ValueError("push payload without a ref")
        if not ref.startswith("refs/tags/"):
            request.write(f"ignored: {ref} is not a tag; ".encode())
            return []
        tag = ref.removeprefix("refs/tags/")
        if payload.get("deleted") is True:
            request.write(f"ignored: tag {tag} was deleted; ".encode())
            return []
        tags = opts["tags"]
        if specs.tag_version(tag, tags.pattern) is None:
            raise ValueError(f"tag {tag!r} is not a release tag (upstream.tag_regex {tags.pattern.pattern})")
        version = tags.version_of(tag)
        if version is None:
            request.write(f"ignored: {tag} is a pre-release and upstream.build_prereleases is false; ".encode())
            return []
        try:
            upstream_tag = yield threads.deferToThread(tags.tag_for, version)
        except Exception as exc:
            raise ValueError(f"cannot list the upstream's tags to check {tag}: {exc}") from None
        if upstream_tag != tag:
            raise ValueError(f"tag {tag!r} does not exist in the upstream {opts.get('repository')}")
        delivery = (request.getHeader(DELIVERY) or b"").decode("ascii", "replace").strip()[:200]
        why = yield defer.ensureDeferred(self._nothing_new(tag, version, delivery, tags.version_of))
        if why:
            log.msg(f"vllm-cpu webhook: {tag}: nothing started: {why}")
            request.write(f"ignored: {why}; the periodic re-check or a force builds what is missing; ".encode())
            return []
        return [{
            "branch": tag, "category": "tag", "repository": opts.get("repository", ""), "project": "vllm",
            "author": "upstream webhook", "comments": f"release tag {tag} (signed webhook)",
            "revision": None, "files": [], "properties": {},
        }]
