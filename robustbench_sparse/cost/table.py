"""The human-readable ``rbs cost`` table of a :class:`~robustbench_sparse.cost.model.ModelCost`."""

from __future__ import annotations

import math

from robustbench_sparse.cost.imbalance import MAPPINGS
from robustbench_sparse.cost.model import ModelCost

__all__ = ["format_cost"]


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:5.1f} %" if whole else "    –"


def _imb(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _bytes(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def _rows(cost: ModelCost) -> list[list[str]]:
    rows = []
    for lc in cost.layers:
        m = lc.macs
        meta = lc.metadata_bits
        rows.append(
            [
                lc.name,
                "x".join(str(s) for s in lc.weight_shape),
                f"{lc.out_hw[0]}x{lc.out_hw[1]}",
                f"{m.dense:,}",
                _pct(m.effective, m.dense),
                _pct(m.compact, m.dense),
                _pct(m.nm, m.dense),
                "/".join(_imb(lc.imbalance[k]) for k in MAPPINGS),
                f"{meta['rank']:,} / {meta['bitmap']:,} / {meta['bound']:,}",
            ]
        )
    t = cost.total()
    rows.append(
        [
            "total",
            "",
            "",
            f"{t['macs_dense']:,}",
            _pct(t["macs_effective"], t["macs_dense"]),
            _pct(t["macs_compact"], t["macs_dense"]),
            _pct(t["macs_2to4"], t["macs_dense"]),
            "/".join(_imb(t["imbalance"][k]) for k in MAPPINGS),
            f"{t['metadata_bits']['rank']:,} / {t['metadata_bits']['bitmap']:,} / "
            f"{t['metadata_bits']['bound']:,}",
        ]
    )
    return rows


def _grid(headers: list[str], rows: list[list[str]], left: int) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_cost(cost: ModelCost) -> str:
    """Per-layer table, totals, speed-ups, bytes and the roofline (modelled rows labelled)."""
    shape = "x".join(str(s) for s in cost.input_shape)
    headers = [
        "layer", "weight", "out", "MACs dense", "effective", "compact", "2:4",
        "imbalance f/k/nm", "position bits rank / bitmap / bound",
    ]  # fmt: skip
    lines = [f"per input example of shape {shape}; MACs exact, % of dense MACs"]
    lines += _grid(headers, _rows(cost), 3)
    t = cost.total()
    speed = ", ".join(
        f"{k} {t[f'speedup_{k}']:.2f}x" if t[f"speedup_{k}"] else f"{k} –"
        for k in ("effective", "compact", "2to4")
    )
    lines += [
        "",
        f"MAC speed-up (dense MACs / MACs, exact): {speed}",
        "imbalance f/k/nm (modelled; max/mean nonzero weights per lane, MAC-weighted in the "
        "total): " + "; ".join(f"{k}: {v}" for k, v in MAPPINGS.items()),
        f"weight bytes (modelled, {cost.spec.value_bits}-bit values + position metadata): "
        + ", ".join(
            f"{e.split('/')[0]} {_bytes(t['weight_bytes'][e])}"
            for e in ("dense", "compact", "zero-skip/filter-per-pe", "2to4")
        ),
    ]
    d = cost.to_dict()["roofline"]
    spec = cost.spec
    lines += [
        "",
        f"roofline, modelled (not measured) on {spec.name!r}, illustrative: {spec.mac_lanes} MAC "
        f"lanes at {spec.clock_ghz:g} GHz, {spec.bandwidth_gbs:g} GB/s, {spec.value_bits}-bit",
    ]
    rows = [
        [
            engine,
            f"{e['seconds_batch1'] * 1e6:,.2f}",
            f"{e['speedup_batch1']:.2f}x",
            f"{e['seconds_batch'] * 1e6:,.3f}",
            f"{e['speedup_batch']:.2f}x",
        ]
        for engine, e in d["engines"].items()
    ]
    heads = ["engine", "µs at batch 1", "speed-up", f"µs/example at batch {cost.batch}", "speed-up"]
    lines += _grid(heads, rows, 1)
    return "\n".join(lines)
