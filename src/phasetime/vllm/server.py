"""vLLM's OpenAI-compatible server, started with phasetime's probe and always stopped.

:class:`Server` starts ``python -m vllm.entrypoints.openai.api_server`` from the vLLM
environment (``.venv-vllm/bin/python`` unless told otherwise: vLLM stays out of phasetime's
own environment) with ``PHASETIME_PROBE_DIR`` set, so that the plugin
(:mod:`.plugin`) records its steps and requests there. It waits for ``/health``, keeps the
server's log in the results directory, and stops the server (its whole process group) at the
end, on an error, on Ctrl-C, and when phasetime itself dies (the kernel sends it SIGTERM).
Every way it can fail is one line: a port in use, a server that does not come up (its last log
lines), a model the engine cannot load (the error vLLM logged), an environment without vLLM.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..core.errors import PhasetimeError
from .plugin import ENV

DEFAULT_PYTHON = ".venv-vllm/bin/python"
SETUP = "bash scripts/setup-vllm.sh builds .venv-vllm (or give load.python: a python with vLLM and phasetime)"


class ServerError(PhasetimeError):
    """The server cannot be started, reached or used."""


def vllm_python(python: str | None) -> str:
    """The interpreter that runs the server: ``load.python``, ``$PHASETIME_VLLM_PYTHON``,
    ``.venv-vllm/bin/python`` in the working directory or in phasetime's own checkout (an
    editable install: ``scripts/setup-vllm.sh`` builds it there), else this one."""
    chosen = python or os.environ.get("PHASETIME_VLLM_PYTHON")
    if chosen:
        return chosen
    checkout = Path(__file__).resolve().parents[3] / DEFAULT_PYTHON
    for candidate in (Path(DEFAULT_PYTHON), checkout):
        if candidate.exists():
            return str(candidate)
    return sys.executable


_PROBE = ("import importlib.util, importlib.metadata as m, sys\n"
          "if importlib.util.find_spec('vllm') is None: print('no-vllm'); sys.exit()\n"
          "names = [e.value for e in m.entry_points(group='vllm.general_plugins')]\n"
          "print('ok' if 'phasetime.vllm.plugin:register' in names else 'no-plugin')\n")


def server_unavailable(python: str | None) -> str | None:
    """Why no server can be started from ``python`` (None: it has vLLM and phasetime's plugin)."""
    exe = vllm_python(python)
    try:
        answer = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"backend vllm-server: cannot run {exe}: {exc}; {SETUP}"
    if answer == "no-vllm":
        return f"backend vllm-server: {exe} has no vLLM; {SETUP}"
    if answer != "ok":
        return f"backend vllm-server: {exe} has vLLM but not phasetime's plugin (pip install -e . in that environment)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as answer:  # noqa: S310 -- our own URL
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _child_setup() -> Any:
    """What the server's process runs before exec: its own process group (phasetime stops it as
    a whole; Ctrl-C reaches phasetime, not it) and, on Linux, SIGTERM when phasetime dies. libc's
    prctl is looked up here, in the parent: the child only calls it."""
    try:
        import ctypes

        prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None

    def setup() -> None:  # pragma: no cover -- runs in the child
        os.setsid()
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    return setup


def last_lines(path: Path, count: int = 5) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return errors[-1][-400:] if errors else " | ".join(lines[-count:])[-600:]


class Server:
    """One vLLM server for one model (``with Server(...) as server: server.url``)."""

    def __init__(self, model_path: str, served_name: str, folder: Path, *, python: str | None = None, port: int = 0,
                 dtype: str = "auto", seed: int = 0, args: list[str] | None = None, startup_timeout_s: float = 300.0,
                 eager: bool = True, probe: bool = True) -> None:
        self.model_path, self.served_name, self.folder = model_path, served_name, folder
        self.python, self.dtype, self.seed = vllm_python(python), dtype, seed
        self.args, self.startup_timeout_s, self.eager, self.probe = list(args or []), startup_timeout_s, eager, probe
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in served_name)
        self.log = folder / f"{safe}.log"
        self.probe_dir = folder / f"{safe}-probe"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        dtype = "float32" if self.dtype == "auto" and self.eager else self.dtype
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path,
               "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", dtype, "--seed", str(self.seed), "--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]
        return cmd + (["--enforce-eager"] if self.eager else []) + self.args

    def start(self) -> "Server":
        if self.port == 0:
            self.port = free_port()
        elif port_in_use(self.port):
            raise ServerError(f"port {self.port} is in use: stop what listens there or set load.port: 0 (a free port)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.probe_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != ENV}
        env["HF_HUB_OFFLINE"] = os.environ.get("HF_HUB_OFFLINE", "1")
        if self.probe:  # without it the plugin does nothing: the server as vLLM ships it (benchmarks/serve.py)
            env[ENV] = str(self.probe_dir.resolve())
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; else vLLM wants most of the RAM free
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            preexec_fn=_child_setup())  # noqa: PLW1509 -- setsid + death signal
        atexit.register(self.stop)
        self._wait()
        return self

    def _wait(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                self.stop()
                raise ServerError(f"the vLLM server exited (code {code}) before it was healthy: {last_lines(self.log)} "
                                  f"(log: {self.log})")
            if healthy(self.url, timeout=1.0):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the vLLM server did not come up within {self.startup_timeout_s:g} s: "
                                  f"{last_lines(self.log)} (log: {self.log})")
            time.sleep(0.5)

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after ``grace_s``."""
        process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                _reap_group(process.pid)
                break
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _reap_group(pgid: int) -> None:
    """Kill what is left of the group (vLLM's engine process outliving its API server)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def platform(python: str | None) -> str:
    """The device type vLLM runs on in that environment (``cpu``, ``cuda``, ...)."""
    code = "from vllm.platforms import current_platform as p; print(getattr(p, 'device_type', 'cpu') or 'cpu')"
    try:
        out = subprocess.run([vllm_python(python), "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"cannot ask {vllm_python(python)} for vLLM's platform: {exc}") from None
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else "cpu"
