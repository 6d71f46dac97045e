"""summary.md tables and PNG plots, as pure functions of a metrics dict (so they can be redrawn later)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _f(x: Any, pct: bool = False, nd: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, int) and not pct:
        return str(x)
    return f"{100 * x:.{nd}f}" if pct else f"{x:.{nd if abs(x) >= 1 else 3}f}"


def _ci(m: dict[str, Any] | None, pct: bool) -> str:
    if not m:
        return "–"
    s = _f(m["value"], pct)
    if m.get("ci_low") is not None:
        s += f" [{_f(m['ci_low'], pct)}, {_f(m['ci_high'], pct)}]"
    return s


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |"
                                                                           for r in rows]


def budget_lines(m: dict[str, Any]) -> list[str]:
    """The budget used and where it came from, plus a warning per set where >2% of replies hit it."""
    from delia.evaluation.outcomes import budget_warnings

    b = m.get("budget") or {}
    if not b:
        return []
    line = f"- generation budget: {b['max_new_tokens']} new tokens"
    if b.get("source") == "data":
        p99 = b.get("p99_gold_tokens")
        line += (f" (from the data: {b['rule']}; p99 {p99:.0f}, max {b['max_gold_tokens']} over {b['n_gold']} "
                 f"{b['gold_from']})" if p99 is not None else " (no gold replies found: the floor)")
    else:
        line += " (configured)"
    return [line] + [f"- **budget hit** {w}" for w in budget_warnings(m.get("sets", {}), b.get("max_new_tokens"))]


def _n(v: dict[str, Any]) -> str:
    return next((str(x["n"]) for x in v.values() if isinstance(x, dict) and "n" in x), "?")


def scores_lines(m: dict[str, Any]) -> list[str]:
    """Scores (the task's summary columns, with the majority-class floor beside the label scores), per-set
    failure and finish reasons, robustness across phrasings."""
    from delia.evaluation.outcomes import FAILURES
    from delia.task import get_task

    task, sets = get_task(m["task"]), m.get("sets", {})
    rate = {spec.name: spec.kind == "rate" for spec in task.metric_schema()}
    cols = [(k, h) for k, h in task.summary_columns() if any(k in v for v in sets.values())]
    pct = all(rate.get(k, False) for k, _ in cols)
    lines = ["", "## Scores" + (" (%)" if pct else ""), ""] + ([task.summary_note, ""] if task.summary_note else [])
    empty = any("empty_outputs" in v for v in sets.values())
    lines += _table(["set", "n", *(h for _, h in cols), *(["empty outputs"] if empty else [])],
                    [[s, _n(v), *(_ci(v.get(k), rate.get(k, False)) if k != "majority_class" else
                                  _f(v[k]["value"], True) for k, _ in cols),
                      *([str(v.get("empty_outputs", 0))] if empty else [])] for s, v in sets.items()])
    fails = [f for f in FAILURES if any(f in (v.get("failures") or {}) for v in sets.values())]
    finish = list(dict.fromkeys(k for v in sets.values() for k in v.get("finish_reasons") or {}))
    lines += ["", "## Failure and finish reasons (replies)", ""]
    lines += _table(["set", *fails, *(f"finish {k}" for k in finish)],
                    [[s, *(str((v.get("failures") or {}).get(f, 0)) for f in fails),
                      *(str((v.get("finish_reasons") or {}).get(k, 0)) for k in finish)] for s, v in sets.items()])
    rob = m.get("robustness", {})
    key = "task_valid" if all("task_valid" in r for r in rob.values()) else "format_accuracy"
    if rob:
        lines += ["", f"## Robustness across phrasings ({key.replace('_', '-')}, %)", ""]
        lines += _table(["set", "phrasings", "mean", "min", "max", "spread", "std"],
                        [[s, str(r[key]["n_phrasings"]),
                          *(_f(r[key][k], True) for k in ("mean", "min", "max", "spread", "std"))]
                         for s, r in rob.items()])
    if m.get("seen_unseen_gap"):
        g = m["seen_unseen_gap"]
        lines += ["", "Seen - unseen gap (mean per-phrasing, points): " + ", ".join(
            f"{k} {_f(v, True)}" for k, v in g.items())]
    return lines


def summary_lines(m: dict[str, Any]) -> list[str]:
    """Markdown lines: header, per-set scores with CIs, robustness, scoring, hidden states, speed."""
    info = m["model"]
    lines = [f"# delia eval: {m['task']}", "",
             f"- model: `{info.get('model')}`" + (f", adapter `{info['adapter']}`" if info.get('adapter')
                                                               else "") + f" ({info.get('dtype')})",
             f"- data: `{m['data']}` ({m['n_examples']} examples, {m['n_rows']} prompts)"]
    if m.get("instructions"):
        lines.append(f"- instructions: `{m['instructions']}`")
    for t in info.get("added_tokens") or []:
        lines.append(f"- added {t['tokens']} to the model (init `{t['init']}`): the base model lacks them")
    if info.get("tokens_as_text"):
        lines.append(f"- {info['tokens_as_text']} left as plain text (token_init none)")
    lines += budget_lines(m)
    lines += ["", "Intervals: seeded percentile bootstrap over examples (all prompts of an example together)."]
    lines += scores_lines(m)
    if m.get("scoring"):
        lines += ["", "## Teacher-forced scoring (gold replies)", ""]
        lines += _table(["set", "rows", "loss (token-weighted CE)", "exp(H) first token (geo-mean)",
                         "N90 (geo-mean)", "-log p(gold first)"],
                        [[s, str(v["rows"]), _f(v["loss"], nd=4), _f(v["state_space_exp_entropy_geomean"], nd=2),
                          _f(v["state_space_n90_geomean"], nd=2), _f(v["first_token_nll_mean"], nd=3)]
                         for s, v in m["scoring"].items()])
    h = m.get("hidden")
    if h and "summary" in h:
        lines += ["", f"## Hidden-state alignment of `{h['token']}` ({h['n_layers']} blocks; L2, lower = closer)", ""]
        lines += _table(["word", "first block", "middle block", "last (final norm)", "last block pre-norm",
                         "cosine (middle)"],
                        [[w, *(_f(s[k], nd=2) for k in ("first", "middle", "last", "last_prenorm", "cos_middle"))]
                         for w, s in h["summary"].items() if w != "mean"])
        lines += ["", f"Mid-layer concept L2 (avg): {_f(h['summary']['mean']['middle'], nd=2)}"]
    elif h:
        lines += ["", f"Hidden-state analysis skipped: {h.get('skipped')}"]
    sp = m.get("speed", {})
    if sp.get("prompts_per_s"):
        lines += ["", f"Speed: {sp['rows_generated']} prompts in {sp['seconds']:.0f} s = "
                      f"{sp['prompts_per_s']:.3f} prompts/s, {sp['new_tokens_per_s']:.1f} new tokens/s "
                      f"(batch {sp['batch_size']}, {sp['dtype']}; {sp['rows_cached']} reused from the cache)"]
    for p in m.get("plots", []):
        lines.append(f"\n![{Path(p).stem}]({Path(p).name})")
    return lines


def write_summary(m: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text("\n".join(summary_lines(m)) + "\n", encoding="utf-8")


def write_plots(m: dict[str, Any], out: str | Path) -> list[str]:
    """Per-phrasing accuracy bars (halu) and L2 across layers (when computed). Returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, paths = Path(out), []
    per = m.get("per_instruction") or {}
    if per:
        key = "task_valid" if all("task_valid" in v for d in per.values() for v in d.values()) else "format_accuracy"
        items = [(s, iid, d[iid][key]) for s, d in per.items() for iid in sorted(d)]
        fig, ax = plt.subplots(figsize=(8, max(2.5, 0.22 * len(items) + 1)))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, s in enumerate(per):
            ys = [i for i, it in enumerate(items) if it[0] == s]
            ax.barh(ys, [100 * (items[i][2] or 0) for i in ys], color=colors[k % len(colors)], label=s)
        ax.set_yticks(range(len(items)), [iid for _, iid, _ in items], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"{key.replace('_', '-')} (%)")
        ax.set_title(f"{key.replace('_', '-')} per instruction phrasing")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        paths.append(str(out / "per_instruction_accuracy.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    h = m.get("hidden")
    if h and "l2" in h:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for w, vals in h["l2"].items():
            ax.plot(range(len(vals)), vals, marker="o", ms=3, label=f'"{w}"')
        ax.set_xlabel("hidden state index (0 = embeddings, L = final norm)")
        ax.set_ylabel(f"L2 to {h['token']}")
        ax.set_title(f"{h['token']} vs concept words across layers")
        ax.legend()
        fig.tight_layout()
        paths.append(str(out / "concept_l2.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
