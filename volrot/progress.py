"""Progress of long loops: a labelled rich bar on a terminal, heartbeat lines in a log file.

On a terminal the bar updates live and its clock is labelled (`elapsed` or `remaining`). When
the output is not a terminal (a log file, CI, `nohup`), nothing would appear for minutes, so a
heartbeat line with the progress, the rate and the times is printed every `HEARTBEAT_S` seconds
instead, and a last line when the task ends (unless it is transient).
"""

from __future__ import annotations

import time

HEARTBEAT_S = 30.0


def format_seconds(s: float) -> str:
    s = int(round(max(0.0, s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}"


class TaskProgress:
    """One counted task (`total` steps of `unit`).

    `advance(n, info=..., description=...)` moves it on; `info` is free text shown after the
    count (e.g. `loss 0.6931`). `clock` is "elapsed" or "remaining". Disabled, it does nothing.
    """

    def __init__(
        self,
        enabled: bool,
        description: str,
        total: int,
        *,
        unit: str = "batches",
        clock: str = "elapsed",
        info: str = "",
        console=None,
        transient: bool = False,
    ):
        self.enabled = enabled
        self.description, self.total, self.unit, self.info = description, max(int(total), 0), unit, info
        self.clock, self.transient = clock, transient
        self.done = 0
        self.bar = None
        self.task = None
        if not enabled:
            return
        from rich.console import Console

        self.console = console or Console()
        self.started = self.last_beat = time.monotonic()
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            timer = TimeElapsedColumn() if clock == "elapsed" else TimeRemainingColumn()
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TextColumn(clock),
                timer,
                console=self.console,
                transient=transient,
            )

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
            self.task = self.bar.add_task(self.description, total=self.total, info=self.info)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif self.enabled and not self.transient and exc[0] is None:
            self._line(final=True)

    def advance(self, n: int = 1, *, info: str | None = None, description: str | None = None) -> None:
        if not self.enabled:
            return
        self.done += n
        if info is not None:
            self.info = info
        if description is not None:
            self.description = description
        if self.bar is not None:
            kw = {"info": self.info, "description": self.description}
            self.bar.update(self.task, advance=n, **kw)
            return
        now = time.monotonic()
        if now - self.last_beat >= HEARTBEAT_S and self.done < self.total:
            self.last_beat = now
            self._line(final=False)

    def set_info(self, info: str) -> None:
        self.advance(0, info=info)

    def _line(self, final: bool) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.description}: {self.done}/{self.total} {self.unit}"]
        if self.info:
            parts.append(self.info)
        if not final:
            parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {format_seconds(elapsed)}")
        if not final and rate > 0:
            parts.append(f"remaining ~{format_seconds((self.total - self.done) / rate)}")
        self.console.print("  ".join(parts), highlight=False, markup=False, soft_wrap=True)
