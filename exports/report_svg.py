"""The report's process map: a directly-follows graph laid out top to bottom and drawn as inline SVG, with no
graphviz. A Sugiyama pipeline in the manner of dagre: activities start in the order of their typical position in
a case, then each moves to where the transitions running against the order weigh least; an edge that still runs
backwards (rework, a loop) is reversed for the layout and drawn dashed; an activity's layer is the longest forward
path that reaches it; every edge becomes a chain of virtual vertices, one per rank it crosses, with ranks doubled
so each edge owns a slot between two layers for its label; barycentre sweeps order each rank to reduce crossings
weighted by frequency; x positions come from pulling every vertex toward the weighted mean of its neighbours and
solving the order-preserving spacing constraints exactly (weighted isotonic regression), round after round, then
long edges are straightened where there is room; edges are vertical-tangent cubic curves through their chains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import polars as pl

# Advance widths of Liberation Sans Bold (Arial/Helvetica metrics) for ' '..'~', in 1/1000 em: Python has no
# text shaping, so boxes are sized from these; the page's script squeezes a label that renders wider.
_BOLD = (
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722,
    611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, 333, 556,
    611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778,
    556, 556, 500, 389, 280, 389, 584,
)
# The colours (stroke, tint) of the object model's case and member tables, in their declaration order (the
# default model: lead, opportunity, quote, sales order, invoice, then a custom table's); others wear "other".
PALETTE = (("#0e7490", "#e0f5fa"), ("#2563eb", "#e3ecfd"), ("#7c3aed", "#efe9fe"), ("#c2410c", "#fdeee3"),
           ("#15803d", "#e3f5e9"), ("#b45309", "#fdf3e1"), ("#be185d", "#fce7f1"), ("#0f766e", "#ddf4f1"))


def kind_class(kind: str | None, kinds: Sequence[str]) -> str:
    """The CSS class of an object type: its own (`kind_css`) when the model colours it, else "k-other"."""
    return f"k-{kind}" if kind in kinds[:len(PALETTE)] else "k-other"


def kind_css(kinds: Sequence[str]) -> str:
    """One colour rule per coloured object type (the first len(PALETTE) of `kinds`)."""
    coloured = zip(kinds[:len(PALETTE)], PALETTE[:len(kinds)], strict=True)
    return "".join(f".k-{kind} {{ --c: {stroke}; --t: {tint}; }}\n" for kind, (stroke, tint) in coloured)

NODE_H, LABEL_H, RANK_GAP, MARGIN = 42.0, 14.0, 15.0, 16.0
NAME_PX, COUNT_PX, LABEL_PX = 12.5, 11.0, 10.5
LOOP_W = 30.0  # how far a self-loop's arc reaches right of its box
LABEL_DX = 5.0  # from a line to its label


def text_width(text: str, px: float) -> float:
    return sum(_BOLD[ord(c) - 32] if 32 <= ord(c) < 127 else 640 for c in text) * px / 1000


def wait(hours: float | None) -> str:
    """A wait for people: hours under two days, days above, one decimal."""
    if hours is None or math.isnan(hours):
        return "–"
    return f"{hours:,.1f} h" if hours < 48 else f"{hours / 24:,.1f} d"


@dataclass
class _Vertex:
    rank: int
    left: float  # extent left of x
    right: float  # extent right of x (a self-loop and its label widen it)
    activity: str | None = None  # None: a virtual vertex of an edge's chain
    x: float = 0.0
    up: list[tuple[int, float]] = field(default_factory=list)  # (vertex, weight) in the rank above
    down: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class _Edge:
    source: str
    target: str
    count: int
    cases: int
    median_hours: float | None
    p90_hours: float | None
    chain: list[int] = field(default_factory=list)  # vertices from the upper end to the lower one
    back: bool = False  # drawn against the chain: from its lower end up to its upper one
    label_at: int = -1  # the chain's vertex that holds the label

    @property
    def label(self) -> str:
        return f"{self.count:,} · {wait(self.median_hours)}"


@dataclass
class Layout:
    vertices: list[_Vertex]
    edges: list[_Edge]
    loops: list[_Edge]
    tops: list[float]  # y of each rank
    width: float
    height: float

    def top(self, v: int) -> float:
        return self.tops[self.vertices[v].rank]

    def bottom(self, v: int) -> float:
        return self.top(v) + (NODE_H if self.vertices[v].rank % 2 == 0 else LABEL_H)


def layout(activities: pl.DataFrame, transitions: pl.DataFrame, all_cases: int) -> Layout:
    """activities: activity, events, cases, position; transitions: from_activity, to_activity, edges, cases,
    median_wait_hours, p90_wait_hours (the edges to draw, between those activities)."""
    drawn = [_Edge(*row) for row in transitions.select(
        "from_activity", "to_activity", "edges", "cases", "median_wait_hours", "p90_wait_hours").iter_rows()]
    edges = [e for e in drawn if e.source != e.target]
    loops = {e.source: e for e in drawn if e.source == e.target}
    typical = activities.sort(["position", "events", "activity"], descending=[False, True, False])
    order = _sequence(typical.get_column("activity").to_list(), edges)
    index = {a: i for i, a in enumerate(order)}
    layer = _layers(order, edges)

    vs: list[_Vertex] = []
    vertex_of: dict[str, int] = {}
    for name, events, cases in typical.select("activity", "events", "cases").iter_rows():
        half = max(text_width(name, NAME_PX), text_width(count_line(events, cases, all_cases), COUNT_PX)) / 2 + 14
        half = max(half, 56.0)
        loop = LOOP_W + 6 + text_width(loops[name].label, LABEL_PX) if name in loops else 0.0
        vertex_of[name] = len(vs)
        vs.append(_Vertex(2 * layer[name], half, half + loop, name))
    for e in edges:
        e.back = index[e.source] > index[e.target]
        upper, lower = (e.target, e.source) if e.back else (e.source, e.target)
        top, bottom = 2 * layer[upper], 2 * layer[lower]
        middle = (top + bottom) // 2
        label_rank = middle if middle % 2 else middle - 1
        e.chain = [vertex_of[upper]]
        for rank in range(top + 1, bottom):
            # the label sits just right of its line, in room the slot keeps free
            right = LABEL_DX + text_width(e.label, LABEL_PX) + 2 if rank == label_rank else 1.5
            e.chain.append(len(vs))
            vs.append(_Vertex(rank, 1.5, right))
        e.chain.append(vertex_of[lower])
        e.label_at = e.chain[label_rank - top]
        for a, b in zip(e.chain, e.chain[1:], strict=False):
            # a segment between two virtual vertices pulls harder, so long edges run straight and boxes give way
            weight = e.count * (4.0 if vs[a].activity is None and vs[b].activity is None else 1.0)
            vs[a].down.append((b, weight))
            vs[b].up.append((a, weight))

    # start each rank in sequence order, a virtual vertex just after the activity its edge leaves from
    start = {v: index[vs[e.chain[0]].activity or ""] + 0.5 for e in edges for v in e.chain[1:-1]}
    start.update({v: index[name] for name, v in vertex_of.items()})
    ranks: list[list[int]] = [[] for _ in range(max((v.rank for v in vs), default=0) + 1)]
    for v, vertex in enumerate(vs):
        ranks[vertex.rank].append(v)
    for members in ranks:
        members.sort(key=start.__getitem__)
    ranks = _order(ranks, vs)
    _place(ranks, vs)
    _straighten(ranks, vs, [e.chain[1:-1] for e in sorted(edges, key=lambda e: -e.count) if len(e.chain) > 3])
    shift = MARGIN - min((vs[members[0]].x - vs[members[0]].left for members in ranks if members), default=0.0)
    for vertex in vs:
        vertex.x += shift

    tops, y = [], MARGIN
    for k in range(len(ranks)):
        tops.append(y)
        y += (NODE_H if k % 2 == 0 else LABEL_H) + RANK_GAP
    width = max((v.x + v.right for v in vs), default=0.0) + MARGIN
    return Layout(vs, edges, list(loops.values()), tops, width, y - RANK_GAP + MARGIN)


def count_line(events: int, cases: int, all_cases: int) -> str:
    return f"{events:,} · {cases / max(all_cases, 1):.0%} of cases"


def _sequence(order: list[str], edges: list[_Edge], passes: int = 8) -> list[str]:
    """`order` with each activity moved to where the transitions that run against the order weigh least (the
    nearest such place): a frequent transition then points down the page even when its target is typically early
    (Opportunity Lost is, as many opportunities are lost young, yet Close -> Lost is forward)."""
    seq = list(order)
    for _ in range(passes):
        moved = False
        for a in list(seq):
            here = seq.index(a)
            rest = seq[:here] + seq[here + 1:]
            pos = {b: i for i, b in enumerate(rest)}
            outs = [(pos[e.target], e.count) for e in edges if e.source == a]
            ins = [(pos[e.source], e.count) for e in edges if e.target == a]
            costs = [sum(w for p, w in outs if p < i) + sum(w for p, w in ins if p >= i) for i in range(len(seq))]
            best = min(range(len(seq)), key=lambda i: (costs[i], abs(i - here)))
            if best != here:
                seq = rest[:best] + [a] + rest[best:]
                moved = True
        if not moved:
            break
    return seq


def _layers(order: list[str], edges: list[_Edge]) -> dict[str, int]:
    """Longest-path layers over the edges turned forward; an activity no edge reaches sits just above the first
    activity it leads to, not at the top."""
    index = {a: i for i, a in enumerate(order)}
    preds: dict[str, list[str]] = {a: [] for a in order}
    succs: dict[str, list[str]] = {a: [] for a in order}
    for e in edges:
        upper, lower = sorted((e.source, e.target), key=index.__getitem__)
        preds[lower].append(upper)
        succs[upper].append(lower)
    layer: dict[str, int] = {}
    for a in order:  # a topological order of the forward edges, by construction
        layer[a] = max((layer[p] + 1 for p in preds[a]), default=0)
    for a in reversed(order):
        if not preds[a] and succs[a]:
            layer[a] = min(layer[s] for s in succs[a]) - 1
    low = min(layer.values(), default=0)
    return {a: n - low for a, n in layer.items()}


def _order(ranks: list[list[int]], vs: list[_Vertex], sweeps: int = 24) -> list[list[int]]:
    """Barycentre sweeps down and up; the ordering with the fewest crossings (weighted by the product of the two
    edges' frequencies) wins."""
    pos = {v: i for members in ranks for i, v in enumerate(members)}

    def crossings() -> float:
        total = 0.0
        for members in ranks[:-1]:
            segs = [(pos[v], pos[u], w) for v in members for u, w in vs[v].down]
            for i, (a0, a1, wa) in enumerate(segs):
                total += sum(wa * wb for b0, b1, wb in segs[i + 1:] if (a0 - b0) * (a1 - b1) < 0)
        return total

    best, fewest = [list(members) for members in ranks], crossings()
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        for k in range(1, len(ranks)) if down else range(len(ranks) - 2, -1, -1):

            def barycentre(v: int, down: bool = down) -> float:
                nbrs = vs[v].up if down else vs[v].down
                total = sum(w for _, w in nbrs)
                return sum(pos[u] * w for u, w in nbrs) / total if total else pos[v]

            ranks[k].sort(key=barycentre)
            pos.update({v: i for i, v in enumerate(ranks[k])})
        now = crossings()
        if now < fewest:
            best, fewest = [list(members) for members in ranks], now
    return best


def _gap(a: _Vertex, b: _Vertex) -> float:
    return (10.0, 18.0, 44.0)[(a.activity is not None) + (b.activity is not None)]


def _isotonic(targets: list[float], weights: list[float]) -> list[float]:
    """The non-decreasing sequence closest to `targets` in weighted least squares (pool adjacent violators)."""
    blocks: list[tuple[float, float, int]] = []  # (value, weight, length)
    for t, w in zip(targets, weights, strict=True):
        blocks.append((t, w, 1))
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append(((v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2))
    return [v for v, _, n in blocks for _ in range(n)]


def _place(ranks: list[list[int]], vs: list[_Vertex], rounds: int = 80) -> None:
    """Each vertex wants the weighted mean x of its neighbours; within a rank the order and the gaps are fixed,
    so with y = x - (the gaps before it) the best x's are the isotonic regression of the wishes."""
    for members in ranks:
        offsets = _offsets(members, vs)
        for v, offset in zip(members, offsets, strict=True):
            vs[v].x = offset
    for sweep in range(rounds):
        for members in ranks if sweep % 2 == 0 else ranks[::-1]:
            offsets = _offsets(members, vs)
            targets, weights = [], []
            for v, offset in zip(members, offsets, strict=True):
                nbrs = vs[v].up + vs[v].down
                total = sum(w for _, w in nbrs)
                targets.append((sum(vs[u].x * w for u, w in nbrs) / total if total else vs[v].x) - offset)
                weights.append(total or 1e-3)
            for v, y, offset in zip(members, _isotonic(targets, weights), offsets, strict=True):
                vs[v].x = y + offset


def _offsets(members: list[int], vs: list[_Vertex]) -> list[float]:
    offsets = [0.0]
    for a, b in zip(members, members[1:], strict=False):
        offsets.append(offsets[-1] + vs[a].right + _gap(vs[a], vs[b]) + vs[b].left)
    return offsets


def _straighten(ranks: list[list[int]], vs: list[_Vertex], runs: list[list[int]]) -> None:
    """Give each long edge's run of virtual vertices one x where its neighbours leave room, the most frequent
    edge first: the spacing solution is best on average, yet a run that wiggles by a few pixels reads worse."""
    where = {v: (k, i) for k, members in enumerate(ranks) for i, v in enumerate(members)}

    def fits(x: float, run: list[int]) -> bool:
        for v in run:
            k, i = where[v]
            if i > 0:
                a = vs[ranks[k][i - 1]]
                if a.x + a.right + _gap(a, vs[v]) > x - vs[v].left + 1e-6:
                    return False
            if i + 1 < len(ranks[k]):
                b = vs[ranks[k][i + 1]]
                if x + vs[v].right + _gap(vs[v], b) > b.x - b.left + 1e-6:
                    return False
        return True

    for run in runs:
        xs = sorted(vs[v].x for v in run)
        x = next((x for x in (xs[len(xs) // 2], sum(xs) / len(xs), *xs) if fits(x, run)), None)
        if x is None:
            continue
        for v in run:
            vs[v].x = x


def _ports(lay: Layout) -> dict[tuple[int, int], float]:
    """Where each edge leaves or enters a box: spread along its side in the order of the far ends, so edges that
    share a side (a loop drawn back beside a forward edge) stay apart."""
    sides: dict[tuple[int, bool], list[tuple[float, int]]] = {}
    for i, e in enumerate(lay.edges):
        sides.setdefault((e.chain[0], False), []).append((lay.vertices[e.chain[1]].x, i))
        sides.setdefault((e.chain[-1], True), []).append((lay.vertices[e.chain[-2]].x, i))
    ports: dict[tuple[int, int], float] = {}
    for (v, _), ends in sides.items():
        box = lay.vertices[v]
        ends.sort()
        step = min(12.0, (box.left * 2 - 28) / max(len(ends) - 1, 1))
        for k, (_, i) in enumerate(ends):
            ports[(i, v)] = box.x + (k - (len(ends) - 1) / 2) * step
    return ports


def _path(points: list[tuple[float, float]]) -> str:
    # the pairs alternate: a curve across the gap between two ranks, then a straight run through a virtual vertex
    d = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for k, ((x0, y0), (x1, y1)) in enumerate(zip(points, points[1:], strict=False)):
        ym = (y0 + y1) / 2
        d.append(f"L{x1:.1f},{y1:.1f}" if k % 2 else f"C{x0:.1f},{ym:.1f} {x1:.1f},{ym:.1f} {x1:.1f},{y1:.1f}")
    return " ".join(d)


_DEFS = "".join(
    f'<marker id="{marker}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" '
    f'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,1 L10,5 L0,9 z" class="{head}"/></marker>'
    for marker, head in (("pm-arrow", "pm-head"), ("pm-arrow-back", "pm-head-back")))


def process_map(activities: pl.DataFrame, transitions: pl.DataFrame, all_cases: int, kinds: Sequence[str] = ()) -> str:
    """The <svg id="process-map"> of the activities (activity, events, cases, position, object_type) and the
    transitions to draw between them; every name from the data is escaped."""
    if activities.is_empty():
        return ('<svg id="process-map" class="process-map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 60" '
                'width="400" height="60" role="img"><text x="200" y="34" text-anchor="middle">No events</text></svg>')
    lay = layout(activities, transitions, all_cases)
    info = {row[0]: row[1:] for row in activities.select("activity", "object_type", "events", "cases").iter_rows()}
    top_count = max((e.count for e in lay.edges + lay.loops), default=1)
    top_events = max(events for _, events, _ in info.values())
    ports = _ports(lay)

    def stroke(count: int) -> float:
        return 1.0 + 4.5 * (count / top_count) ** 0.6

    out = [f'<svg id="process-map" class="process-map" xmlns="http://www.w3.org/2000/svg" role="img" '
           f'viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" width="{lay.width:.0f}" height="{lay.height:.0f}" '
           f'aria-label="Process map: {len(info)} activities, {len(lay.edges) + len(lay.loops)} transitions">'
           f"<defs>{_DEFS}</defs>"]
    for i, e in enumerate(lay.edges):
        upper, lower = e.chain[0], e.chain[-1]
        points = [(ports[(i, upper)], lay.bottom(upper))]
        for v in e.chain[1:-1]:
            points += [(lay.vertices[v].x, lay.top(v)), (lay.vertices[v].x, lay.bottom(v))]
        points.append((ports[(i, lower)], lay.top(lower)))
        if e.back:
            points.reverse()
        label_y = lay.top(e.label_at) + LABEL_H / 2 + 3.5
        out.append(_edge(e, _path(points), stroke(e.count), lay.vertices[e.label_at].x + LABEL_DX, label_y))
    boxes = {v.activity: v for v in lay.vertices if v.activity is not None}
    for e in lay.loops:
        box = boxes[e.source]
        x0, cy = box.x + box.left, lay.tops[box.rank] + NODE_H / 2
        d = (f"M{x0:.1f},{cy - 9:.1f} C{x0 + LOOP_W:.1f},{cy - 24:.1f} {x0 + LOOP_W:.1f},{cy + 24:.1f} "
             f"{x0 + 1:.1f},{cy + 9:.1f}")
        out.append(_edge(e, d, stroke(e.count), x0 + LOOP_W + 4, cy + 3.5))
    for name, box in boxes.items():
        object_type, events, cases = info[name]
        out.append(_node(box, kind_class(object_type, kinds), events, cases, lay.tops[box.rank], top_events,
                         all_cases))
    out.append("</svg>")
    return "\n".join(out)


def _edge(e: _Edge, d: str, width: float, label_x: float, label_y: float) -> str:
    back = e.back or e.source == e.target
    title = (f"{e.source} → {e.target}: {e.count:,} times in {e.cases:,} cases; median wait {wait(e.median_hours)}, "
             f"p90 {wait(e.p90_hours)}")
    return (f'<g class="pm-edge{" pm-back" if back else ""}" data-from="{escape(e.source)}" '
            f'data-to="{escape(e.target)}" data-count="{e.count}" '
            f'data-median-hours="{"" if e.median_hours is None else e.median_hours}"><title>{escape(title)}</title>'
            f'<path d="{d}" stroke-width="{width:.2f}" marker-end="url(#{"pm-arrow-back" if back else "pm-arrow"})"/>'
            f'<text x="{label_x:.1f}" y="{label_y:.1f}" font-size="{LABEL_PX}">'
            f'<tspan class="pm-n">{e.count:,}</tspan> · {escape(wait(e.median_hours))}</text></g>')


def _node(box: _Vertex, kind: str, events: int, cases: int, top: float, top_events: int, all_cases: int) -> str:
    name = box.activity or ""
    x, w = box.x - box.left, box.left * 2
    room = w - 16  # the text's width may not exceed this (see data-fit in report.js)
    title = f"{name}: {events:,} events in {cases:,} cases ({cases / max(all_cases, 1):.1%} of cases)"
    return (f'<g class="pm-node {kind}" '
            f'data-activity="{escape(name)}" data-count="{events}" data-cases="{cases}">'
            f"<title>{escape(title)}</title>"
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{w:.1f}" height="{NODE_H:.0f}" rx="7"/>'
            f'<rect class="pm-bar" x="{x + 8:.1f}" y="{top + NODE_H - 6:.1f}" '
            f'width="{room * events / max(top_events, 1):.1f}" height="2.5" rx="1.25"/>'
            f'<text class="pm-name" x="{box.x:.1f}" y="{top + 16.5:.1f}" font-size="{NAME_PX}" '
            f'data-fit="{room:.0f}">{escape(name)}</text>'
            f'<text class="pm-count" x="{box.x:.1f}" y="{top + 30.5:.1f}" font-size="{COUNT_PX}" '
            f'data-fit="{room:.0f}">{escape(count_line(events, cases, all_cases))}</text></g>')
