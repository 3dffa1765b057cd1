"""Write a study's artefacts: metrics, per-run summaries, tables (md + csv), figures, summary.json, tree.md.

``tree.md`` is the report section the pipeline's report includes verbatim. Its "What the testbed shows"
bullets are generated from the numbers (paired differences to the reference with a 2-standard-error mark),
so they read the same whatever the result.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steer_bench import files
from steer_bench.config import dump_yaml
from steer_bench.tree import figures
from steer_bench.tree.config import StudyConfig
from steer_bench.tree.study import StudyResult, load_methods
from steer_bench.tree.summary import (
    EntropyControl,
    control_rows,
    entropy_control,
    fmt,
    level_key,
    method_table,
    run_summaries,
)

ESTIMATORS = ("paper", "first_order", "cov", "linear")


def _cell(t: pd.DataFrame, method: str, col: str, digits: int = 3) -> str:
    if (col, "mean") not in t.columns:
        return "—"
    n = int(t.loc[method, (col, "n")])
    text = fmt(t.loc[method, (col, "mean")], t.loc[method, (col, "std")], digits)
    total = int(t.loc[method, ("final_entropy", "n")])
    return text if n in (0, total) else f"{text} ({n}/{total})"


def _paired(t: pd.DataFrame, method: str, col: str) -> str:
    """Paired difference to the reference: mean ± std over seeds, '*' when |mean| > 2 standard errors."""
    key = f"delta_{col}"
    mean, std, n = (t.loc[method, (key, s)] for s in ("mean", "std", "n"))
    if n == 0 or mean != mean:
        return "—"
    star = "*" if n > 1 and std == std and abs(mean) > 2 * std / math.sqrt(n) else ""
    return f"{mean:+.3f} ± {std:.3f}{star}"


def method_rows(cfg: StudyConfig, setting: str, t: pd.DataFrame) -> list[dict[str, str]]:
    """The main table of one setting: one row per method, mean ± std over seeds."""
    s = cfg.settings[setting]
    levels = s.matched_accuracy
    notes = {m.label: m.note for m in cfg.methods}
    rows = []
    for method in t.index:
        row = {"method": method, "note": notes[method]}
        row["H final"] = _cell(t, method, "final_entropy")
        row["ΔH final vs ref"] = _paired(t, method, "final_entropy")
        row["acc final (exact)"] = _cell(t, method, "final_accuracy")
        row["acc sampled (last 5)"] = _cell(t, method, "sampled_accuracy_last5")
        for k in s.train.pass_k:
            row[f"pass@{k}"] = _cell(t, method, f"final_pass_at_{k}")
        row[f"Δpass@{s.train.pass_k[-1]} vs ref"] = _paired(t, method, f"final_pass_at_{s.train.pass_k[-1]}")
        for level in levels:
            row[f"H @ acc {level:g}"] = _cell(t, method, f"entropy_at_acc_{level_key(level)}")
            row[f"ΔH @ acc {level:g} vs ref"] = _paired(t, method, f"entropy_at_acc_{level_key(level)}")
        row[f"steps to acc {levels[-1]:g}"] = _cell(t, method, f"steps_to_acc_{level_key(levels[-1])}", 1)
        row["max H drop / step"] = _cell(t, method, "max_entropy_drop_per_step")
        row["clip frac"] = _cell(t, method, "loss/clipfrac", 4)
        row["λ mean"] = _cell(t, method, "steer/lambda_mean", 4)
        row["λ < 0.99"] = _cell(t, method, "steer/frac_lambda_below_099")
        rows.append(row)
    return rows


def estimator_rows(runs: pd.DataFrame, reference: str) -> list[dict[str, str]]:
    """Estimator accuracy vs the exact per-state ΔH: the reference method's runs at the training step and at
    1e-3 of it (mean ± std over seeds), and the training-step Pearson pooled over every method's runs."""
    ref = runs[runs["method"] == reference]
    rows = []
    for est in ESTIMATORS:
        row = {"estimator": figures.ESTIMATOR_LABELS[est]}
        for label, prefix in (("step", ""), ("step×1e-3", "tiny/")):
            for stat in ("pearson", "spearman", "sign", "rel_mse"):
                col = f"{prefix}{est}/{stat}"
                row[f"{stat} ({label})"] = fmt(ref[col].mean(), ref[col].std(ddof=1), 3, general=stat == "rel_mse")
        row["pearson (step, all methods)"] = fmt(runs[f"{est}/pearson"].mean(), runs[f"{est}/pearson"].std(ddof=1))
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no rows)\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _mean(t: pd.DataFrame, method: str, col: str) -> float:
    return float(t.loc[method, (col, "mean")]) if method in t.index and (col, "mean") in t.columns else math.nan


