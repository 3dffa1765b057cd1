"""The STEER paper's published accuracies (%), transcribed in docs/recipe.md §R13, keyed by table id and row name.

Rows use our display names (``labels.method_label``): the paper's "Entro.Adv" is "Entropy-Aware Adv.", its
"Entro.Loss" is "Entropy Loss". Each row lists AIME24/AIME25/AMC23/MATH500/Minerva/OlympiadBench/Avg as the
paper prints it. ``None`` rows are rows the paper lists but whose numbers we do not have: shown as "—".
"""

from __future__ import annotations

from steer_bench.errors import SteerBenchError

COLUMNS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench", "avg")

# Rows of Table 3 that the paper lists without numbers we could retrieve (docs/recipe.md §R13).
_UNKNOWN_7B = ("SimpleRL-Zoo", "Eurus-PRIME", "Clip-Higher", "Entropy Loss", "Fork Tokens", "W-REINFORCE")

_TABLES: dict[str, dict[str, str | None]] = {
    "table3_7b": {  # Qwen2.5-Math-7B, Table 3
        "Base": "13.8/5.3/44.6/39.6/9.9/13.8/21.2",
        "GRPO": "28.0/14.3/66.2/78.6/37.3/40.9/44.2",
        "OPO": "32.2/13.4/71.5/82.2/38.2/41.0/46.4",
        "Entropy-Aware Adv.": "27.5/13.5/70.2/79.6/36.8/42.8/45.1",
        "Clip-Cov": "32.5/12.9/68.4/78.0/40.8/41.3/45.7",
        "KL-Cov": "32.8/14.1/64.2/78.8/37.1/39.4/44.4",
        "STEER": "36.2/16.1/72.1/82.2/41.7/43.0/48.6",
        **dict.fromkeys(_UNKNOWN_7B),
    },
    "table12_1p5b": {  # Qwen2.5-Math-1.5B, App. Table 12
        "Base": "4.1/2.1/24.7/29.0/9.2/20.5/14.9",
        "GRPO": "16.2/7.6/56.0/74.4/26.1/34.6/35.8",
        "OPO": "14.8/9.0/58.2/72.2/26.1/35.9/36.0",
        "Entropy-Aware Adv.": "15.0/9.1/55.7/70.2/26.8/34.9/35.3",
        "Clip-Cov": "14.7/8.4/56.0/72.8/26.4/34.9/35.5",
        "STEER": "17.4/9.7/61.6/75.5/28.2/36.6/38.2",
    },
    "table4_14b": {  # Qwen2.5-14B, Table 4
        "Base": "3.9/2.6/25.8/52.6/15.4/23.0/20.6",
        "GRPO": "17.2/13.2/66.3/80.6/38.0/42.2/42.9",
        "OPO": "17.8/12.6/68.2/78.6/37.7/42.6/42.9",
        "Entropy-Aware Adv.": "14.6/9.8/65.6/78.8/36.5/40.9/41.0",
        "Clip-Cov": "14.1/13.6/59.8/78.2/38.6/43.2/41.2",
        "STEER": "19.3/14.3/70.3/81.4/39.4/46.7/45.2",
    },
    "table6_extreme": {  # Qwen2.5-Math-7B with ε_low 0.99, ε_high 5, Table 6
        "GRPO": "31.6/12.8/66.7/79.0/39.3/40.1/44.9",
        "Entropy-Aware Adv.": "34.8/13.4/64.3/77.6/37.6/39.9/44.6",
        "Entropy Loss": "32.7/14.7/71.3/79.0/36.8/41.4/46.0",
        "Clip-Cov": "30.4/14.0/72.3/79.6/37.1/41.7/45.8",
        "STEER": "36.1/16.0/76.3/80.5/39.5/42.3/48.5",
    },
    "plugin_7b": {  # STEER as a plug-in to other advantage estimators, Qwen2.5-Math-7B
        "RLOO": "31.5/14.7/68.8/80.6/37.5/41.7/45.8",
        "RLOO+STEER": "33.7/15.1/70.4/81.0/37.5/42.9/46.8",
        "OPO": "32.2/13.4/71.5/82.2/38.2/41.0/46.4",  # the paper's OPO row, as printed in Table 3
        "OPO+STEER": "33.3/15.7/70.8/81.4/40.5/43.5/47.5",
    },
}

# Our rows that stand for a differently named paper row ("extreme" is GRPO run with Table 6's clipping; the
# paper's STEER rows are compared with both λ_min settings: its text says 0.7, the release script 0.8).
ALIASES = {"GRPO (extreme clipping)": "GRPO", "STEER (lambda_min 0.7)": "STEER"}


def _parse(cells: str | None) -> dict[str, float] | None:
    if cells is None:
        return None
    values = [float(v) for v in cells.split("/")]
    assert len(values) == len(COLUMNS), cells
    return dict(zip(COLUMNS, values, strict=True))


REFERENCE: dict[str, dict[str, dict[str, float] | None]] = {
    table: {row: _parse(cells) for row, cells in rows.items()} for table, rows in _TABLES.items()
}


def check_table(table: str) -> None:
    if table not in REFERENCE:
        raise SteerBenchError(f"unknown reference table {table!r} in 'reference'; valid: {', '.join(REFERENCE)}")


def paper_value(table: str, row: str, column: str) -> float | None:
    """The paper's accuracy (%) for a row display name and a benchmark (or ``avg``); None where unknown."""
    check_table(table)
    cells = REFERENCE[table].get(ALIASES.get(row, row))
    return None if cells is None else cells.get(column)
