#!/usr/bin/env python3
"""The store layer knows records, never broker objects (README, Layout).

Fails if a file of the store layer includes, directly or through another header, anything
but store and base headers (broker.h, channel_int.h, persist.h, config.h, ...), or names a
broker type (broker, exchange, queue, binding, qmsg, delayed_entry, channel, conn) in its
code. persist.c is the broker's side of the store and may include anything; so may compact.c.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
STORE = ["store", "record", "segment", "writer", "meta", "recover", "paging", "storeio", "crc32c", "streamlog"]
BASE = ["buf", "util", "loop", "memacct", "message", "wire", "proto", "map"]
ALLOWED = {n + ".h" for n in STORE + BASE}
BROKER_TYPES = r"broker|exchange|queue|binding|qmsg|delayed_entry|channel|conn"
TYPE_USE = re.compile(r"\bstruct\s+(%s)\b|\b(%s)\s*\*" % (BROKER_TYPES, BROKER_TYPES))
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def code(path):
    """The file's text without comments and string literals."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return text


def strip_strings(text):
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)


def main():
    problems = []
    files = [n + ext for n in STORE for ext in (".c", ".h") if os.path.exists(os.path.join(SRC, n + ext))]
    if len(files) < 2 * len(STORE) - 2:
        problems.append("store layer files not found in %s" % SRC)
    for name in files:
        # every header reached from this file, with the chain that reaches it
        todo, seen = [(name, [name])], {name}
        while todo:
            cur, chain = todo.pop()
            path = os.path.join(SRC, cur)
            if not os.path.exists(path):
                continue
            for inc in INCLUDE.findall(code(path)):
                if inc not in ALLOWED:
                    problems.append("%s includes %s (%s): not a store or base header" % (name, inc, " -> ".join(chain + [inc])))
                elif inc not in seen:
                    seen.add(inc)
                    todo.append((inc, chain + [inc]))
        body = strip_strings(code(os.path.join(SRC, name)))
        for m in TYPE_USE.finditer(body):
            line = body.count("\n", 0, m.start()) + 1
            problems.append("%s:%d names a broker type: %s" % (name, line, m.group(0).strip()))
    for p in problems:
        print("FAIL layering: " + p)
    if problems:
        print("FAIL layering: %d problems in the store layer (%d files)" % (len(problems), len(files)))
    else:
        print("PASS layering: %d store-layer files include store and base headers only" % len(files))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
