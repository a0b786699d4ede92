#!/usr/bin/python3
"""Example Python client of kvindex-server (kvindex.v1.KvIndex).

The stubs are generated from proto/kvindex/v1/kvindex.proto when the script
starts, with Debian's python3-grpc-tools (python3 -m grpc_tools.protoc), into a
temporary directory removed once they are imported: nothing generated is
committed or left behind. Needs python3-grpcio.

usage:
  kvindex_example.py [--server HOST:PORT] [--token TOKEN] [--ca-file PEM] COMMAND ...
  commands:
    match --model M [--lora L] --tokens 1,2,3   which pods hold the longest cached prefix
    pods-apply SNAPSHOT.textproto               replace the server's pods (kvindex.v1.PodSnapshot, text format)
    pods-delete NAMESPACE/NAME                  forget one pod
    pods-list                                   every known pod
    stats                                       the server's totals
Responses print as JSON. Exit 0 on success, 1 when the call fails (the gRPC
code and message on stderr), 2 on a usage error.
"""
import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile

REPO_PROTO_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto"))


def generate_stubs(out_dir, protos):
    """Runs grpc_tools.protoc on each (proto_root, relative_path) into out_dir and puts out_dir on sys.path."""
    for root, rel in protos:
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", root, "-I", "/usr/include",
                        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", os.path.join(root, rel)],
                       check=True)
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)


def load_kvindex_modules(proto_dir=REPO_PROTO_DIR):
    """Generates and imports kvindex_pb2 and kvindex_pb2_grpc; the generated files are deleted once imported."""
    with tempfile.TemporaryDirectory(prefix="kvindex-stubs-") as out_dir:
        generate_stubs(out_dir, [(proto_dir, "kvindex/v1/kvindex.proto")])
        try:
            return (importlib.import_module("kvindex.v1.kvindex_pb2"),
                    importlib.import_module("kvindex.v1.kvindex_pb2_grpc"))
        finally:
            sys.path.remove(out_dir)


def main(argv):
    parser = argparse.ArgumentParser(description="Example client of kvindex-server.")
    parser.add_argument("--server", default=os.environ.get("KVINDEX_SERVER", "localhost:50051"))
    parser.add_argument("--token", default=os.environ.get("KVINDEX_TOKEN", ""))
    parser.add_argument("--ca-file", default="", help="PEM roots: use TLS")
    parser.add_argument("--timeout", type=float, default=30)
    sub = parser.add_subparsers(dest="command", required=True)
    match = sub.add_parser("match")
    match.add_argument("--model", required=True)
    match.add_argument("--lora", default="")
    match.add_argument("--tokens", required=True, help="comma-separated token ids")
    route = sub.add_parser("route", help="RecordRouting: the prompt was sent to this pod")
    route.add_argument("--model", required=True)
    route.add_argument("--lora", default="")
    route.add_argument("--tokens", required=True, help="comma-separated token ids")
    route.add_argument("--pod", required=True, help="namespace/name")
    route.add_argument("--rank", type=int, default=0)
    route.add_argument("--ttl-ms", type=int, default=0, help="0: the server's adaptive TTL")
    apply = sub.add_parser("pods-apply")
    apply.add_argument("snapshot")
    delete = sub.add_parser("pods-delete")
    delete.add_argument("key")
    sub.add_parser("pods-list")
    sub.add_parser("stats")
    args = parser.parse_args(argv)

    import grpc
    from google.protobuf import json_format, text_format
    pb, pb_grpc = load_kvindex_modules()

    if args.ca_file:
        with open(args.ca_file, "rb") as f:
            channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(root_certificates=f.read()))
    else:
        channel = grpc.insecure_channel(args.server)
    stub = pb_grpc.KvIndexStub(channel)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else None
    call = {"timeout": args.timeout, "metadata": metadata}

    try:
        if args.command in ("match", "route"):
            try:
                tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
            except ValueError:
                print("kvindex_example: --tokens wants comma-separated integers", file=sys.stderr)
                return 2
            if args.command == "match":
                response = stub.Match(pb.MatchRequest(model=args.model, lora_name=args.lora, token_ids=tokens), **call)
            else:
                response = stub.RecordRouting(pb.RecordRoutingRequest(
                    model=args.model, lora_name=args.lora, token_ids=tokens, pod=args.pod, dp_rank=args.rank,
                    ttl_ms=args.ttl_ms), **call)
        elif args.command in ("pods-apply", "pods-delete"):
            if args.command == "pods-apply":
                with open(args.snapshot) as f:
                    update = pb.PodUpdate(snapshot=text_format.Parse(f.read(), pb.PodSnapshot()))
            else:
                update = pb.PodUpdate(delete=args.key)
            acks = list(stub.SyncPods(iter([update]), **call))
            response = acks[0]
        elif args.command == "pods-list":
            response = stub.ListPods(pb.ListPodsRequest(), **call)
        else:
            response = stub.GetStats(pb.GetStatsRequest(), **call)
    except grpc.RpcError as e:
        print(f"kvindex_example: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    print(json.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True,
                                               including_default_value_fields=True), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
