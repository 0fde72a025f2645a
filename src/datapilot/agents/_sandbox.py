"""The code runner: Python analysis in a separate process, in a fresh temporary folder, with time
and memory limits and no network.

Layers, outermost first:

* a new process (``python -I -B``: no user site, no PYTHON* variables, no bytecode writes) whose
  working folder and HOME are a fresh temporary folder, deleted afterwards;
* ``unshare -rn`` where the kernel allows it: a user and network namespace with only a loopback
  that is down, so no connection leaves the process, not even to 127.0.0.1;
* resource limits set before the code runs: address space (memory), CPU seconds, file size, no core
  files; the parent also kills the process group at the wall-clock timeout;
* an audit hook (``sys.addaudithook``) installed before the code runs that refuses: opening a file
  for writing outside the folder, removing/renaming/creating/linking paths outside it, socket
  connect/bind/name lookups, and starting processes.

Limits: the audit hook runs inside the sandboxed interpreter, so native code (ctypes, C extensions)
could get past it; the file-system guard is that hook alone, while the network guard is the namespace
when ``unshare`` works (reported as ``network_isolated``). Reading files is allowed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BOOTSTRAP = r"""
import os, resource, sys
root = os.path.realpath(sys.argv[1])
mem, cpu, fsize, audit = (int(a) for a in sys.argv[2:6])
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.chdir(root)
_W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATHS = {"os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown", "os.symlink", "os.link",
          "os.truncate", "os.utime", "os.setxattr", "os.removexattr", "shutil.rmtree", "shutil.move",
          "shutil.copyfile", "shutil.copytree", "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod"}
_NET = {"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
        "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg", "socket.getnameinfo"}
_SPAWN = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
          "os.startfile", "pty.spawn"}
def _inside(p):
    if isinstance(p, int) or p is None:
        return True
    try:
        p = os.fsdecode(os.fspath(p))
    except TypeError:
        return True
    full = os.path.realpath(os.path.join(root, p))
    return full == root or full.startswith(root + os.sep)
def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _W)
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the work folder is not allowed: {path}")
    elif event in _PATHS:
        for p in args:
            if isinstance(p, (str, bytes, os.PathLike)) and not _inside(p):
                raise PermissionError(f"sandbox: {event} outside the work folder is not allowed: {p}")
    elif event in _NET:
        raise PermissionError("sandbox: network access is not allowed")
    elif event in _SPAWN:
        raise PermissionError("sandbox: starting processes is not allowed")
if audit:
    sys.addaudithook(_hook)
del resource
with open("main.py", encoding="utf-8") as f:
    _code = compile(f.read(), "main.py", "exec")
exec(_code, {"__name__": "__main__", "__file__": "main.py"})
"""

EXIT_TIMEOUT = -9


@functools.cache
def namespace_available() -> bool:
    """Whether ``unshare -rn`` works here (user namespaces may be off, or unshare missing)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@dataclass(slots=True)
class CodeResult:
    ok: bool
    exit_code: int | None
    stdout: str
    stderr: str
    elapsed_s: float
    limit: str | None = None  # "time", "memory" or "output" when a limit stopped or cut the run
    files: dict[str, int] = field(default_factory=dict)  # files the code left in its folder, with sizes
    outputs: dict[str, str] = field(default_factory=dict)  # small text files it wrote (.txt, .csv, .json, .md)
    network_isolated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "elapsed_s": round(self.elapsed_s, 3),
            "limit": self.limit,
            "files": self.files,
            "outputs": self.outputs,
            "network_isolated": self.network_isolated,
        }

    def observation(self) -> str:
        parts = [f"exit code {self.exit_code}" + (f" (stopped: {self.limit} limit)" if self.limit else "")]
        if self.stdout.strip():
            parts.append("stdout:\n" + self.stdout.strip())
        if self.stderr.strip():
            parts.append("stderr:\n" + self.stderr.strip()[-1500:])
        if self.files:
            parts.append("files: " + ", ".join(f"{k} ({v} bytes)" for k, v in self.files.items()))
        return "\n".join(parts)


_TEXT_SUFFIXES = (".txt", ".csv", ".json", ".md")
_OUTPUT_FILE_CHARS = 4000


