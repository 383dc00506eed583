"""kubectl's grammar as a user types it (issue 14): ``TYPE/NAME`` and ``TYPE NAME...``, comma lists of
types, ``--dry-run=client`` appending nothing, ``--at`` held to the log's ends, ``diff -f`` of several
sources, ``version``, ``completion bash`` sourced in a real bash, and one-line usage errors.

Usage errors need no server and come first; the rest run ``dsctl`` as a process against one
``dsctl up --demo`` for the module and check the world through ``get`` (and, for dry runs, that the
log's last sequence did not move)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cli.main import main
from tests.cli.test_cli import ROOT, Up, converged, dsctl, fails, ok, wait_for

integration = [pytest.mark.integration, pytest.mark.slow]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``dsctl`` with no server at all (usage errors, ``version --client``, ``completion``)."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT, env=env or dict(os.environ, NATS_URL="nats://127.0.0.1:1"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# --- usage errors: one line, exit 2, no server --------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["aply", "-f", "x"], 'error: unknown command "aply" for "dsctl"; did you mean "apply"?'),
        (["descibe", "ds", "x"], 'error: unknown command "descibe" for "dsctl"; did you mean "describe"?'),
        (["frobnicate"], 'error: unknown command "frobnicate" for "dsctl"; see dsctl --help'),
        (["get", "ds", "--namspace", "x"], "error: unknown flag: --namspace; did you mean --namespace?"),
        (["get", "ds", "--namspace=x"], "error: unknown flag: --namspace; did you mean --namespace?"),
        (["apply", "--dryrun=client", "-f", "x"], "error: unknown flag: --dryrun; did you mean --dry-run?"),
        (["cordon", "n1", "--bogus"], "error: unknown flag: --bogus; see dsctl cordon --help"),
        (["rollout", "staus", "ds/x"],
         'error: invalid action "staus" for "dsctl rollout"; did you mean "status"?'),
        (["get", "ds", "-o", "xml"], "error: argument -o/--output: 'xml' is not an output format (table, "
         "wide, json, yaml, name, jsonpath=TEMPLATE, custom-columns=NAME:PATH[,...]); see dsctl get --help"),
        (["label", "--dry-run=server", "nodes", "n1", "a=b"],
         "error: argument --dry-run: invalid value 'server': must be 'none', 'client'; "
         "see dsctl label --help"),
        (["completion", "fish"], 'error: invalid shell "fish" for "dsctl completion"; one of bash, zsh'),
        (["get"], "error: the following arguments are required: TYPE; see dsctl get --help"),
        (["rollout", "pause"],
         "error: the following arguments are required: DAEMONSET; see dsctl rollout --help"),
    ],
)  # fmt: skip
def test_a_usage_error_is_one_line_and_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert (code, captured.err, captured.out) == (2, line + "\n", "")


def test_the_process_says_the_same_on_its_stderr() -> None:
    r = run("aply", "-f", "x")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == 'error: unknown command "aply" for "dsctl"; did you mean "apply"?\n'


def test_help_documents_the_logging_settings_and_completion(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "DSCTL_LOG_LEVEL   debug|info|warning|error" in out
    assert "DSCTL_LOG_FORMAT  json|console" in out
    assert "source <(dsctl completion bash)" in out


def test_version_client_needs_no_server() -> None:
    r = run("version", "--client", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["clientVersion"]["version"] == run("--version").stdout.split()[1]
    text = run("version", "--client").stdout
    assert re.fullmatch(r"Client Version: \S+\n", text), text


def test_version_without_a_server_prints_the_client_then_fails() -> None:
    r = run("version")
    assert r.returncode == 1
    assert r.stdout.startswith("Client Version: ")
    assert "cannot connect to NATS at nats://127.0.0.1:1" in r.stderr


# --- through dsctl up --demo ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    server = Up(tmp_path_factory.mktemp("grammar-up"))
    try:
        wait_for("the demo to converge", lambda: all(
            converged(server, n, ns) for n, ns in
            (("myweb-ds", "default"), ("fluentd", "default"), ("fluentd-elasticsearch", "kube-system"))
        ), timeout=90)  # fmt: skip
        yield server
    finally:
        server.stop()


def last_seq(up: Up) -> int:
    """The log's last sequence, as ``--at`` past the end names it."""
    r = dsctl(up, "get", "ds", "--at", "999999999")
    found = re.search(r"last sequence (\d+)", r.stderr)
    assert r.returncode == 1 and found, r.stderr
    return int(found.group(1))


