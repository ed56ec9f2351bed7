"""The report page's inline stylesheet and script (kept apart from the HTML builder; no network, no library)."""

PAGE_CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #ffffff; --soft: #f6f8fa; --accent: #0969da;
  --good: #1a7f37; --bad: #cf222e; --warn: #9a6700; font-family: system-ui, -apple-system, "Segoe UI", Roboto,
  "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
body { margin: 0; } main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 24px; margin: 0 0 4px; } h1 .run-name { color: var(--accent); font-weight: 600; }
h2 { font-size: 19px; margin: 36px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; } h3 small, .meta, .path { color: var(--muted); font-weight: normal; }
.path { margin: 0 0 10px; font-size: 13px; } .meta { font-size: 13px; margin: 4px 0 8px; }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none; font-size: 14px; }
.facts-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 8px; margin: 14px 0; }
.fact { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
.fact-key { display: block; font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.fact-value { font-size: 14px; font-weight: 600; overflow-wrap: anywhere; }
details.config > summary { cursor: pointer; color: var(--accent); font-size: 14px; }
.missing { color: var(--warn); background: #fff8c5; border: 1px solid #eed888; border-radius: 6px; padding: 8px 12px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 12px; }
svg.chart { border: 1px solid var(--line); border-radius: 6px; background: #fff; max-width: 100%; height: auto; }
svg.chart .chart-title { font-size: 13px; font-weight: 600; fill: var(--fg); }
svg.chart .tick, svg.chart .axis-label { font-size: 11px; fill: var(--muted); }
svg.chart .grid { stroke: #eaeef2; } svg.chart .axis { stroke: #8c959f; }
svg.chart .line { fill: none; stroke: var(--accent); stroke-width: 2; } svg.chart .point { fill: var(--accent); }
svg.chart .band { fill: var(--accent); fill-opacity: .13; stroke: none; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; }
thead th { background: var(--soft); vertical-align: bottom; } .table-wrap { overflow-x: auto; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.reference { color: var(--muted); font-style: italic; } table.reference thead th { background: #fbefff; }
.filters { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin: 8px 0 12px; font-size: 13px; }
.filters[hidden] { display: none; } .filters button { font-size: 13px; }
details.traj { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; background: #fff; }
details.traj > summary { cursor: pointer; padding: 7px 10px; list-style-position: inside; }
details.traj[open] > summary { background: var(--soft); border-bottom: 1px solid var(--line); }
.question { margin-left: 6px; font-size: 14px; }
.badge { display: inline-block; font-size: 12px; border-radius: 10px; padding: 1px 8px; margin-right: 4px;
  background: #eaeef2; color: var(--fg); font-variant-numeric: tabular-nums; }
.badge.pos { background: #dafbe1; color: var(--good); } .badge.neg { background: #ffebe9; color: var(--bad); }
.badge.where { background: #ddf4ff; color: #0550ae; } .badge.term-format_error { background: #ffebe9; color: var(--bad); }
.badge.term-turn_budget { background: #fff8c5; color: var(--warn); }
.traj-body { padding: 8px 14px 12px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; font-size: 13px; margin: 4px 0 10px; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
ol.turns { padding-left: 0; list-style: none; margin: 0; }
li.turn { border-left: 3px solid var(--line); padding: 2px 0 6px 12px; margin-bottom: 10px; }
.turn-meta { font-size: 12px; color: var(--muted); margin-bottom: 4px; }
.turn-think, .turn-tool, .turn-obs, .turn-answer, .turn-error { border-radius: 5px; margin: 4px 0; padding: 4px 10px; }
.kind { font-size: 11px; font-weight: 700; text-transform: uppercase; letter-spacing: .04em; margin-bottom: 2px; }
.kind .detail { text-transform: none; letter-spacing: 0; font-size: 12px; font-family: ui-monospace, Menlo, Consolas, monospace; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; font-size: 12.5px;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.turn-think { background: var(--soft); } .turn-think .kind { color: var(--muted); }
.turn-tool { background: #ddf4ff; } .turn-tool .kind { color: #0550ae; }
.turn-obs { background: #fff8e6; } .turn-obs .kind { color: var(--warn); }
.turn-obs.has-errors { border: 1px solid #ffb8b0; }
.turn-answer { background: #dafbe1; } .turn-answer .kind { color: var(--good); }
.turn-error { background: #ffebe9; } .turn-error .kind { color: var(--bad); }
.err-kind { background: var(--bad); color: #fff; border-radius: 8px; padding: 0 6px; margin-left: 4px;
  text-transform: none; font-weight: 600; }
mark.err { background: #ffcecb; color: var(--bad); font-weight: 600; }
details.more > summary { cursor: pointer; font-size: 12px; color: var(--accent); } .clip { color: var(--muted); }
"""

PAGE_JS = """
(function () {
  var boxes = document.getElementById('filters');
  if (boxes) {
    var selects = Array.prototype.slice.call(boxes.querySelectorAll('select'));
    var items = Array.prototype.slice.call(document.querySelectorAll('details.traj'));
    var count = document.getElementById('f-count');
    var wanted = new URLSearchParams(location.hash.slice(1));
    selects.forEach(function (s) { if (wanted.has(s.dataset.filter)) { s.value = wanted.get(s.dataset.filter); } });
    var matches = function (d, name, value) {
      if (!value) { return true; }
      if (name === 'outcome') {
        var r = parseFloat(d.dataset.reward);
        if (value === 'positive') { return r > 0; }
        if (value === 'nonpositive') { return !(r > 0); }
      }
      if (name === 'behaviour') { return (' ' + d.dataset.behaviour + ' ').indexOf(' ' + value + ' ') >= 0; }
      return d.dataset[name] === value;
    };
    var apply = function () {
      var shown = 0;
      items.forEach(function (d) {
        d.hidden = !selects.every(function (s) { return matches(d, s.dataset.filter, s.value); });
        if (!d.hidden) { shown += 1; }
      });
      count.textContent = shown + ' of ' + items.length + ' shown';
    };
    selects.forEach(function (s) {
      s.addEventListener('change', function () {
        apply();
        var state = selects.filter(function (x) { return x.value; })
          .map(function (x) { return x.dataset.filter + '=' + encodeURIComponent(x.value); }).join('&');
        history.replaceState(null, '', state ? '#' + state : location.pathname);
      });
    });
    var setOpen = function (open) { items.forEach(function (d) { if (!d.hidden) { d.open = open; } }); };
    document.getElementById('expand-all').addEventListener('click', function () { setOpen(true); });
    document.getElementById('collapse-all').addEventListener('click', function () { setOpen(false); });
    boxes.hidden = false;
    apply();
  }
  document.body.dataset.js = 'ok';
})();
"""
