"""Report: per-suite summaries (geomean of the ratios), the text table, the
JSON file and the PNG chart, and a plain progress line."""
import json
import math
import sys
import time

__all__ = ["Progress", "geomean", "summarize", "format_table", "write_json", "plot"]

# Second-baseline row keys and their column labels (see per_layer.baselines).
SECOND_BASELINES = {"torch_no_onednn": "x noDNN", "torch_tf32": "x tf32"}


class Progress:
    """A one-line progress bar on stderr (plain text, no dependency)."""

    def __init__(self, total, width=30, stream=sys.stderr):
        self.total, self.width, self.stream = total, width, stream
        self.start = time.monotonic()
        self.tty = stream.isatty()

    def update(self, done, label):
        filled = int(self.width * done / max(self.total, 1))
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                f"{elapsed:5.0f}s eta {eta:4.0f}s {label}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100)[:100])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self):
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()


def geomean(values):
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _summary_of(rows):
    ok = [r for r in rows if "ratio" in r]
    summary = dict(layers=len(rows), timed=len(ok),
                   geomean_ratio=geomean([r["ratio"] for r in ok]),
                   min_ratio=min((r["ratio"] for r in ok), default=float("nan")),
                   all_correct=all(r.get("correct", False) for r in rows))
    for key in SECOND_BASELINES:
        if any(f"ratio_{key}" in r for r in ok):
            summary[f"geomean_ratio_{key}"] = geomean([r.get(f"ratio_{key}") for r in ok])
    if ok:
        # Network-weighted: sum of count x torch time over sum of count x ours.
        summary["weighted_ratio"] = (sum(r["count"] * r["torch_s"] for r in ok)
                                     / sum(r["count"] * r["conv_ext_s"] for r in ok))
    return summary


def summarize(rows):
    """The whole run's summary, with one per suite under 'suites'."""
    summary = _summary_of(rows)
    suites = list(dict.fromkeys(r.get("suite") for r in rows))
    summary["suites"] = {str(s): _summary_of([r for r in rows if r.get("suite") == s])
                         for s in suites}
    return summary


def _second_key(rows):
    return next((k for k in SECOND_BASELINES if any(f"ratio_{k}" in r for r in rows)), None)


def format_table(rows, summary, peak):
    second = _second_key(rows)
    second_label = SECOND_BASELINES.get(second, "")
    name_width = max([16] + [len(r["layer"]) + 2 for r in rows])
    header = (f"{'layer':<{name_width}}{'C':>5}{'HxW':>9}{'K':>5}{'filter':>12}{'GFLOP':>8}"
              f"{'ms':>9}{'GFLOP/s':>9}{'%peak':>7}{'torch ms':>10}{'GFLOP/s':>9}"
              f"{'x torch':>9}{second_label:>9}{'max err':>10}  ok  torch ran")
    lines = [header, "-" * len(header)]
    for r in rows:
        prefix = (f"{r['layer']:<{name_width}}{r['C']:>5}{str(r['H']) + 'x' + str(r['W']):>9}"
                  f"{r['K']:>5}{r['filter']:>12}{r['gflop']:>8.2f}")
        if "error" in r:
            lines.append(f"{prefix}  ERROR {r['error']}")
            continue
        ratio2 = r.get(f"ratio_{second}")
        lines.append(
            f"{prefix}{r['conv_ext_s'] * 1e3:>9.2f}{r['conv_ext_gflops']:>9.1f}"
            f"{100 * r['conv_ext_gflops'] / peak:>7.1f}{r['torch_s'] * 1e3:>10.2f}"
            f"{r['torch_gflops']:>9.1f}{r['ratio']:>9.2f}"
            f"{(f'{ratio2:.2f}' if ratio2 else '-'):>9}{r['max_rel_error']:>10.1e}"
            f"  {'yes' if r['correct'] else 'NO ':<3} {r.get('torch_backend') or '?'}")
    lines.append("-" * len(header))
    lines.append(f"{'suite':<16}{'layers':>7}{'geomean x torch':>17}{second_label:>9}"
                 f"{'min':>7}{'weighted':>10}  all correct")
    entries = list(summary["suites"].items())
    if len(entries) > 1:
        entries.append(("all", summary))
    for name, s in entries:
        g2 = s.get(f"geomean_ratio_{second}")
        lines.append(f"{name:<16}{s['layers']:>7}{s['geomean_ratio']:>17.2f}"
                     f"{(f'{g2:.2f}' if g2 else '-'):>9}{s['min_ratio']:>7.2f}"
                     f"{s.get('weighted_ratio', float('nan')):>10.2f}  {s['all_correct']}")
    return "\n".join(lines)


def write_json(path, meta, summary, rows):
    with open(path, "w") as f:
        json.dump(dict(meta=meta, summary=summary, layers=rows), f, indent=1)


def plot(rows, path, title):
    """Bar chart of GFLOP/s per layer (conv_ext vs the torch baselines) and,
    below, the ratio to torch with the 1.0 line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "ratio" in r]
    if not rows:
        return
    names = [r["layer"] for r in rows]
    xs = range(len(rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.45 * len(rows) + 2), 8), sharex=True)
    series = [("conv_ext", [r["conv_ext_gflops"] for r in rows]),
              ("torch", [r["torch_gflops"] for r in rows])]
    second = _second_key(rows)
    if second:
        series.append((second.replace("_", " "), [r["gflop"] / r[f"{second}_s"] for r in rows]))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        top.bar([x + i * width for x in xs], values, width, label=label)
    top.set_ylabel("GFLOP/s")
    top.set_title(title)
    top.legend()
    bottom.bar(list(xs), [r["ratio"] for r in rows], 0.6,
               color=["tab:green" if r["ratio"] >= 1 else "tab:red" for r in rows])
    bottom.axhline(1.0, color="black", linewidth=0.8)
    bottom.set_ylabel("speed vs torch (x)")
    bottom.set_xticks(list(xs))
    bottom.set_xticklabels(names, rotation=70, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
