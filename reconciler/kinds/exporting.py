"""What the exporters of networks and pools share: their power state as manifest fields (pure).

The friendly fields themselves are read back by walking each kind's field table
(``render.bind.export``), the same declarations render writes.
"""

from __future__ import annotations

from typing import Any

from reconciler.observed import Observed

Spec = dict[str, Any]


def active_state(obs: Observed) -> Spec:
    """``state`` (active/inactive) and ``autostart`` of a network or pool."""
    return {"state": "active" if obs.state == "active" else "inactive", "autostart": obs.autostart}