def names(up: Up, *what: str) -> list[str]:
    return ok(up, "get", *what, "-o", "name").split()


NODES = """\
apiVersion: v1
kind: Node
metadata: {{name: {name}, labels: {{grammar: test}}}}
"""


@pytest.mark.integration
@pytest.mark.slow
def test_type_name_forms_and_comma_lists_in_get(up: Up) -> None:
    both = ok(up, "get", "ds,nodes")
    tables = both.split("\n\n")
    assert len(tables) == 2, both
    assert tables[0].split()[:2] == ["NAME", "DESIRED"] and tables[1].split()[:2] == ["NAME", "STATUS"]
    assert "myweb-ds" in tables[0] and "node1" in tables[1]

    assert names(up, "ds,po", "-n", "kube-system") == [
        "daemonset.apps/fluentd-elasticsearch",
        *sorted(n for n in names(up, "pods", "-n", "kube-system")),
    ]
    assert names(up, "all", "-n", "kube-system") == [  # kubectl's category: pods, then daemonsets
        *sorted(n for n in names(up, "pods", "-n", "kube-system")),
        "daemonset.apps/fluentd-elasticsearch",
    ]
    assert names(up, "ds/myweb-ds", "node/node1", "daemonset.apps/fluentd") == [
        "daemonset.apps/myweb-ds", "daemonset.apps/fluentd", "node/node1",
    ]  # fmt: skip
    # several names: one table, rows in the order named
    rows = ok(up, "get", "ds", "myweb-ds", "fluentd").splitlines()
    assert [r.split()[0] for r in rows] == ["NAME", "myweb-ds", "fluentd"]
    # a name not found is reported after the others are printed, exit 1
    r = dsctl(up, "get", "nodes", "node2", "ghost", "node1", "-o", "name")
    assert (r.returncode, r.stdout.split()) == (1, ["node/node2", "node/node1"])
    assert r.stderr == 'error: nodes "ghost" not found\n'
    # -o json of several types is one List
    listed = json.loads(ok(up, "get", "ds,no", "-o", "json"))
    assert listed["kind"] == "List"
    assert {i["kind"] for i in listed["items"]} == {"DaemonSet", "Node"}
    assert len(listed["items"]) == 2 + 3
    # names after flags, as kubectl takes them
    assert names(up, "ds", "-n", "kube-system", "fluentd-elasticsearch") == [
        "daemonset.apps/fluentd-elasticsearch"
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_type_name_forms_in_describe_explain_and_rollout(up: Up) -> None:
    two = ok(up, "describe", "ds", "myweb-ds", "fluentd")
    assert re.findall(r"^Name:\s+(\S+)", two, re.M) == ["myweb-ds", "fluentd"]
    assert re.findall(r"^Name:\s+(\S+)", ok(up, "describe", "node/node2"), re.M) == ["node2"]
    every = [n.split("/")[1] for n in names(up, "nodes")]  # no name: every object, as kubectl
    assert re.findall(r"^Name:\s+(\S+)", ok(up, "describe", "nodes"), re.M) == every
    pod = names(up, "pods", "-n", "kube-system")[0]  # pod/NAME
    assert "Inputs in effect" in ok(up, "explain", pod, "-n", "kube-system")
    assert "shouldRun=true" in ok(up, "explain", "node/node2", "--ds", "kube-system/fluentd-elasticsearch")
    assert "successfully rolled out" in ok(
        up, "rollout", "status", "daemonset", "myweb-ds", "--timeout", "30s"
    )
    assert "REVISION" in ok(up, "rollout", "history", "ds", "myweb-ds")


@pytest.mark.integration
@pytest.mark.slow
def test_node_verbs_take_several_nodes_in_either_form(up: Up) -> None:
    assert ok(up, "label", "node/node2", "node/node3", "grammar=yes").splitlines() == [
        "node/node2 labeled", "node/node3 labeled",
    ]  # fmt: skip
    assert names(up, "nodes", "-l", "grammar=yes") == ["node/node2", "node/node3"]
    assert ok(up, "label", "nodes", "node2", "node3", "grammar-").count("labeled") == 2
    assert names(up, "nodes", "-l", "grammar=yes") == []

    assert ok(up, "cordon", "node2", "node/node3").splitlines() == [
        "node/node2 cordoned",
        "node/node3 cordoned",
    ]
    assert ok(up, "get", "nodes", "node2", "node3").count("SchedulingDisabled") == 2
    ok(up, "uncordon", "no/node2", "node3")
    assert "SchedulingDisabled" not in ok(up, "get", "nodes")
    assert ok(up, "taint", "node/node3", "grammar=x:NoSchedule").strip() == "node/node3 tainted"
    assert ok(up, "taint", "nodes", "node3", "grammar-").strip() == "node/node3 untainted"

    ok(up, "apply", "-f", "-", stdin=NODES.format(name="gn1") + "---\n" + NODES.format(name="gn2"))
    assert names(up, "nodes", "-l", "grammar=test") == ["node/gn1", "node/gn2"]
    assert ok(up, "delete", "node", "gn1", "gn2").splitlines() == ['node "gn1" deleted', 'node "gn2" deleted']
    assert names(up, "nodes", "-l", "grammar=test") == []


NEW_DS = """\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: dry}
spec:
  selector: {matchLabels: {app: dry}}
  template:
    metadata: {labels: {app: dry}}
    spec: {containers: [{name: c, image: example/dry:1}]}
"""


@pytest.mark.integration
@pytest.mark.slow
def test_dry_run_client_validates_prints_and_appends_nothing(up: Up) -> None:
    pod = names(up, "pods", "-n", "kube-system")[0].split("/")[1]
    before = last_seq(up)
    nodes_before = ok(up, "get", "nodes", "-o", "json")
    ds_before = ok(up, "get", "ds", "-A", "-o", "json")
    expected = {
        ("apply", "--dry-run=client", "-f", "-"): "daemonset.apps/dry created (dry run)",
        ("delete", "ds/myweb-ds", "--dry-run=client"): 'daemonset.apps "myweb-ds" deleted (dry run)',
        ("delete", "node", "node2", "--dry-run=client"): 'node "node2" deleted (dry run)',
        ("delete", "pod", pod, "-n", "kube-system", "--dry-run=client"): f'pod "{pod}" deleted (dry run)',
        ("label", "nodes", "node2", "dry=yes", "--dry-run=client"): "node/node2 labeled (dry run)",
        ("taint", "node/node2", "dry=yes:NoSchedule", "--dry-run=client"): "node/node2 tainted (dry run)",
        ("cordon", "node2", "--dry-run=client"): "node/node2 cordoned (dry run)",
        ("rollout", "pause", "ds/myweb-ds", "--dry-run=client"): "daemonset.apps/myweb-ds paused (dry run)",
        ("rollout", "restart", "daemonset", "myweb-ds", "--dry-run=client"):
            "daemonset.apps/myweb-ds restarted (dry run)",
        ("rollout", "partition", "ds/myweb-ds", "1", "--dry-run=client"):
            "daemonset.apps/myweb-ds partitioned (partition 1) (dry run)",
    }  # fmt: skip
    for argv, line in expected.items():
        assert ok(up, *argv, stdin=NEW_DS).strip() == line, argv
    paused = ok(up, "rollout", "pause", "ds/myweb-ds", "daemonset/fluentd", "--dry-run=client").splitlines()
    assert paused == ["daemonset.apps/myweb-ds paused (dry run)", "daemonset.apps/fluentd paused (dry run)"]
    # the bare flag is kubectl's deprecated form of client
    r = dsctl(up, "uncordon", "node1", "--dry-run")
    assert r.returncode == 0 and r.stdout == "node/node1 already uncordoned (dry run)\n"
    assert r.stderr.startswith("warning: --dry-run without a value is deprecated")
    # a refusal is the real one: validated as for real
    assert 'nodes "ghost" not found' in fails(up, "cordon", "ghost", "--dry-run=client")
    assert "invalid taint" in fails(up, "taint", "nodes", "node2", "a=b:Sometimes", "--dry-run=client")
    bad = NEW_DS.replace("matchLabels: {app: dry}", "matchLabels: {app: other}")
    err = fails(up, "apply", "--dry-run=client", "-f", "-", stdin=bad)
    assert "spec.template.metadata.labels" in err or "spec.selector" in err
    assert "takes no --dry-run" in fails(up, "rollout", "status", "ds/myweb-ds", "--dry-run=client")

    assert last_seq(up) == before, "a dry run appended to the log"
    assert ok(up, "get", "nodes", "-o", "json") == nodes_before
    assert ok(up, "get", "ds", "-A", "-o", "json") == ds_before
    assert 'daemonsets.apps "dry" not found' in fails(up, "get", "ds", "dry")
    assert pod in ok(up, "get", "pods", "-n", "kube-system")


@pytest.mark.integration
@pytest.mark.slow
def test_at_takes_durations_and_refuses_past_either_end(up: Up) -> None:
    last = last_seq(up)
    now = names(up, "ds", "-A")
    assert "daemonset.apps/myweb-ds" in now and names(up, "ds", "-A", "--at", "1s") == now
    assert "Name:           myweb-ds" in ok(up, "describe", "ds/myweb-ds", "--at", "1s")
    err = fails(up, "get", "ds", "--at", str(last + 1000))
    assert f"--at: sequence {last + 1000} is past the end of the log (last sequence " in err
    assert "is before the first event in the log" in fails(up, "get", "ds", "--at", "2020-01-01T00:00:00Z")
    assert "is before the first event in the log" in fails(up, "describe", "ds/myweb-ds", "--at", "24h")
    assert "is in the future" in fails(up, "get", "ds", "--at", "2999-01-01T00:00:00Z")
    assert "before the first in the log" in fails(up, "get", "ds", "--at", "0")
    err = fails(up, "explain", "node", "node2", "--ds", "default/myweb-ds", "--at", str(last + 1))
    assert "past the end of the log" in err


@pytest.mark.integration
@pytest.mark.slow
def test_diff_takes_files_directories_and_stdin(up: Up, tmp_path: Path) -> None:
    manifests = tmp_path / "m"
    (manifests / "sub").mkdir(parents=True)
    (manifests / "fluentd.yaml").write_text((ROOT / "ops/demo/004-fluentd.yaml").read_text())
    (manifests / "sub" / "dry.yaml").write_text(NEW_DS)
    (manifests / "rbac.yaml").write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n")
    r = dsctl(up, "diff", "-f", str(manifests))
    assert r.returncode == 0 and r.stdout.startswith("daemonset.apps/fluentd unchanged"), r.stdout + r.stderr
    r = dsctl(up, "diff", "-R", "-f", str(manifests))
    assert r.returncode == 1 and "daemonset.apps/dry created" in r.stdout, r.stdout + r.stderr
    r = dsctl(up, "diff", "-f", str(manifests / "fluentd.yaml"), "-f", "-", stdin=NEW_DS)
    assert r.returncode == 1 and "daemonset.apps/dry created" in r.stdout
    r = dsctl(up, "diff", "-f", str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = dsctl(up, "diff", "--strict", "-f", str(manifests))
    assert r.returncode == 2 and "serviceaccount/sa is not managed by dsctl" in r.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_version_names_the_nats_server_and_the_engine(up: Up) -> None:
    text = ok(up, "version").splitlines()
    mine = run("--version").stdout.split()[1]
    assert text[0] == f"Client Version: {mine}"
    assert re.fullmatch(r"NATS Server Version: \d+\.\d+\.\d+\S*", text[1]), text
    assert re.fullmatch(rf"Engine Version: {re.escape(mine)} \(\S+\)", text[2]), text
    data = json.loads(ok(up, "version", "-o", "json"))
    assert data["natsServerVersion"].split(".")[0].isdigit()
    assert [e["version"] for e in data["engineVersions"]] == [mine]


@pytest.mark.integration
@pytest.mark.slow
def test_bash_completion_completes_verbs_flags_types_and_names(up: Up) -> None:
    venv_bin = str(Path(sys.executable).parent)
    assert Path(venv_bin, "dsctl").exists(), "the dsctl entry point is installed next to the interpreter"
    env = dict(
        os.environ,
        PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
        NATS_URL=up.url,
        DSCTL_CREDENTIALS=str(up.credentials),
    )
    script = r"""
source <(dsctl completion bash)
complete -p dsctl
c() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
    _dsctl
    echo "${COMPREPLY[*]}"
}
c dsctl ap
c dsctl ro
c dsctl get --sh
c dsctl get -o ""
c dsctl get ""
c dsctl get ds,n
c dsctl get -n kube-system ds ""
c dsctl get ds/my
c dsctl rollout st
c dsctl rollout status ""
c dsctl cordon ""
c dsctl label nodes ""
c dsctl delete --cascade ""
c dsctl delete --dry-run = ""
c dsctl delete --dry-run=c
c dsctl completion ""
"""
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines == [
        "complete -F _dsctl dsctl",
        "apply",
        "rollout",
        "--show-labels",
        "table wide json yaml name jsonpath= custom-columns=",
        "daemonsets ds pods po nodes no daemonset.apps all",
        "ds,nodes ds,no",
        "fluentd-elasticsearch",
        "ds/myweb-ds",
        "status",
        "daemonset ds/fluentd ds/myweb-ds",
        "node1 node2 node3",
        "node1 node2 node3",
        "background foreground orphan",
        "none client",
        "--dry-run=client",
        "bash zsh",
    ], r.stdout


def test_zsh_completion_is_the_bash_one_through_bashcompinit() -> None:
    r = run("completion", "zsh")
    assert r.returncode == 0
    assert r.stdout.startswith("#compdef dsctl\n")
    assert "bashcompinit" in r.stdout and "_dsctl()" in r.stdout
    bash = run("completion", "bash").stdout
    checked = subprocess.run(["bash", "-n"], input=bash, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    if shutil.which("zsh") is None:
        pytest.skip("no zsh on this machine: the script is checked as bash only")
    # zsh's compgen (bashcompinit) offers every word; zsh's own matching then filters by the prefix
    script = r"""
source /dev/stdin
c() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
    __dsctl_zsh
    print -r -- "${COMPREPLY[*]}"
}
c dsctl ap
c dsctl get ""
c dsctl rollout ""
c dsctl --nats x delete --cascade ""
"""
    zsh = ["zsh", "-f", "-c", script]
    z = subprocess.run(zsh, input=r.stdout, capture_output=True, text=True, timeout=60)
    assert z.returncode == 0, z.stderr
    verbs, types, actions, cascades = z.stdout.splitlines()
    assert "apply" in verbs.split() and "completion" in verbs.split()
    assert types == "daemonsets ds pods po nodes no daemonset.apps all"
    assert actions == "status history undo restart pause resume partition"
    assert cascades == "background foreground orphan"
