"""Old home of the client's internals, kept only for the names other parts of the package import from it.

The internals now live one concept per module: ``_calls`` (requests), ``_answers`` (parsing and error
mapping), ``_settings`` (environment, key, base URL, timeouts, ``ClientSettings``), ``_transport`` and
``_aiohttp`` (the transport seam), ``_actions`` / ``_attempts`` / ``_flows`` (the logic both clients run).
Import from those; this module goes once nothing imports it.
"""

from __future__ import annotations

from runpod_queue._settings import ENV_API_KEY, ENV_BASE_URL, ClientSettings

__all__ = ["ENV_API_KEY", "ENV_BASE_URL", "ClientSettings"]
