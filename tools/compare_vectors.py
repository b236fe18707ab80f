#!/usr/bin/env python3
"""Compares two ikcp simulation traces (format `ikcp-sim-vectors/1`).

    python3 tools/compare_vectors.py REFERENCE CANDIDATE [options]

REFERENCE is usually a vector file of tests/vectors/ikcp/ (gzipped is fine), CANDIDATE
the stream tests/conformance.rs writes to target/conformance/<set>_<scenario>.jsonl when
a scenario does not match (or for every scenario with KCPNET_CONFORMANCE_DUMP=1). The
format and the simulation behind it are specified in tests/vectors/ikcp/VECTORS.md.

What is compared:
  * the header lines, on the simulation parameters only (the description and the ikcp
    version and commit it was recorded from do not count);
  * then the events, one by one in order, as JSON objects, after leaving out the event
    types of --skip-ev and the fields of --ignore-field.

For each differing event (the first --max of them) it prints the step, both events,
which fields differ, the datagram's KCP segments side by side when both are `out` events,
and the last `st` snapshot of that side before the difference in each trace (the counters
are usually where a divergence starts).

Exit status: 0 identical, 1 different, 2 unreadable input or bad arguments.
Python 3 standard library only.
"""

import argparse
import gzip
import json
import os
import struct
import sys

# Header keys that describe the recording, not the simulation.
RECORDING_KEYS = ("desc", "ikcp_variant", "ikcp_commit")

# KCP segment header: conv u32, cmd u8, frg u8, wnd u16, ts u32, sn u32, una u32, len u32,
# little-endian, 24 bytes; `len` payload bytes follow it inside a datagram.
SEGMENT = struct.Struct("<IBBHIIII")
COMMANDS = {81: "PUSH", 82: "ACK", 83: "WASK", 84: "WINS"}

# Longest event text printed on one line.
SHOW_CHARS = 400


class InputError(Exception):
    """A trace that cannot be read."""


def read_trace(path):
    """The JSON objects of a trace, one per non-empty line (header first)."""
    opener = gzip.open if path.endswith(".gz") else open
    events = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{number}: not JSON: {e}") from e
    except OSError as e:
        raise InputError(f"{path}: {e}") from e
    if not events or events[0].get("type") != "header":
        raise InputError(f"{path}: the first line is not a trace header")
    return events


def simulation_parameters(header):
    return {k: v for k, v in header.items() if k not in RECORDING_KEYS}


def segments(event):
    """The KCP segment headers in an `out` event: from `hex` (whole datagram, payloads
    skipped by their length) or from `segs` (headers only, concatenated)."""
    if "hex" in event:
        data = bytes.fromhex(event["hex"])
        found, offset = [], 0
        while offset + SEGMENT.size <= len(data):
            fields = SEGMENT.unpack_from(data, offset)
            found.append(fields)
            offset += SEGMENT.size + fields[7]
        if offset != len(data):
            found.append(None)  # trailing bytes that are not a whole segment
        return found
    data = bytes.fromhex(event.get("segs", ""))
    whole = len(data) - len(data) % SEGMENT.size
    found = [SEGMENT.unpack_from(data, i) for i in range(0, whole, SEGMENT.size)]
    if whole != len(data):
        found.append(None)
    return found


def describe_segment(fields):
    if fields is None:
        return "(trailing bytes, not a whole segment)"
    conv, cmd, frg, wnd, ts, sn, una, length = fields
    name = COMMANDS.get(cmd, f"cmd {cmd}")
    return f"{name:<4} conv={conv} sn={sn} una={una} ts={ts} wnd={wnd} frg={frg} len={length}"


def short(event):
    text = json.dumps(event, separators=(",", ":"))
    if len(text) > SHOW_CHARS:
        return f"{text[:SHOW_CHARS]}… ({len(text)} chars)"
    return text


def last_snapshot(events, before, side):
    """The last `st` event of `side` among events[:before], or None."""
    for event in reversed(events[:before]):
        if event.get("ev") == "st" and event.get("side") == side:
            return event
    return None


