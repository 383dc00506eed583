"""``apply -f`` / ``delete -f`` of real-world manifests: files holding RBAC, ConfigMaps and a Namespace
next to their DaemonSet, directories (``-R``), ``-`` and repeated ``-f``. The gathering is tested as a
table first; then the CLI through ``dsctl up --demo``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cli.sources import Source, collect, files_in, gather
from events.errors import InvalidInput
from tests.cli.test_cli import Up, converged, dsctl, fails, ok, wait_for

integration = [pytest.mark.integration, pytest.mark.slow]


def agent(name: str, namespace: str = "calico-system") -> str:
    """A calico-node-shaped file as published: Namespace, ServiceAccount, ClusterRole,
    ClusterRoleBinding, ConfigMap, then the DaemonSet (tolerating every taint, as CNI agents do)."""
    return f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {namespace}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {name}
  namespace: {namespace}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {name}
rules:
- apiGroups: [""]
  resources: [pods, nodes, namespaces]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {name}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {name}
subjects:
- kind: ServiceAccount
  name: {name}
  namespace: {namespace}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-config
  namespace: {namespace}
data:
  veth_mtu: "0"
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    k8s-app: {name}
spec:
  selector:
    matchLabels:
      k8s-app: {name}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        k8s-app: {name}
    spec:
      hostNetwork: true
      serviceAccountName: {name}
      tolerations:
      - operator: Exists
      containers:
      - name: {name}
        image: docker.io/calico/node:v3.27.0
        env:
        - name: DATASTORE_TYPE
          value: kubernetes
        securityContext:
          privileged: true
"""


SKIPPED = [
    "namespace/calico-system skipped: not managed by dsctl",
    "serviceaccount/{n} skipped: not managed by dsctl",
    "clusterrole.rbac.authorization.k8s.io/{n} skipped: not managed by dsctl",
    "clusterrolebinding.rbac.authorization.k8s.io/{n} skipped: not managed by dsctl",
    "configmap/{n}-config skipped: not managed by dsctl",
]


def expected(name: str, result: str) -> list[str]:
    return [line.format(n=name) for line in SKIPPED] + [f"daemonset.apps/{name} {result}"]


# ---- gathering, without a server ----


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "recursive", "found"),
    [
        ({"b.yaml": "", "a.yml": "", "c.json": ""}, False, ["a.yml", "b.yaml", "c.json"]),
        ({"a.yaml": "", "README.md": "", "x.txt": ""}, False, ["a.yaml"]),
        ({"a.yaml": "", "sub/b.yaml": ""}, False, ["a.yaml"]),
        ({"z.yaml": "", "m/b.yaml": "", "m/deep/a.json": ""}, True, ["m/b.yaml", "m/deep/a.json", "z.yaml"]),
    ],
)
def test_files_in_directory_order(
    tmp_path: Path, files: dict[str, str], recursive: bool, found: list[str]
) -> None:
    root = _tree(tmp_path, files)
    assert [str(p.relative_to(root)) for p in files_in(root, recursive)] == found


def test_gather_keeps_every_f_in_order_and_reads_stdin(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a.yaml": "A", "b.yaml": "B", "d/c.yaml": "C"})
    got = gather([str(root / "b.yaml"), "-", str(root / "d"), str(root / "a.yaml")], False, lambda: "S")
    assert [s.text for s in got] == ["B", "S", "C", "A"]
    assert got[1].name == "-"


@pytest.mark.parametrize(
    ("files", "path", "message"),
    [
        ({}, "missing.yaml", 'the path "{root}/missing.yaml" does not exist'),
        ({"notes.txt": ""}, "", "no manifest in the directory"),
        ({"sub/a.yaml": ""}, "", "-R descends into subdirectories"),
    ],
)
def test_gather_errors(tmp_path: Path, files: dict[str, str], path: str, message: str) -> None:
    root = _tree(tmp_path, files)
    with pytest.raises(InvalidInput) as err:
        gather([str(root / path) if path else str(root)], False)
    assert message.format(root=root) in str(err.value)


def test_collect_skips_foreign_objects_in_order() -> None:
    gathered = collect([Source("calico.yaml", agent("calico-node"))], None, strict=False)
    assert [d["kind"] for d in gathered.managed] == ["DaemonSet"]
    assert gathered.lines(["daemonset.apps/calico-node created"]) == expected("calico-node", "created")


def test_collect_list_and_many_sources_keep_input_order() -> None:
    nodes = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n9"}},
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
            ],
        }
    )
    gathered = collect([Source("a.json", nodes), Source("b.yaml", agent("x"))], None, strict=False)
    assert [d["kind"] for d in gathered.managed] == ["Node", "DaemonSet"]
    lines = gathered.lines(["node/n9 created", "daemonset.apps/x created"])
    assert lines[:2] == ["node/n9 created", "secret/s skipped: not managed by dsctl"]
    assert lines[-1] == "daemonset.apps/x created"


