"""/metrics of several replicas as one Prometheus text: every replica's
samples under its own `replica` label, each family's HELP and TYPE once, so
a scraper sees the whole deployment (sum by family for the totals) and each
replica apart (which one holds a chat, which one is busy)."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def merge(texts: dict[str, str], label: str = "replica") -> str:
    """texts: replica name -> that replica's /metrics text (Prometheus format 0.0.4)."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for replica in sorted(texts):
        for fam in text_string_to_metric_families(texts[replica]):
            _, _, lines = families.setdefault(fam.name, (fam.documentation, fam.type, []))
            for s in fam.samples:
                labels = {label: replica, **s.labels}
                body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                lines.append(f"{s.name}{{{body}}} {_value(s.value)}")
    out = []
    for name, (doc, kind, lines) in families.items():
        out.append(f"# HELP {name} {_escape(doc)}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return "\n".join(out) + "\n"
