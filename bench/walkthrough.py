"""The README's walk-through, timed: `parry serve`, `parry demo`, `parry submit ... --wait`, `parry report`.

Runs the very commands the README gives (in a fresh data directory and working directory, on a free
port), each as a subprocess of the installed `parry`, and prints how long each step took and the time
from `parry serve` to the first report: the target is under 3 minutes after installation. Stops the
service at the end (Ctrl-C, as a user would) and checks that it exits.

    python bench/walkthrough.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.stack import free_port, wait_until

# The README's walk-through, after `parry serve` (keep the two in step).
ATTACKS = ["--attack", "fgsm:eps=0.05,0.1,0.2", "--attack", "pgd:eps=0.05,0.1,0.2,steps=20"]


def _parry() -> str:
    found = shutil.which("parry", path=str(Path(sys.executable).parent)) or shutil.which("parry")
    if found is None:
        raise SystemExit("no `parry` command: install Parry first (pip install -e '.[server,worker]')")
    return found


def _timed(argv: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:3])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="parry-walkthrough-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARRY_")}
    env |= {"PARRY_DATA_DIR": str(work / "parry-data"), "PARRY_SERVER": server}
    parry = _parry()
    figures: list[tuple[str, float]] = []
    log = (work / "serve.log").open("wb")
    started = time.monotonic()
    serve = subprocess.Popen([parry, "serve", "--port", str(port)], env=env, cwd=work, stdout=log, stderr=log)
    try:
        wait_until(lambda: httpx.get(f"{server}/readyz", timeout=2).status_code == 200, "readyz", 180)
        figures.append(("parry serve: /readyz answers", time.monotonic() - started))
        docs = httpx.get(f"{server}/docs", timeout=5)
        assert docs.status_code == 200 and "https://" not in docs.text, "the docs page needs another host"

        seconds, _ = _timed([parry, "demo"], env=env, cwd=work)
        figures.append(("parry demo (writes demo.keras)", seconds))
        submit = [parry, "submit", "--model", "demo.keras", "--dataset", "builtin:digits:test", *ATTACKS]
        seconds, printed = _timed([*submit, "--wait", "--quiet"], env=env, cwd=work)
        figures.append(("parry submit --wait (upload, validation, evaluation)", seconds))
        job_id = printed.split()[1]
        seconds, report = _timed([parry, "report", job_id, "--format", "markdown"], env=env, cwd=work)
        figures.append(("parry report --format markdown", seconds))
        first_report = time.monotonic() - started
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            code = serve.wait(timeout=120)
        except subprocess.TimeoutExpired:
            serve.kill()
            code = serve.wait()
        log.close()
    for what, seconds in figures:
        print(f"{what:<58} {seconds:6.1f} s")
    print(f"{'from parry serve to the first report':<58} {first_report:6.1f} s (target < 180 s)")
    print(f"parry serve exited with {code} on Ctrl-C; work dir {work}")
    print(report.splitlines()[0] if report else "(no report)")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
