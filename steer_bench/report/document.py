"""report.md: the experiment, protocol and versions, the tables, the figures, what is missing, optional sections."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import statistics
from pathlib import Path
from typing import Any

from steer_bench.config.method import load_method
from steer_bench.experiment import ExperimentConfig
from steer_bench.report import comparisons, selection, tables
from steer_bench.report.collect import Results, expected_rows
from steer_bench.report.figures import FIGURES

# Sections written by other stages, included verbatim when their file exists (path relative to results/<exp>).
OPTIONAL_SECTIONS = (("Reasoning-tree testbed", "tree/tree.md"), ("Entropy-dynamics analysis", "analysis/analysis.md"))


def experiment_section(exp: ExperimentConfig, table: tables.Table) -> list[str]:
    cfg = exp.train_config(exp.seeds[0])
    methods = ", ".join(f"`{m}` ({table.labels[m]})" for m in exp.methods)
    out = [
        "## Experiment",
        "",
        f"- Methods: {methods}",
        f"- Seeds: {', '.join(map(str, exp.seeds))}",
        f"- Policy: `{exp.policy_path()}`" + (f" (warm-started from `{exp.warmstart}`)" if exp.warmstart else ""),
        f"- Data: train `{exp.data.train}`, validation `{exp.data.validation or 'none'}`, "
        + (f"disjoint selection: {sel}, " if (sel := exp.data.disjoint_selection()) else "")
        + f"benchmarks {', '.join(f'`{b}`' for b in exp.data.benchmarks)}",
        f"- Recipe: {cfg.steps} steps; {cfg.prompts_per_step} prompts × n = {cfg.rollout.n} per step; "
        f"mini-batch {cfg.mini_batch_prompts} prompts × {cfg.ppo_epochs} epoch(s) = {cfg.updates_per_rollout} "
        f"optimizer updates per rollout; lr {cfg.optim.lr:g} ({cfg.optim.schedule}); rollout T = "
        f"{cfg.rollout.temperature:g}, top-p {cfg.rollout.top_p:g}, ≤ {cfg.rollout.max_new_tokens} new tokens "
        f"({cfg.rollout.engine}); "
        + (f"validation every {v} steps" if (v := cfg.validation.every_n_steps) else "no validation during training"),
        f"- Evaluation: protocol `{_compact(exp.eval.protocol)}`, engine `{exp.eval.engine}`, "
        f"checkpoint `{exp.eval.checkpoint}` (the main table's; see Checkpoint selection)",
    ]
    out += [f"- Eval-only row `{r.name}` ({table.labels[r.name]}): model `{r.model}`" for r in exp.eval_only]
    out += [f"- Overrides of `{m}`: {', '.join(f'`{o}`' for o in ov)}" for m, ov in exp.method_overrides.items()]
    out += settings_lines(exp, table)
    return [*out, ""]


def settings_lines(exp: ExperimentConfig, table: tables.Table) -> list[str]:
    """Per trained row, the settings a matched comparison turns on: clipping, STEER's λ_min, control or not."""
    out = []
    for m in exp.methods:
        method = load_method(m, exp.method_overrides.get(m, []))
        loss = method.loss
        lam = f", λ_min {loss.params['weight_min']:g}" if "weight_min" in loss.params else ""
        role = " — a matched control, not a paper row" if m in exp.controls else ""
        out.append(f"- Row {table.labels[m]}: ε_low {loss.clip_low}, ε_high {loss.clip_high}{lam}{role}")
    return out


def protocol_section(results: Results) -> list[str]:
    """The protocols, engines and package versions the numbers come from (several values: all are listed)."""
    out = ["## Protocol and versions", "", f"Numbers read from {results.source}.", ""]
    infos = list(results.eval_info.values())
    for key, what in (("protocol", "Evaluation protocol"), ("engine", "Evaluation engine")):
        seen = sorted({_compact(i[key]) for i in infos if key in i})
        warn = " **(differs between rows)**" if len(seen) > 1 else ""
        out.append(f"- {what}{warn}: " + ("; ".join(f"`{s}`" for s in seen) if seen else "not recorded"))
    out.append("")
    train_v = _merged([i.get("versions", {}) for i in results.train_info.values()])
    eval_v = _merged([i.get("versions", {}) for i in infos])
    if train_v or eval_v:
        out += ["| package | training runs | evaluations |", "|---|---|---|"]
        for k in sorted(set(train_v) | set(eval_v)):
            out.append(f"| {k} | {train_v.get(k, '—')} | {eval_v.get(k, '—')} |")
        out.append("")
    return out


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


def _merged(dicts: list[dict[str, Any]]) -> dict[str, str]:
    keys = {k for d in dicts for k in d}
    return {k: " / ".join(sorted({str(d[k]) for d in dicts if k in d})) for k in keys}


