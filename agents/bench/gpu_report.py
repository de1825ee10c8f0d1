"""The GPU check's report as Markdown, written from its JSON (``agents.bench.gpu_check``): one section per part."""

from __future__ import annotations

from typing import Any


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return lines


def _part_line(part: dict[str, Any]) -> str:
    line = f"Status: **{part['status']}**, {part['elapsed_s']} s of {part['allowed_s']} s allowed"
    line += f" (budget {part['budget_s']} s)."
    if "note" in part:
        line += f" {part['note']}."
    if "error" in part:
        line += f"\n\nError: `{part['error']}`"
    return line


def speed_section(part: dict[str, Any]) -> list[str]:
    lines = ["## 1. Agent steps per second", "", _part_line(part), ""]
    if "runs" not in part:
        return lines
    lines.append(
        f"{part['game']}, one update per 4 transitions for every run (the same replay ratio), agent steps = "
        "transitions of all envs. `sb3`: stock SB3 `DQN` on its own Atari chain (a `DummyVecEnv` of n envs); `full`: "
        "this agent with task inference (forget-me-not), per-task frame replay and EWC with two anchors, on the "
        "Python chain with one env and on ale-py's C++ vector env (`full_cpp`) with more."
    )
    lines.append("")
    rows = [
        [
            r["n_envs"],
            r["variant"],
            r.get("steps_per_s"),
            f"{r['vs_sb3']:.2f}x" if "vs_sb3" in r else None,
            r.get("timed_steps"),
            r.get("updates"),
            None if "anchors" not in r else int(r["anchors"]),
            r["status"],
        ]
        for r in part["runs"]
    ]
    lines += _table(["n_envs", "variant", "steps/s", "vs sb3", "timed steps", "updates", "EWC anchors", "status"], rows)
    if "fastest" in part:
        f = part["fastest"]
        fastest = f"n_envs {f['n_envs']}, {f['vector']} env, {f['steps_per_s']} steps/s"
        lines += ["", f"Fastest setting of this agent: {fastest}."]
    return lines


def update_section(part: dict[str, Any]) -> list[str]:
    lines = ["## 2. One update of the full agent (ms)", "", _part_line(part), ""]
    if "rows" not in part:
        return lines
    lines.append(
        "Nature CNN with per-task gains, batch 32, Double-DQN target, Huber loss, EWC closed-form gradient (two "
        "anchors), clipping, fused Adam; median over interleaved rounds. Speed-up = plain ms / lever ms."
    )
    lines.append("")
    rows = [
        [r["lever"], r.get("ms"), f"{r['speedup_vs_plain']:.2f}x" if "ms" in r else None, r.get("skipped")]
        for r in part["rows"]
    ]
    lines += _table(["update", "ms", "speed-up vs plain", "not measured because"], rows)
    if part.get("compile_s") is not None:
        lines += ["", f"torch.compile's first call (compilation) took {part['compile_s']} s."]
    return lines


def learning_section(part: dict[str, Any]) -> list[str]:
    game = part.get("game", "")
    lines = [f"## 3. Atari learning: {game}".rstrip(": "), "", _part_line(part), ""]
    if "evaluations" not in part:
        return lines
    setting = part["setting"]
    lines.append(
        f"This agent with everything on, n_envs {setting['n_envs']} ({setting['vector']} env) on {setting['device']}: "
        f"{part['agent_steps']:,} agent steps ({part['frames']:,} frames) in {part['seconds']} s, "
        f"{part['steps_per_s']} steps/s with the evaluations; {part['tasks_created']} task(s) inferred. "
        f"{part['protocol']}. Run directory (TensorBoard): `{part['run_dir']}`."
    )
    lines.append("")
    random = part["random_score"]
    curve_agents = list((part["evaluations"][0].get("published") or {}) if part["evaluations"] else {})
    rows = []
    for e in part["evaluations"]:
        versus = f"{e['score'] - random:+.2f}"
        curve = [(e.get("published") or {}).get(a) for a in curve_agents]
        rows.append([e["step"], f"{e['frames']:,}", e["train_seconds"], e["score"], versus, *curve, e["eval_seconds"]])
    heads = ["agent steps", "frames", "s into training", "score", "vs random"]
    lines += _table([*heads, *(f"published {a}" for a in curve_agents), "evaluation s"], rows)
    lines += ["", f"Random play: {random} (DQN Zoo's table, `envs/data/atari_scores.csv`)."]
    published = part.get("published")
    if published is None:
        lines.append("No published DQN curve is tabled for this game in `agents/bench/gpu_check.py`.")
    else:
        agents = ", ".join(f"{k} {v:.2f}" for k, v in published.items() if isinstance(v, float))
        beyond = " (the table ends before this many frames: its last point)" if published["beyond_table"] else ""
        lines.append(
            f"Published DQN at {part['frames']:,} frames: iteration {published['iteration']} "
            f"(frames {published['frames']}){beyond}: {agents}. Source: {published['source']}; mean returns of the "
            "training episodes under Dopamine's protocol (sticky actions 0.25), not ε = 0.05 evaluations."
        )
    if part["evaluations"]:
        last = part["evaluations"][-1]
        lines.append(f"Last evaluation: {last['score']} against random {random}.")
    return lines


def sequence_section(part: dict[str, Any]) -> list[str]:
    lines = ["## 4. A revisit: fine-tuning against EWC", "", _part_line(part), ""]
    if "methods" not in part:
        return lines
    games = list(dict.fromkeys(part["games"]))
    lines.append(
        f"{' → '.join(part['games'])}, {part['steps_per_segment']:,} agent steps per segment, this agent at the "
        "fastest setting; every game scored at each segment end (ε 0.05)."
    )
    lines.append("")
    rows = []
    for method, run in part["methods"].items():
        name = "fine-tuning (none)" if method == "none" else method
        for k, evaluation in enumerate(run["after_segment"]):
            rows.append([name, k + 1, evaluation["step"], *(evaluation["scores"].get(g) for g in games)])
        if not run["finished"]:
            rows.append([name, "stopped by the budget", run["agent_steps"], *(None for _ in games)])
    lines += _table(["method", "after segment", "agent step", *games], rows)
    return lines


SECTIONS = {
    "speed": speed_section,
    "update": update_section,
    "learning": learning_section,
    "sequence": sequence_section,
}


def markdown(report: dict[str, Any]) -> str:
    """The whole report: machine, notes, then each part that ran (or why it did not)."""
    m = report["machine"]
    device = m["gpu"] or "CPU only"
    lines = [
        f"# GPU check: {device}",
        "",
        f"Started {report['started_utc']} UTC; {report.get('elapsed_s', '?')} s of the {report['deadline_s']} s "
        "deadline.",
        "",
        f"- command: `{report['command']}`",
        f"- device: {m['device']} ({device}); {m['cpus']} CPUs; torch {m['torch']} (CUDA {m['cuda']}); "
        f"Python {m['python']}; {m['platform']}",
    ]
    lines += [f"- **note**: {note}" for note in report["notes"]]
    for name, section in SECTIONS.items():
        lines.append("")
        if name in report["parts"]:
            lines += section(report["parts"][name])
        else:
            lines.append(f"## {name}: not reached")
    return "\n".join(lines) + "\n"
