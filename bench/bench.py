#!/usr/bin/env python3
"""freezer-fleet benchmark: idle mTLS devices, QoS 1 and QoS 0 throughput, against a real
mosquitto with mutual TLS on loopback, every device with its own certificate.

  python3 bench/bench.py                      # everything, medians of 3 runs
  python3 bench/bench.py --only idle --sizes 1000 --runs 1

Measures (client = the freezer-fleet process, read from /proc):
  (a) N idle devices: RSS per device (total and marginal between sizes), seconds to connect
      all, client CPU per device to load its identity (start to the start line) and per connect
      (the start line to the last CONNACK)
  (b) 100 devices, QoS 1, --rate max, 20 s: messages/s counted at the broker ($SYS), client CPU
      microseconds per message
  (c) the same at QoS 0
  (d) 100 devices, --sink kinesis, --rate max, against moto's Kinesis emulator on loopback
      (.venv-tests, installed by the test command): events/s acknowledged, PutRecords batches/s,
      records per batch, client CPU microseconds per event
  (f) with --only rates (in the full run too): 100 devices at QoS 1 and --rate max, 40000 and
      10000, and 1,000 devices at one event a second each: events/s, client CPU microseconds
      per event, steady-state PUBACK p50/p99, beside the reference client (bench/refclient.rs:
      one task per TLS connection, rumqttc's codec, nothing else) at the same rate
  (g) the latency row: (f)'s 10,000 msg/s PUBACK percentiles against the reference client's
  (h) with --only rsa (in the full run too): --rsa-devices idle devices with RSA-2048 keys, the
      CPU to load each key apart from the CPU per handshake
  With --baseline BIN, rows (a), (f), (g) and (h) also run that binary (the previous commit's
  build), run for run in the same go, and print its figures beside this build's.
  (e) with --only scale: a fleet of --fleet devices (default 100,000), each its own certificate,
      as --shards processes (`run --shard I/N`; default 6, as this box's hard open-files limit
      of 20,000 per process holds ~19,900 devices) against one mosquitto per shard (the broker
      has the same limit), connecting with --ramp-up per shard, each device publishing every 60 s
      for --steady seconds once all are connected; then `report merge`: devices connected,
      events acknowledged and lost, PUBACK and connect percentiles, peak RSS per shard and in
      total (and the brokers'), client CPU per connect
Baselines in the same go: mosquitto_pub (mosquitto's own client) publishing the same number of
messages over one mTLS connection, CPU microseconds per message; for (d), boto3 (the AWS SDK for
Python) putting the same events in PutRecords batches of 500 from one thread.

Loopback only; every process it starts is ended by pid; bounded in time.
"""
import argparse, os, re, resource, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "freezer-fleet")
REF = os.path.join(ROOT, "target", "release", "examples", "refclient")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kb(pid, field):
    """A kB figure from /proc/PID/status: VmRSS (resident now), VmHWM (its peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kb(pid):
    return status_kb(pid, "VmRSS")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Mosquitto:
    def __init__(self, pki, state):
        self.port = free_port()
        conf = os.path.join(state, "mosquitto.conf")
        acl = os.path.join(state, "acl")
        with open(acl, "w") as f:
            f.write("pattern readwrite #\npattern read $SYS/#\n")
        user = "user root\n" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(f"""{user}persistence false
