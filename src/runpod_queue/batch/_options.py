"""Option groups for ``BatchRunner``: settings that only make sense together travel together.

Durations are seconds (a number or a ``timedelta``), checked through ``_units.seconds`` like every other
duration in the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runpod_queue._contract import MIN_HOLD_MS, RUNSYNC_MAX_WAIT_MS
from runpod_queue._units import Duration, seconds

__all__ = ["PollOptions", "WebhookOptions"]

_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, to refuse them as a URL host


def _positive(value: Duration, name: str) -> float:
    result = seconds(value, name)
    if result <= 0:
        raise ValueError(f"{name} must be more than 0 seconds, got {result:g}")
    return result


@dataclass(frozen=True, slots=True)
class PollOptions:
    """How results are collected by status checks: each job's interval grows with its age, within bounds.

    Args:
        concurrency: Status calls in flight at most (the client's rate limit still holds them all under
            ``/status``'s budget).
        min_interval: Seconds (or a ``timedelta``) before a job is checked again, at least.
        max_interval: Seconds before a job is checked again, at most.
        long_polls: Jobs asked about with one held ``/status-sync`` long-poll at once (RunPod answers it
            as soon as the job ends): a held job costs one call, not one per interval. Jobs beyond this
            many (and beyond RunPod's in-flight cap of 400, or half the connection pool) are polled on
            the schedule. 0 polls every job with short ``/status`` calls.
        hold: Seconds (1 to 300) the server may hold each long-poll; a job still running after it is
            asked again. 90 s is what RunPod holds a ``/runsync`` by default.

    Raises:
        ValueError: ``concurrency`` below 1, an interval not above 0, ``min_interval`` over
            ``max_interval``, ``long_polls`` below 0, or ``hold`` outside 1 to 300 seconds.
    """

    concurrency: int = 64
    min_interval: float = 0.05
    max_interval: float = 10.0
    long_polls: int = 256
    hold: float = 90.0

    def __init__(
        self,
        *,
        concurrency: int = 64,
        min_interval: Duration = 0.05,
        max_interval: Duration = 10.0,
        long_polls: int = 256,
        hold: Duration = 90.0,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"PollOptions.concurrency must be an integer >= 1, got {concurrency!r}")
        if isinstance(long_polls, bool) or not isinstance(long_polls, int) or long_polls < 0:
            raise ValueError(f"PollOptions.long_polls must be an integer >= 0, got {long_polls!r}")
        held = seconds(hold, "PollOptions.hold")
        if not MIN_HOLD_MS / 1000 <= held <= RUNSYNC_MAX_WAIT_MS / 1000:
            raise ValueError(f"PollOptions.hold must be 1 to 300 seconds, got {held:g}")
        low = _positive(min_interval, "PollOptions.min_interval")
        high = _positive(max_interval, "PollOptions.max_interval")
        if low > high:
            raise ValueError(
                f"PollOptions.min_interval ({low:g} s) must not exceed max_interval ({high:g} s)"
            )
        object.__setattr__(self, "concurrency", concurrency)
        object.__setattr__(self, "min_interval", low)
        object.__setattr__(self, "max_interval", high)
        object.__setattr__(self, "long_polls", long_polls)
        object.__setattr__(self, "hold", held)


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """A webhook-driven batch: every job is submitted with a signed webhook URL, and a receiver the runner
    serves on its own loop takes the deliveries as results.

    Args:
        listen: The (host, port) the receiver binds; port 0 takes a free one
            (``runner.webhook_address`` says which).
        url: The public address that reaches the receiver (a tunnel or a public host); ``None`` uses
            the receiver's own address, for an emulator or a host the endpoint reaches directly.
        secret: Signs the webhook URLs (at least 16 bytes); ``None`` generates one, kept in the journal
            so a resumed batch still verifies deliveries for jobs submitted before the restart.
        grace: Seconds after which a job whose delivery is late is polled (or twice the jobs' usual run
            time, if that is longer).

    Raises:
        ValueError: A bad address, URL or secret; ``listen`` on every interface without ``url``.
    """

    listen: tuple[str, int]
    url: str | None = None
    secret: str | None = field(default=None, repr=False)
    grace: float = 30.0

    def __init__(
        self,
        *,
        listen: tuple[str, int],
        url: str | None = None,
        secret: str | None = None,
        grace: Duration = 30.0,
    ) -> None:
        if (
            not isinstance(listen, tuple)
            or len(listen) != 2
            or not isinstance(listen[0], str)
            or isinstance(listen[1], bool)
            or not isinstance(listen[1], int)
            or not 0 <= listen[1] < 65536
        ):
            raise ValueError(
                f"WebhookOptions.listen must be (host, port) with 0 <= port < 65536, got {listen!r}"
            )
        if url is None and listen[0] in _ANY_ADDRESS:
            raise ValueError(
                f"WebhookOptions.listen binds every interface ({listen[0]!r}): pass url=, the address "
                "the endpoint posts to"
            )
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ValueError(f"WebhookOptions.url must be an http(s) URL, got {url!r}")
        if secret is not None and (not isinstance(secret, str) or len(secret.encode()) < 16):
            raise ValueError("WebhookOptions.secret must be a string of at least 16 bytes")
        object.__setattr__(self, "listen", listen)
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "secret", secret)
        object.__setattr__(self, "grace", _positive(grace, "WebhookOptions.grace"))

    def public_url(self, bound: tuple[str, int]) -> str:
        """The URL signed into each submission: ``url``, or the address the receiver got."""
        if self.url is not None:
            return self.url
        host, port = bound
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
