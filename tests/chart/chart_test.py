#!/usr/bin/env python3
"""Chart check: renders charts/kvindex as `helm template` would and checks the manifests.

Helm is not installed; its template language is Go's text/template + sprig, both
Debian packages, so tests/chart/render (a small Go program) renders the chart
offline. Each case renders with some values, parses the stream as Kubernetes
YAML and asserts the wiring: ports, probes, Services, secrets, TLS, env.

  chart_test.py [--chart DIR] [--work-dir DIR] [unittest args]
"""

import argparse
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ARGS = argparse.Namespace(chart=os.path.join(ROOT, "charts", "kvindex"), work_dir=None)
RENDER = None  # path of the built renderer


def build_renderer(work_dir):
    """Builds tests/chart/render offline against Debian's Go packages (/usr/share/gocode)."""
    go = shutil.which("go") or "/usr/lib/go/bin/go"
    out = os.path.join(work_dir, "render")
    env = dict(os.environ)
    env.update(
        GO111MODULE="off",
        GOPATH=os.path.join(work_dir, "gopath") + ":/usr/share/gocode",
        GOCACHE=os.path.join(work_dir, "gocache"),
        GOFLAGS="",
        GOPROXY="off",
        GOENV="off",
        CGO_ENABLED="0",
    )
    subprocess.run([go, "build", "-o", out, "."], cwd=os.path.join(HERE, "render"), env=env, check=True)
    return out


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a sign of a bad nindent or merge)."""


def _construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def render(values=None, files=(), notes=False, name="kvindex", namespace="default", expect_error=False):
    """Renders the chart with value files and/or a values dict; returns docs (or NOTES text, or stderr)."""
    cmd = [RENDER, "-name", name, "-namespace", namespace]
    for f in files:
        cmd += ["-f", f]
    with tempfile.TemporaryDirectory() as tmp:
        if values is not None:
            path = os.path.join(tmp, "values.yaml")
            with open(path, "w") as fh:
                yaml.safe_dump(values, fh)
            cmd += ["-f", path]
        if notes:
            cmd.append("-notes")
        cmd.append(ARGS.chart)
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if expect_error:
        assert proc.returncode != 0, f"render should have failed:\n{proc.stdout}"
        return proc.stderr
    assert proc.returncode == 0, f"render failed: {proc.stderr}"
    if notes:
        return proc.stdout
    docs = [d for d in yaml.load_all(proc.stdout, Loader=StrictLoader) if d is not None]
    for d in docs:
        assert isinstance(d, dict), f"not a mapping: {d!r}"
        for key in ("apiVersion", "kind"):
            assert d.get(key), f"document without {key}: {d}"
        assert d.get("metadata", {}).get("name"), f"document without metadata.name: {d}"
    return docs


def only(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"want one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def flags(container):
    """--name=value args as a dict (value None for a bare flag)."""
    out = {}
    for a in container.get("args", []):
        assert a.startswith("--"), f"arg {a!r} is not a flag"
        k, _, v = a[2:].partition("=")
        out[k] = v if "=" in a else None
    return out


class ChartTest(unittest.TestCase):
    def deployment_parts(self, docs):
        dep = only(docs, "Deployment")
        pod = dep["spec"]["template"]["spec"]
        self.assertEqual(len(pod["containers"]), 1)
        return dep, pod, pod["containers"][0]

    def check_common(self, docs):
        """What every rendering must satisfy."""
        dep, pod, c = self.deployment_parts(docs)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        self.assertLessEqual(dep["spec"]["selector"]["matchLabels"].items(), labels.items())

        # Container ports, and the flags listening on them.
        ports = {p["name"]: p["containerPort"] for p in c["ports"] if p["name"] != "events"}
        self.assertEqual(ports, {"grpc": 50051, "metrics": 9090})
        f = flags(c)
        self.assertEqual(f["listen"], "0.0.0.0:50051")
        self.assertEqual(f["metrics_listen"], "0.0.0.0:9090")

        # Services: ClusterIP and headless, both with grpc 50051 and metrics 9090 by name; the
        # peers Service (bootstrap) has grpc only.
        services = [d for d in docs if d["kind"] == "Service" and not d["metadata"]["name"].endswith("-peers")]
        self.assertEqual(len(services), 2)
        for svc in services:
            sp = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
            self.assertEqual(sp, {"grpc": (50051, "grpc"), "metrics": (9090, "metrics")})
            self.assertLessEqual(svc["spec"]["selector"].items(), labels.items())
        headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
        self.assertEqual(len(headless), 1, "exactly one headless Service besides the peers")
        self.assertTrue(headless[0]["metadata"]["name"].endswith("-headless"))
        self.check_snapshots_and_bootstrap(docs, c)

        # Security: non-root, read-only, no capabilities, RuntimeDefault seccomp.
        sc = c["securityContext"]
        self.assertIs(sc["runAsNonRoot"], True)
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertEqual(sc["seccompProfile"]["type"], "RuntimeDefault")
        self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
        self.assertNotEqual(pod["securityContext"]["runAsUser"], 0)
        self.assertIs(pod["automountServiceAccountToken"], False)

        # PodDisruptionBudget over the same pods.
        pdb = only(docs, "PodDisruptionBudget")
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        self.assertLessEqual(pdb["spec"]["selector"]["matchLabels"].items(), labels.items())
        self.assertEqual(len({"minAvailable", "maxUnavailable"} & pdb["spec"].keys()), 1)

        # Every *_file flag names a file that a volume mount provides.
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for flag, path in f.items():
            if not flag.endswith("_file"):
                continue
            with self.subTest(flag=flag):
                m = [m for m in mounts.values() if m["mountPath"] == posixpath.dirname(path)]
                self.assertEqual(len(m), 1, f"--{flag}={path} is not under one volume mount")
                vol = volumes[m[0]["name"]]
                source = vol.get("secret") or vol.get("configMap")
                self.assertIsNotNone(source, f"volume {vol['name']} is neither a secret nor a configMap")
                self.assertIn(posixpath.basename(path), [i["path"] for i in source["items"]])
        for name in mounts:
            self.assertIn(name, volumes)
        return dep, pod, c

    def check_snapshots_and_bootstrap(self, docs, c):
        """--snapshot_dir is a mounted volume; --bootstrap_from names the peers Service, which lists ready pods only."""
        f = flags(c)
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if "snapshot_dir" in f:
            self.assertIn(f["snapshot_dir"], mounts)
            self.assertNotIn("readOnly", [m for m in c["volumeMounts"] if m["mountPath"] == f["snapshot_dir"]][0])
        peers = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-peers")]
        if "bootstrap_from" not in f:
            self.assertEqual(peers, [])
            return
        self.assertEqual(len(peers), 1)
        svc = peers[0]
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        self.assertIs(svc["spec"]["publishNotReadyAddresses"], False)
        self.assertEqual([(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]],
                         [("grpc", 50051, "grpc")])
        labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        self.assertLessEqual(svc["spec"]["selector"].items(), labels.items())
        ns = svc["metadata"]["namespace"]
        self.assertEqual(f["bootstrap_from"], f"{svc['metadata']['name']}.{ns}.svc:50051")
        # The ServiceMonitor's selector leaves it out, as the -headless one.
        self.assertIn("kvindex/headless", svc["metadata"]["labels"])

    def test_defaults(self):
        docs = render()
        self.assertEqual(sorted(d["kind"] for d in docs),
                         ["Deployment", "PodDisruptionBudget", "Service", "Service", "Service"])
        dep, pod, c = self.check_common(docs)
        self.assertEqual(dep["spec"]["replicas"], 2)
        self.assertEqual(dep["metadata"]["name"], "kvindex")
        self.assertEqual(c["image"], "kvindex/kvindex-server:0.1.0")
        # Native gRPC probes (grpc.health.v1) on the gRPC port.
        for probe in ("livenessProbe", "readinessProbe"):
            self.assertEqual(c[probe]["grpc"], {"port": 50051})
        f = flags(c)
        self.assertEqual(f["max_match_tokens"], "1000000")  # an int, not 1e+06
        for absent in ("auth_token_file", "auth_all_rpcs", "tls_cert_file", "tls_key_file",
                       "tls_client_ca_file", "pods_file", "bootstrap_ca_file"):
            self.assertNotIn(absent, f)
        self.assertNotIn("env", c)
        self.assertIn("cpu", c["resources"]["requests"])
        # Snapshots into an emptyDir; bootstrap from the ready peers.
        self.assertEqual(f["snapshot_dir"], "/var/lib/kvindex")
        self.assertEqual(f["snapshot_interval"], "60s")
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(volumes["snapshots"], {"name": "snapshots", "emptyDir": {"sizeLimit": "4Gi"}})
        self.assertEqual(f["bootstrap_from"], "kvindex-peers.default.svc:50051")
        self.assertEqual(f["bootstrap_timeout"], "30s")

    def test_snapshot_volume_and_bootstrap_options(self):
        # A PVC instead of the emptyDir, for a single replica.
        docs = render({"replicaCount": 1, "snapshots": {"existingClaim": "kvindex-snapshots", "mountPath": "/data",
                                                        "interval": "5m"}})
        dep, pod, c = self.check_common(docs)
        f = flags(c)
        self.assertEqual(f["snapshot_dir"], "/data")
        self.assertEqual(f["snapshot_interval"], "5m")
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(volumes["snapshots"], {"name": "snapshots",
                                                "persistentVolumeClaim": {"claimName": "kvindex-snapshots"}})
        # A PVC shared by several replicas would have several writers: refused.
        err = render({"snapshots": {"existingClaim": "kvindex-snapshots"}}, expect_error=True)
        self.assertIn("snapshots.existingClaim needs replicaCount 1", err)
        # Both off: no flags, no volume, no peers Service.
        docs = render({"snapshots": {"enabled": False}, "bootstrap": {"enabled": False}})
        dep, pod, c = self.check_common(docs)
        f = flags(c)
        for absent in ("snapshot_dir", "snapshot_interval", "bootstrap_from", "bootstrap_timeout"):
            self.assertNotIn(absent, f)
        self.assertNotIn("snapshots", {v["name"] for v in pod["volumes"]})
        self.assertEqual(len([d for d in docs if d["kind"] == "Service"]), 2)
        # Another release name and namespace: the peers address follows.
        docs = render({"bootstrap": {"timeout": "10s"}}, name="prod", namespace="llm")
        _, _, c = self.check_common(docs)
        self.assertEqual(flags(c)["bootstrap_from"], "prod-kvindex-peers.llm.svc:50051")
        self.assertEqual(flags(c)["bootstrap_timeout"], "10s")

    def test_ha_auth_tls(self):
        docs = render(files=[os.path.join(HERE, "values-ha.yaml")], name="prod", namespace="llm")
        self.assertEqual(
            sorted(d["kind"] for d in docs),
            ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service", "Service", "Service",
             "ServiceMonitor"])
        for d in docs:
            self.assertEqual(d["metadata"]["namespace"], "llm")
        dep, pod, c = self.check_common(docs)
        self.assertEqual(dep["metadata"]["name"], "prod-kvindex")
        self.assertEqual(dep["spec"]["replicas"], 3)
        f = flags(c)
        volumes = {v["name"]: v for v in pod["volumes"]}

        # Auth: the chart's Secret holds the token, is mounted, and --auth_token_file points into it.
        secret = only(docs, "Secret")
        self.assertEqual(secret["data"], {"token": "czNjcjN0LXRva2Vu"})  # base64("s3cr3t-token")
        self.assertEqual(f["auth_token_file"], "/etc/kvindex/auth/token")
        self.assertEqual(f["auth_all_rpcs"], "true")
        self.assertEqual(volumes["auth"]["secret"]["secretName"], secret["metadata"]["name"])
        self.assertEqual(volumes["auth"]["secret"]["items"], [{"key": "token", "path": "token"}])
        self.assertIn("checksum/auth", dep["spec"]["template"]["metadata"]["annotations"])

        # TLS with client CA, from existing secrets.
        self.assertEqual(f["tls_cert_file"], "/etc/kvindex/tls/tls.crt")
        self.assertEqual(f["tls_key_file"], "/etc/kvindex/tls/tls.key")
        self.assertEqual(f["tls_client_ca_file"], "/etc/kvindex/client-ca/ca.crt")
        self.assertEqual(volumes["tls"]["secret"]["secretName"], "kvindex-tls")
        self.assertEqual(volumes["client-ca"]["secret"]["secretName"], "kvindex-client-ca")
        # The bootstrap verifies its peer with the TLS secret's ca.crt.
        self.assertEqual(f["bootstrap_ca_file"], "/etc/kvindex/bootstrap-ca/ca.crt")
        self.assertEqual(volumes["bootstrap-ca"]["secret"]["secretName"], "kvindex-tls")
        self.assertEqual(volumes["bootstrap-ca"]["secret"]["items"], [{"key": "ca.crt", "path": "ca.crt"}])
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        self.assertEqual(mounts["bootstrap-ca"], "/etc/kvindex/bootstrap-ca")
        # Kubelet's gRPC probes cannot speak TLS: TCP on the gRPC port instead.
        for probe in ("livenessProbe", "readinessProbe"):
            self.assertEqual(c[probe]["tcpSocket"], {"port": "grpc"})
            self.assertNotIn("grpc", c[probe])

        # Pods snapshot ConfigMap wired to --pods_file.
        cm = only(docs, "ConfigMap")
        self.assertIn('name: "vllm-0"', cm["data"]["pods.textproto"])
        self.assertEqual(volumes["pods"]["configMap"]["name"], cm["metadata"]["name"])
        self.assertEqual(f["pods_file"], "/etc/kvindex/pods/pods.textproto")

        # Values: flags, env map, extraEnv, extraArgs.
        self.assertEqual(f["max_match_tokens"], "2000000")
        self.assertEqual(f["log_level"], "debug")
        self.assertIn("max_pods", f)
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["KVINDEX_SUBSCRIBER_THREADS"]["value"], "4")
        self.assertEqual(env["KVINDEX_MAX_INDEX_ENTRIES"]["value"], "134217728")
        self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")

        # PDB and ServiceMonitor.
        self.assertEqual(only(docs, "PodDisruptionBudget")["spec"], {
            "minAvailable": 2, "selector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}})
        sm = only(docs, "ServiceMonitor")
        self.assertEqual(sm["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(sm["metadata"]["labels"]["release"], "prometheus")
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], "metrics")
        # It selects the ClusterIP Service and not the headless one (no double scrape).
        expr = sm["spec"]["selector"]["matchExpressions"][0]
        self.assertEqual(expr["operator"], "DoesNotExist")
        for headless in [s for s in docs if s["kind"] == "Service" and s["spec"].get("clusterIP") == "None"]:
            self.assertIn(expr["key"], headless["metadata"]["labels"])

    def test_auth_existing_secret(self):
        docs = render({"auth": {"enabled": True, "existingSecret": "my-token", "secretKey": "tok"}})
        self.assertEqual([d for d in docs if d["kind"] == "Secret"], [])
        _, pod, c = self.check_common(docs)
        auth = {v["name"]: v for v in pod["volumes"]}["auth"]["secret"]
        self.assertEqual(auth["secretName"], "my-token")
        self.assertEqual(auth["items"], [{"key": "tok", "path": "token"}])
        self.assertNotIn("auth_all_rpcs", flags(c))

    def test_bootstrap_ca_only_with_tls(self):
        # Without TLS the bootstrap is plaintext: no CA to mount.
        _, pod, c = self.check_common(render({"bootstrap": {"ca": {"enabled": True}}}))
        self.assertNotIn("bootstrap_ca_file", flags(c))
        self.assertNotIn("bootstrap-ca", [v["name"] for v in pod["volumes"]])
        # With TLS, a CA of its own Secret and key.
        _, pod, c = self.check_common(render({
            "tls": {"enabled": True, "existingSecret": "srv-tls"},
            "bootstrap": {"ca": {"enabled": True, "existingSecret": "peers-ca", "key": "root.pem"}}}))
        self.assertEqual(flags(c)["bootstrap_ca_file"], "/etc/kvindex/bootstrap-ca/ca.crt")
        ca = {v["name"]: v for v in pod["volumes"]}["bootstrap-ca"]["secret"]
        self.assertEqual(ca["secretName"], "peers-ca")
        self.assertEqual(ca["items"], [{"key": "root.pem", "path": "ca.crt"}])
        # No bootstrap, no CA.
        _, pod, c = self.check_common(render({
            "tls": {"enabled": True, "existingSecret": "srv-tls"},
            "bootstrap": {"enabled": False, "ca": {"enabled": True}}}))
        self.assertNotIn("bootstrap_ca_file", flags(c))

    def test_misconfigurations_fail(self):
        err = render({"auth": {"enabled": True}}, expect_error=True)
        self.assertIn("auth.token or auth.existingSecret", err)
        err = render({"tls": {"enabled": True}}, expect_error=True)
        self.assertIn("tls.existingSecret", err)

    def test_events_bind_admits_only_the_engines(self):
        docs = render({"eventsBind": {"enabled": True, "port": 5600,
                                      "engineSelector": {"app.kubernetes.io/name": "vllm"}}})
        dep, pod, c = self.check_common(docs)
        # Bound to the pod's own address, never a wider one.
        self.assertEqual(flags(c)["events_bind"], "tcp://$(KVINDEX_POD_IP):5600")
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["KVINDEX_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP")
        self.assertIn({"name": "events", "containerPort": 5600, "protocol": "TCP"}, c["ports"])
        policy = only(docs, "NetworkPolicy")
        labels = dep["spec"]["template"]["metadata"]["labels"]
        self.assertLessEqual(policy["spec"]["podSelector"]["matchLabels"].items(), labels.items())
        rules = policy["spec"]["ingress"]
        open_rule = [r for r in rules if "from" not in r]
        self.assertEqual(len(open_rule), 1)
        self.assertEqual({p["port"] for p in open_rule[0]["ports"]}, {"grpc", "metrics"})
        events_rule = [r for r in rules if "from" in r]
        self.assertEqual(len(events_rule), 1)
        self.assertEqual(events_rule[0]["ports"], [{"port": "events", "protocol": "TCP"}])
        self.assertEqual(events_rule[0]["from"], [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm"}}}])
        # Off by default: no flag, no policy.
        docs = render()
        self.assertEqual([d for d in docs if d["kind"] == "NetworkPolicy"], [])
        self.assertNotIn("events_bind", flags(self.deployment_parts(docs)[2]))
        # On without a selector: refused.
        err = render({"eventsBind": {"enabled": True}}, expect_error=True)
        self.assertIn("eventsBind.engineSelector is required", err)

    def test_optional_parts_off(self):
        docs = render({"headless": {"enabled": False}, "podDisruptionBudget": {"enabled": False},
                       "server": {"metrics": False}, "replicaCount": 1, "bootstrap": {"enabled": False}})
        self.assertEqual(sorted(d["kind"] for d in docs), ["Deployment", "Service"])
        c = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(flags(c)["metrics_listen"], "")
        # Nothing listens on the metrics port: neither the container nor the Service names it.
        self.assertEqual([p["name"] for p in c["ports"]], ["grpc"])
        self.assertEqual([p["name"] for p in only(docs, "Service")["spec"]["ports"]], ["grpc"])
        # With the headless Service and the events NetworkPolicy on, they leave it out too.
        docs = render({"server": {"metrics": False},
                       "eventsBind": {"enabled": True, "engineSelector": {"app": "vllm"}}})
        for svc in [d for d in docs if d["kind"] == "Service"]:
            self.assertEqual([p["name"] for p in svc["spec"]["ports"]], ["grpc"], svc["metadata"]["name"])
        policy = only(docs, "NetworkPolicy")
        self.assertEqual([p["port"] for p in policy["spec"]["ingress"][0]["ports"]], ["grpc"])
        err = render({"server": {"metrics": False}, "serviceMonitor": {"enabled": True}}, expect_error=True)
        self.assertIn("serviceMonitor.enabled needs server.metrics", err)

    def test_notes(self):
        notes = render(notes=True)
        for want in ("grpcurl -plaintext localhost:50051 list",
                     "describe kvindex.v1.KvIndex",
                     "grpc.health.v1.Health/Check",
                     "kvindex.v1.KvIndex/Match",
                     "-d '{\"model\"",
                     "kvindex-headless.default.svc:50051",
                     "kvindex-peers.default.svc:50051"):
            self.assertIn(want, notes)
        self.assertNotIn("<no value>", notes)
        notes = render(files=[os.path.join(HERE, "values-ha.yaml")], notes=True, name="prod", namespace="llm")
        self.assertNotIn("-plaintext", notes)
        self.assertIn("-cacert ca.crt", notes)
        self.assertIn("-cert client.crt -key client.key", notes)
        self.assertIn('-H "authorization: Bearer $TOKEN"', notes)
        self.assertIn("get secret prod-kvindex-auth", notes)


def main():
    global RENDER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chart", default=ARGS.chart)
    parser.add_argument("--work-dir", help="where the renderer and Go's cache go (default: a temp dir)")
    args, rest = parser.parse_known_args()
    ARGS.chart = os.path.abspath(args.chart)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="kvindex-chart-")
    os.makedirs(work_dir, exist_ok=True)
    RENDER = build_renderer(os.path.abspath(work_dir))
    unittest.main(argv=[sys.argv[0], "-v"] + rest)


if __name__ == "__main__":
    main()
