"""Myelin beside a reference Synapse under the same load: one command, one report.

Not a test. For each selected server, one after another (never two at once, so each has the
machine to itself), this starts the server in a fresh temporary data directory on a free
loopback port, waits until `/_matrix/client/versions` answers, reads its resident memory at
rest, runs the shared load generator (`../shared/peer/bench.py`) against it with the same
`--scale`, reads its memory again, and stops it. Servers are stopped on every exit path:
normal end, failure, Ctrl-C and SIGTERM.

The report is a Markdown table of every figure for every server, with the Myelin/Synapse
ratio turned into "how many times better Myelin is" (the right way round for higher- and
lower-is-better figures) beside the performance bar of DESIGN.md section 7, marked met or
not met. It is printed and written, with a JSON file of everything measured, into
`bench/out/<UTC timestamp>/`.

    bench/compare --scale 1                        # Myelin, Synapse (SQLite), Synapse (PostgreSQL)
    bench/compare --servers synapse --scale 0.05   # a subset; --scenario serial,joins

Servers: `myelin` (embedded default: SQLite and the log in the data dir), `synapse`
(SQLite) and `synapse-pg` (PostgreSQL on 127.0.0.1:5432, skipped with a note when that is
not reachable). Exit status: 0 when every started server was measured (scenario errors are
results and appear in the table), 1 when a server failed to start or the load generator
failed, 2 on bad usage, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEER = Path(os.environ.get("MYELIN_PEER_DIR", ROOT.parent / "shared" / "peer"))
PEER_CACHE = Path(os.environ.get("PEER_CACHE", Path.home() / ".cache" / "matrix-peer"))
SYNAPSE_PYTHON = PEER_CACHE / "synapse-venv" / "bin" / "python"
SCENARIOS = ("serial", "parallel", "fanout", "history", "joins")
SERVER_KINDS = ("myelin", "synapse", "synapse-pg")
LABELS = {"myelin": "Myelin", "synapse": "Synapse (SQLite)", "synapse-pg": "Synapse (PostgreSQL)"}
REFERENCE = ("synapse", "synapse-pg")  # the servers Myelin is compared with


class CompareError(Exception):
    """A server did not start, or the load generator could not run; the message says why."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop every server, then exit 130."""


# --------------------------------------------------------------------------------------
# Figures, ratios and bars (pure: results in, table out)
# --------------------------------------------------------------------------------------

Value = float | str | None  # a number, an error text, or None when not measured


@dataclass(frozen=True)
class Bar:
    """A performance bar of DESIGN.md section 7.

    `factor`: Myelin must be at least this many times better than Synapse (the advantage,
    already oriented by the figure's direction). `limit`: Myelin's own value must be below
    (lower-is-better) or at least (higher-is-better) this absolute number.
    """

    text: str
    factor: float | None = None
    limit: float | None = None


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    get: Callable[[dict[str, Any]], Value]
    bar: Bar | None = None


def _field(scenario: str, name: str) -> Callable[[dict[str, Any]], Value]:
    def get(server: dict[str, Any]) -> Value:
        res = (server.get("bench") or {}).get(scenario)
        if res is None:
            return None
        if "error" in res:
            return "error"
        value = res.get(name)
        return float(value) if isinstance(value, int | float) else None

    return get


def _delivered_pct(server: dict[str, Any]) -> Value:
    res = (server.get("bench") or {}).get("fanout")
    if res is None:
        return None
    if "error" in res:
        return "error"
    expected = res.get("expected") or 0
    return round(100.0 * res.get("delivered", 0) / expected, 1) if expected else None


def _rss(name: str) -> Callable[[dict[str, Any]], Value]:
    def get(server: dict[str, Any]) -> Value:
        value = server.get(name)
        return float(value) if isinstance(value, int | float) else None

    return get


