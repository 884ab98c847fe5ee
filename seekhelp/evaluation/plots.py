"""PNG figures of an eval (matplotlib, Agg backend): EM vs LLM tokens with the Pareto front, Priv_sample and turns
per run, and the RL round curve when the store has `rl_rounds`.

Labels of the scatter are placed greedily: each label tries a ring of offsets around its point and keeps the first
one that overlaps no earlier label, no point, and stays inside the axes.
"""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

# candidate label offsets in points: rings of growing radius around the point, right side first
_OFFSETS = [(round(r * math.cos(math.radians(a))), round(r * math.sin(math.radians(a))))
            for r in (8, 16, 28, 42, 60) for a in (20, -20, 160, 200, 60, -60, 120, 240, 0, 180, 90, 270)]


def llm_tokens_per_q(row: dict) -> float:
    return ((row.get("llm_prompt_tokens") or 0) + (row.get("llm_completion_tokens") or 0)) / max(1, row.get("n") or 1)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (x lower-or-equal AND y higher-or-equal, one strictly): minimize
    x (LLM tokens), maximize y (EM). Sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _place_labels(ax, xs, ys, labels) -> None:
    """Annotate each point, trying offsets in turn; keep the first clean spot, else the least-overlapping one."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    taken = [Bbox.from_bounds(*(ax.transData.transform((x, y)) - 6), 12, 12) for x, y in zip(xs, ys, strict=True)]
    for x, y, text in sorted(zip(xs, ys, labels, strict=True), key=lambda p: (-p[1], p[0])):
        best = None
        for dx, dy in _OFFSETS:
            far = abs(dx) + abs(dy) > 30
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                              ha="left" if dx > 0 else ("right" if dx < 0 else "center"),
                              va="bottom" if dy >= 0 else "top", linespacing=1.1, zorder=5,
                              bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                              arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if far else None)
            bb = ann.get_window_extent(renderer)
            outside = max(0, inside.x0 - bb.x0) + max(0, bb.x1 - inside.x1) + max(0, inside.y0 - bb.y0) + \
                max(0, bb.y1 - inside.y1)
            cost = sum(_overlap(bb, t) for t in taken) + 50 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, bb)
            else:
                ann.remove()
            if cost == 0:
                break
        taken.append(best[2])


def _groups(xs, ys, names) -> list[tuple[float, float, str]]:
    """Points that would sit on top of each other (within 1.5% of the axis spans) share one label."""
    sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    out: list[list] = []
    for x, y, n in zip(xs, ys, names, strict=True):
        for g in out:
            if abs(g[0] - x) / sx < 0.015 and abs(g[1] - y) / sy < 0.015:
                g[2].append(n)
                break
        else:
            out.append([x, y, [n]])
    return [(x, y, "\n".join(ns)) for x, y, ns in out]


def em_vs_tokens(rows: Sequence[dict], path: Path, title: str) -> Path:
    xs = [llm_tokens_per_q(r) for r in rows]
    ys = [r.get("em") or 0.0 for r in rows]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(strategies)}
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    own = [i for i, r in enumerate(rows) if r.get("kind", "run") == "run"]  # transfer runs use another LLM
    front = [own[i] for i in pareto_front([(xs[i], ys[i]) for i in own])]
    if front:
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.step(fx, fy, where="post", color="0.35", lw=1.2, ls="--", zorder=1,
                label="Pareto front (max EM, min LLM tokens)")
        ax.scatter(fx, fy, s=170, facecolors="none", edgecolors="0.2", lw=1.3, zorder=2)
    for s in strategies:
        for marker, kind, suffix in (("o", "run", ""), ("^", "transfer", " (transfer)")):
            idx = [i for i, r in enumerate(rows) if r["strategy"] == s and r.get("kind", "run") == kind]
            if idx:
                ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], color=colors[s], marker=marker, s=60,
                           zorder=3, label=s + suffix)
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 10.0
    ax.set_xlim(min(xs) - 0.15 * span_x, max(xs) + 0.3 * span_x)
    ax.set_ylim(min(ys) - 0.15 * span_y, max(ys) + 0.3 * span_y)
    ax.set_xlabel("LLM tokens per question (prompt + completion)")
    ax.set_ylabel("EM (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    gx, gy, gl = zip(*_groups(xs, ys, [r["run_name"] for r in rows]), strict=True)
    _place_labels(ax, gx, gy, gl)
    fig.savefig(path)
    plt.close(fig)
    return path


def bars(rows: Sequence[dict], key: str, path: Path, xlabel: str, title: str, fmt: str = "{:.1f}") -> Path:
    names = [r["run_name"] for r in rows]
    vals = [r.get(key) or 0.0 for r in rows]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    colors = [plt.get_cmap("tab10")(strategies.index(r["strategy"]) % 10) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4), dpi=120)
    y = list(range(len(rows)))[::-1]
    ax.barh(y, vals, color=colors, hatch=None)
    for yi, v, r in zip(y, vals, rows, strict=True):
        ax.text(v, yi, " " + fmt.format(v) + (" (transfer)" if r.get("kind") == "transfer" else ""),
                va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, (max(vals) or 1.0) * 1.3)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def rl_curve(rounds: Sequence[dict[str, Any]], path: Path) -> Path | None:
    if not rounds:
        return None
    groups: dict[str, list[dict]] = {}
    for r in rounds:
        key = " / ".join(str(r[k]) for k in ("run", "split") if r.get(k) is not None) or "rl"
        groups.setdefault(key, []).append(r)
    scale = 100.0 if all((r.get("em") or 0) <= 1.0 for r in rounds) else 1.0
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["round"])
        a1.plot([r["round"] for r in rs], [r.get("mean_reward") for r in rs], marker="o", label=key)
        a2.plot([r["round"] for r in rs], [(r.get("em") or 0) * scale for r in rs], marker="o", label=key)
    for ax, label in ((a1, "mean reward"), (a2, "EM (%)")):
        ax.set_xlabel("RL round (0 = SFT start)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    a1.set_title("Mean reward per round")
    a2.set_title("EM per round")
    a2.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