log_dest file {state}/mosquitto.log
log_type error
log_type warning
connection_messages false
sys_interval 1
max_connections -1
set_tcp_nodelay true
max_inflight_messages 100
max_queued_messages 100000
per_listener_settings false
allow_anonymous false
acl_file {acl}
listener {self.port} 127.0.0.1
cafile {pki}/ca.pem
certfile {pki}/server.pem
keyfile {pki}/server.key
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
""")
        self.proc = subprocess.Popen(["mosquitto", "-c", conf], preexec_fn=raise_nofile,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sys_counter(pki, port, topic):
    """One $SYS value from the broker, read with mosquitto_sub over mTLS."""
    out = subprocess.run(
        ["mosquitto_sub", "-h", "localhost", "-p", str(port), "-C", "1", "-W", "5", "-t", topic,
         "--cafile", f"{pki}/ca.pem", "--cert", f"{pki}/monitor/monitor1/monitor1-certificate.pem.crt",
         "--key", f"{pki}/monitor/monitor1/monitor1-private.pem.key", "-i", f"bench-sys-{time.time_ns()}"],
        capture_output=True, text=True, timeout=15)
    return int(out.stdout.strip() or 0)


def settled_counter(pki, port, topic):
    """The $SYS counter once the broker has worked off its backlog (two equal reads in a row)."""
    last = None
    for _ in range(30):
        time.sleep(1.1)  # sys_interval is 1 s
        now = sys_counter(pki, port, topic)
        if now == last:
            return now
        last = now
    return last


def fleet(pki, port, args, binary=None, certs=None):
    """Starts a fleet (`binary`, default this build) of the devices in `certs` (default the
    bench PKI's); returns (proc, stderr path)."""
    err = tempfile.NamedTemporaryFile("w+", delete=False, suffix=".log")
    cmd = [binary or BIN, "run", "--endpoint", "localhost", "--port", str(port), "--ca", f"{pki}/ca.pem",
           "--certs", certs or f"{pki}/devices", "--profile", "none"] + args
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                            env=dict(os.environ, NO_COLOR="1"))
    return proc, err.name


def wait_line(path, pattern, proc, timeout, every=0.005):
    end = time.time() + timeout
    rx = re.compile(pattern)
    while time.time() < end:
        with open(path) as f:
            m = rx.search(f.read())
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(every)
    with open(path) as f:
        raise SystemExit(f"timed out waiting for {pattern!r}:\n{f.read()[-2000:]}")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def idle_run(pki, port, n, binary=None, certs=None):
    """N idle devices: RSS, seconds to connect all, client CPU per device to load its identity
    (process start to the start line: files read, keys parsed, TLS configs built) and per
    connect (start line to the last CONNACK: the handshakes)."""
    proc, err = fleet(pki, port, ["--devices", str(n), "--interval", "0"], binary, certs)
    wait_line(err, r"device\(s\) -> ", proc, 120)
    cpu0 = cpu_seconds(proc.pid)
    m = wait_line(err, rf"(\d+) of {n} device\(s\) connected in ([\d.]+) s", proc, 300)
    cpu1 = cpu_seconds(proc.pid)
    connected, secs = int(m.group(1)), float(m.group(2))
    time.sleep(2)  # let allocations settle
    rss = rss_kb(proc.pid)
    stop(proc)
    os.unlink(err)
    if connected != n:
        raise SystemExit(f"only {connected} of {n} connected")
    return {"rss_kb": rss, "connect_s": secs, "cpu_per_load_ms": cpu0 * 1000 / n,
            "cpu_per_connect_ms": (cpu1 - cpu0) * 1000 / n}


def throughput_run(pki, port, qos, seconds):
    before = settled_counter(pki, port, "$SYS/broker/publish/messages/received")
    proc, err = fleet(pki, port, ["--devices", "100", "--qos", str(qos), "--rate", "max",
                                  "--duration", f"{seconds}s", "--drain-timeout", "2s"])
    proc.wait(seconds + 60)
    after = settled_counter(pki, port, "$SYS/broker/publish/messages/received")
    with open(err) as f:
        text = f.read()
    os.unlink(err)
    return after - before, text


def start_instant(lead=3):
    """A schedule start `lead` seconds ahead, on a whole second: every device connects before it,
    so the figures are the steady state's (the connect phase's handshakes keep the broker busy)."""
    return int(time.time()) + lead + 1


