"""The report's stylesheet, inlined into the page (a report opens from disk, offline)."""

from __future__ import annotations

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1000px;
       color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
h3 code { font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.facts th { width: 10em; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 8px; overflow-x: auto;
      white-space: pre-wrap; }
.banner { background: #fff3cd; border: 1px solid #e0c36a; padding: 8px; }
.error { color: #a40000; }
.outcome-passed .outcome, span.outcome-passed { color: #1a7f37; font-weight: bold; }
.outcome-failed .outcome, .outcome-error .outcome, span.outcome-failed,
span.outcome-error { color: #c00; font-weight: bold; }
.outcome-skipped .outcome, span.outcome-skipped, .outcome-xfailed .outcome { color: #8a6d00; }
tr.outcome-failed, tr.outcome-error { background: #fff0f0; }
section.test { border-left: 4px solid #ccc; padding-left: 10px; margin: 1.2em 0; }
section.test.outcome-passed { border-color: #1a7f37; }
section.test.outcome-failed, section.test.outcome-error { border-color: #c00; }
section.test.outcome-skipped { border-color: #d9b300; }
figure.timeline { margin: 0.8em 0; }
figcaption { font-weight: bold; margin-bottom: 4px; }
svg.timeline-plot { background: #fff; border: 1px solid #ddd; max-width: 100%; height: auto; }
svg .grid { stroke: #eee; } svg .axis { stroke: #444; }
svg .tick, svg .legend, svg .label { font-size: 11px; fill: #333; }
svg .series { fill: none; stroke-width: 1.6; }
svg .event { stroke: #555; stroke-dasharray: 4 3; }
svg .event-number { font-size: 10px; fill: #555; }
svg .blackout { fill: #d00; fill-opacity: 0.18; }
table.events td:first-child, table.figures td:last-child { text-align: right; }
ul.files { columns: 2; }
"""
