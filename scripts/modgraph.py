#!/usr/bin/env python3
"""The module graph of src/: which top-level module imports which, read from `crate::` paths
outside test code, and every cycle in it.

    python3 scripts/modgraph.py            # edges and cycles of the top-level modules
    python3 scripts/modgraph.py --files    # the same between files (a circle inside a folder too)

At file level, a submodule's use of its own parent (`super::x` in src/stats/outage.rs) is
not counted: the parent holds the child. Test code is left out: files named *_tests.rs, and from a `#[cfg(test)]` item to its closing
brace. Exits 1 when there is a cycle, so a check can run it.
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
CRATE_PATH = re.compile(r"crate::((?:[a-z_][a-z0-9_]*)(?:::[a-z_][a-z0-9_]*)*)")
USE_GROUP = re.compile(r"use crate::\{([^;]*)\};", re.S)


def strip_tests(text):
    """The text without `#[cfg(test)]` items (to the brace that closes each)."""
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = text.find("{", j)
        semi = text.find(";", j)
        if k < 0 or (0 <= semi < k):  # `#[cfg(test)] mod x;` or a use line
            i = semi + 1
            continue
        depth = 0
        for p in range(k, len(text)):
            if text[p] == "{":
                depth += 1
            elif text[p] == "}":
                depth -= 1
                if depth == 0:
                    i = p + 1
                    break
        else:
            return "".join(out)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def module_of(path):
    """src/config/mod.rs → ('config', 'config'); src/config/layer.rs → ('config', 'config::layer')."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return None, None
    return parts[0], "::".join(parts)


def targets(text, parent):
    """Every `crate::a::b` path named, groups (`use crate::{a, b::c}`) included; `super::x` in a
    file of module `parent` reads as `crate::parent::x`."""
    if parent:
        text = re.sub(r"\bsuper::", f"crate::{parent}::", text)
    found = [m.group(1) for m in CRATE_PATH.finditer(text)]
    for g in USE_GROUP.finditer(text):
        for item in re.split(r",(?![^{]*\})", g.group(1)):
            item = item.strip()
            m = re.match(r"([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", item)
            if m:
                found.append(m.group(1))
    return found


def graph(files_level):
    files = {}
    for path in sorted(SRC.rglob("*.rs")):
        if path.name.endswith("_tests.rs"):
            continue
        top, full = module_of(path)
        if top:
            files[full] = path
    edges = {}
    for full, path in files.items():
        text = strip_comments(strip_tests(path.read_text()))
        me = full if files_level else full.split("::")[0]
        parent = "::".join(full.split("::")[:-1])
        if path.name == "mod.rs":
            parent = "::".join(full.split("::")[:-1])  # `super` of a folder's mod.rs is its parent
        for t in targets(text, parent):
            parts = t.split("::")
            if files_level:
                # The longest prefix that is a file of ours.
                to = next(("::".join(parts[:n]) for n in range(len(parts), 0, -1) if "::".join(parts[:n]) in files), None)
            else:
                to = parts[0] if any(f.split("::")[0] == parts[0] for f in files) else None
            # A file may use what its parent module holds (Rust's nesting); that is not a circle.
            if to and to != me and not (files_level and me.startswith(to + "::")):
                edges.setdefault(me, set()).add(to)
        edges.setdefault(me, set())
    return edges


def cycles(edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    files_level = "--files" in sys.argv
    edges = graph(files_level)
    for v in sorted(edges):
        print(f"{v:24} → {' '.join(sorted(edges[v])) or '(leaf)'}")
    found = cycles(edges)
    print()
    if not found:
        print("no cycle")
        return 0
    for c in found:
        inner = [f"{a}→{b}" for a in c for b in sorted(edges[a]) if b in c]
        print(f"cycle of {len(c)}: {' '.join(c)}")
        print(f"  held by: {' '.join(inner)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
