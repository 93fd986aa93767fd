"""Progress display for long command-line steps (rich, on stderr so stdout stays clean)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

__all__ = ["Steps"]


class Steps:
    """Show a spinner while a step runs and a line with its duration when it ends.

    Parameters
    ----------
    enabled : bool
        False shows nothing (``--quiet``, ``--json``).
    console : rich.console.Console, optional
        Where to draw; default a stderr console.

    Examples
    --------
    >>> steps = Steps(enabled=False)
    >>> with steps.step("simulating"):
    ...     pass
    """

    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        """Run the body under a spinner labelled ``description``."""
        if not self.enabled:
            yield
            return
        start = time.perf_counter()
        with self.console.status(f"{description} ..."):
            yield
        self.console.print(
            f"[green]done[/green] {description} ({time.perf_counter() - start:.1f} s)"
        )
