"""The review page: one self-contained HTML file (every image inlined as a data: URI, no server, no network).

Per suspect a row: its frame strip (the synopsis frames and, outlined in orange, the key-expression clips, in
time order), the given label, the class the network sees, the noise score, the predicted class of every epoch
and its trend, and on SynthDFER the truth. A summary on top (how many, given -> seen as a shaded table) and
two filters (given label, seen class) that hide rows in the browser. When the page has loaded, a line says
whether every strip image decoded (the browser test reads it).
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image

from rdfer.review.suspects import Suspect

KEY_COLOUR = (255, 140, 0)  # the key-expression clips' outline
BORDER = 3  # px of that outline, on frames of the training size


@dataclass(frozen=True)
class Row:
    suspect: Suspect
    key: str
    strip: str  # data: URI of the frame strip
    truth: str | None = None  # SynthDFER: noisy | hard | clean


def strip_png(frames: np.ndarray, synopsis: np.ndarray, clips: np.ndarray) -> Image.Image:
    """One image: the frames [T, 3, S, S] at the synopsis and key clip indices, side by side in time order,
    key clip frames outlined."""
    keys = set(clips.reshape(-1).tolist())
    shown = sorted(set(synopsis.tolist()) | keys)
    size = frames.shape[-1]
    strip = np.zeros((size, size * len(shown), 3), dtype=np.uint8)
    for j, t in enumerate(shown):
        tile = frames[t].transpose(1, 2, 0).copy()
        if t in keys:
            b = max(1, BORDER * size // 64)
            tile[:b], tile[-b:], tile[:, :b], tile[:, -b:] = KEY_COLOUR, KEY_COLOUR, KEY_COLOUR, KEY_COLOUR
        strip[:, j * size : (j + 1) * size] = tile
    return Image.fromarray(strip)


def data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _name(classes: tuple[str, ...], c: int) -> str:
    return classes[c] if 0 <= c < len(classes) else "?"


def confusion(rows: list[Row], classes: tuple[str, ...]) -> str:
    """given (rows) -> seen (columns) counts, each cell shaded by its share of the largest."""
    counts = Counter((r.suspect.given, r.suspect.seen) for r in rows)
    top = max(counts.values(), default=1)
    used = sorted({g for g, _ in counts}), sorted({s for _, s in counts})
    head = "".join(f"<th>{html.escape(_name(classes, s))}</th>" for s in used[1])
    body = []
    for g in used[0]:
        cells = []
        for s in used[1]:
            n = counts.get((g, s), 0)
            cells.append(f'<td style="background:rgba(200,40,40,{n / top:.2f})">{n or ""}</td>')
        body.append(f"<tr><th>{html.escape(_name(classes, g))}</th>{''.join(cells)}</tr>")
    return f'<table class="conf"><tr><th>given \\ seen</th>{head}</tr>{"".join(body)}</table>'


def epochs_cells(s: Suspect, classes: tuple[str, ...]) -> str:
    """A cell per epoch: green the given label, red the seen class, grey another one, blank unseen."""
    cells = []
    for e, c in enumerate(s.epochs):
        kind = "u" if c < 0 else "g" if c == s.given else "s" if c == s.seen else "o"
        cells.append(f'<i class="{kind}" title="epoch {e + 1}: {html.escape(_name(classes, c))}"></i>')
    return "".join(cells)


def row_html(rank: int, row: Row, classes: tuple[str, ...]) -> str:
    s = row.suspect
    given, seen = html.escape(_name(classes, s.given)), html.escape(_name(classes, s.seen))
    truth = f"<td>{row.truth}</td>" if row.truth is not None else ""
    return (
        f'<tr class="sus" data-given="{given}" data-seen="{seen}"><td>{rank}</td>'
        f"<td>{html.escape(row.key)}<br><small>id {s.sample_id}</small></td>"
        f'<td><img class="strip" alt="frames of {html.escape(row.key)}" src="{row.strip}"></td>'
        f"<td>{given}</td><td>{seen}</td><td>{s.score:.3f}</td>"
        f'<td><span class="ep">{epochs_cells(s, classes)}</span><br>{s.trend}</td>{truth}</tr>'
    )


STYLE = """
body{font:14px sans-serif;margin:1em}table{border-collapse:collapse}td,th{padding:3px 6px;text-align:left}
tr.sus{border-top:1px solid #ccc}img.strip{display:block;height:48px}.ep{white-space:nowrap}
table.conf td{text-align:center;min-width:2em;border:1px solid #ddd}
.ep i{display:inline-block;width:7px;height:12px;margin-right:1px;background:#eee}
.ep i.g{background:#2a2}.ep i.s{background:#c33}.ep i.o{background:#888}
.key{color:rgb(255,140,0);font-weight:bold}#status{font-weight:bold}
"""

# Hides the rows the filters leave out; once loaded, says whether every strip decoded (naturalWidth > 0).
SCRIPT = """
function filt(){var g=document.getElementById('fg').value,s=document.getElementById('fs').value,n=0;
for(const r of document.querySelectorAll('tr.sus')){var on=(!g||r.dataset.given==g)&&(!s||r.dataset.seen==s);
r.style.display=on?'':'none';n+=on}document.getElementById('shown').textContent=n}
window.addEventListener('load',function(){var im=[...document.querySelectorAll('img.strip')];
var bad=im.filter(i=>!(i.complete&&i.naturalWidth>0)).length,st=document.getElementById('status');
st.textContent=bad?bad+' of '+im.length+' frame strips failed to load':'all '+im.length+' frame strips shown';
st.dataset.bad=bad;st.dataset.loaded=im.length-bad});
"""


def _select(ident: str, label: str, names: list[str]) -> str:
    options = "".join(f'<option value="{html.escape(n)}">{html.escape(n)}</option>' for n in names)
    select = f'<select id="{ident}" onchange="filt()"><option value="">all</option>{options}</select>'
    return f"<label>{label} {select}</label>"


def summary_html(rows: list[Row], classes: tuple[str, ...], title: str, notes: list[str]) -> str:
    trends = Counter(r.suspect.trend for r in rows)
    lines = [f"<h1>{html.escape(title)}</h1>", f"<p><b>{len(rows)} suspects</b> (noise score, highest first)"]
    lines.append(" &middot; late epochs: " + ", ".join(f"{n} {t}" for t, n in trends.most_common()) + "</p>")
    if any(r.truth is not None for r in rows):
        truths = Counter(r.truth for r in rows)
        share = ", ".join(f"{truths.get(t, 0)} truly {t}" for t in ("noisy", "hard", "clean"))
        lines.append(f"<p>SynthDFER ground truth: {share}</p>")
    lines += [f"<p>{html.escape(n)}</p>" for n in notes]
    lines.append(confusion(rows, classes))
    given = sorted({_name(classes, r.suspect.given) for r in rows})
    seen = sorted({_name(classes, r.suspect.seen) for r in rows})
    lines.append(
        f"<p>{_select('fg', 'given label', given)} {_select('fs', 'seen class', seen)} "
        f'&middot; <span id="shown">{len(rows)}</span> shown &middot; <span id="status">loading</span></p>'
    )
    lines.append(
        '<p>Frames: the synopsis frames and, <span class="key">outlined</span>, the key-expression clips. '
        "Epochs: a cell each, green = the given label, red = the seen class, grey = another, "
        "blank = unseen.</p>"
    )
    return "\n".join(lines)


def render(rows: list[Row], classes: tuple[str, ...], title: str, notes: list[str]) -> str:
    truth = "<th>truth</th>" if any(r.truth is not None for r in rows) else ""
    names = ("#", "clip", "frames", "given", "seen", "score", "epochs")
    head = "<tr>" + "".join(f"<th>{n}</th>" for n in names) + f"{truth}</tr>"
    body = "\n".join(row_html(k + 1, r, classes) for k, r in enumerate(rows))
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n"
        f"{summary_html(rows, classes, title, notes)}\n<table>{head}\n{body}</table></body></html>\n"
    )
