"""Result rows collected over a session, printed as one table per section
and written as JSON."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

from bench_peers import Peer, PeerMissing


@dataclass
class Row:
    section: str
    name: str
    value: float | None
    unit: str
    ours: bool = False           # the row other rows of the section are compared with
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None   # value / ours' value, filled in at the end


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "B":
        return f"{value / 1024:.1f} KiB" if value < 1 << 20 else f"{value / (1 << 20):.2f} MiB"
    if unit == "values/s":
        return f"{value / 1e6:.1f} M/s" if value >= 1e6 else f"{value / 1e3:.1f} k/s"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}"
    if abs(value) >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.3g} {unit}"


class Report:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.rows: list[Row] = []

    def add(self, section: str, name: str, value: float | None, unit: str, **kw: Any) -> Row:
        row = Row(section, name, value, unit, **kw)
        self.rows.append(row)
        return row

    def value(self, section: str, name: str) -> float | None:
        for r in self.rows:
            if r.section == section and r.name == name:
                return r.value
        return None

    def target(self, section: str, name: str, value: float, unit: str, target: str, met: bool,
               note: str = "") -> bool:
        """A checked figure: a row in the table, enforced except in smoke mode."""
        self.add(section, name, value, unit, target=target, met=met, note=note)
        return met

    def enforce(self, met: bool, message: str) -> None:
        if self.mode != "smoke":
            assert met, message

    def need(self, section: str, peer: Peer, *more: str) -> Any:
        """The peer's module, or a 'missing' row (in each section) and a skip."""
        try:
            return peer.mod()
        except PeerMissing as exc:
            for sec in (section, *more):
                self.add(sec, peer.name, None, "", note=f"missing: {exc}")
            pytest.skip(f"{peer.name} missing: {exc}")

    # ------------------------------------------------------------------ output
    def _ratios(self) -> None:
        for sec in self.sections():
            ours = next((r for r in self.rows if r.section == sec and r.ours), None)
            if ours is None or not ours.value:
                continue
            for r in self.rows:
                if r.section == sec and r.value is not None and not r.target and r.unit == ours.unit:
                    r.ratio = r.value / ours.value

    def sections(self) -> list[str]:
        return list(dict.fromkeys(r.section for r in self.rows))

    def tables(self) -> str:
        self._ratios()
        out = []
        for sec in self.sections():
            rows = [r for r in self.rows if r.section == sec]
            cells = [["name", "value", "x ours", "target", "status", "note"]]
            for r in rows:
                status = "" if r.met is None else ("met" if r.met else "MISSED")
                cells.append([("* " if r.ours else "  ") + r.name, fmt(r.value, r.unit),
                              "" if r.ratio is None else f"{r.ratio:.2f}x", r.target, status, r.note])
            w = [max(len(c[i]) for c in cells) for i in range(6)]
            lines = [f"\n## {sec}  [mode={self.mode}]"]
            for k, c in enumerate(cells):
                lines.append("  ".join(c[i].ljust(w[i]) if i in (0, 5) else c[i].rjust(w[i])
                                       for i in range(6)).rstrip())
                if k == 0:
                    lines.append("  ".join("-" * x for x in w))
            out.append("\n".join(lines))
        out.append("  (* = ours; 'x ours' = value / ours' value in the same unit)")
        return "\n".join(out)

    def write_json(self, path: str) -> None:
        self._ratios()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"mode": self.mode, "rows": [asdict(r) for r in self.rows]}, f, indent=1,
                      default=str)