def findings(cfg: StudyConfig, setting: str, t: pd.DataFrame, runs: pd.DataFrame, steer_labels: set[str]) -> list[str]:
    """Number-driven bullet points for one setting (no judgement words beyond the 2-SE test)."""
    ref, s = cfg.reference, cfg.settings[setting]

    def g(col: str, m: str = ref) -> float:
        return _mean(t, m, col)

    out = [
        f"{ref}: exact token entropy {g('initial_entropy'):.3f} → {g('final_entropy'):.3f} nats, exact accuracy "
        f"{g('initial_accuracy'):.3f} → {g('final_accuracy'):.3f}, pass@{s.train.pass_k[-1]} "
        f"{g(f'initial_pass_at_{s.train.pass_k[-1]}'):.3f} → {g(f'final_pass_at_{s.train.pass_k[-1]}'):.3f} "
        f"({s.train.steps} steps, mean over {cfg.seeds} seeds)."
    ]
    compared = [("final_entropy", "final entropy")]
    compared += [(f"entropy_at_acc_{level_key(lv)}", f"entropy at accuracy {lv:g}") for lv in s.matched_accuracy]
    compared += [(f"final_pass_at_{s.train.pass_k[-1]}", f"final pass@{s.train.pass_k[-1]}")]
    for col, what in compared:
        higher, lower = [], []
        for method in t.index:
            d = runs[(runs["setting"] == setting) & (runs["method"] == method)][f"delta_{col}"].dropna()
            if method == ref or len(d) < 2 or abs(d.mean()) <= 2 * d.std(ddof=1) / math.sqrt(len(d)):
                continue
            (higher if d.mean() > 0 else lower).append(f"{method} ({d.mean():+.3f})")
        out.append(
            f"{what} vs {ref}, paired, beyond 2 standard errors — higher: {', '.join(higher) or 'none'}; "
            f"lower: {', '.join(lower) or 'none'}."
        )
    steer = [m for m in t.index if m in steer_labels]
    if steer:
        lam = ", ".join(f"{m} {g('steer/lambda_mean', m):.4f}" for m in steer)
        out.append(f"STEER mean λ per token: {lam}.")
        drops = ", ".join(f"{m} {g('max_entropy_drop_per_step', m):.3f}" for m in [ref, *steer])
        out.append(f"largest single-step entropy drop (nats): {drops}.")
    for est in ESTIMATORS:
        col = f"{est}/pearson"
        out.append(
            f"{figures.ESTIMATOR_LABELS[est]}: Pearson with the exact per-state ΔH {g(col):.3f} at the training "
            f"step, {g('tiny/' + est + '/pearson'):.3f} at 1e-3 of it ({ref}; early {g(col + '_early'):.3f}, "
            f"late {g(col + '_late'):.3f})."
        )
    return out


def tree_markdown(
    cfg: StudyConfig, result: StudyResult, tables: dict[str, Any], command: str, control_md: list[str]
) -> str:
    lines = [
        "## Reasoning-tree testbed",
        "",
        "A tabular softmax policy over a tree of choices with a verifier on the leaves — the exact setting of the",
        "paper's single-state entropy analysis — trained by the library's own advantage estimators and losses",
        f"(`steer_bench.algos`, presets of `configs/methods/`). {cfg.seeds} paired seeds per method (same task and",
        "initial logits). Entropy = exact expected token entropy of a rollout; accuracy = exact probability mass",
        "on correct leaves; pass@k exact from it. Paired differences are to the reference "
        f"`{cfg.reference}` with the same seed; * = beyond 2 standard errors.",
        "",
        f"Command: `{command}` — {len(result.metrics.groupby(['setting', 'method', 'seed']))} runs in "
        f"{result.wall_s:.1f} s wall ({result.cpu_s:.1f} s CPU; workers: {cfg.workers}).",
        "",
    ]
    if result.errors:
        lines += ["**Runs that diverged** (kept up to the failing step):", ""]
        lines += [f"- {e['setting']}/{e['method']}/seed {e['seed']}: {e['error']}" for e in result.errors]
        lines.append("")
    for setting, parts in tables.items():
        s = cfg.settings[setting]
        lines += [f"### Setting `{setting}`", "", s.description, "", "**What the testbed shows**", ""]
        lines += [f"- {f}" for f in parts["findings"]] + ["", parts["methods_md"], "Estimator accuracy:", ""]
        lines += [parts["estimators_md"]]
        for fig, caption in parts["figures"]:
            lines += [f"![{caption}]({fig})", ""]
    return "\n".join(lines + control_md) + "\n"


CONTROL_FIGURE = "entropy_control.png"


