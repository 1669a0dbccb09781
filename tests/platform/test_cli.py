"""The command line: help everywhere, one-line errors, JSON answers."""

import json
import os
import subprocess
import sys

import pytest

from tests.cluster import ROOT

COMMANDS = ["ns", "host", "up", "deploy", "nodes", "forget", "agents", "move", "query", "tls",
            "suspend", "resume", "terminate"]


def masa(*args, env=None, check=False):
    return subprocess.run([sys.executable, "-m", "masa", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60, check=check)


def test_help_lists_and_explains_every_platform_command():
    top = masa("--help", check=True).stdout
    for name in COMMANDS + ["demo"]:
        assert name in top
    for name in COMMANDS:
        out = masa(name, "--help")
        assert out.returncode == 0 and "Usage:" in out.stdout, (name, out.stderr)


def test_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text('[hosts.h1]\n[agents.a]\nkind = "nonesuch"\nhost = "h1"\n')
    out = masa("deploy", str(bad))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"masa: error: {bad}: agent a has unknown kind 'nonesuch' (installed: echo, relay)"
    ] or "unknown kind 'nonesuch'" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    debug = masa("--debug", "deploy", str(bad))
    assert "Traceback" in debug.stderr


@pytest.mark.usefixtures("cluster")
def test_query_and_nodes_from_the_command_line(cluster):
    cluster.create("h1", "echo", "cli-echo")
    env = cluster.settings.child_env()
    out = masa("query", "cli-echo", "echo", "payload=[1,2]", env=env, check=True)
    assert json.loads(out.stdout)["payload"] == [1, 2]
    moved = masa("move", "cli-echo", "h2", env=env, check=True)
    assert "moved cli-echo from h1 to h2" in moved.stdout
    cluster.wait(lambda: any(n["name"] == "masa.agent.cli-echo" and n["location"] == "masa.host.h2"
                             for n in json.loads(masa("nodes", "--json", env=env, check=True).stdout)))
    listed = masa("agents", "--kind", "echo", env=env, check=True).stdout
    assert "cli-echo" in listed and " h2 " in listed
    # a name nobody knows is a typo: said at once (not after the restart-waiting deadline)
    typo = masa("query", "cli-ecoh", "echo", "payload=1", "--timeout", "30", env=env)
    assert typo.returncode == 1 and "no agent named 'cli-ecoh'" in typo.stderr
    assert "did you mean cli-echo?" in typo.stderr
    nowhere = masa("move", "cli-echo", "h9", env=env)
    assert nowhere.returncode == 1 and "host 'h9' not found" in nowhere.stderr
    garbled = masa("nodes", env={**env, "MASA_NS": "garbage"})
    assert garbled.returncode == 1 and "MASA_NS=garbage: expected HOST:PORT" in garbled.stderr
    # piped, the table keeps whole names and addresses (rich would cut them at 80 columns)
    table = masa("nodes", env={**env, "COLUMNS": ""}, check=True).stdout
    h1 = next(n for n in json.loads(masa("nodes", "--json", env=env, check=True).stdout)
              if n["name"] == "masa.host.h1")
    assert h1["location"] in table and "…" not in table


def test_demo_runs_moves_and_loses_nothing(tmp_path):
    env = {**os.environ, "MASA_HOME": str(tmp_path), "COLUMNS": "200"}
    out = masa("demo", "--platform", "--moves", "4", env=env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "front@alpha -> middle@beta -> back@gamma" in text
    assert "4 moves of counter" in text and "queries lost or doubled: 0" in text
    assert "done" in text


def test_demo_in_process_reports_its_figures(tmp_path):
    from rich.console import Console

    from masa.demo import run

    with (tmp_path / "out.txt").open("w") as out:
        result = run(moves=3, home=tmp_path, console=Console(file=out))
    assert result["failed"] == [] and result["lost"] == 0 and result["moves"] == 3
    assert result["answered"] > 0 and result["chains"] > 0 and result["restarts"] == 0


def test_host_refuses_a_misspelled_allowed_kind_naming_the_installed_ones(tmp_path):
    from masa.config import Settings
    from masa.errors import UnknownKind
    from masa.host import AgentHost
    from masa.supervisor import free_port

    env = {**os.environ, "MASA_HOME": str(tmp_path), "MASA_SECRET": "cli-test-secret",
           "MASA_NS": f"127.0.0.1:{free_port()}"}
    out = masa("host", "x1", "--allow", "echo", "--allow", "nueral", env=env)
    assert out.returncode == 2, out.stderr
    assert "Invalid value for '--allow': unknown agent kind 'nueral'; installed kinds: " in out.stderr
    assert "echo, " in out.stderr and "relay" in out.stderr
    with pytest.raises(UnknownKind, match="host 'x1' allow-list: unknown agent kind 'nueral'"):
        AgentHost("x1", settings=Settings(home=tmp_path, secret=b"cli-test-secret"), allow=["echo", "nueral"])


def test_a_missing_explicit_secret_file_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "typo" / "secret"
    env = {**os.environ, "MASA_HOME": str(tmp_path / "home"), "MASA_SECRET_FILE": str(missing)}
    env.pop("MASA_SECRET", None)
    out = masa("nodes", env=env)
    assert out.returncode == 1
    assert out.stderr.startswith(f"masa: error: MASA_SECRET_FILE={missing} does not exist")
    assert len(out.stderr.strip().splitlines()) == 1
    assert not missing.exists() and not (tmp_path / "home" / "secret").exists()


def test_a_host_name_that_cannot_be_part_of_an_address_is_refused_by_name(tmp_path):
    env = {**os.environ, "MASA_HOME": str(tmp_path), "MASA_SECRET": "cli-test-secret"}
    out = masa("host", "bad name/x", env=env)
    assert out.returncode == 1
    assert out.stderr.strip() == ("masa: error: invalid host name 'bad name/x': 1-128 printable characters "
                                  "without spaces or any of / \\ : @, not starting with 'masa.'")


def test_suspend_resume_terminate_from_the_command_line(cluster):
    cluster.create("h2", "echo", "cli-life")
    env = cluster.settings.child_env()
    assert masa("suspend", "cli-life", env=env, check=True).stdout.strip() == "suspended cli-life on h2"
    held = masa("query", "cli-life", "echo", "--timeout", "5", env=env)
    assert held.returncode == 1 and "suspended" in held.stderr and "Traceback" not in held.stderr
    assert masa("resume", "cli-life", env=env, check=True).stdout.strip() == "resumed cli-life on h2"
    assert json.loads(masa("query", "cli-life", "echo", env=env, check=True).stdout)["n"] == 1
    assert masa("terminate", "cli-life", env=env, check=True).stdout.strip() == "terminated cli-life on h2"
    assert "cli-life" not in {a["name"] for a in cluster.host("h2", "agents")}
    gone = masa("suspend", "cli-life", env=env)
    assert gone.returncode == 1 and "cli-life" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