def training_summary(exp: ExperimentConfig, results: Results, table: tables.Table) -> list[str]:
    """Per method: seeds with curves, last step, entropy first → last step and the last validation score."""
    out = ["| Method | seeds | last step | entropy, first → last step | last val avg@k |", "|---|---:|---:|---|---:|"]
    for m in exp.methods:
        runs = [results.curves[(m, s)] for s in exp.seeds if (m, s) in results.curves]
        ent = [r["rollout/entropy_mean"] for r in runs if r.get("rollout/entropy_mean")]
        val = [r["val/avg_at_k"][-1][1] for r in runs if r.get("val/avg_at_k")]
        last = max((c[-1][0] for r in runs for c in r.values() if c), default=None)
        ent_text = (
            f"{statistics.fmean(c[0][1] for c in ent):.4f} → {statistics.fmean(c[-1][1] for c in ent):.4f}"
            if ent
            else tables.DASH
        )
        val_text = f"{statistics.fmean(val):.3f}" if val else tables.DASH
        last_text = tables.DASH if last is None else str(last)
        out.append(f"| {table.labels[m]} | {len(runs)} | {last_text} | {ent_text} | {val_text} |")
    return [*out, "", "Means over the seeds that have the metric.", ""]


def missing_section(exp: ExperimentConfig, results: Results) -> list[str]:
    """Every configured result that has no number: never dropped silently."""
    out = ["## Missing", ""]
    for row, seeds in expected_rows(exp).items():
        for s in seeds:
            absent = [b for b in exp.data.benchmarks if (row, s, b) not in results.acc]
            if absent:
                whole = len(absent) == len(exp.data.benchmarks)
                what = "all benchmarks (no evaluation)" if whole else ", ".join(absent)
                out.append(f"- evaluation of `{row}`" + (f" seed {s}" if s is not None else "") + f": {what}")
    out += [f"- training run `{m}` seed {s}" for m in exp.methods for s in exp.seeds if (m, s) not in results.curves]
    if len(out) == 2:
        out.append("Nothing: every configured evaluation and training run was found.")
    return [*out, ""]


def figures_section(written: dict[str, str | None]) -> list[str]:
    out = ["## Training curves", ""]
    titles = {f.name: f.title for f in FIGURES}
    for name, rel in written.items():
        if rel and name in titles:
            out += [f"### {titles[name]}", "", f"![{titles[name]}]({rel})", ""]
    skipped = [name for name, rel in written.items() if not rel and name in titles]
    if skipped:
        keys = {f.name: ", ".join(sorted({k for keys, _ in f.panels for k in keys})) for f in FIGURES}
        out += ["Not drawn (no run logged its metrics): " + "; ".join(f"{n} ({keys[n]})" for n in skipped) + ".", ""]
    return out


def included_section(title: str, path: Path, report_dir: Path) -> list[str]:
    """Another stage's Markdown, verbatim except that its relative links are re-pointed at the report's folder."""
    rel = os.path.relpath(path.parent, report_dir)

    def repoint(m: re.Match[str]) -> str:
        return f"]({rel}/{m.group(1)})"

    text = re.sub(r"\]\((?![a-z]+:|#|/)([^)\s]+)\)", repoint, path.read_text())
    return [f"## {title}", "", f"(included from `{path}`)", "", text.rstrip(), ""]


def render(
    exp: ExperimentConfig,
    results: Results,
    table: tables.Table,
    figures: dict[str, str | None],
    report_dir: Path,
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# steer-bench report: {exp.name}", "", f"Generated {now}.", ""]
    lines += experiment_section(exp, table) + protocol_section(results)
    lines += ["## Main table", "", tables.to_markdown(table), tables.CONVENTIONS, ""]
    lines += ["Also as [LaTeX](main_table.tex) and [CSV](main_table.csv) (percentages, unrounded).", ""]
    lines += ["### Seed spread and evaluation error", "", tables.spread_markdown(table), tables.SPREAD_CONVENTIONS, ""]
    if exp.reference:
        lines += [f"## Ours vs the paper (`{exp.reference}`)", "", tables.vs_paper_markdown(table, exp.reference)]
        lines += [tables.VS_PAPER_CONVENTIONS, "", "Also as [CSV](vs_paper.csv).", ""]
    lines += comparisons.sections(exp, results, table.labels, figures.get("pass_at_k"))
    lines += selection.section(exp, results, table.labels)
    lines += [*figures_section(figures), "### Summary", "", *training_summary(exp, results, table)]
    lines += missing_section(exp, results)
    for title, rel in OPTIONAL_SECTIONS:
        if (exp.root / rel).is_file():
            lines += included_section(title, exp.root / rel, report_dir)
    return "\n".join(lines).rstrip() + "\n"