FIGURES: tuple[Figure, ...] = (
    Figure("serial.msg_per_s", "serial sends", "msg/s", True, _field("serial", "msg_per_s"),
           Bar("≥ 20× (≈ 500 msg/s)", factor=20)),
    Figure("serial.p50_ms", "serial send p50", "ms", False, _field("serial", "p50_ms")),
    Figure("parallel.msg_per_s", "parallel sends (32 clients, 8 rooms)", "msg/s", True,
           _field("parallel", "msg_per_s"), Bar("≥ 30× (≈ 1,150 msg/s)", factor=30)),
    Figure("parallel.p50_ms", "parallel send p50", "ms", False, _field("parallel", "p50_ms")),
    Figure("parallel.p99_ms", "parallel send p99", "ms", False, _field("parallel", "p99_ms"),
           Bar("p99 < 50 ms", limit=50)),
    Figure("fanout.p50_ms", "fan-out to long-polling /sync, p50", "ms", False,
           _field("fanout", "p50_ms")),
    Figure("fanout.p99_ms", "fan-out to long-polling /sync, p99", "ms", False,
           _field("fanout", "p99_ms"), Bar("p99 < 50 ms", limit=50)),
    Figure("fanout.delivered_pct", "fan-out messages delivered", "%", True, _delivered_pct),
    Figure("history.initial_sync_ms", "initial /sync", "ms", False,
           _field("history", "initial_sync_ms"), Bar("≥ 5× faster", factor=5)),
    Figure("history.paginate_ms", "/messages back through the deep room", "ms", False,
           _field("history", "paginate_ms"), Bar("≥ 5× faster", factor=5)),
    Figure("joins.joins_per_s", "joins to one room (8 at a time)", "joins/s", True,
           _field("joins", "joins_per_s"), Bar("≥ 5×", factor=5)),
    Figure("joins.joined_members_ms", "/joined_members after the joins", "ms", False,
           _field("joins", "joined_members_ms")),
    Figure("joins.state_ms", "/state after the joins", "ms", False, _field("joins", "state_ms")),
    Figure("rss_mb_at_rest", "resident memory at rest", "MB", False, _rss("rss_mb_at_rest"),
           Bar("≤ ½ (≥ 2×)", factor=2)),
    Figure("rss_mb_after", "resident memory after the run", "MB", False, _rss("rss_mb_after"),
           Bar("≤ ½ (≥ 2×)", factor=2)),
)


def advantage(myelin: Value, synapse: Value, higher_is_better: bool) -> float | None:
    """How many times better Myelin is than Synapse on one figure (> 1: Myelin is better).

    Higher-is-better figures (msg/s) divide Myelin by Synapse; lower-is-better figures
    (ms, MB) divide Synapse by Myelin, so one reading rule fits every row.
    """
    if not isinstance(myelin, float) or not isinstance(synapse, float):
        return None
    num, den = (myelin, synapse) if higher_is_better else (synapse, myelin)
    if den <= 0 or num < 0:
        return None
    return num / den


def bar_met(figure: Figure, myelin: Value, adv: float | None) -> bool | None:
    """Whether Myelin meets the figure's bar; None when there is no bar or no measurement."""
    bar = figure.bar
    if bar is None:
        return None
    checks: list[bool] = []
    if bar.factor is not None:
        if adv is None:
            return None
        checks.append(adv >= bar.factor)
    if bar.limit is not None:
        if not isinstance(myelin, float):
            return None
        checks.append(myelin >= bar.limit if figure.higher_is_better else myelin < bar.limit)
    return all(checks)


