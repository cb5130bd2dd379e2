#!/usr/bin/env python3
"""Seed corpus for the `decode` fuzz target: every frame a conformance vector
sends (vectors/**/*.json: `message`, `binary_message`, `text`, `binary`,
`text_hex`), with the vector variables replaced by plausible values, written
to corpus/decode/<sha1> (libFuzzer's naming, so reruns deduplicate).

Usage: seed_corpus.py [VECTORS_DIR [OUT_DIR]]  (defaults: ../../vectors, corpus/decode)
"""
import hashlib
import json
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent
vectors = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent.parent / "vectors"
out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else here / "corpus" / "decode"


def subst(v):
    """Replaces whole-string vector variables (and `$hashcash` generators), recursively."""
    if isinstance(v, dict) and list(v) == ["$hashcash"]:
        return "1:8:260101:resource::seedrandom:0"
    if isinstance(v, dict):
        return {k: subst(x) for k, x in v.items()}
    if isinstance(v, list):
        return [subst(x) for x in v]
    if isinstance(v, str) and v.startswith("$"):
        if v.startswith("$$"):
            return v[1:]
        if v == "$appid" or v.startswith("$appid:"):
            return "lothar.com/wormhole/" + v[1:].replace(":", "-")
        if v.startswith("$side:"):
            return hashlib.sha1(v.encode()).hexdigest()[:10]
        if v in ("$np", "$nameplate"):
            return "4"
        if v.startswith("$mb") or v.startswith("$mailbox"):
            return "abcdefghijklm"
        return "x"
    return v


def frames(step):
    if "send" not in step:
        if step.get("bind"):
            yield json.dumps({"type": "bind", "appid": "lothar.com/wormhole/appid",
                              "side": "0123456789"}).encode()
        return
    if "message" in step:
        yield json.dumps(subst(step["message"]), ensure_ascii=False).encode()
    if "binary_message" in step:
        yield json.dumps(subst(step["binary_message"]), separators=(",", ":")).encode()
    if "text" in step:
        yield step["text"].encode()
    for key in ("binary", "text_hex"):
        if key in step:
            yield bytes.fromhex(step[key])


def main():
    out.mkdir(parents=True, exist_ok=True)
    seen = set()
    files = sorted(p for p in vectors.rglob("*.json") if p.name != "schema.json")
    for path in files:
        vector = json.loads(path.read_text())
        for step in vector.get("steps", []):
            for data in frames(step):
                name = hashlib.sha1(data).hexdigest()
                if name not in seen:
                    seen.add(name)
                    (out / name).write_bytes(data)
    total = sum(len((out / n).read_bytes()) for n in seen)
    print(f"seed corpus: {len(seen)} frames ({total} bytes) from {len(files)} vectors -> {out}")


if __name__ == "__main__":
    main()
