"""Render a :class:`~retrodraft.trace.Trace` as one self-contained HTML page.

Everything is inline (CSS, a small script, an SVG chart, the trace itself as JSON), so the page
can be mailed, attached to an issue or opened offline. Each generated token is a
``<span class="t" data-step data-tree data-src data-tip>``; the page's script shows ``data-tip``
in a tooltip on hover and highlights the tokens of the same step.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .trace import Decoder, Trace

__all__ = ["render", "token_texts"]

# Background of each drafter's tokens, in drafter order (cycled past the end).
_DRAFTER_COLOURS = ("#9cc9ea", "#b5e09a", "#fdc77f", "#cdb5de", "#8fd8cc", "#f3e37c", "#e8b4a0", "#bcbddc")
_MODEL_COLOURS = {"bonus": "#dcdcdc", "one-token step": "#f7c6c6", "prefill": "#ffffff"}
_CHART_W, _CHART_H, _PAD_L, _PAD_B, _PAD_T, _PAD_R = 960, 240, 44, 34, 12, 10


def token_texts(ids: list[int], tokenizer: "Decoder | None") -> list[str]:
    """The text each token adds to the output, ``len(ids)`` strings.

    Decodes growing prefixes so multi-token characters and leading spaces come out as the whole
    text reads; a token that ends inside a multi-byte character gives ``""`` and the next token
    carries the character.
    """
    if tokenizer is None:
        return [f"[{i}]" for i in ids]
    out, shown = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1])
        if text.endswith("\ufffd") and i + 1 < len(ids):
            out.append("")
            continue
        if text.startswith(shown):
            out.append(text[len(shown):])
        else:  # the decoder rewrote earlier text (e.g. cleanup of spaces): fall back to one token
            out.append(tokenizer.decode([ids[i]]))
        shown = text
    return out


def _colour(trace: "Trace", category: str) -> str:
    if category in trace.drafters:
        return _DRAFTER_COLOURS[trace.drafters.index(category) % len(_DRAFTER_COLOURS)]
    return _MODEL_COLOURS.get(category, "#eeeeee")


def _tip_for(src, texts_i: str, tree: int, committed: int, n_steps: int) -> str:
    shown = repr(texts_i)
    if src.step < 0:
        return f"prefill: the model's first token\ntoken {src.token} {shown}"
    head = f"step {src.step + 1} of {n_steps} · tree {tree} node{'s' if tree != 1 else ''} · {committed} committed"
    if src.drafters:
        others = [d for d in src.drafters if d != src.source]
        what = f"drafted by {src.source}" + (f" (also {', '.join(others)})" if others else "")
    elif src.source == "bonus":
        what = "bonus: the model's token after the accepted draft"
    else:
        what = "one-token step: " + ("nothing drafted" if tree == 1 else "no draft accepted")
    return f"{head}\n{what}\ntoken {src.token} {shown}"


def _chart(trace: "Trace", cats: list[str]) -> str:
    steps = trace.steps
    n = max(len(steps), 1)
    top = max([s.tree_size for s in steps] + [1])
    plot_w, plot_h = _CHART_W - _PAD_L - _PAD_R, _CHART_H - _PAD_T - _PAD_B
    bw = plot_w / n
    gap = min(1.0, bw * 0.15)

    def y(v: float) -> float:
        return _PAD_T + plot_h * (1 - v / top)

    sources = trace.sources()
    by_step: list[list[str]] = [[] for _ in steps]
    for s in sources:
        if s.step >= 0:
            by_step[s.step].append(s.source)
    parts = [f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_CHART_W} {_CHART_H}" '
             f'role="img" aria-label="tree size and tokens committed per step">']
    ticks = sorted({0, top // 2, top}) if top > 1 else [0, 1]
    for v in ticks:
        parts.append(f'<line class="grid" x1="{_PAD_L}" x2="{_CHART_W - _PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
                     f'<text class="tick" x="{_PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for k, s in enumerate(steps):
        x = _PAD_L + k * bw + gap / 2
        w = max(bw - gap, 0.5)
        tip = html.escape(f"step {k + 1} of {len(steps)}\ntree {s.tree_size} nodes · {len(s.committed)} committed"
                          + "".join(f"\n{c}: {by_step[k].count(c)}" for c in cats if c in by_step[k]), quote=True)
        parts.append(f'<g class="step" data-step="{k + 1}" data-tree="{s.tree_size}" '
                     f'data-committed="{len(s.committed)}" data-tip="{tip}">'
                     f'<rect class="size" x="{x:.2f}" y="{y(s.tree_size):.2f}" width="{w:.2f}" '
                     f'height="{y(0) - y(s.tree_size):.2f}"/>')
        level = 0
        for c in by_step[k]:
            parts.append(f'<rect class="seg" fill="{_colour(trace, c)}" x="{x:.2f}" y="{y(level + 1):.2f}" '
                         f'width="{w:.2f}" height="{y(level) - y(level + 1):.2f}"/>')
            level += 1
        parts.append("</g>")
    parts.append(f'<text class="axis" x="{_PAD_L + plot_w / 2:.0f}" y="{_CHART_H - 6}" text-anchor="middle">'
                 f'verification step (1 to {len(steps)})</text>'
                 f'<text class="axis" transform="translate(12 {_PAD_T + plot_h / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle">tokens</text></svg>')
    return "".join(parts)


def render(trace: "Trace", tokenizer: "Decoder | None" = None, title: str = "retrodraft trace") -> str:
    """The whole page as a string (see :func:`retrodraft.trace.write_html`)."""
    sources = trace.sources()
    ids = [s.token for s in sources]
    texts = token_texts(ids, tokenizer)
    cats = trace.categories()
    cats += sorted({s.source for s in sources} - set(cats))  # "unknown drafter", if any
    counts = {c: sum(s.source == c for s in sources) for c in cats}
    total = max(len(sources), 1)
    steps = trace.steps

    legend = []
    for c in cats:
        if counts[c] == 0 and c not in trace.drafters:
            continue
        legend.append(f'<li class="key" data-src="{html.escape(c)}"><span class="sw" style="background:'
                      f'{_colour(trace, c)}"></span>{html.escape(c)} <b>{counts[c]}</b> '
                      f'<small>({counts[c] / total:.0%})</small></li>')

    spans = []
    for src, text in zip(sources, texts):
        size = steps[src.step].tree_size if src.step >= 0 else 0
        committed = len(steps[src.step].committed) if src.step >= 0 else 1
        classes = "t shared" if len(src.drafters) > 1 else "t"
        tip = _tip_for(src, text, size, committed, len(steps))
        spans.append(f'<span class="{classes}" style="background:{_colour(trace, src.source)}" '
                     f'data-step="{src.step + 1}" data-tree="{size}" data-src="{html.escape(src.source)}" '
                     f'data-tip="{html.escape(tip, quote=True)}">{html.escape(text)}</span>')

    prompt = token_texts(trace.prompt.tolist(), tokenizer) if tokenizer is None else [
        tokenizer.decode(trace.prompt.tolist())]
    mat = float(np.mean([len(s.committed) for s in steps])) if steps else 0.0
    mean_tree = float(np.mean([s.tree_size for s in steps])) if steps else 0.0
    summary = (f"{len(sources)} tokens in {len(steps)} verification steps · {mat:.2f} tokens per step · "
               f"mean tree {mean_tree:.1f} nodes · drafters: {', '.join(trace.drafters) or 'none'}")
    data = json.dumps(trace.as_dict(), separators=(",", ":")).replace("</", "<\\/")
    return _PAGE.format(
        title=html.escape(title), summary=html.escape(summary), legend="".join(legend),
        prompt=html.escape("".join(prompt)), tokens="".join(spans), chart=_chart(trace, cats), data=data,
    )


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;
max-width:1000px;padding:0 16px;color:#222;background:#fff}
h1{font-size:21px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 8px;color:#444}
.summary{color:#555;margin:0}
#legend ul{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:6px 18px}
.key{cursor:pointer;user-select:none}.key.off{opacity:.35}
.sw{display:inline-block;width:14px;height:14px;border:1px solid #999;border-radius:3px;vertical-align:-2px;margin-right:6px}
.note{color:#666;font-size:13px;margin:6px 0 0}
pre.out{font:13.5px/1.6 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;white-space:pre-wrap;
word-break:break-word;border:1px solid #ddd;border-radius:6px;padding:12px 14px;margin:0;background:#fcfcfc}
.prompt{color:#8a8a8a}
.t{border-radius:2px;cursor:default}.t.shared{text-decoration:underline dotted #333 1.5px;text-underline-offset:3px}
.t[data-src=prefill]{outline:1px dashed #888;outline-offset:-1px}
.t.hl{box-shadow:0 0 0 1.5px #333}.t.dim{background:transparent!important;color:#aaa}
#chart{width:100%;height:auto;display:block}
#chart .size{fill:#f1f1f1;stroke:#8c8c8c;stroke-width:.8}#chart .seg{stroke:#fff;stroke-width:.3}
#chart .step.hl .size{stroke:#222;stroke-width:1.6}
#chart .grid{stroke:#e4e4e4}#chart .tick,#chart .axis{font:12px system-ui,"DejaVu Sans",sans-serif;fill:#555}
#tip{position:fixed;z-index:9;pointer-events:none;background:#222;color:#fff;font:12.5px/1.4 system-ui,
"DejaVu Sans",sans-serif;padding:6px 9px;border-radius:5px;white-space:pre;max-width:480px;box-shadow:0 2px 8px #0004}
"""

