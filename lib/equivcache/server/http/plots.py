# SPDX-License-Identifier: MIT
#
# The dashboard's plots, drawn on the server as SVG with matplotlib (Agg,
# text as paths: the browser loads no font and no script). Without
# matplotlib (Debian: python3-matplotlib) each plot is a short SVG saying so;
# the page's tables carry the same numbers.

import io
import threading
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape

_lock = threading.Lock()   # pyplot's state is global
WIDTH, HEIGHT = 7.0, 2.8


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    matplotlib.rcParams["svg.hashsalt"] = "equivcache"   # the same figure, the same bytes
    import matplotlib.pyplot as plt
    return plt


def _missing(text):
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="560" height="40"><text x="4" y="24" '
            'font-family="sans-serif" font-size="13">%s</text></svg>\n' % escape(text)).encode()


def _svg(draw):
    try:
        plt = _pyplot()
    except ImportError:
        return _missing("plot unavailable: the server has no matplotlib (Debian: python3-matplotlib)")
    with _lock:
        fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT), dpi=80)
        try:
            draw(ax)
            ax.grid(True, alpha=0.3)
            fig.tight_layout()
            out = io.BytesIO()
            fig.savefig(out, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
            return out.getvalue()
        finally:
            plt.close(fig)


def _day(text):
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)


def hit_rate(summary):
    """Setscene hit rate of each recent build (points) and of each day (a segment across the day), in percent."""
    builds = [r for r in reversed(summary["recent"]) if r["hit_rate"] is not None]
    days = [d for d in summary["per_day"] if d["hit_rate"] is not None]

    def draw(ax):
        for n, d in enumerate(days):
            start = _day(d["day"]).replace(tzinfo=None)
            ax.hlines(100 * d["hit_rate"], start, start + timedelta(days=1), color="#247", linewidth=2,
                      label="per day" if n == 0 else None)
        if builds:
            ax.plot([datetime.strptime(r["received"], "%Y-%m-%dT%H:%M:%SZ") for r in builds],
                    [100 * r["hit_rate"] for r in builds], "o", color="#4a7", label="per build")
        ax.set_ylim(0, 105)
        ax.set_ylabel("hit rate (%)")
        ax.set_title("setscene tasks the cache gave")
        if builds or days:
            ax.legend(loc="lower left")
        ax.figure.autofmt_xdate()
    return _svg(draw)


def saved(summary):
    """Build time saved each day, in minutes."""
    days = summary["per_day"]

    def draw(ax):
        minutes = [max(0.0, d["net_seconds"]) / 60.0 for d in days]
        ax.bar([d["day"] for d in days], minutes, color="#4a7")
        ax.set_ylim(0, max(minutes + [1.0]) * 1.1)
        ax.set_ylabel("minutes")
        ax.set_title("build time the cache saved, per day")
        ax.tick_params(axis="x", labelrotation=30)
    return _svg(draw)
