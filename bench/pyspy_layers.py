"""Summarise a py-spy raw profile (`fanout.py --py-spy DIR`) by layer of the send path.

    python bench/pyspy_layers.py DIR/ours-1000.txt [--us-per-msg 180] [--top 25]

Each sample is charged to the layer of its innermost frame (self time), so the shares add up
to 100 %; with --us-per-msg (the µs/msg column of the same run) they are also shown as
µs per delivered message. With --py-spy-native, C frames appear too (the cyclic GC as
`gc_collect_main`, the socket syscalls as libc `send`).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

LAYERS: tuple[tuple[str, str], ...] = (
    (r"gc_collect", "cyclic GC"),
    (r"_nonblocking_helper \(trio/_socket\.py:1050\)|\bsend \(libc", "socket send() syscall"),
    (r"\b(recv|read) \(libc", "socket recv()/read() syscall"),
    (r"trio/_socket\.py|trio/_highlevel_socket\.py|trio/_util\.py", "trio socket/stream wrappers"),
    (r"trio/_sync\.py", "trio.Lock (hypercorn send_lock)"),
    (r"\(trio/|outcome|attrs generated methods trio", "trio scheduler, cancel scopes, checkpoints"),
    (r"contextlib\.py", "contextlib (@contextmanager helpers)"),
    (
        r"hypercorn/|collections/__init__|\(<string>\)",
        "hypercorn (ASGI send, h11/ws stream, events)",
    ),
    (r"wsproto/", "wsproto framing"),
    (r"gateway/api/ws/", "gateway/api/ws/ (queue, writer)"),
    (r"gateway/pubsub\.py", "gateway/pubsub.py"),
    (
        r"gateway/api/shared_subscriptions\.py|graphql/|strawberry/|gateway/api/schema/|graphql_trio|json/",
        "GraphQL execution, JSON, hub",
    ),
    (r"asyncio/", "asyncio"),
    (r"uvicorn/|websockets/", "uvicorn / websockets"),
    (r"starlette/", "starlette"),
)


def layer(frame: str) -> str:
    for pattern, name in LAYERS:
        if re.search(pattern, frame):
            return name
    return "other: " + re.sub(r":\d+\)", ")", frame)[:70]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="py-spy --format raw output")
    parser.add_argument("--us-per-msg", type=float, help="µs/msg measured in the same run")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    layers: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    with open(args.profile) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            total += count
            leaf = stack.split(";")[-1]
            layers[layer(leaf)] += count
            functions[re.sub(r":\d+\)", ")", leaf)] += count
    if not total:
        raise SystemExit("no samples")
    print(f"{total} samples\n\nby layer (self time):")
    for name, count in layers.most_common():
        share = count / total
        cost = f"  {share * args.us_per_msg:6.1f} µs/msg" if args.us_per_msg else ""
        print(f"  {share * 100:5.1f}%{cost}  {name}")
    print(f"\ntop {args.top} functions (self time):")
    for name, count in functions.most_common(args.top):
        print(f"  {count / total * 100:5.1f}%  {name}")


if __name__ == "__main__":
    main()