_JS = """
(function(){
const tip=document.getElementById('tip');
let lit=[];
function clear(){lit.forEach(e=>e.classList.remove('hl'));lit=[];}
function show(el,ev){
  tip.textContent=el.dataset.tip;tip.hidden=false;move(ev);
  clear();const s=el.dataset.step;
  lit=[...document.querySelectorAll('[data-step="'+s+'"]')];lit.forEach(e=>e.classList.add('hl'));
}
function move(ev){
  const r=tip.getBoundingClientRect();let x=ev.clientX+14,y=ev.clientY+16;
  if(x+r.width>innerWidth-4)x=innerWidth-r.width-4; if(y+r.height>innerHeight-4)y=ev.clientY-r.height-10;
  tip.style.left=x+'px';tip.style.top=y+'px';
}
document.querySelectorAll('[data-tip]').forEach(el=>{
  el.addEventListener('mouseenter',ev=>show(el,ev));
  el.addEventListener('mousemove',move);
  el.addEventListener('mouseleave',()=>{tip.hidden=true;clear();});
});
document.querySelectorAll('.key').forEach(k=>k.addEventListener('click',()=>{
  k.classList.toggle('off');
  const off=new Set([...document.querySelectorAll('.key.off')].map(e=>e.dataset.src));
  document.querySelectorAll('.t').forEach(t=>t.classList.toggle('dim',off.has(t.dataset.src)));
}));
})();
"""

_PAGE = ("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>""" + _CSS.replace("{", "{{").replace("}", "}}") + """</style></head>
<body>
<header><h1>{title}</h1><p class="summary">{summary}</p></header>
<section id="legend"><h2>Where each token came from</h2><ul>{legend}</ul>
<p class="note">Hover a token for its step and tree size; click a key to hide that source.
Dotted underline: proposed by several drafters.</p></section>
<section id="text"><h2>Output <small>(prompt in grey)</small></h2><pre class="out"><span class="prompt">{prompt}</span>{tokens}</pre></section>
<section id="steps"><h2>Per step: nodes verified (grey outline) and tokens committed (coloured by source)</h2>
{chart}</section>
<div id="tip" role="tooltip" hidden></div>
<script type="application/json" id="trace-data">{data}</script>
<script>""" + _JS.replace("{", "{{").replace("}", "}}") + """</script>
</body></html>
""")
