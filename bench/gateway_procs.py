"""The processes bench/bench_gateway.py starts: the fake upstream, fieldbox's gateway, LiteLLM's
proxy, the bare pass-through proxy and the direct llama.cpp worker. Each on a free port,
its output in a log file, stopped (SIGTERM, then SIGKILL) when the bench is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from benchlib import ROOT, BenchError, LoggedProcess, child_options, free_port, stop_process
from gateway_client import Conn

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
MODEL = "bench-model"  # the fake upstream's model name, served under the same name by all
SLOW_MODEL = "bench-model-slow"  # the same, answered --slow-ms later by the fake upstream


class Proc(LoggedProcess):
    """One helper process on `port`, its stdout and stderr in `log_path`."""

    def __init__(self, name: str, run_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.run_dir = run_dir
        self.port = free_port()
        self.log_path = run_dir / f"{name}.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def launch(self, argv: list[str], ready: Callable[[], bool], timeout: float) -> None:
        """Start `argv` and wait until `ready()` is true (BenchError on exit or timeout)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            **child_options(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                    + self.log_tail()
                )
            try:
                if ready():
                    return
            except (OSError, BenchError, ValueError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} was not ready within {timeout:.0f}s; see {self.log_path}")

    def get_ok(self, path: str, token: str = "") -> bool:
        """GET `path` answers 200."""
        conn = Conn(HOST, self.port, timeout=5)
        try:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n{auth}\r\n"
            status, _ = conn.exchange(request.encode())
            return status == 200
        finally:
            conn.close()

    @property
    def pid(self) -> int:
        """The process id (0 before start)."""
        return self.proc.pid if self.proc else 0


class FakeUpstream(Proc):
    """bench/fake_openai.py."""

    def __init__(self, run_dir: Path, chunks: int, slow_ms: float) -> None:
        super().__init__("fake-upstream", run_dir)
        self.chunks = chunks
        self.slow_ms = slow_ms

    def start(self) -> None:
        """Start and wait for `GET /v1/models`."""
        argv = [
            sys.executable,
            str(BENCH / "fake_openai.py"),
            f"--port={self.port}",
            f"--chunks={self.chunks}",
            f"--slow-ms={self.slow_ms:g}",
        ]
        self.launch(argv, lambda: self.get_ok("/v1/models"), 30)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (`…/v1`)."""
        return f"http://{HOST}:{self.port}/v1"


class FieldboxGateway(Proc):
    """`fieldbox serve gateway` with its own data dir and config file, and a gateway key."""

    def __init__(self, run_dir: Path, name: str, config_toml: str) -> None:
        self.data_dir = run_dir / f"{name}-data"
        self.data_dir.mkdir(parents=True)
        super().__init__(name, run_dir, {"FIELDBOX_DATA": str(self.data_dir)})
        self.config_path = run_dir / f"{name}.toml"
        self.config_path.write_text(config_toml)
        self.token = ""

    def _fieldbox(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "appliance", f"--config={self.config_path}", *args]

    def create_key(self) -> str:
        """`fieldbox keys create --scope gateway`; the token is the last word printed."""
        out = subprocess.run(
            self._fieldbox("keys", "create", "--scope=gateway", "--name=bench"),
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0 or not out.stdout.split():
            raise BenchError(f"keys create failed ({out.returncode}): {out.stderr.strip()}")
        self.token = out.stdout.split()[-1]
        return self.token

    def start(self, timeout: float = 120) -> None:
        """Create the key, start, wait until `/ready` (a healthy backend)."""
        self.create_key()
        argv = self._fieldbox("serve", "gateway", f"--host={HOST}", f"--port={self.port}")
        self.launch(argv, lambda: self.get_ok("/ready"), timeout)


def fieldbox_fake_config(upstream: FakeUpstream, max_concurrency: int) -> str:
    """The gateway config for the fake upstream: what a user of a fast upstream would write."""
    return f"""\
# Written by bench/bench_gateway.py. Everything not set here is the default a box runs
# with: a Bearer key required, the JSON request log line, Prometheus metrics and the
# telemetry spool (prompts captured) on every request.

[[inference.backends]]
type = "openai"
name = "fake"
url = "{upstream.base_url}"
models = ["{MODEL}", "{SLOW_MODEL}"]
# The default (8) queues calls beyond 8 at once in the gateway; a user of an upstream that
# takes any concurrency raises it, as LiteLLM has no such limit unless one is set.
max_concurrency = {max_concurrency}
"""


def fieldbox_llama_config(gguf: Path, n_threads: int) -> str:
    """The gateway config for the tokens/s run: the embedded default, threads pinned."""
    return f"""\
# Written by bench/bench_gateway.py: the embedded default (SmolLM2 on llama.cpp, served as
# smollm2-135m), spelled out only to pin n_threads to the direct run's value.