def control_section(
    cfg: StudyConfig, runs: pd.DataFrame, controls: dict[str, EntropyControl]
) -> tuple[list[str], dict[str, list[dict[str, str]]]]:
    """The report's lines on the entropy controllers (issue 27) and their table rows per setting."""
    lines = [
        "### Entropy against the controllers' targets",
        "",
        "Final exact entropy (after the last update) against each controller's target — EntroPIC's set point, the",
        "adaptive coefficient's floor, Entrocraft's band at the last update — mean ± 1 standard error over seeds;",
        f"the last column is `{cfg.reference}`'s distance to the same target on the same seeds. The figure plots H_k,",
        "the mean π_old token entropy of each step's rollout (what the controllers see).",
        "",
    ]
    rows = {}
    for setting, s in cfg.settings.items():
        r = runs[runs["setting"] == setting]
        present = {m: c for m, c in controls.items() if m in set(r["method"])}
        rows[setting] = control_rows(r, present, cfg.reference, s.train.steps)
        lines += [f"`{setting}`:", "", markdown_table(rows[setting])]
    lines += [f"![entropy against the controllers' targets]({CONTROL_FIGURE})", ""]
    return lines, rows


def write_outputs(out: Path, cfg: StudyConfig, result: StudyResult, command: str) -> dict[str, Any]:
    """Write every artefact into ``out`` atomically (the directory appears complete or not at all)."""
    runs = run_summaries(result.metrics, cfg)
    methods_cfg = load_methods(cfg)
    steer_labels = {label for label, m in methods_cfg.items() if m.loss.name == "steer"}
    controls = {label: c for label, m in methods_cfg.items() if (c := entropy_control(m)) is not None}
    order = [m.label for m in cfg.methods]
    table = method_table(runs, order)
    tables: dict[str, Any] = {}
    with files.atomic_dir(out) as tmp:
        result.metrics.to_parquet(tmp / "metrics.parquet", index=False)
        result.points.to_parquet(tmp / "probe_points.parquet", index=False)
        runs.to_csv(tmp / "runs.csv", index=False)
        table.to_csv(tmp / "table.csv")
        files.write_text(tmp / "config.resolved.yaml", dump_yaml(cfg))
        md = []
        for setting in cfg.settings:
            t = table.loc[setting]
            methods = list(t.index)
            m = result.metrics[result.metrics["setting"] == setting]
            rows, est = method_rows(cfg, setting, t), estimator_rows(runs[runs["setting"] == setting], cfg.reference)
            figs = [
                (f"{setting}_entropy.png", f"{setting}: entropy vs step"),
                (f"{setting}_accuracy.png", f"{setting}: exact accuracy vs step"),
                (f"{setting}_entropy_vs_accuracy.png", f"{setting}: entropy vs accuracy"),
                (f"{setting}_omega_vs_dh.png", f"{setting}: estimates vs exact ΔH"),
                (f"{setting}_quadrants.png", f"{setting}: quadrant shares"),
            ]
            figures.seed_bands(m, methods, cfg.reference, "exact/entropy", "entropy (nats)", tmp / figs[0][0])
            figures.seed_bands(m, methods, cfg.reference, "exact/accuracy", "exact accuracy", tmp / figs[1][0])
            figures.entropy_vs_accuracy(m, methods, cfg.reference, tmp / figs[2][0])
            pts = result.points[result.points["setting"] == setting] if len(result.points) else result.points
            if len(pts):
                figures.omega_vs_dh(pts, tmp / figs[3][0])
            quad = [cfg.reference, *[x for x in methods if x in steer_labels][:2]]
            figures.quadrant_shares(m, quad, tmp / figs[4][0])
            tables[setting] = {
                "findings": findings(cfg, setting, t, runs, steer_labels),
                "methods_md": markdown_table(rows),
                "estimators_md": markdown_table(est),
                "figures": [f for f in figs if (tmp / f[0]).exists()],
            }
            md += [f"### {setting}", "", markdown_table(rows), markdown_table(est)]
        files.write_text(tmp / "table.md", "\n".join(md))
        control_md, control = control_section(cfg, runs, controls) if controls else ([], {})
        if controls:
            steps = {name: s.train.steps for name, s in cfg.settings.items()}
            figures.entropy_control(result.metrics, controls, cfg.reference, steps, tmp / CONTROL_FIGURE)
        files.write_text(tmp / "tree.md", tree_markdown(cfg, result, tables, command, control_md))
        summary = {
            "command": command,
            "wall_s": result.wall_s,
            "cpu_s": result.cpu_s,
            "runs": len(runs),
            "errors": result.errors,
            "findings": {k: v["findings"] for k, v in tables.items()},
            "entropy_control": control,
            "methods": _json_table(table),
        }
        files.write_json(tmp / "summary.json", summary)
    return summary


def _json_table(table: pd.DataFrame) -> dict[str, Any]:
    """{setting: {method: {column: {mean, std, n}}}} with NaN as null."""
    out: dict[str, Any] = {}
    for (setting, method), row in table.iterrows():
        cols: dict[str, Any] = {}
        for (col, stat), value in row.items():
            v = float(value)
            cols.setdefault(col, {})[stat] = None if np.isnan(v) else v
        out.setdefault(setting, {})[method] = cols
    return out
