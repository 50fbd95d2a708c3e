#!/usr/bin/env python3
"""Module dependency graph of a Rust crate, and its import cycles.

    scripts/module-graph.py master-lite/src [--dot]

Each top-level module of the crate (a file `x.rs` or a directory `x/`) is a node; an edge a -> b
means some code of a (comments and doc comments excluded) names `crate::b` (also inside
`use crate::{b, …}` groups), or `super::b` from a direct child module. `lib.rs` and `main.rs`
are the crate roots and are left out, and so are unit tests (`tests.rs`, `#[cfg(test)]`). Prints the edges, then every strongly connected component
of more than one module (an import cycle); exits 1 when there is one.
"""

import os
import re
import sys


def modules(src):
    mods = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            mods.setdefault(entry[:-3], []).append(path)
        elif os.path.isdir(path) and entry != "bin":
            for root, _, files in os.walk(path):
                mods.setdefault(entry, []).extend(
                    os.path.join(root, f) for f in files if f.endswith(".rs")
                )
    return mods


def code_lines(path):
    """The code of a file, without comments and without its unit tests (a `tests.rs` file, or
    everything from a top-level `#[cfg(test)]`)."""
    if os.path.basename(path) == "tests.rs":
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#[cfg(test)]"):
                return
            stripped = line.strip()
            if stripped.startswith("//"):
                continue
            yield line.split("//")[0] if "://" not in line else line


def group_names(text, start):
    """Top-level names of a `{a, b::c, d::{e}}` group starting at text[start] == '{'."""
    depth, names, token, i = 0, [], "", start
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            if depth == 1:
                token = ""
        elif c == "}":
            depth -= 1
            if depth == 0:
                break
        elif depth == 1:
            if c.isalnum() or c == "_":
                token += c
            else:
                if token and (c == ":" or c == "," or c.isspace()):
                    if token not in names:
                        names.append(token)
                token = "" if c in ",{" else token if c.isspace() else ""
        i += 1
    if token and token not in names:
        names.append(token)
    return names


def refs(text, prefix):
    found = set()
    for m in re.finditer(re.escape(prefix) + r"::", text):
        rest = text[m.end():]
        if rest.startswith("{"):
            found.update(group_names(rest, 0))
        else:
            n = re.match(r"[a-z_][a-z0-9_]*", rest)
            if n:
                found.add(n.group(0))
    return found


def graph(src):
    mods = modules(src)
    edges = {m: set() for m in mods}
    for m, files in mods.items():
        for path in files:
            text = "".join(code_lines(path))
            names = refs(text, "crate")
            # `super::x` from a direct child of a directory module names a sibling top-level
            # module only from the directory's mod.rs level; children's `super` is the parent.
            if os.path.dirname(path) == src:
                names |= refs(text, "super")
            for n in names:
                if n in mods and n != m:
                    edges[m].add(n)
    return edges


def sccs(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    src = sys.argv[1].rstrip("/")
    edges = graph(src)
    if "--dot" in sys.argv:
        print("digraph modules {")
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f'  "{a}" -> "{b}";')
        print("}")
    else:
        for a in sorted(edges):
            print(f"{a} -> {', '.join(sorted(edges[a])) or '(none)'}")
    cycles = sccs(edges)
    for c in cycles:
        print(f"CYCLE: {' <-> '.join(c)}")
    if not cycles:
        print(f"{src}: no import cycle between its {len(edges)} modules")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