def report_difference(position, ref_kept, cand_kept, ref_all, cand_all):
    """Prints what differs at `position` of the compared (kept) events; `*_kept` hold
    (index in the whole trace, compared event) pairs."""
    ref_at, ref = ref_kept[position]
    cand_at, cand = cand_kept[position]
    print(
        f"event #{position} differs (step k={ref.get('k')} in the reference, "
        f"k={cand.get('k')} in the candidate; file lines {ref_at + 1} and {cand_at + 1})"
    )
    print(f"  reference: {short(ref)}")
    print(f"  candidate: {short(cand)}")
    fields = sorted(
        k for k in set(ref) | set(cand) if ref.get(k, "<absent>") != cand.get(k, "<absent>")
    )
    print(f"  fields that differ: {', '.join(fields)}")
    if ref.get("ev") == "out" and cand.get("ev") == "out":
        ref_segs, cand_segs = segments(ref_all[ref_at]), segments(cand_all[cand_at])
        for i in range(max(len(ref_segs), len(cand_segs))):
            a = describe_segment(ref_segs[i]) if i < len(ref_segs) else "(none)"
            b = describe_segment(cand_segs[i]) if i < len(cand_segs) else "(none)"
            if a != b:
                print(f"  segment {i}:")
                print(f"    reference: {a}")
                print(f"    candidate: {b}")
    side = ref.get("side")
    if side is not None and ref.get("ev") != "st":
        ref_st = last_snapshot(ref_all, ref_at, side)
        cand_st = last_snapshot(cand_all, cand_at, side)
        if ref_st is not None and ref_st == cand_st:
            print(f"  last st of side {side} before it, the same in both: {short(ref_st)}")
        elif ref_st is not None or cand_st is not None:
            print(f"  last st of side {side} before it:")
            print(f"    reference: {short(ref_st) if ref_st else '(none)'}")
            print(f"    candidate: {short(cand_st) if cand_st else '(none)'}")
            if ref_st and cand_st:
                fields = sorted(k for k in set(ref_st) | set(cand_st)
                                if ref_st.get(k) != cand_st.get(k))
                print(f"    fields that differ: {', '.join(fields)}")


def main(argv):
    parser = argparse.ArgumentParser(
        description="Compare two ikcp-sim-vectors/1 traces (.jsonl or .jsonl.gz)."
    )
    parser.add_argument("reference", help="the reference trace")
    parser.add_argument("candidate", help="the trace to check")
    parser.add_argument(
        "--skip-ev", default="", metavar="TYPES",
        help="comma-separated event types to leave out (e.g. st)",
    )
    parser.add_argument(
        "--ignore-field", default="", metavar="FIELDS",
        help="comma-separated fields to leave out of every event (e.g. rc,chk)",
    )
    parser.add_argument(
        "--max", type=int, default=3, metavar="N", help="differences to print (default 3)"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only the first difference and the verdict"
    )
    args = parser.parse_args(argv)
    skip = {t for t in args.skip_ev.split(",") if t}
    ignore = {f for f in args.ignore_field.split(",") if f}
    shown_max = 1 if args.quiet else max(args.max, 0)

    try:
        ref_all = read_trace(args.reference)
        cand_all = read_trace(args.candidate)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    ref_params = simulation_parameters(ref_all[0])
    cand_params = simulation_parameters(cand_all[0])
    if ref_params != cand_params:
        print("the headers describe different simulations:")
        for key in sorted(set(ref_params) | set(cand_params)):
            if ref_params.get(key) != cand_params.get(key):
                print(f"  {key}: reference {ref_params.get(key)!r}, candidate {cand_params.get(key)!r}")
        return 1

    def kept(trace):
        """(index in `trace`, event without the ignored fields) of every compared event."""
        return [
            (i, {k: v for k, v in event.items() if k not in ignore})
            for i, event in enumerate(trace)
            if i > 0 and event.get("ev") not in skip
        ]

    ref_kept, cand_kept = kept(ref_all), kept(cand_all)

    differing = shown = 0
    for position in range(min(len(ref_kept), len(cand_kept))):
        if ref_kept[position][1] == cand_kept[position][1]:
            continue
        differing += 1
        if shown < shown_max:
            shown += 1
            report_difference(position, ref_kept, cand_kept, ref_all, cand_all)
    same_length = len(ref_kept) == len(cand_kept)
    if not same_length:
        print(
            f"lengths differ: {len(ref_kept)} events in the reference, "
            f"{len(cand_kept)} in the candidate"
        )

    notes = []
    if skip:
        notes.append(f"event types left out: {','.join(sorted(skip))}")
    if ignore:
        notes.append(f"fields left out: {','.join(sorted(ignore))}")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    if differing == 0 and same_length:
        print(f"identical: {len(ref_kept)} events{suffix}")
        return 0
    compared = min(len(ref_kept), len(cand_kept))
    print(
        f"different: {differing} of {compared} compared events differ ({shown} shown)"
        f"{'' if same_length else ', and the lengths differ'}{suffix}"
    )
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        # The reader (`| head`) stopped early: not an error of the comparison.
        sys.stdout = open(os.devnull, "w")
        sys.exit(1)