class CodeRunner:
    """Runs Python code in the sandbox described above; ``audit=False`` drops the in-process hook
    (tests use it to show the namespace alone stops the network)."""

    def __init__(
        self,
        timeout_s: float = 10.0,
        memory_mb: int = 1024,
        output_bytes: int = 64 * 1024,
        *,
        file_mb: int = 64,
        network_namespace: bool | None = None,
        audit: bool = True,
    ) -> None:
        self.timeout_s, self.memory_mb, self.output_bytes, self.file_mb = timeout_s, memory_mb, output_bytes, file_mb
        self.network_namespace = namespace_available() if network_namespace is None else network_namespace
        self.audit = audit

    async def run(self, code: str, files: dict[str, str | bytes] | None = None) -> CodeResult:
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="datapilot-code-"))
        try:
            return await self._run(folder, code, files or {})
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    def _command(self, folder: Path) -> list[str]:
        args = [
            sys.executable,
            "-I",
            "-B",
            "-c",
            _BOOTSTRAP,
            str(folder),
            str(self.memory_mb * 1024 * 1024),
            str(max(1, int(self.timeout_s + 0.999))),
            str(self.file_mb * 1024 * 1024),
            str(int(self.audit)),
        ]
        if self.network_namespace:
            exe = shutil.which("unshare")
            if exe is not None:
                return [exe, "-rn", *args]
        return args

    async def _run(self, folder: Path, code: str, files: dict[str, str | bytes]) -> CodeResult:
        for name, content in files.items():
            target = folder / Path(name).name
            data = content.encode() if isinstance(content, str) else content
            await asyncio.to_thread(target.write_bytes, data)
        await asyncio.to_thread((folder / "main.py").write_text, code, "utf-8")
        inputs = {*(Path(n).name for n in files), "main.py"}
        env = {
            "HOME": str(folder),
            "TMPDIR": str(folder),
            "MPLCONFIGDIR": str(folder),
            "PATH": os.defpath,
            "LANG": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *self._command(folder),
            cwd=folder,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        limit: str | None = None
        try:
            out, err = await asyncio.wait_for(self._read(proc), self.timeout_s)
        except TimeoutError:
            limit = "time"
            _kill(proc)
            out, err = await self._read(proc)
        except asyncio.CancelledError:
            _kill(proc)
            await proc.wait()
            raise
        await proc.wait()
        elapsed = time.perf_counter() - started
        stdout, cut_out = self._decode(out)
        stderr, cut_err = self._decode(err)
        if limit is None and any(s in stderr for s in ("MemoryError", "Cannot allocate memory", "bad_alloc")):
            limit = "memory"
        if limit is None and proc.returncode == -signal.SIGXCPU:
            limit = "time"
        if limit is None and (cut_out or cut_err):
            limit = "output"
        left, outputs = await asyncio.to_thread(_collect, folder, inputs)
        ok = proc.returncode == 0 and limit in (None, "output")
        return CodeResult(ok, proc.returncode, stdout, stderr, elapsed, limit, left, outputs, self.network_namespace)

    async def _read(self, proc: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = await asyncio.gather(self._drain(proc.stdout), self._drain(proc.stderr))
        return out, err

    async def _drain(self, stream: asyncio.StreamReader) -> bytes:
        """Everything the stream gives, keeping only the first ``output_bytes + 1`` (the pipe never fills)."""
        kept = bytearray()
        while chunk := await stream.read(65536):
            if len(kept) <= self.output_bytes:
                kept += chunk[: self.output_bytes + 1 - len(kept)]
        return bytes(kept)

    def _decode(self, data: bytes) -> tuple[str, bool]:
        cut = len(data) > self.output_bytes
        text = data[: self.output_bytes].decode("utf-8", errors="replace")
        return (text + "\n... (output cut)" if cut else text), cut


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _collect(folder: Path, inputs: set[str]) -> tuple[dict[str, int], dict[str, str]]:
    files: dict[str, int] = {}
    outputs: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = str(p.relative_to(folder))
        if rel in inputs:
            continue
        files[rel] = p.stat().st_size
        if p.suffix.lower() in _TEXT_SUFFIXES and len(outputs) < 8:
            outputs[rel] = p.read_text(encoding="utf-8", errors="replace")[:_OUTPUT_FILE_CHARS]
    return files, outputs