def evaluate(servers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every figure of every server, with advantages and bar verdicts against each Synapse."""
    rows = []
    for fig in FIGURES:
        values = {name: fig.get(srv) for name, srv in servers.items()}
        row: dict[str, Any] = {
            "key": fig.key, "label": fig.label, "unit": fig.unit,
            "better": "higher" if fig.higher_is_better else "lower",
            "bar": fig.bar.text if fig.bar else None, "values": values, "vs": {},
        }
        mine = values.get("myelin")
        if "myelin" in servers:
            for ref in REFERENCE:
                if ref in servers:
                    adv = advantage(mine, values[ref], fig.higher_is_better)
                    row["vs"][ref] = {
                        "advantage": None if adv is None else round(adv, 3),
                        "met": bar_met(fig, mine, adv),
                    }
        rows.append(row)
    return rows


def _num(value: Value) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _verdict(vs: dict[str, Any]) -> str:
    adv = vs["advantage"]
    text = "—" if adv is None else f"{adv:.2f}×"
    if vs["met"] is not None:
        text += " met" if vs["met"] else " **not met**"
    return text


def render_table(rows: list[dict[str, Any]], servers: list[str]) -> str:
    """The Markdown table: one row per figure, one value column per server, then ratios."""
    refs = [r for r in REFERENCE if r in servers] if "myelin" in servers else []
    head = ["figure", "unit", "better", *(LABELS[s] for s in servers)]
    head += [f"Myelin vs {LABELS[r]}" for r in refs]
    head.append("bar (DESIGN.md §7)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["label"], row["unit"], row["better"]]
        cells += [_num(row["values"].get(s)) for s in servers]
        cells += [_verdict(row["vs"][r]) for r in refs]
        cells.append(row["bar"] or "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_report(report: dict[str, Any]) -> str:
    servers = list(report["servers"])
    m = report["machine"]
    out = [
        f"# Myelin vs Synapse, {report['started']}",
        "",
        f"`{report['command']}`, scale {report['scale']}, scenarios {report['scenario']}.",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram_gb']} GB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}; Myelin commit {m.get('myelin_commit', '?')}; "
        f"load average {m['loadavg_start']} at start, "
        f"{m.get('loadavg_end', '?')} at the end.",
        "",
    ]
    for name, srv in report["servers"].items():
        out.append(f"- {LABELS[name]}: version {srv.get('version') or '?'}, {srv.get('url', '')}"
                   + (f", **{srv['error']}**" if srv.get("error") else ""))
    out += [f"- {note}" for note in report["notes"]]
    out += ["", render_table(report["figures"], servers)]
    out.append("Ratios read \"how many times better Myelin is\": Myelin ÷ Synapse for "
               "higher-is-better figures, Synapse ÷ Myelin for lower-is-better ones; > 1 means "
               "Myelin is better. Absolute bars (p99 < 50 ms) judge Myelin's own value.")
    if report["scale"] != 1:
        out.append(f"The bars are defined for --scale 1; at scale {report['scale']} the "
                   "verdicts are indicative only.")
    errors = [
        f"- {LABELS[name]} / {scen}: {res['error']}"
        for name, srv in report["servers"].items()
        for scen, res in (srv.get("bench") or {}).items()
        if isinstance(res, dict) and "error" in res
    ]
    if errors:
        out += ["", "Scenario errors:", "", *errors]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------
# Machine, processes, servers
# --------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(), "cpu": cpu, "ram_gb": round(ram_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "loadavg_start": loadavg(), "myelin_commit": git_commit(),
    }


def git_commit() -> str:
    """The checkout's commit, marked `+changes` when the work tree differs from it."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process and all its children, in MiB (as bench.py counts it)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return round(total / 2**20, 1)
    except psutil.NoSuchProcess:
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
    except OSError:
        return False
    return shutil.which("psql") is not None


def psql(sql: str) -> str:
    done = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAqc", sql],
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise CompareError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def http_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # loopback only
        return json.loads(r.read())


def server_version(url: str) -> str | None:
    """The name and version a server reports on the federation version endpoint."""
    try:
        info = http_json(url + "/_matrix/federation/v1/version")["server"]
        return f"{info.get('name', '?')} {info.get('version', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def wait_ready(url: str, alive: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until the client versions endpoint answers; fail at once if the process died.

    An external process gives no readiness notification we could await, so this asks
    every 0.2 s until the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise CompareError(f"{what} exited before it answered on {url}")
        try:
            http_json(url + "/_matrix/client/versions", timeout=1.0)
            return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise CompareError(f"{what} did not answer on {url} within {timeout:.0f} s")
        time.sleep(0.2)


def stop_pid(pid: int, grace: float = 30.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL (the process and its children)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Hold off Ctrl-C and SIGTERM while servers are being stopped, so cleanup completes."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


@dataclass
class Running:
    name: str
    url: str
    pid: int
    version: str | None
    logs: list[Path] = field(default_factory=list)


@contextlib.contextmanager
def run_myelin(work: Path, out: Path) -> Iterator[Running]:
    """`.venv/bin/myelin serve` on the embedded default, fresh data dir, free port."""
    exe = ROOT / ".venv" / "bin" / "myelin"
    if not exe.exists():
        raise CompareError(f"{exe} is missing; run tools/venv.sh (bench/compare does)")
    port = free_port()
    data = work / "myelin-data"
    url = f"http://127.0.0.1:{port}"
    stderr = out / "myelin.stderr.log"
    cmd = [str(exe), "serve", "--port", str(port), "--data-dir", str(data),
           "--bind", "127.0.0.1", "--server-name", "localhost", "--registration", "open",
           "--no-rate-limit"]
    with stderr.open("wb") as errf:
        # Own session: a Ctrl-C in the terminal reaches us, and we stop the server in order.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        try:
            wait_ready(url, lambda: proc.poll() is None, 60, "myelin serve")
        except CompareError as exc:
            tail = stderr.read_text(errors="replace").strip().splitlines()[-15:]
            raise CompareError(f"{exc}\n  command: {' '.join(cmd)}\n  log {stderr}:\n    "
                               + "\n    ".join(tail)) from None
        version = server_version(url)
        if version is None:
            done = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                                  check=False)
            version = done.stdout.strip().replace("myelin, version ", "Myelin ")
        yield Running("myelin", url, proc.pid, version, [stderr])
    finally:
        with no_interrupts():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(OSError):
                shutil.copy(data / "log" / "myelin.log", out / "myelin.log")


@contextlib.contextmanager
def run_synapse(name: str, work: Path, out: Path) -> Iterator[Running]:
    """The reference Synapse through `../shared/peer/synapse.sh`, on SQLite or PostgreSQL."""
    script = PEER / "synapse.sh"
    if not script.exists():
        raise CompareError(f"{script} is missing (set MYELIN_PEER_DIR)")
    db = "postgres" if name == "synapse-pg" else "sqlite"
    port = free_port()
    data = work / f"{name}-data"
    url = f"http://127.0.0.1:{port}"
    database = f"synapse_{port}"
    pid: int | None = None
    if db == "postgres":
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")  # left by an old run
    try:
        if not SYNAPSE_PYTHON.exists():
            print(f"installing Synapse from PyPI into {SYNAPSE_PYTHON.parent.parent} "
                  "(first use only, minutes) ...", file=sys.stderr, flush=True)
        done = subprocess.run([str(script), "start", str(data), str(port), db],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=1800, start_new_session=True, check=False)
        last = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
        if done.returncode != 0 or not last or not last[0].isdigit():
            log = data / "stdout.log"
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
            raise CompareError(f"{LABELS[name]} failed to start (synapse.sh exit "
                               f"{done.returncode}): {done.stderr.strip()[-800:]}\n    "
                               + "\n    ".join(tail))
        pid = started = int(last[0])
        wait_ready(url, lambda: _alive(started), 30, LABELS[name])
        version = server_version(url)
        if db == "postgres":
            with contextlib.suppress(CompareError, subprocess.TimeoutExpired, OSError):
                version = f"{version}, PostgreSQL {psql('SHOW server_version')}"
        yield Running(name, url, pid, version, [data / "stdout.log"])
    finally:
        with no_interrupts():
            subprocess.run([str(script), "stop", str(data)], capture_output=True, timeout=60,
                           check=False)
            if pid is None and (data / "pid").exists():
                with contextlib.suppress(ValueError, OSError):
                    pid = int((data / "pid").read_text())
            if pid is not None:
                stop_pid(pid)
            for src in ("stdout.log", "homeserver.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(data / src, out / f"{name}.{src}")
            if db == "postgres":
                with contextlib.suppress(CompareError, subprocess.TimeoutExpired, OSError):
                    psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def bench_python(explicit: str | None) -> str:
    """A Python that has aiohttp and psutil, which the load generator needs."""
    candidates = [explicit] if explicit else [sys.executable, str(SYNAPSE_PYTHON)]
    for py in candidates:
        if py and Path(py).exists():
            ok = subprocess.run([py, "-c", "import aiohttp, psutil"], capture_output=True,
                                check=False)
            if ok.returncode == 0:
                return py
    raise CompareError(f"no Python with aiohttp and psutil among {candidates}; "
                       "run tools/venv.sh test, or pass --bench-python")


def run_bench(py: str, srv: Running, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Run the shared load generator against one server; its JSON is the result."""
    result = out / f"{srv.name}.bench.json"
    cmd = [py, str(PEER / "bench.py"), srv.url, "--scale", str(args.scale),
           "--scenario", args.scenario, "--pid", str(srv.pid), "--json", str(result)]
    log = out / f"{srv.name}.bench.log"
    with log.open("w") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # one line per finished scenario
                logf.write(line)
                print(f"  {srv.name}: {line.rstrip()[:160]}", file=sys.stderr, flush=True)
            code = proc.wait(timeout=args.timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if code != 0 or not result.exists():
        raise CompareError(f"bench.py against {LABELS[srv.name]} failed (exit {code}); "
                           f"see {log}")
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def measure(name: str, args: argparse.Namespace, py: str, work: Path, out: Path
            ) -> dict[str, Any]:
    starter = run_myelin if name == "myelin" else (lambda w, o: run_synapse(name, w, o))
    print(f"{LABELS[name]}: starting ...", file=sys.stderr, flush=True)
    with starter(work, out) as srv:
        if args.settle:
            time.sleep(args.settle)  # let start-up background work finish before "at rest"
        at_rest = rss_mb(srv.pid)
        print(f"{LABELS[name]}: {srv.version or '?'} on {srv.url}, pid {srv.pid}, "
              f"{at_rest} MB at rest; running bench.py --scale {args.scale} ...",
              file=sys.stderr, flush=True)
        t0 = time.monotonic()
        bench = run_bench(py, srv, args, out)
        after = rss_mb(srv.pid)
        return {"url": srv.url, "pid": srv.pid, "version": srv.version,
                "rss_mb_at_rest": at_rest, "rss_mb_after": after,
                "wall_s": round(time.monotonic() - t0, 1), "bench": bench}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default=",".join(SERVER_KINDS),
                    help="comma-separated subset of: " + ", ".join(SERVER_KINDS))
    ap.add_argument("--scale", type=float, default=1.0, help="workload size multiplier [1]")
    ap.add_argument("--scenario", default="all",
                    help="comma-separated subset of: " + ", ".join(SCENARIOS) + " [all]")
    ap.add_argument("--out", type=Path, help="output directory [bench/out/<UTC timestamp>]")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to let a started server settle before reading RSS [2]")
    ap.add_argument("--timeout", type=float, default=3600,
                    help="seconds bench.py may run per server [3600]")
    ap.add_argument("--bench-python", help="Python with aiohttp and psutil for bench.py")
    ap.add_argument("--keep-going", action="store_true",
                    help="measure the other servers when one fails to start (still exit 1)")
    args = ap.parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [s for s in servers if s not in SERVER_KINDS]
    if bad or not servers or len(set(servers)) != len(servers):
        ap.error(f"--servers: expected a subset of {', '.join(SERVER_KINDS)}, got {args.servers!r}")
    scen = [s.strip() for s in args.scenario.split(",") if s.strip()]
    if args.scenario != "all" and (not scen or any(s not in SCENARIOS for s in scen)):
        ap.error(f"--scenario: expected 'all' or a subset of {', '.join(SCENARIOS)}")
    if not 0 < args.scale <= 100:
        ap.error("--scale must be > 0 and at most 100")
    args.server_list = [s for s in SERVER_KINDS if s in servers]  # Myelin first, always
    return args


def _on_sigterm(_sig: int, _frame: object) -> None:
    raise Interrupted("SIGTERM")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    out: Path = args.out or ROOT / "bench" / "out" / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    notes: list[str] = []
    servers = list(args.server_list)
    if "synapse-pg" in servers and not postgres_reachable():
        servers.remove("synapse-pg")
        notes.append("Synapse (PostgreSQL) skipped: no PostgreSQL (with psql) on 127.0.0.1:5432.")
    report: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "bench/compare " + " ".join(sys.argv[1:] if argv is None else argv),
        "scale": args.scale, "scenario": args.scenario, "machine": machine_info(),
        "notes": notes, "servers": {}, "figures": [],
    }
    failed: list[str] = []
    code = 0
    try:
        if not servers:
            raise CompareError("no server left to measure")
        py = bench_python(args.bench_python)
        with tempfile.TemporaryDirectory(prefix="myelin-bench-") as tmp:
            for name in servers:
                try:
                    report["servers"][name] = measure(name, args, py, Path(tmp), out)
                except CompareError as exc:
                    report["servers"][name] = {"error": str(exc).splitlines()[0]}
                    failed.append(f"{LABELS[name]}: {exc}")
                    if not args.keep_going:
                        break
    except (KeyboardInterrupt, Interrupted):
        print("interrupted; every server started was stopped", file=sys.stderr)
        notes.append("Interrupted: the server being measured when it happened has no figures.")
        code = 130
    except CompareError as exc:
        failed.append(str(exc))
    report["machine"]["loadavg_end"] = loadavg()
    report["figures"] = evaluate(report["servers"])
    (out / "results.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    text = render_report(report)
    (out / "report.md").write_text(text)
    print(text)
    print(f"written: {out / 'report.md'} and {out / 'results.json'}", file=sys.stderr)
    if failed:
        for msg in failed:
            print(f"error: {msg}", file=sys.stderr)
        return code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
