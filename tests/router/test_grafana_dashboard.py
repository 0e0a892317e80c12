"""The Grafana dashboard shipped in docs/ must only query metrics the router exports, with the labels it uses."""

import json
import re
from pathlib import Path

from dpbalance.router.metrics import RouterMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
SUFFIX = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Series name -> label names, as a Prometheus server would see them."""
    names: dict[str, set[str]] = {}
    m = RouterMetrics(G=2)
    for fam in m.registry.collect():
        labels = set()
        for s in fam.samples:
            labels |= set(s.labels) - {"le"}
        metric = next(
            (c for c in m.registry._collector_to_names if fam.name in m.registry._collector_to_names[c]), None
        )
        if metric is not None and hasattr(metric, "_labelnames"):
            labels |= set(metric._labelnames)
        for suf in SUFFIX[fam.type]:
            names[fam.name + suf] = labels | ({"le"} if suf == "_bucket" else set())
    return names


def test_every_panel_queries_an_exported_metric_with_its_labels():
    dash = json.loads(DASHBOARD.read_text())
    have = exported()
    seen = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name in re.findall(r"\b(dpbalance_[a-z_]+)", expr):
                assert name in have, f"panel {panel['title']!r} queries {name}, which the router does not export"
                seen.add(name)
            legend_labels = set(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]))
            by = set(re.findall(r"by \(([^)]*)\)", expr))
            grouped = {x.strip() for b in by for x in b.split(",")}
            names = re.findall(r"\b(dpbalance_[a-z_]+)", expr)
            allowed = set().union(*(have[n] for n in names)) if not grouped else grouped
            assert legend_labels <= allowed, f"panel {panel['title']!r}: legend uses {legend_labels - allowed}"
    # the panels cover the headline series
    for key in (
        "dpbalance_rank_load_tokens",
        "dpbalance_imbalance_gap_tokens",
        "dpbalance_requests_total",
        "dpbalance_time_to_first_token_seconds_bucket",
        "dpbalance_cb_state",
    ):
        assert key in seen
