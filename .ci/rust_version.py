#!/usr/bin/env python3
"""Checks that the workspace's `rust-version` is at least what every
package in the lock file's dependency tree declares: a user on that Rust
can build drover with the dependencies it resolves to."""
import json
import subprocess
import sys


def version(text):
    return tuple(int(part) for part in text.split("."))


meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--format-version", "1", "--locked"],
    check=True, capture_output=True, text=True).stdout)
members = set(meta["workspace_members"])
resolved = {node["id"] for node in meta["resolve"]["nodes"]}
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"rust-version: every workspace member must declare the same one, found {sorted(map(str, ours))}")
declared = ours.pop()
needs = [(p["rust_version"], p["name"], p["version"]) for p in meta["packages"]
         if p["id"] in resolved and p["id"] not in members and p.get("rust_version")]
newest = max(needs, key=lambda need: version(need[0]))
if version(newest[0]) > version(declared):
    too_new = sorted((n for n in needs if version(n[0]) > version(declared)), key=lambda n: version(n[0]))
    lines = "\n".join(f"  {name} {ver} needs Rust {rv}" for rv, name, ver in too_new)
    sys.exit(f"rust-version is {declared}, but dependencies need more:\n{lines}")
print(f"rust-version {declared}: enough for every dependency (the newest needs {newest[0]}: {newest[1]} {newest[2]})")