def rate_run(binary, pki, port, rate, seconds, devices=100, interval=None):
    """One fleet at a fixed --rate (or --interval), its schedule starting once every device is
    connected (--start-at): events/s from its report, client CPU per event (the whole process,
    connects included), PUBACK p50/p99."""
    report = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
    report.close()
    pace = ["--interval", interval] if interval else ["--rate", str(rate)]
    start_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_instant()))
    args = [binary, "run", "--endpoint", "localhost", "--port", str(port), "--ca", f"{pki}/ca.pem",
            "--certs", f"{pki}/devices", "--devices", str(devices), "--qos", "1", *pace,
            "--start-at", start_at, "--duration", f"{seconds}s", "--drain-timeout", "2s", "--report", report.name]
    c0 = children_cpu()
    subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=seconds + 120, check=False)
    cpu = children_cpu() - c0
    import json
    with open(report.name) as f:
        r = json.load(f)
    os.unlink(report.name)
    published = r["messages"]["published"]
    lat = r["latency_ms"]["puback"]
    return {"rate": published / max(r.get("running_s") or seconds, 1e-3), "cpu_us": cpu * 1e6 / max(published, 1),
            "p50": lat["p50"], "p99": lat["p99"]}


def ref_run(binary, pki, port, rate, seconds, devices=100):
    """The reference client (bench/refclient.rs) at the same rate, its schedule starting once
    every device is connected: events/s, client CPU per event, PUBACK p50/p99 from the write of
    each PUBLISH."""
    import json
    c0 = children_cpu()
    out = subprocess.run([binary, "--port", str(port), "--ca", f"{pki}/ca.pem", "--certs", f"{pki}/devices",
                          "--devices", str(devices), "--rate", str(rate), "--seconds", str(seconds),
                          "--start-at-unix", str(start_instant())],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=seconds + 120)
    cpu = children_cpu() - c0
    if out.returncode != 0:
        raise SystemExit(f"refclient failed: {out.stderr[-2000:]}")
    r = json.loads(out.stdout)
    if r["connected"] != devices:
        raise SystemExit(f"refclient: only {r['connected']} of {devices} connected: {out.stderr[-2000:]}")
    return {"rate": r["published"] / max(r["seconds"], 1e-3), "cpu_us": cpu * 1e6 / max(r["published"], 1),
            "p50": r["puback_ms"]["p50"], "p99": r["puback_ms"]["p99"]}


def rsa_pki(pki, n):
    """N device folders with RSA-2048 keys (IoT Core's console hands these out), signed by the
    bench's CA with openssl: one key shared by the certificates, as generating 1,000 RSA keys
    takes minutes and each device still loads and uses its own copy."""
    from concurrent.futures import ThreadPoolExecutor
    out = os.path.join(pki, "rsa")
    os.makedirs(out, exist_ok=True)
    key, pub = os.path.join(out, "shared.key"), os.path.join(out, "shared.pub")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True)
    ext = os.path.join(out, "ext.cnf")
    with open(ext, "w") as f:
        f.write("[v3]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")

    def one(i):
        d = os.path.join(out, f"freezer{i}")
        os.makedirs(d, exist_ok=True)
        subprocess.run(["openssl", "x509", "-new", "-subj", f"/CN=freezer{i}", "-force_pubkey", pub,
                        "-CA", f"{pki}/ca.pem", "-CAkey", f"{pki}/ca.key", "-days", "30",
                        "-set_serial", str(1_000_000 + i), "-extfile", ext, "-extensions", "v3",
                        "-out", os.path.join(d, "certificate.pem.crt")], check=True, capture_output=True)
        shutil.copy(key, os.path.join(d, "private.pem.key"))
        os.chmod(os.path.join(d, "private.pem.key"), 0o600)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(1, n + 1)))
    for f in (key, pub, ext):
        os.unlink(f)
    return out