def test_collect_strict_names_the_first_foreign_object() -> None:
    with pytest.raises(InvalidInput) as err:
        collect([Source("calico.yaml", agent("calico-node"))], None, strict=True)
    text = str(err.value)
    assert "calico.yaml: document 0: namespace/calico-system is not managed by dsctl" in text
    assert "nothing was applied" in text


def test_collect_invalid_managed_object_names_file_document_and_object() -> None:
    bad = agent("calico-node").replace("image: docker.io/calico/node:v3.27.0", "image: ''")
    with pytest.raises(InvalidInput) as err:
        collect([Source("ok.yaml", agent("other")), Source("bad.yaml", bad)], None, strict=False)
    text = str(err.value)
    assert "bad.yaml: document 5:" in text and "calico-node" in text and "nothing was applied" in text


# ---- through dsctl up --demo ----


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    server = Up(tmp_path_factory.mktemp("apply-files-up"))
    try:
        wait_for("the demo nodes", lambda: len(_names(server, "nodes")) == 3, timeout=60)
        yield server
    finally:
        server.stop()


def _names(up: Up, *what: str) -> list[str]:
    r = dsctl(up, "get", *what, "-o", "name")
    return r.stdout.split() if r.returncode == 0 else []


def _pod_nodes(up: Up, name: str, ns: str = "calico-system") -> list[str]:
    r = dsctl(up, "get", "pods", "-n", ns, "-l", f"k8s-app={name}", "-o", "json")
    if r.returncode != 0:
        return []
    items = json.loads(r.stdout)["items"]
    return sorted(p["spec"]["nodeName"] for p in items if p["status"]["phase"] == "Running")


@pytest.mark.integration
@pytest.mark.slow
def test_apply_whole_file_runs_the_daemonset_and_skips_the_rest(up: Up, tmp_path: Path) -> None:
    path = tmp_path / "calico.yaml"
    path.write_text(agent("calico-node"))
    assert ok(up, "apply", "-f", str(path)).splitlines() == expected("calico-node", "created")
    wait_for(
        "calico-node on every demo node", lambda: _pod_nodes(up, "calico-node") == ["node1", "node2", "node3"]
    )
    assert ok(up, "apply", "-f", str(path)).splitlines() == expected("calico-node", "unchanged")

    out = ok(up, "delete", "-f", str(path)).splitlines()
    assert out[0] == 'daemonset.apps "calico-node" deleted'
    assert out[1:] == [line.format(n="calico-node") for line in SKIPPED]
    wait_for("calico-node's pods gone", lambda: not _pod_nodes(up, "calico-node"))


@pytest.mark.integration
@pytest.mark.slow
def test_strict_refuses_and_appends_nothing(up: Up, tmp_path: Path) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text(agent("strict-node"))
    err = fails(up, "apply", "--strict", "-f", str(path))
    assert "namespace/calico-system is not managed by dsctl" in err and "nothing was applied" in err
    assert "daemonset.apps/strict-node" not in _names(up, "ds", "-n", "calico-system")


