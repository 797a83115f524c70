"""Where calibrate's CPU goes, phase by phase: the preparation, each phase of the search, the verification
passes and the held-out check (issue 15 bounds the whole command; this says which part to cut)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Sequence


class PhaseClock:
    """CPU seconds of this process per named phase, in the order the phases first ran; a phase entered twice
    adds up. `runs` counts the entries (candidates, verification passes)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.runs: dict[str, int] = {}

    def add(self, phase: str, seconds: float, runs: int = 1) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self.runs[phase] = self.runs.get(phase, 0) + runs

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.process_time()
        try:
            yield
        finally:
            self.add(name, time.process_time() - started)

    def add_search(self, history: Sequence[dict], search_seconds: float) -> None:
        """The search's candidates by phase (gate, uniform, exact, sweep 1, ...) from its history; what the
        search spent between candidates (work floors, bookkeeping) as `search, between candidates`."""
        spent = 0.0
        for entry in history:
            self.add(entry["phase"], entry["cpu_seconds"])
            spent += entry["cpu_seconds"]
        self.add("search, between candidates", max(search_seconds - spent, 0.0))

    def as_dict(self) -> dict:
        return {name: {"cpu_seconds": seconds, "runs": self.runs[name]} for name, seconds in self.seconds.items()}


def describe_timings(timings: dict) -> str:
    """One line: 'preparation 25 s, gate 45 s (3), ...' (the count where a phase ran more than once)."""
    parts = []
    for name, entry in timings.items():
        runs = entry.get("runs", 1)
        parts.append(f"{name} {entry['cpu_seconds']:.0f} s" + (f" ({runs})" if runs > 1 else ""))
    return ", ".join(parts)