def crypto_floor():
    """openssl's own figures on this machine now, in ms: RSA-2048 and P-256 sign and verify, and
    X25519 (the handshake's key exchange). A shared machine's speed drifts between goes, so the
    connect rows are read against these."""
    out = subprocess.run(["openssl", "speed", "-seconds", "2", "rsa2048", "ecdsap256", "ecdhx25519"],
                         capture_output=True, text=True, timeout=120).stdout
    f = {}
    m = re.search(r"^rsa 2048 bits\s+([\d.]+)s\s+([\d.]+)s", out, re.M)
    if m:
        f["rsa_sign"], f["rsa_verify"] = float(m.group(1)) * 1000, float(m.group(2)) * 1000
    m = re.search(r"\(nistp256\)\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)", out)
    if m:
        f["p256_sign"], f["p256_verify"] = 1000 / float(m.group(1)), 1000 / float(m.group(2))
    m = re.search(r"\(X25519\)\s+[\d.]+s\s+([\d.]+)", out)
    if m:
        f["x25519"] = 1000 / float(m.group(1))
    return f


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def mosquitto_pub_baseline(pki, port, qos, count):
    """mosquitto's own client: `count` events over one mTLS connection, counted at the broker."""
    lines = tempfile.NamedTemporaryFile("w", delete=False)
    payload = '{"device_id":"freezer1","seq":1,"ts":1764000000123,"temperature":-18.4,"humidity":64.9}\n'
    lines.write(payload * count)
    lines.close()
    before = settled_counter(pki, port, "$SYS/broker/publish/messages/received")
    c0 = children_cpu()
    t0 = time.time()
    with open(lines.name) as f:
        subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), "-q", str(qos), "-t", "freezers",
                        "-l", "--cafile", f"{pki}/ca.pem", "--cert", f"{pki}/monitor/monitor1/monitor1-certificate.pem.crt",
                        "--key", f"{pki}/monitor/monitor1/monitor1-private.pem.key", "-i", "bench-baseline"],
                       stdin=f, check=True, timeout=300)
    elapsed = time.time() - t0
    cpu = children_cpu() - c0
    os.unlink(lines.name)
    received = settled_counter(pki, port, "$SYS/broker/publish/messages/received") - before
    # The broker's counter can include stragglers of an earlier run: never count more than was sent.
    delivered = min(received, count)
    return cpu * 1e6 / max(delivered, 1), delivered / elapsed, received


VENV = os.path.join(ROOT, ".venv-tests", "bin")