[[inference.backends]]
type = "llamacpp"
name = "local"
path = "{gguf}"
models = ["smollm2-135m"]
n_threads = {n_threads}
"""


# LiteLLM proxy settings, each one what a user who wants a fast proxy would set.
LITELLM_ENV = {
    # No usage telemetry leaves the box (and no time is spent on it).
    "LITELLM_TELEMETRY": "False",
    # Use the model price map shipped in the package; do not fetch it at start (offline box).
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    # Warnings and errors only in LiteLLM's own logger (its default prints more at start);
    # uvicorn's access line stays, as fieldbox writes one request line too.
    "LITELLM_LOG": "ERROR",
}


def litellm_config(upstream: FakeUpstream, master_key: str) -> str:
    """LiteLLM's config.yaml for the fake upstream."""
    return f"""\
# Written by bench/bench_gateway.py.
model_list:
  - model_name: {MODEL}
    litellm_params:
      # OpenAI-compatible upstream at api_base, as fieldbox's `type = "openai"` backend.
      model: openai/{MODEL}
      api_base: {upstream.base_url}
      api_key: sk-fake-upstream
  - model_name: {SLOW_MODEL}
    litellm_params:
      model: openai/{SLOW_MODEL}
      api_base: {upstream.base_url}
      api_key: sk-fake-upstream

litellm_settings:
  # Drop parameters the provider does not take instead of failing on them.
  drop_params: true
  # No usage telemetry.
  telemetry: false
  # No per-call debug printing.
  set_verbose: false
  # A stuck upstream fails the call after 30 s instead of the default 6000 s.
  request_timeout: 30

general_settings:
  # Callers need a Bearer key, as fieldbox's gateway does. Without a database the master
  # key is the only key, checked in memory.
  master_key: {master_key}
  # Nothing written to a database (there is none): spend logs and error logs off.
  disable_spend_logs: true
  disable_error_logs: true
"""


class LiteLLMProxy(Proc):
    """`litellm --config … --num_workers 1` from its own venv."""

    MASTER_KEY = "sk-bench-master-key"

    def __init__(self, run_dir: Path, venv: Path, upstream: FakeUpstream) -> None:
        super().__init__("litellm", run_dir, LITELLM_ENV)
        # No database: without DATABASE_URL there are no spend logs, no key table, no Prisma.
        self.env.pop("DATABASE_URL", None)
        self.venv = venv
        self.config_path = run_dir / "litellm.yaml"
        self.config_path.write_text(litellm_config(upstream, self.MASTER_KEY))
        self.token = self.MASTER_KEY

    @staticmethod
    def version(venv: Path) -> str:
        """The installed LiteLLM version, or '' when there is none in `venv`."""
        python = venv / "bin" / "python"
        if not python.is_file():
            return ""
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return out.stdout.strip() if out.returncode == 0 else ""

    def start(self, timeout: float = 180) -> None:
        """Start one worker; wait for `/health/liveliness`."""
        argv = [
            str(self.venv / "bin" / "litellm"),
            f"--config={self.config_path}",
            f"--host={HOST}",
            f"--port={self.port}",
            # One process, as fieldbox's gateway is one process.
            "--num_workers=1",
        ]
        self.launch(argv, lambda: self.get_ok("/health/liveliness"), timeout)


class BareProxy(Proc):
    """bench/gateway_bare.py: uvicorn + aiohttp pass-through, no fieldbox logic."""

    def __init__(self, run_dir: Path, upstream: FakeUpstream) -> None:
        super().__init__("bare-proxy", run_dir)
        self.upstream = upstream
        self.token = "bare"

    def start(self) -> None:
        """Start and wait for `/health`."""
        argv = [
            sys.executable,
            str(BENCH / "gateway_bare.py"),
            HOST,
            str(self.port),
            self.upstream.base_url,
        ]
        self.launch(argv, lambda: self.get_ok("/health"), 60)


class LlamaDirect:
    """bench/gateway_llama.py: llama-cpp-python in its own process, driven over stdin."""

    def __init__(self, run_dir: Path, gguf: Path, n_threads: int) -> None:
        self.log_path = run_dir / "llama-direct.log"
        self.gguf = gguf
        self.n_threads = n_threads
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        """Load the model; wait for its `ready` line."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "gateway_llama.py"),
                str(self.gguf),
                str(self.n_threads),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            **child_options(),
        )
        line = self._readline(timeout)
        if line.strip() != "ready":
            raise BenchError(f"llama.cpp worker said {line!r}; see {self.log_path}")

    def _readline(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise BenchError(f"llama.cpp worker silent for {timeout:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"llama.cpp worker exited; see {self.log_path}")
        return line

    def generate(self, prompt: str, max_tokens: int, timeout: float = 300) -> dict[str, Any]:
        """One streamed generation: {'first_event', 'token_times'} in seconds from the call."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"prompt": prompt, "max_tokens": max_tokens}) + "\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self._readline(timeout))
        if "error" in result:
            raise BenchError(f"llama.cpp worker: {result['error']}")
        return result

    def stop(self) -> None:
        """Close stdin (the worker exits), then stop it if it lingers."""
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
