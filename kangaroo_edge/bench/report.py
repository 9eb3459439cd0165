"""Summaries of a benchmark run: per category and overall, as a dict, a Markdown table and a chart.

Speedups are medians of per-question ratios (each question's tokens/s over llama.cpp plain's on the
same question), which cancels most of the drift of a shared machine; tokens/s are medians too.
"""

from __future__ import annotations

import statistics
from typing import Any, Optional

from .runner import LABELS, LLAMACPP_PLAIN, OURS_KANGAROO, OURS_PLAIN

OVERALL = "overall"


def _median(xs: list[float]) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _rate(flags: list[Optional[bool]]) -> Optional[float]:
    flags = [f for f in flags if f is not None]
    return sum(flags) / len(flags) if flags else None


def _ratio(a: float, b: float) -> Optional[float]:
    return a / b if b > 0 else None


def summarize_group(rows: list[dict], systems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_questions": len(rows), "systems": {}}
    for name in systems:
        runs = [r["systems"][name] for r in rows if name in r["systems"]]
        s: dict[str, Any] = {
            "median_tokens_per_second": _median([x["tokens_per_second"] for x in runs]),
            "median_prefill_tokens_per_second": _median([x["prefill_tokens_per_second"] for x in runs]),
            "total_tokens": sum(x["n_tokens"] for x in runs),
        }
        for base, key in ((LLAMACPP_PLAIN, "speedup_vs_llamacpp"), (OURS_PLAIN, "speedup_vs_ours_plain")):
            if base in systems:
                s[key] = _median([_ratio(r["systems"][name]["tokens_per_second"], r["systems"][base]["tokens_per_second"])
                                  for r in rows if name in r["systems"] and base in r["systems"]])
        cycles = sum(x.get("cycles") or 0 for x in runs)
        if cycles:
            # tokens per verification over the whole group: each run's mean weighted by its cycles
            s["mean_accepted"] = sum((x.get("mean_accepted") or 0) * (x.get("cycles") or 0) for x in runs) / cycles
            s["cycles"] = cycles
            s["draft_n"] = sum(x.get("draft_n") or 0 for x in runs)
            if any("draft_n_accepted" in x for x in runs):
                s["draft_n_accepted"] = sum(x.get("draft_n_accepted") or 0 for x in runs)
                s["acceptance_rate"] = s["draft_n_accepted"] / s["draft_n"] if s["draft_n"] else None
        elif any(x.get("mean_accepted") is not None for x in runs):
            s["mean_accepted"] = statistics.mean(x["mean_accepted"] for x in runs if x.get("mean_accepted") is not None)
        out["systems"][name] = s
    out["match_rate_kangaroo_vs_plain"] = _rate([r["match_kangaroo_vs_plain"] for r in rows])
    out["match_rate_plain_vs_llamacpp"] = _rate([r["match_plain_vs_llamacpp"] for r in rows])
    out["match_rate_pld_vs_llamacpp"] = _rate([r["match_pld_vs_llamacpp"] for r in rows])
    return out


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per category (in the order of the questions) and overall."""
    rows = result["questions"]
    systems = result["config"]["systems"]
    cats: dict[str, list[dict]] = {}
    for r in rows:
        cats.setdefault(r["category"], []).append(r)
    summary = {c: summarize_group(rs, systems) for c, rs in cats.items()}
    summary[OVERALL] = summarize_group(rows, systems)
    return summary


# ---- Markdown ----------------------------------------------------------------------------

def _f(x: Optional[float], fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def markdown(result: dict[str, Any]) -> str:
    summary = result.get("summary") or summarize(result)
    systems = result["config"]["systems"]
    cfg, machine = result["config"], result["machine"]
    head = ["category", "n"]
    for name in systems:
        head.append(f"{LABELS[name]} tok/s" + ("" if name == LLAMACPP_PLAIN else " (× llama.cpp)"))
    if OURS_KANGAROO in systems and OURS_PLAIN in systems:
        head.append("Kangaroo × ours plain")
    spec = [n for n in systems if n != LLAMACPP_PLAIN and n != OURS_PLAIN]
    head += [f"{LABELS[n]} tokens/verification" for n in spec]
    head += ["Kangaroo = plain", "plain = llama.cpp"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for cat, g in summary.items():
        cells = [f"**{cat}**" if cat == OVERALL else cat, str(g["n_questions"])]
        for name in systems:
            s = g["systems"][name]
            cell = _f(s["median_tokens_per_second"])
            if name != LLAMACPP_PLAIN and "speedup_vs_llamacpp" in s:
                cell += f" ({_f(s['speedup_vs_llamacpp'], '{:.2f}')}×)"
            cells.append(cell)
        if OURS_KANGAROO in systems and OURS_PLAIN in systems:
            cells.append(_f(g["systems"][OURS_KANGAROO].get("speedup_vs_ours_plain"), "{:.2f}×"))
        cells += [_f(g["systems"][n].get("mean_accepted"), "{:.2f}") for n in spec]
        cells += [_pct(g["match_rate_kangaroo_vs_plain"]), _pct(g["match_rate_plain_vs_llamacpp"])]
        lines.append("| " + " | ".join(cells) + " |")
    rendering = ("as raw text to continue (--completion)" if cfg.get("prompt_format") == "completion"
                 else "with the model's chat template")
    notes = [
        f"Greedy, first turn of each question {rendering}, max {cfg['max_new_tokens']} new "
        f"tokens, {cfg['threads']} threads on every side, n_ctx {cfg['n_ctx']}, {cfg['n_questions']} questions; "
        "tok/s = generation only (prefill excluded), medians; speedups are medians of per-question ratios.",
        f"Model: `{cfg['model_path']}`; adapter: `{cfg.get('adapter') or 'none'}`. "
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} CPUs, load average "
        f"{_load(machine.get('load_average_before'))} before, {_load(machine.get('load_average'))} after.",
    ]
    if "AMX" in machine.get("llama_cpp_cpu_buffer_types", []):
        notes.append("**llama.cpp ran without its repacked weights: its build uses ggml's AMX kernels, which "
                     "crash on this CPU (README, \"CPUs with AMX\").**")
    if result.get("kangaroo_fallback"):
        notes.append(f"**'ours Kangaroo' ran as plain decoding: {result['kangaroo_fallback']}.**")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def _load(avg: Optional[list[float]]) -> str:
    return "?" if not avg else "/".join(f"{x:.1f}" for x in avg)


# ---- chart -------------------------------------------------------------------------------

def chart(result: dict[str, Any], path: str) -> None:
    """Grouped bars: speedup over llama.cpp plain per category, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result.get("summary") or summarize(result)
    systems = [n for n in result["config"]["systems"] if n != LLAMACPP_PLAIN]
    cats = list(summary)
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(cats) + 2), 4.0))
    for j, name in enumerate(systems):
        ys = [summary[c]["systems"][name].get("speedup_vs_llamacpp") or 0.0 for c in cats]
        xs = [i + (j - (len(systems) - 1) / 2) * width for i in range(len(cats))]
        label = LABELS[name] + (" (fell back to plain)" if name == OURS_KANGAROO and result.get("kangaroo_fallback") else "")
        ax.bar(xs, ys, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, rotation=30, ha="right")
    ax.set_ylabel("speedup over llama.cpp plain (median)")
    cfg = result["config"]
    ax.set_title(f"Spec-Bench, greedy, {cfg['max_new_tokens']} new tokens, {cfg['threads']} threads")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["summarize", "markdown", "chart"]