class Moto:
    """moto's server on loopback with one Kinesis stream of 4 shards."""

    def __init__(self, stream):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([os.path.join(VENV, "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("moto_server did not start")
        subprocess.run([os.path.join(VENV, "python"), os.path.join(ROOT, "tests", "fixtures", "aws.py"), self.url,
                        "create-stream", stream, "4"], check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


AWS_ENV = {"AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def kinesis_run(moto, stream, seconds):
    """100 devices to Kinesis as fast as allowed; (events acknowledged, requests, client CPU s)."""
    import json
    report = tempfile.NamedTemporaryFile("w+", delete=False, suffix=".json")
    env = dict(os.environ, NO_COLOR="1", AWS_ENDPOINT_URL=moto.url, **AWS_ENV)
    c0 = children_cpu()
    subprocess.run([BIN, "run", "--sink", "kinesis", "--stream", stream, "--region", "eu-west-1", "--devices", "100",
                    "--rate", "max", "--duration", f"{seconds}s", "--drain-timeout", "5s", "--report", report.name],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   check=True, timeout=seconds + 60)
    cpu = children_cpu() - c0
    with open(report.name) as f:
        r = json.load(f)
    os.unlink(report.name)
    m = r["sinks"]["kinesis"]["messages"]
    return m["acknowledged"], m["requests"], cpu, r["sinks"]["kinesis"]["latency_ms"]["puback"]["p50"]


BOTO3_BASELINE = r"""
import boto3, json, os, sys, time, resource
k = boto3.client("kinesis", endpoint_url=sys.argv[1], region_name="eu-west-1")
count, stream = int(sys.argv[2]), sys.argv[3]
event = '{"device_id":"freezer%d","seq":%d,"ts":1764000000123,"temperature":-18.4,"humidity":64.9}'
sent, seq, t0 = 0, 0, time.time()
while sent < count:
    seq += 1
    records = [{"Data": (event % (i, seq)).encode(), "PartitionKey": "freezer%d" % i} for i in range(min(500, count - sent))]
    r = k.put_records(StreamName=stream, Records=records)
    sent += len(records) - r["FailedRecordCount"]
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"sent": sent, "seconds": time.time() - t0, "cpu": ru.ru_utime + ru.ru_stime}))
"""


def boto3_baseline(moto, stream, count):
    import json
    env = dict(os.environ, **AWS_ENV)
    out = subprocess.run([os.path.join(VENV, "python"), "-c", BOTO3_BASELINE, moto.url, str(count), stream],
                         capture_output=True, text=True, env=env, check=True, timeout=600)
    r = json.loads(out.stdout)
    return r["cpu"] * 1e6 / max(r["sent"], 1), r["sent"] / r["seconds"]


def scale_run(pki, work, fleet_size, shards, ramp, steady):
    """A fleet of `fleet_size` as `shards` processes, one mosquitto each; returns figures."""
    import json
    brokers = []
    for i in range(shards):
        state = os.path.join(work, f"broker{i}")
        os.makedirs(state)
        brokers.append(Mosquitto(pki, state))
    procs = []
    try:
        t0 = time.time()
        # Every shard's schedule starts at one instant, once the fleet should be connected, so
        # the latency figures are the steady state's, not the connect phase's queue.
        connect_guess = fleet_size / shards / ramp * 1.3 + 20
        start_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + connect_guess))
        for i, b in enumerate(brokers):
            report = os.path.join(work, f"shard{i}.json")
            proc, err = fleet(pki, b.port, ["--shard", f"{i}/{shards}", "--interval", "60s", "--ramp-up", str(ramp),
                                            "--start-at", start_at, "--report", report])
            procs.append({"proc": proc, "err": err, "report": report})
        for p in procs:
            wait_line(p["err"], r"device\(s\) -> ", p["proc"], 300, every=0.2)
            p["cpu0"] = cpu_seconds(p["proc"].pid)
        for i, p in enumerate(procs):
            m = wait_line(p["err"], r"(\d+) of (\d+) device\(s\) connected in ([\d.]+) s", p["proc"], 1800,
                          every=0.5)
            p["cpu1"] = cpu_seconds(p["proc"].pid)
            p["connected"], p["devices"], p["connect_s"] = int(m.group(1)), int(m.group(2)), float(m.group(3))
            print(f"    shard {i}/{shards}: {p['connected']:,} of {p['devices']:,} connected in {p['connect_s']:.1f} s",
                  flush=True)
        all_connected = time.time() - t0
        end = max(time.time(), t0 + connect_guess) + steady
        rss_peak = 0
        while time.time() < end:
            rss_peak = max(rss_peak, sum(rss_kb(p["proc"].pid) for p in procs))
            time.sleep(5)
        shard_hwm = [status_kb(p["proc"].pid, "VmHWM") for p in procs]
        broker_rss = sum(rss_kb(b.proc.pid) for b in brokers)
        for p in procs:
            stop(p["proc"])
        merged = os.path.join(work, "merged.json")
        subprocess.run([BIN, "report", "merge"] + [p["report"] for p in procs] + ["--out", merged], check=True,
                       stderr=subprocess.DEVNULL)
        with open(merged) as f:
            r = json.load(f)
        connects = sum(p["devices"] for p in procs)
        connect_cpu = sum(p["cpu1"] - p["cpu0"] for p in procs)
        return {
            "devices": connects,
            "connected": sum(p["connected"] for p in procs),
            "all_connected_s": all_connected,
            "cpu_per_connect_ms": connect_cpu * 1000 / max(connects, 1),
            "shard_hwm_kb": shard_hwm,
            "fleet_rss_peak_kb": rss_peak,
            "broker_rss_kb": broker_rss,
            "report": r,
        }
    finally:
        for p in procs:
            stop(p["proc"])
            os.unlink(p["err"])
        for b in brokers:
            b.stop()


def median(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="1000,10000", help="idle fleet sizes")
    ap.add_argument("--seconds", type=int, default=20, help="throughput run length")
    ap.add_argument("--only", choices=["idle", "throughput", "rates", "rsa", "kinesis", "scale"],
                    help="run one part (scale, the many-process fleet, runs only when asked)")
    ap.add_argument("--fleet", type=int, default=100000, help="scale: devices in the whole fleet")
    ap.add_argument("--shards", type=int, default=6, help="scale: processes (and brokers)")
    ap.add_argument("--ramp-up", type=int, default=100, help="scale: connections per second per shard")
    ap.add_argument("--steady", type=int, default=130, help="scale: seconds to run once every device is connected")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin", help="benchmark this freezer-fleet binary (e.g. a build of the previous commit, as a baseline)")
    ap.add_argument("--baseline", help="idle, rates and rsa: also run this binary (e.g. the previous commit's build), run for run in the same go")
    ap.add_argument("--rsa-devices", type=int, default=1000, help="rsa: devices with RSA-2048 keys")
    a = ap.parse_args()
    global BIN
    if a.bin:
        BIN = os.path.abspath(a.bin)
        a.no_build = True
    for tool in ["mosquitto", "mosquitto_sub", "mosquitto_pub"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install mosquitto mosquitto-clients")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    if a.only in (None, "rates") and (not a.no_build or not os.path.exists(REF)):
        subprocess.run(["cargo", "build", "--release", "--locked", "--example", "refclient"], cwd=ROOT, check=True)
    bins = [("this build", BIN)] + ([("baseline", os.path.abspath(a.baseline))] if a.baseline else [])
    raise_nofile()
    sizes = [int(x) for x in a.sizes.split(",")]
    work = tempfile.mkdtemp(prefix="ff-bench-")
    pki = os.path.join(work, "pki")
    try:
        subprocess.run([BIN, "certs", "init", pki], check=True, stderr=subprocess.DEVNULL)
        wanted = a.fleet if a.only == "scale" else max(sizes + [100])
        t0 = time.time()
        subprocess.run([BIN, "certs", "issue", pki, "--devices", str(wanted)], check=True)
        issued_s = time.time() - t0
        subprocess.run([BIN, "certs", "issue", pki, "--devices", "1", "--id-prefix", "monitor",
                        "--out", f"{pki}/monitor"], check=True, stderr=subprocess.DEVNULL)
        broker = Mosquitto(pki, work)
        try:
            print(f"freezer-fleet {subprocess.run([BIN, '--version'], capture_output=True, text=True).stdout.strip()}, "
                  f"{os.cpu_count()} CPUs, medians of {a.runs} run(s)\n")
            if a.only == "scale":
                f = scale_run(pki, work, a.fleet, a.shards, a.ramp_up, a.steady)
                r = f["report"]
                m, lat = r["messages"], r["latency_ms"]
                print(f"(e) {f['devices']:,} mTLS devices (each its own certificate, issued in {issued_s:.0f} s) as "
                      f"{a.shards} shards, one mosquitto each, --ramp-up {a.ramp_up} per shard: "
                      f"{f['connected']:,} connected, all within {f['all_connected_s']:.0f} s of the start; "
                      f"client CPU over the connect phase {f['cpu_per_connect_ms']:.3f} ms per device "
                      f"(handshakes, plus keeping those already connected alive)")
                print(f"    {a.steady} s at one event per device per 60 s from one --start-at: merged report {m['published']:,} published, "
                      f"{m['acknowledged']:,} acknowledged, {m['failed'] + m['dropped']:,} lost, "
                      f"PUBACK p50 {lat['puback']['p50']:.2f} ms p99 {lat['puback']['p99']:.2f} ms, "
                      f"connect p50 {lat['connect']['p50']:.2f} ms p99 {lat['connect']['p99']:.2f} ms")
                hwm = f["shard_hwm_kb"]
                print(f"    peak RSS per shard {min(hwm) / 1024:.0f}–{max(hwm) / 1024:.0f} MiB "
                      f"({sum(hwm) / f['devices']:.1f} KB/device), all shards at once {f['fleet_rss_peak_kb'] / 1024:.0f} MiB; "
                      f"the {a.shards} brokers {f['broker_rss_kb'] / 1024:.0f} MiB")
            if a.only in (None, "idle"):
                # (a) idle devices; with --baseline, the other binary runs right after each run.
                rows = {name: {} for name, _ in bins}
                for n in sizes:
                    runs = {name: [] for name, _ in bins}
                    for _ in range(a.runs):
                        for name, binary in bins:
                            runs[name].append(idle_run(pki, broker.port, n, binary))
                    for name, _ in bins:
                        rs = runs[name]
                        rows[name][n] = r = {k: median([x[k] for x in rs]) for k in rs[0]}
                        print(f"(a) {n:>6} idle mTLS devices, {name}: RSS {r['rss_kb'] / 1024:.1f} MiB = {r['rss_kb'] / n:.1f} KB/device, "
                              f"all connected in {r['connect_s']:.2f} s, client CPU {r['cpu_per_load_ms']:.3f} ms/device to load, "
                              f"{r['cpu_per_connect_ms']:.3f} ms/connect (runs {', '.join('%.3f' % x['cpu_per_connect_ms'] for x in rs)})")
                if len(sizes) >= 2:
                    lo, hi = sizes[0], sizes[-1]
                    line = f"    marginal RSS between {lo} and {hi} idle devices:"
                    for name, _ in bins:
                        rw = rows[name]
                        line += f"  {name}: {(rw[hi]['rss_kb'] - rw[lo]['rss_kb']) / (hi - lo):.1f} KB/device;"
                    print(line.rstrip(";"))
            if a.only in (None, "rsa"):
                # (h) devices with RSA-2048 keys: loading the keys apart from the handshakes.
                rsa = rsa_pki(pki, a.rsa_devices)
                runs = {name: [] for name, _ in bins}
                for _ in range(a.runs):
                    for name, binary in bins:
                        runs[name].append(idle_run(pki, broker.port, a.rsa_devices, binary, rsa))
                floor = crypto_floor()
                line = f"(h) {a.rsa_devices} devices with RSA-2048 keys:"
                for name, _ in bins:
                    rs = runs[name]
                    line += (f"  {name}: {median([x['cpu_per_load_ms'] for x in rs]):.3f} ms CPU/device to load, "
                             f"{median([x['cpu_per_connect_ms'] for x in rs]):.3f} ms/connect "
                             f"(runs {', '.join('%.3f' % x['cpu_per_connect_ms'] for x in rs)}), "
                             f"all connected in {median([x['connect_s'] for x in rs]):.2f} s;")
                print(line.rstrip(";"))
                if {"rsa_sign", "p256_verify", "x25519"} <= floor.keys():
                    # A device's handshake: its own signature, two verifies of the server's
                    # (its certificate by the CA, its CertificateVerify), one key exchange.
                    rsa = floor["rsa_sign"] + 2 * floor["p256_verify"] + floor["x25519"]
                    p256 = floor["p256_sign"] + 2 * floor["p256_verify"] + floor["x25519"]
                    print(f"    openssl on this machine now: RSA-2048 sign {floor['rsa_sign']:.3f} ms, "
                          f"P-256 sign {floor['p256_sign']:.3f} ms, verify {floor['p256_verify']:.3f} ms, "
                          f"X25519 {floor['x25519']:.3f} ms: crypto floor per handshake {rsa:.3f} ms with an "
                          f"RSA-2048 key, {p256:.3f} ms with P-256")
            if a.only in (None, "throughput"):
                for qos in (1, 0):
                    rates, cpus = [], []
                    for _ in range(a.runs):
                        c0 = children_cpu()
                        msgs, text = throughput_run(pki, broker.port, qos, a.seconds)
                        cpu = children_cpu() - c0
                        # Only the fleet's CPU: mosquitto_sub helpers are tiny but counted; remove them
                        # by measuring one alone.
                        rates.append(msgs / a.seconds)
                        cpus.append(cpu * 1e6 / max(msgs, 1))
                    sent = int(median(rates) * 5)
                    base_cpu, base_rate, base_n = mosquitto_pub_baseline(pki, broker.port, qos, sent)
                    label = "(b)" if qos == 1 else "(c)"
                    print(f"{label} 100 devices QoS {qos}, as fast as allowed, {a.seconds} s: "
                          f"{median(rates):,.0f} msg/s at the broker, client CPU {median(cpus):.1f} µs/msg "
                          f"(runs: {', '.join(f'{r:,.0f}' for r in rates)} msg/s)")
                    print(f"    baseline mosquitto_pub, 1 mTLS connection, same broker: {base_rate:,.0f} msg/s, "
                          f"{base_cpu:.1f} µs CPU/msg ({base_n:,} of {sent:,} messages counted at the broker"
                          + ("" if base_n >= sent else "; mosquitto_pub -l quits at end of input with messages still queued")
                          + ")")
            if a.only in (None, "rates"):
                # (f) CPU per QoS 1 event at fixed rates, 100 devices, and 1,000 devices at 1/s each,
                # beside the reference client (bench/refclient.rs) at the same rate; with --baseline,
                # the other binary runs right after each run, so all see the same machine.
                # (g) the latency row: the 10,000/s case's PUBACK percentiles against the reference's.
                cases = [("max", None, 100), ("40000", None, 100), ("10000", None, 100), (None, "1s", 1000)]
                lat = {}
                for rate, interval, devices in cases:
                    results = {name: [] for name, _ in bins + [("reference client", REF)]}
                    for _ in range(a.runs):
                        for name, binary in bins:
                            results[name].append(rate_run(binary, pki, broker.port, rate, a.seconds, devices, interval))
                        results["reference client"].append(
                            ref_run(REF, pki, broker.port, rate or devices, a.seconds, devices))
                    what = f"--rate {rate}" if rate else f"--interval {interval}"
                    print(f"(f) {devices} devices QoS 1 {what}, {a.seconds} s:")
                    for name, rs in results.items():
                        print(f"    {name:>16}: {median([r['rate'] for r in rs]):>9,.0f} msg/s, "
                              f"{median([r['cpu_us'] for r in rs]):6.1f} µs CPU/msg "
                              f"(runs {', '.join('%.1f' % r['cpu_us'] for r in rs)}), "
                              f"PUBACK p50 {median([r['p50'] for r in rs]):.3f} ms p99 {median([r['p99'] for r in rs]):.1f} ms")
                    if rate == "10000":
                        lat = {name: (median([r["p50"] for r in rs]), median([r["p99"] for r in rs]))
                               for name, rs in results.items()}
                if lat:
                    ref50, ref99 = lat["reference client"]
                    line = "(g) PUBACK latency at 10,000 msg/s, 100 devices (steady state, from the intended instant):"
                    for name, _ in bins:
                        p50, p99 = lat[name]
                        line += f"  {name}: p50 {p50:.3f} ms ({p50 - ref50:+.3f} vs the reference) p99 {p99:.1f} ms;"
                    print(line + f"  reference client (from the write): p50 {ref50:.3f} ms p99 {ref99:.1f} ms")
            if a.only in (None, "kinesis"):
                if not os.path.exists(os.path.join(VENV, "moto_server")):
                    raise SystemExit("moto_server is missing: run ./scripts/test.sh once (it installs .venv-tests)")
                moto = Moto("bench")
                try:
                    rows = [kinesis_run(moto, "bench", a.seconds) for _ in range(a.runs)]
                    rates = [acked / a.seconds for acked, _, _, _ in rows]
                    batches = [req / a.seconds for _, req, _, _ in rows]
                    per_batch = [acked / max(req, 1) for acked, req, _, _ in rows]
                    cpus = [cpu * 1e6 / max(acked, 1) for acked, _, cpu, _ in rows]
                    p50 = [p for _, _, _, p in rows]
                    base_cpu, base_rate = boto3_baseline(moto, "bench", int(median(rates) * 5))
                    print(f"(d) 100 devices --sink kinesis, as fast as allowed, {a.seconds} s, moto on loopback: "
                          f"{median(rates):,.0f} events/s acknowledged, {median(batches):,.1f} PutRecords/s of "
                          f"{median(per_batch):.0f} records, client CPU {median(cpus):.1f} µs/event, "
                          f"p50 {median(p50):.1f} ms intended-to-acknowledged "
                          f"(runs: {', '.join(f'{r:,.0f}' for r in rates)} events/s)")
                    print(f"    baseline boto3 put_records, batches of 500, one thread, same emulator: "
                          f"{base_rate:,.0f} events/s, {base_cpu:.1f} µs CPU/event")
                finally:
                    moto.stop()
        finally:
            broker.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
