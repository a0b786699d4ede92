#!/usr/bin/python3
"""Reflection and health of a real kvindex-server, as grpcurl sees them: ServerReflectionInfo, in
both grpc.reflection.v1 (what current grpcurl asks first) and grpc.reflection.v1alpha, lists
kvindex.v1.KvIndex and grpc.health.v1.Health and can describe both, the two versions answering
alike; health says SERVING.

usage: reflection_test.py REPO_DIR BIN_DIR"""
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

REPO, BIN = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(REPO, "client", "python"))
from kvindex_example import generate_stubs  # noqa: E402

GRPC_PROTO = "/usr/share/grpc-proto"
STUBS_DIR = tempfile.TemporaryDirectory(prefix="kvindex-reflection-")
STUBS = STUBS_DIR.name
generate_stubs(STUBS, [(GRPC_PROTO, "grpc/reflection/v1alpha/reflection.proto"),
                       (os.path.join(REPO, "proto"), "grpc/reflection/v1/reflection.proto"),
                       (GRPC_PROTO, "grpc/health/v1/health.proto")])
import grpc  # noqa: E402
grpc.__path__.append(os.path.join(STUBS, "grpc"))  # generated grpc.reflection / grpc.health beside the library
from google.protobuf import descriptor_pb2  # noqa: E402
from grpc.health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc.reflection.v1 import reflection_pb2 as v1_pb2, reflection_pb2_grpc as v1_pb2_grpc  # noqa: E402
from grpc.reflection.v1alpha import reflection_pb2 as v1alpha_pb2  # noqa: E402
from grpc.reflection.v1alpha import reflection_pb2_grpc as v1alpha_pb2_grpc  # noqa: E402

VERSIONS = {"v1": (v1_pb2, v1_pb2_grpc), "v1alpha": (v1alpha_pb2, v1alpha_pb2_grpc)}


class ReflectionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.log = tempfile.TemporaryFile()
        cls.server = subprocess.Popen([os.path.join(BIN, "kvindex-server"), "--listen=127.0.0.1:0", "--metrics_listen="],
                                      stdout=subprocess.DEVNULL, stderr=cls.log)
        deadline = time.time() + 20
        port = None
        while port is None and time.time() < deadline and cls.server.poll() is None:
            cls.log.seek(0)
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", cls.log.read())
            port = int(m.group(1)) if m else time.sleep(0.02)
        assert port, "kvindex-server did not come up"
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(cls.channel).result(timeout=10)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.terminate()
        code = cls.server.wait(timeout=10)
        cls.log.seek(0)
        assert code == 0, f"kvindex-server exited {code}; its log:\n{cls.log.read().decode(errors='replace')[-20000:]}"

    def reflect_all(self, version, *requests, expect_errors=False):
        """The responses of one ServerReflectionInfo stream of `version` to `requests` (dicts), in order."""
        pb2, pb2_grpc = VERSIONS[version]
        stub = pb2_grpc.ServerReflectionStub(self.channel)
        responses = list(stub.ServerReflectionInfo(iter([pb2.ServerReflectionRequest(**r) for r in requests]),
                                                   timeout=10))
        self.assertEqual(len(responses), len(requests))
        for response in responses:
            self.assertEqual(response.HasField("error_response"), expect_errors, response.error_response)
        return responses

    def reflect(self, version, **request):
        return self.reflect_all(version, request)[0]

    def describe(self, version, symbol):
        """The FileDescriptorProtos that define `symbol` (and what it imports)."""
        files = self.reflect(version, file_containing_symbol=symbol).file_descriptor_response.file_descriptor_proto
        return [descriptor_pb2.FileDescriptorProto.FromString(f) for f in files]

    def test_lists_kvindex_health_and_reflection(self):
        for version in VERSIONS:
            with self.subTest(version):
                names = {s.name for s in self.reflect(version, list_services="").list_services_response.service}
                self.assertIn("kvindex.v1.KvIndex", names)
                self.assertIn("grpc.health.v1.Health", names)
                self.assertIn("grpc.reflection.v1alpha.ServerReflection", names)
                self.assertIn("grpc.reflection.v1.ServerReflection", names)

    def test_describes_kvindex(self):
        for version in VERSIONS:
            with self.subTest(version):
                files = {f.name: f for f in self.describe(version, "kvindex.v1.KvIndex")}
                self.assertIn("kvindex/v1/kvindex.proto", files)
                service = [s for s in files["kvindex/v1/kvindex.proto"].service if s.name == "KvIndex"][0]
                methods = {m.name: m for m in service.method}
                self.assertEqual(set(methods),
                                 {"Match", "SyncPods", "ListPods", "GetStats", "ExportIndex", "RecordRouting"})
                self.assertTrue(methods["SyncPods"].client_streaming and methods["SyncPods"].server_streaming)
                self.assertTrue(methods["ExportIndex"].server_streaming and not methods["ExportIndex"].client_streaming)
                self.assertEqual(methods["Match"].input_type, ".kvindex.v1.MatchRequest")

    def test_describes_health(self):
        for version in VERSIONS:
            with self.subTest(version):
                files = {f.name for f in self.describe(version, "grpc.health.v1.Health")}
                self.assertIn("grpc/health/v1/health.proto", files)

    def test_v1_answers_as_v1alpha_on_one_stream(self):
        """Several requests on one stream, errors included: v1 answers byte for byte as v1alpha does."""
        requests = [{"list_services": ""}, {"file_containing_symbol": "kvindex.v1.MatchRequest"},
                    {"file_by_filename": "grpc/health/v1/health.proto"}]
        answers = {v: [r.SerializeToString() for r in self.reflect_all(v, *requests)] for v in VERSIONS}
        self.assertEqual(answers["v1"], answers["v1alpha"])
        missing = {v: self.reflect_all(v, {"file_containing_symbol": "no.such.Symbol"}, expect_errors=True)[0]
                   for v in VERSIONS}
        self.assertEqual(missing["v1"].SerializeToString(), missing["v1alpha"].SerializeToString())
        self.assertEqual(missing["v1"].error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])

    def test_health_is_serving(self):
        stub = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", "kvindex.v1.KvIndex"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            self.assertEqual(response.status, health_pb2.HealthCheckResponse.SERVING, service)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