@pytest.mark.integration
@pytest.mark.slow
def test_invalid_daemonset_anywhere_appends_nothing(up: Up, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(agent("good-a"))
    (tmp_path / "b.yaml").write_text(
        agent("bad-b").replace("image: docker.io/calico/node:v3.27.0", "image: ''")
    )
    err = fails(up, "apply", "-f", str(tmp_path))
    assert "b.yaml: document 5:" in err and "bad-b" in err and "nothing was applied" in err
    assert "daemonset.apps/good-a" not in _names(up, "ds", "-n", "calico-system")


@pytest.mark.integration
@pytest.mark.slow
def test_directory_recursive_repeated_f_and_stdin(up: Up, tmp_path: Path) -> None:
    top = tmp_path / "manifests"
    _tree(top, {"a.yaml": agent("dir-a"), "b.yml": agent("dir-b"), "sub/c.yaml": agent("dir-c")})
    flat = ok(up, "apply", "-f", str(top)).splitlines()
    assert flat == expected("dir-a", "created") + expected("dir-b", "created")
    deep = ok(up, "apply", "-R", "-f", str(top)).splitlines()
    assert deep == expected("dir-a", "unchanged") + expected("dir-b", "unchanged") + expected(
        "dir-c", "created"
    )

    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text(agent("rep-one"))
    two.write_text(agent("rep-two"))
    both = ok(up, "apply", "-f", str(one), "-f", str(two)).splitlines()
    assert both == expected("rep-one", "created") + expected("rep-two", "created")

    piped = ok(up, "apply", "-f", "-", stdin=agent("stdin-node")).splitlines()
    assert piped == expected("stdin-node", "created")
    names = _names(up, "ds", "-n", "calico-system")
    for name in ("dir-a", "dir-b", "dir-c", "rep-one", "rep-two", "stdin-node"):
        assert f"daemonset.apps/{name}" in names, names
    wait_for("stdin-node converged", lambda: converged(up, "stdin-node", "calico-system"), timeout=60)


# ---- a CSI node plugin and a log shipper, as their projects publish them ----

#: a CSI node plugin, as the Kubernetes CSI docs ("Deploying a CSI Driver on Kubernetes") lay one out:
#: RBAC, a ConfigMap, the CSIDriver object, and the DaemonSet pairing node-driver-registrar with the
#: privileged plugin, over hostPath sockets and the kubelet's pods directory (Bidirectional mounts)
CSI = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: csi-nodeplugin
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: csi-nodeplugin
rules:
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["storage.k8s.io"]
  resources: ["csinodes", "volumeattachments"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: csi-nodeplugin
subjects:
- kind: ServiceAccount
  name: csi-nodeplugin
  namespace: kube-system
roleRef:
  kind: ClusterRole
  name: csi-nodeplugin
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: csi-nodeplugin-config
  namespace: kube-system
data:
  config.json: |
    {"driverName": "hostpath.csi.example.com", "logLevel": 5}
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: hostpath.csi.example.com
spec:
  attachRequired: false
  podInfoOnMount: true
  volumeLifecycleModes:
  - Persistent
  - Ephemeral
---
kind: DaemonSet
apiVersion: apps/v1
metadata:
  name: csi-nodeplugin
  namespace: kube-system
  labels:
    app.kubernetes.io/name: csi-nodeplugin
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: csi-nodeplugin
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        app.kubernetes.io/name: csi-nodeplugin
    spec:
      serviceAccountName: csi-nodeplugin
      priorityClassName: system-node-critical
      hostNetwork: true
      containers:
      - name: node-driver-registrar
        image: registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.10.1
        args:
        - "--v=5"
        - "--csi-address=/csi/csi.sock"
        - "--kubelet-registration-path=/var/lib/kubelet/plugins/hostpath.csi.example.com/csi.sock"
        env:
        - name: KUBE_NODE_NAME
          valueFrom:
            fieldRef:
              apiVersion: v1
              fieldPath: spec.nodeName
        volumeMounts:
        - name: socket-dir
          mountPath: /csi
        - name: registration-dir
          mountPath: /registration
      - name: hostpath-plugin
        image: registry.example.com/csi/hostpathplugin:v1.14.0
        args:
        - "--drivername=hostpath.csi.example.com"
        - "--endpoint=$(CSI_ENDPOINT)"
        - "--nodeid=$(KUBE_NODE_NAME)"
        env:
        - name: CSI_ENDPOINT
          value: unix:///csi/csi.sock
        - name: KUBE_NODE_NAME
          valueFrom:
            fieldRef:
              apiVersion: v1
              fieldPath: spec.nodeName
        securityContext:
          privileged: true
        ports:
        - containerPort: 9898
          name: healthz
          protocol: TCP
        livenessProbe:
          failureThreshold: 5
          httpGet:
            path: /healthz
            port: healthz
          initialDelaySeconds: 10
          timeoutSeconds: 3
          periodSeconds: 2
        volumeMounts:
        - name: socket-dir
          mountPath: /csi
        - name: mountpoint-dir
          mountPath: /var/lib/kubelet/pods
          mountPropagation: Bidirectional
        - name: plugins-dir
          mountPath: /var/lib/kubelet/plugins
          mountPropagation: Bidirectional
        - name: dev-dir
          mountPath: /dev
        - name: config
          mountPath: /etc/csi
          readOnly: true
      volumes:
      - name: socket-dir
        hostPath:
          path: /var/lib/kubelet/plugins/hostpath.csi.example.com
          type: DirectoryOrCreate
      - name: mountpoint-dir
        hostPath:
          path: /var/lib/kubelet/pods
          type: DirectoryOrCreate
      - name: registration-dir
        hostPath:
          path: /var/lib/kubelet/plugins_registry
          type: Directory
      - name: plugins-dir
        hostPath:
          path: /var/lib/kubelet/plugins
          type: Directory
      - name: dev-dir
        hostPath:
          path: /dev
          type: Directory
      - name: config
        configMap:
          name: csi-nodeplugin-config
"""

#: a log shipper, as Fluent Bit's Kubernetes docs deploy it: its own Namespace, RBAC to read pod
#: metadata, the configuration in a ConfigMap, and a DaemonSet that tolerates the control-plane taints
#: (a node's logs are wanted from every node) and reads the host's /var/log
LOG_SHIPPER = """\
apiVersion: v1
kind: Namespace
metadata:
  name: logging
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: fluent-bit
  namespace: logging
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: fluent-bit-read
rules:
- apiGroups: [""]
  resources:
  - namespaces
  - pods
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: fluent-bit-read
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: fluent-bit-read
subjects:
- kind: ServiceAccount
  name: fluent-bit
  namespace: logging
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: fluent-bit-config
  namespace: logging
  labels:
    k8s-app: fluent-bit
data:
  fluent-bit.conf: |
    [SERVICE]
        Flush         1
        Log_Level     info
        Daemon        off
        Parsers_File  parsers.conf
        HTTP_Server   On
        HTTP_Listen   0.0.0.0
        HTTP_Port     2020

    [INPUT]
        Name              tail
        Tag               kube.*
        Path              /var/log/containers/*.log
        multiline.parser  docker, cri
        DB                /var/log/flb_kube.db
        Mem_Buf_Limit     5MB
        Skip_Long_Lines   On
        Refresh_Interval  10

    [FILTER]
        Name                kubernetes
        Match               kube.*
        Kube_URL            https://kubernetes.default.svc:443
        Merge_Log           On
        K8S-Logging.Parser  On
        K8S-Logging.Exclude Off

    [OUTPUT]
        Name            es
        Match           *
        Host            ${FLUENT_ELASTICSEARCH_HOST}
        Port            ${FLUENT_ELASTICSEARCH_PORT}
        Logstash_Format On
        Replace_Dots    On
        Retry_Limit     False
  parsers.conf: |
    [PARSER]
        Name        json
        Format      json
        Time_Key    time
        Time_Format %d/%b/%Y:%H:%M:%S %z
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: fluent-bit
  namespace: logging
  labels:
    k8s-app: fluent-bit-logging
    version: v1
    kubernetes.io/cluster-service: "true"
spec:
  selector:
    matchLabels:
      k8s-app: fluent-bit-logging
  template:
    metadata:
      labels:
        k8s-app: fluent-bit-logging
        version: v1
        kubernetes.io/cluster-service: "true"
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "2020"
        prometheus.io/path: /api/v1/metrics/prometheus
    spec:
      containers:
      - name: fluent-bit
        image: cr.fluentbit.io/fluent/fluent-bit:3.0.4
        imagePullPolicy: Always
        ports:
        - containerPort: 2020
        env:
        - name: FLUENT_ELASTICSEARCH_HOST
          value: "elasticsearch"
        - name: FLUENT_ELASTICSEARCH_PORT
          value: "9200"
        resources:
          limits:
            memory: 200Mi
          requests:
            cpu: 100m
            memory: 100Mi
        volumeMounts:
        - name: varlog
          mountPath: /var/log
        - name: varlibdockercontainers
          mountPath: /var/lib/docker/containers
          readOnly: true
        - name: fluent-bit-config
          mountPath: /fluent-bit/etc/
      terminationGracePeriodSeconds: 10
      volumes:
      - name: varlog
        hostPath:
          path: /var/log
      - name: varlibdockercontainers
        hostPath:
          path: /var/lib/docker/containers
      - name: fluent-bit-config
        configMap:
          name: fluent-bit-config
      serviceAccountName: fluent-bit
      tolerations:
      - key: node-role.kubernetes.io/control-plane
        operator: Exists
        effect: NoSchedule
      - key: node-role.kubernetes.io/master
        operator: Exists
        effect: NoSchedule
      - operator: "Exists"
        effect: "NoExecute"
"""

#: (file, DaemonSet, namespace, pod label selector, the demo nodes its pods land on, skipped lines)
SHAPED = {
    "csi": (
        CSI,
        "csi-nodeplugin",
        "kube-system",
        "app.kubernetes.io/name=csi-nodeplugin",
        # no toleration: not on node1, the demo's tainted control-plane node
        ["node2", "node3"],
        [
            "serviceaccount/csi-nodeplugin skipped: not managed by dsctl",
            "clusterrole.rbac.authorization.k8s.io/csi-nodeplugin skipped: not managed by dsctl",
            "clusterrolebinding.rbac.authorization.k8s.io/csi-nodeplugin skipped: not managed by dsctl",
            "configmap/csi-nodeplugin-config skipped: not managed by dsctl",
            "csidriver.storage.k8s.io/hostpath.csi.example.com skipped: not managed by dsctl",
        ],
    ),
    "log-shipper": (
        LOG_SHIPPER,
        "fluent-bit",
        "logging",
        "k8s-app=fluent-bit-logging",
        ["node1", "node2", "node3"],
        [
            "namespace/logging skipped: not managed by dsctl",
            "serviceaccount/fluent-bit skipped: not managed by dsctl",
            "clusterrole.rbac.authorization.k8s.io/fluent-bit-read skipped: not managed by dsctl",
            "clusterrolebinding.rbac.authorization.k8s.io/fluent-bit-read skipped: not managed by dsctl",
            "configmap/fluent-bit-config skipped: not managed by dsctl",
        ],
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPED))
def test_collect_csi_and_log_shipper_files(shape: str) -> None:
    text, name, _, _, _, skipped = SHAPED[shape]
    gathered = collect([Source(f"{shape}.yaml", text)], None, strict=False)
    assert [d["kind"] for d in gathered.managed] == ["DaemonSet"]
    assert gathered.lines([f"daemonset.apps/{name} created"]) == [*skipped, f"daemonset.apps/{name} created"]


def _running_on(up: Up, namespace: str, selector: str) -> list[str]:
    """The nodes of the selected pods that ``dsctl get pods`` shows Running."""
    r = dsctl(up, "get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    if r.returncode != 0:
        return []
    return sorted(
        p["spec"]["nodeName"] for p in json.loads(r.stdout)["items"] if p["status"]["phase"] == "Running"
    )


def _any_pod(up: Up, namespace: str, selector: str) -> bool:
    r = dsctl(up, "get", "pods", "-n", namespace, "-l", selector, "-o", "name")
    assert r.returncode == 0, r.stderr
    return bool(r.stdout.split())


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPED))
def test_csi_and_log_shipper_files_apply_whole_and_delete_whole(up: Up, tmp_path: Path, shape: str) -> None:
    text, name, namespace, selector, nodes, skipped = SHAPED[shape]
    path = tmp_path / f"{shape}.yaml"
    path.write_text(text)
    assert ok(up, "apply", "-f", str(path)).splitlines() == [*skipped, f"daemonset.apps/{name} created"]
    wait_for(f"{name} on {nodes}", lambda: _running_on(up, namespace, selector) == nodes, timeout=60)
    assert f"daemonset.apps/{name}" in _names(up, "ds", "-n", namespace)

    out = ok(up, "delete", "-f", str(path)).splitlines()
    assert out == [f'daemonset.apps "{name}" deleted', *skipped]
    wait_for(f"{name}'s pods gone", lambda: not _any_pod(up, namespace, selector), timeout=60)
    assert f"daemonset.apps/{name}" not in _names(up, "ds", "-n", namespace)
