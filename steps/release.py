"""The ``release`` and ``recheck`` builders' own steps (master side, no worker command), in flow order.

One module per step; this one only names them for ``master/factories.py``:

1. ``ResolveRelease`` (``resolve``): the version and its upstream tag;
2. ``RebuildFailed`` (``rebuild``): a Buildbot "rebuild" builds only what failed;
3. ``SkipDuplicateRelease`` (``duplicate``): an older request for the same release goes first;
4. ``DropPublished`` (``drop_published``): not what the index has or a queued build makes;
5. ``FanOut`` (``fan_out``): one variant build per remaining entry; the release's result is theirs;
6. ``Recheck`` (``recheck``): the ``recheck`` builder: a release for every build the index lacks.

Their rules are pure functions in ``farm/decisions.py``; what they read from
the data API is ``steps/collect.py``.  Anything blocking (HTTP, git
ls-remote) runs in a thread.
"""

from __future__ import annotations

from steps.drop_published import DropPublished
from steps.duplicate import SkipDuplicateRelease
from steps.fan_out import FanOut
from steps.rebuild import RebuildFailed
from steps.recheck import Recheck
from steps.resolve import ResolveRelease

__all__ = ["DropPublished", "FanOut", "RebuildFailed", "Recheck", "ResolveRelease", "SkipDuplicateRelease"]
