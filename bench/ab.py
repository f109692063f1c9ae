#!/usr/bin/env python3
"""A/B of MicroGate builds and settings in one scenario, in rotated interleaved rounds.

The change log in docs/benchmarks.md records what each change bought as an A/B: the old
and the new binary (or one binary with two settings) side by side in the same rounds, with
the same backend, load and core split as bench/run.py (whose parts this reuses). Reports
per variant the medians of its runs, and its paired ratios to the first variant (the
median of the ratios of runs in the same round) with (k/n): in k rounds of n it was below.

A variant is one of:
    nginx | haproxy | caddy                 the peer, configured as bench/run.py does
    NAME=BINARY                             MicroGate with analytics on, as benchmarked
    NAME=BINARY:off                         the same with analytics off
    NAME=BINARY:on:OLD=>NEW                 analytics on, with text OLD of the generated
                                            config replaced by NEW (use \\n for a newline)

    bench/ab.py --scenario routes --rounds 12 old=/tmp/mg-old new=target/dist/microgate
    bench/ab.py --scenario small-64 nginx plain=target/dist/microgate \\
        'fields=target/dist/microgate:on:  request_id: false\\n  forwarded_headers: false\\n=>'
    bench/ab.py --scenario routes nginx on=target/dist/microgate \\
        'memory=target/dist/microgate:on:store: sqlite=>store: memory' \\
        off=target/dist/microgate:off

Runs on 127.0.0.1 only; every server it starts it stops by PID; every load run ends by
itself. It builds nothing: build the binaries first (`cargo build --profile dist -p
microgate -p bench-backend`, and copy the old binary aside before rebuilding).
"""

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_run", HERE / "run.py")
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)

PEERS = ("nginx", "haproxy", "caddy")


def parse_variant(text):
    """(name, binary, analytics on, (old, new) or None) for a MicroGate variant; the peer's
    name and None for the others."""
    if text in PEERS:
        return text, None, None, None
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"{text!r}: expected a peer ({', '.join(PEERS)}) or NAME=BINARY[:on|off[:OLD=>NEW]]")
    binary, _, rest = rest.partition(":")
    mode, _, edit = rest.partition(":")
    if mode not in ("", "on", "off"):
        raise ValueError(f"{text!r}: analytics must be 'on' or 'off', not {mode!r}")
    replace = None
    if edit:
        old, sep, new = edit.partition("=>")
        if not sep or not old:
            raise ValueError(f"{text!r}: a config edit is OLD=>NEW")
        replace = (old.replace("\\n", "\n"), new.replace("\\n", "\n"))
    if not os.access(binary, os.X_OK):
        raise ValueError(f"{text!r}: {binary} is not an executable")
    return name, str(Path(binary).resolve()), mode != "off", replace


def start_variant(variant, d, backend_port, routes, cores):
    name, binary, analytics, edit = variant
    if binary is None:
        return R.start_proxy(name, d, backend_port, routes, cores, None)
    return R.start_microgate(name, d, backend_port, routes, cores, binary, analytics, edit)


def report(runs):
    names = list(runs)
    base = runs[names[0]]
    lines = [f"ratios to {names[0]}: medians of per-round ratios; (k/n): below it in k rounds of n", ""]
    lines.append("| variant | req/s | p50 ms | p90 ms | p99 ms | CPU µs/req | p99 ratio | CPU ratio |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in names:
        rs = runs[n]
        med = {k: R.median([r.get(k, float("nan")) for r in rs])
               for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_us_per_request")}
        ratio = {k: f"{R.paired(rs, base, k):.3f} ({R.below(rs, base, k)})" for k in ("p99_ms", "cpu_us_per_request")}
        lines.append(f"| {n} | {med['rps']:.0f} | {med['p50_ms']:.3f} | {med['p90_ms']:.3f} | {med['p99_ms']:.3f} | "
                     f"{med['cpu_us_per_request']:.2f} | {ratio['p99_ms']} | {ratio['cpu_us_per_request']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="two or more: see above")
    ap.add_argument("--scenario", default="small-16", choices=list(R.SCENARIOS))
    ap.add_argument("--rounds", type=int, default=8, help="rotated rounds (default 8)")
    ap.add_argument("--duration", type=int, default=8, help="seconds per run (default 8)")
    ap.add_argument("--rate", type=int, default=10000, help="requests/s for the `rate` scenario")
    ap.add_argument("--max-steal", type=float, default=1.0,
                    help="run again a run that lost more than this %% of the CPU to the hypervisor (default 1)")
    ap.add_argument("--retries", type=int, default=2, help="times a run is redone for steal (default 2)")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(HERE.parent / "target")),
                    help="where target/dist/bench-backend is")
    ap.add_argument("--gateway-fields", action="store_true",
                    help="MicroGate adds X-Request-ID and X-Forwarded-* (as bench/run.py --gateway-fields)")
    ap.add_argument("--out", help="also write every run as JSON here")
    args = ap.parse_args()
    R.GATEWAY_FIELDS = args.gateway_fields
    try:
        variants = [parse_variant(v) for v in args.variants]
    except ValueError as e:
        ap.error(str(e))
    if len(variants) < 2 or len({v[0] for v in variants}) != len(variants):
        ap.error("two or more variants, each with its own name")
    backend_bin = Path(args.target_dir) / "dist" / "bench-backend"
    if not os.access(backend_bin, os.X_OK):
        ap.error(f"{backend_bin} is missing: cargo build --profile dist -p bench-backend")

    R.ensure_packages()
    cores = R.Cores()
    _, _, routes, desc = R.SCENARIOS[args.scenario]
    R.log(f"A/B, {args.scenario}: {desc}; {args.rounds} rounds of {args.duration} s")
    d = Path(tempfile.mkdtemp(prefix="microgate-ab-"))
    R.write_lua(d)
    servers = []
    try:
        backend_port = R.free_port()
        servers.append(R.Server("backend", cores.load + [str(backend_bin), f"127.0.0.1:{backend_port}", "1"],
                                backend_port, log_path=d / "backend.log"))
        proxies = {}
        for v in variants:
            try:
                proxies[v[0]] = start_variant(v, d, backend_port, routes, cores)
            except (ValueError, RuntimeError) as e:
                R.log(f"cannot start {v[0]}: {e}")
                raise SystemExit(2) from None
            servers.append(proxies[v[0]])
        runs = R.measure_rounds(proxies, args.scenario, cores, d, args)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(d, ignore_errors=True)
    print(report(runs))
    if args.out:
        Path(args.out).write_text(json.dumps({"scenario": args.scenario, "variants": args.variants, "runs": runs}, indent=2))
        R.log(f"runs written to {args.out}")


if __name__ == "__main__":
    main()
