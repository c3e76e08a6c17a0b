#!/usr/bin/env python3
"""test_config_doc.py - every key the configuration loaders accept (lib/config.c for the shared
sections, dispatcher/dispatcher_config.c, workers/worker_config.c and api/config.c for the parts' own) is
documented in docs/configuration.md, so the document cannot fall behind the loaders. The keys
are read from the loaders' own lists
(`static const char *const xxx[] = {...}`); a key counts as documented when it is a component
of a `backticked` key path in the document (`worker.retry.base_ms` documents worker, retry and
base_ms)."""
import os
import re
import sys

SRC = os.environ.get("GANTRY_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
LOADERS = ["lib/config.c", "dispatcher/dispatcher_config.c", "workers/worker_config.c",
           "api/config.c"]


def accepted_keys(c_text):
    """{array name: [keys]} of every static string list in a loader."""
    lists = {}
    for m in re.finditer(r"static\s+const\s+char\s*\*\s*const\s+(\w+)\s*\[[^\]]*\]\s*=\s*\{(.*?)\};",
                         c_text, re.S):
        keys = re.findall(r'"([^"]+)"', m.group(2))
        lists.setdefault(m.group(1), []).extend(keys)
    return lists


def documented(doc_text):
    parts = set()
    for tok in re.findall(r"`([^`\n]+)`", doc_text):
        tok = tok.strip().strip('"')
        parts.add(tok)
        for p in re.split(r"[.\[\]\s:=,]+", tok):
            if p:
                parts.add(p)
    return parts


def main():
    lists = {}
    for loader in LOADERS:
        with open(os.path.join(SRC, *loader.split("/"))) as f:
            for name, keys in accepted_keys(f.read()).items():
                lists.setdefault("%s:%s" % (loader, name), []).extend(keys)
    with open(os.path.join(SRC, "docs", "configuration.md")) as f:
        parts = documented(f.read())
    total = sum(len(v) for v in lists.values())
    if total < 50:  # the parser broke, not the document
        print("FAIL only %d keys found in the loaders' lists: the parser is out of date" % total)
        return 1
    missing = [(name, k) for name, keys in lists.items() for k in keys if k not in parts]
    for name, k in missing:
        print("FAIL %s (in %s[]) is not documented in docs/configuration.md" % (k, name))
    print("%d key lists, %d keys, %d undocumented" % (len(lists), total, len(missing)))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