def _times(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def cost_model_text(cm: Optional[dict]) -> str:
    """The speculation controller's measurements and the drafting rule they imply (bench --tune).
    Every ratio is None-safe: a yardstick that was not measured prints as n/a."""
    if not cm:
        return "speculation controller: nothing measured (no adapter loaded, or Kangaroo not run)"
    plain = cm["plain_seconds"] if cm.get("plain_measured") else None
    llama = cm.get("llamacpp_step_seconds")
    lines = ["speculation controller, measured on this machine:",
             "  plain step " + (f"{plain * 1e3:.2f} ms" if plain else "not measured")
             + (f"; llama.cpp's step {llama * 1e3:.2f} ms" if llama else "")]
    for name, d in cm["drafters"].items():
        if not any(d["verify_measured"]) and not any(d["calibration"]["count"]):
            continue  # a drafter this run never used
        draft = d["draft_step_seconds"]
        if draft > 0:
            lines.append(f"  {name}: draft step {draft * 1e3:.2f} ms ({_times(draft / plain if plain else None)} plain)")
            bonus = d.get("bonus_step_seconds", 0.0)
            if d.get("bonus_step_measured"):  # drafters whose cycles took a bonus row
                lines.append(f"  {name}: bonus row step {bonus * 1e3:.2f} ms ({_times(bonus / plain if plain else None)} plain)")
        def cost(k: int) -> str:
            v = d["verify_seconds"][k]
            mark = "" if d["verify_measured"][k] else " (extrapolated)"
            return (f"k={k + 1} ({d['verify_rows'][k]} rows) {v * 1e3:.2f} ms = "
                    f"{_times(v / plain if plain else None)} ours, {_times(v / llama if llama else None)} llama.cpp{mark}")
        lines.append(f"  {name}: verify a cycle of k drafts: " + "; ".join(cost(k) for k in range(8)))
        cal = d["calibration"]
        lines.append(f"  {name}: draft accuracy by signal (drafts seen): " + ", ".join(
            f"{s:g} {a:.2f} ({n})" for s, a, n in zip(cal["signal"], cal["acceptance"], cal["count"]) if n))
        if plain:
            # one more draft pays when P(it and all before are right) x plain > draft + one more verified row
            need = (draft + d["verify_seconds"][1] - d["verify_seconds"][0]) / plain
            lines.append(f"  {name}: a second draft pays when P(both drafts right) > {need:.2f}"
                         + ("  (never: more than certain)" if need >= 1 else ""))
    return "\n".join(lines)
