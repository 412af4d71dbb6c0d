#!/usr/bin/env python3
"""freezer-fleet soak on a flapping link: 500 devices (each its own certificate), QoS 1, one event
a second each, for an hour, through a loopback TCP proxy that cuts every connection and refuses
new ones for 3 s every 2 minutes; mosquitto with mutual TLS behind it and `freezer-fleet watch`
on the broker counting every device's seqs.

  python3 bench/soak.py                           # 500 devices, 60 minutes (not CI)
  python3 bench/soak.py --devices 50 --minutes 6 --cut-every 60   # a short look

Prints: the fleet's RSS over time (first vs last 10 minutes, means of samples taken every 10 s),
what the report counts (taken, acknowledged, lost, re-sent, the outages), and what the watcher
saw (received, missing, duplicates). QoS 1 allows a duplicate only for a re-sent event, so
duplicates <= re-sent is the check. Loopback only; every process it starts is ended by pid;
bounded in time.
"""
import argparse, asyncio, json, os, re, signal, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared helpers: PKI, mosquitto with mTLS, fleet, /proc readers)


class FlappingProxy:
    """A loopback TCP proxy to `upstream`; `cut(seconds)` closes every connection and refuses
    new ones (the listening socket closed) for that long."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.port = bench.free_port()
        self.loop = asyncio.new_event_loop()
        self.writers = set()
        self.server = None
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._call(self._listen())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=1024)

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, c_reader, c_writer):
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            c_writer.close()
            return
        self.writers |= {c_writer, s_writer}
        await asyncio.gather(self._pipe(c_reader, s_writer), self._pipe(s_reader, c_writer))
        self.writers -= {c_writer, s_writer}

    async def _cut(self, seconds):
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        await asyncio.sleep(seconds)
        await self._listen()

    def cut(self, seconds):
        self._call(self._cut(seconds))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--cut-every", type=float, default=120, help="seconds between cuts")
    ap.add_argument("--cut-for", type=float, default=3, help="seconds each cut lasts")
    ap.add_argument("--window", type=float, default=10, help="minutes compared at the start and the end")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=bench.ROOT, check=True)
    bench.raise_nofile()
    work = tempfile.mkdtemp(prefix="ff-soak-")
    pki = os.path.join(work, "pki")
    BIN = bench.BIN
    subprocess.run([BIN, "certs", "init", pki], check=True, stderr=subprocess.DEVNULL)
    subprocess.run([BIN, "certs", "issue", pki, "--devices", str(a.devices)], check=True, stderr=subprocess.DEVNULL)
    subprocess.run([BIN, "certs", "issue", pki, "--devices", "1", "--id-prefix", "monitor", "--out", f"{pki}/monitor"],
                   check=True, stderr=subprocess.DEVNULL)
    broker = bench.Mosquitto(pki, work)
    watcher = fleet = None
    try:
        proxy = FlappingProxy(broker.port)
        seconds = int(a.minutes * 60)
        watch_err = open(os.path.join(work, "watch.log"), "w+")
        watcher = subprocess.Popen(
            [BIN, "watch", "--endpoint", "localhost", "--port", str(broker.port), "--ca", f"{pki}/ca.pem",
             "--certs", f"{pki}/monitor", "--id", "monitor1", "--duration", f"{seconds + 60}s"],
            stdin=subprocess.DEVNULL, stdout=watch_err, stderr=watch_err, env=dict(os.environ, NO_COLOR="1"))
        time.sleep(2)
        report = os.path.join(work, "report.json")
        fleet, err = bench.fleet(pki, proxy.port, ["--interval", "1s", "--qos", "1", "--backoff-max", "5s",
                                                   "--duration", f"{seconds}s", "--report", report])
        started = time.time()
        samples, next_cut, cuts = [], started + a.cut_every, 0
        while fleet.poll() is None:
            cuts_left = next_cut - started < seconds - 10
            time.sleep(min(10, max(0.1, next_cut - time.time())) if cuts_left else 10)
            now = time.time()
            if fleet.poll() is None:
                samples.append((now - started, bench.rss_kb(fleet.pid)))
            if now >= next_cut and now - started < seconds - 10:
                proxy.cut(a.cut_for)
                cuts += 1
                next_cut += a.cut_every
            if now - started > seconds + 120:
                raise SystemExit("the fleet did not stop in time")
        time.sleep(3)
        watcher.send_signal(signal.SIGINT)  # Ctrl-C: the watcher prints its table
        watcher.wait(30)
        watch_err.seek(0)
        table = watch_err.read()
        total = re.search(r"^total \(\d+\)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", table, re.M)
        r = json.load(open(report))
        m, o = r["messages"], r.get("outages", {})
        win = a.window * 60
        warm = min(60, seconds / 10)  # connecting and the first allocations
        first = [kb for t, kb in samples if warm <= t < warm + win]
        last = [kb for t, kb in samples if t >= seconds - win]
        f_mb, l_mb = statistics.mean(first) / 1024, statistics.mean(last) / 1024
        print(f"soak: {a.devices} devices x 1 event/s, QoS 1, {a.minutes:g} min, link cut for {a.cut_for:g} s "
              f"every {a.cut_every:g} s ({cuts} cuts)")
        print(f"  fleet RSS: from {warm:.0f} s for {a.window:g} min mean {f_mb:.1f} MiB, last {a.window:g} min mean {l_mb:.1f} MiB "
              f"({(l_mb / f_mb - 1) * 100:+.1f} %); min {min(kb for _, kb in samples) / 1024:.1f}, "
              f"max {max(kb for _, kb in samples) / 1024:.1f} MiB over {len(samples)} samples")
        print(f"  report: {m['taken']} taken, {m['acknowledged']} acknowledged, {m['failed']} failed, {m['dropped']} dropped, "
              f"{m['resent']} re-sent; {r['connects']['disconnects']} disconnects, "
              f"{r['connects']['reconnects']} reconnects; failed attempts {r['connects']['failed']}")
        if o:
            print(f"  outages: {o['episodes']} over, longest {o['longest_s']} s with {o['devices_down']} devices down, "
                  f"recovery {o['recovery_s']} s, longest offline {o['longest_device_offline_s']} s, "
                  f"{o['waited_ms']['count']} events waited p50 {o['waited_ms']['p50']} ms max {o['waited_ms']['max']} ms")
        if total:
            received, missing, dups, ooo = map(int, total.groups())
            print(f"  watcher: {received} received, {missing} missing, {dups} duplicates (QoS 1 allows at most the "
                  f"{m['resent']} re-sent), {ooo} out of order")
        else:
            print("  watcher: no total line:\n" + table[-2000:])
    finally:
        for p in (fleet, watcher):
            if p is not None and p.poll() is None:
                bench.stop(p)
        broker.stop()


if __name__ == "__main__":
    main()
