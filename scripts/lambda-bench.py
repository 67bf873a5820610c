#!/usr/bin/env python3
"""Init time and peak memory of the stream-processor binary, as Lambda would run it.

Serves a local Lambda Runtime API on 127.0.0.1 that hands the binary one event, and points the
binary's AWS clients at a local moto server (tables and topic created first, dummy credentials).
Per run: a fresh process and freshly reset projections; init is process spawn until its first
`GET /runtime/invocation/next`, peak memory is its VmHWM when the response arrives. Loopback only.

Usage: lambda-bench.py BINARY EVENT_JSON MOTO_SERVER [--runs N]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

REGION = "us-east-1"
TABLES = {"job-rollups": "job_id", "failed-jobs": "pk", "sla-alerts": "alert_id"}
# A Lambda invocation gets 15 minutes at most; a run that takes longer is broken.
RUN_TIMEOUT_S = 900


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class Invocation:
    """One event handed out once; what the runtime API saw of the process, with timestamps."""

    def __init__(self, event, pid_of):
        self.event = event
        self.pid_of = pid_of
        self.first_next = None
        self.response_at = None
        self.response = None
        self.peak_kib = None
        self.done = threading.Event()
        self.stopped = threading.Event()


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def runtime_api(invocation):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if not self.path.endswith("/runtime/invocation/next"):
                self.send_error(404)
                return
            if invocation.first_next is not None:
                # The event was handed out: the next one never comes, the process is stopped first.
                invocation.stopped.wait(RUN_TIMEOUT_S)
                self.close_connection = True
                return
            invocation.first_next = time.monotonic()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-1")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + RUN_TIMEOUT_S * 1000))
            self.send_header(
                "Lambda-Runtime-Invoked-Function-Arn",
                f"arn:aws:lambda:{REGION}:123456789012:function:stream-processor",
            )
            self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(invocation.event)))
            self.end_headers()
            self.wfile.write(invocation.event)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path.endswith("/response"):
                invocation.response_at = time.monotonic()
                invocation.peak_kib = peak_rss_kib(invocation.pid_of())
                invocation.response = json.loads(body)
            else:
                invocation.response = {"error": self.path, "body": body.decode(errors="replace")}
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            invocation.done.set()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def create_projections(endpoint):
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)
    for table, key in TABLES.items():
        dynamodb.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        )
    sns = session.client("sns", endpoint_url=endpoint)
    return sns.create_topic(Name="sla-alerts")["TopicArn"], dynamodb


def one_run(binary, event, endpoint):
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
    topic_arn, dynamodb = create_projections(endpoint)
    process = None
    invocation = Invocation(event, lambda: process.pid)
    server = runtime_api(invocation)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": "stream-processor",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_ENDPOINT_URL": endpoint,
        "PIPETEL_ROLLUPS_TABLE": "job-rollups",
        "PIPETEL_FAILED_JOBS_TABLE": "failed-jobs",
        "PIPETEL_ALERTS_TABLE": "sla-alerts",
        "PIPETEL_ALERT_TOPIC_ARN": topic_arn,
        "RUST_LOG": "warn",
    }
    spawned = time.monotonic()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not invocation.done.wait(RUN_TIMEOUT_S):
            raise SystemExit("the processor did not answer its invocation in time")
    finally:
        process.kill()
        process.wait()
        invocation.stopped.set()
        server.shutdown()
    if "batchItemFailures" not in invocation.response or invocation.response["batchItemFailures"]:
        raise SystemExit(f"the invocation did not succeed: {invocation.response}")
    rollups = dynamodb.scan(TableName="job-rollups", Select="COUNT")["Count"]
    return {
        "init_ms": (invocation.first_next - spawned) * 1000,
        "invocation_ms": (invocation.response_at - invocation.first_next) * 1000,
        "peak_mib": invocation.peak_kib / 1024,
        "rollups": rollups,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("event")
    parser.add_argument("moto_server")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with open(args.event, "rb") as f:
        event = f.read()
    records = len(json.loads(event)["Records"])

    port = free_port()
    moto = subprocess.Popen(
        [args.moto_server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        runs = [one_run(args.binary, event, f"http://127.0.0.1:{port}") for _ in range(args.runs)]
    finally:
        moto.terminate()
        moto.wait()

    def median(key):
        return statistics.median(r[key] for r in runs)

    print(f"lambda event     {args.event} ({len(event)} bytes, {records} records), {len(runs)} runs")
    print(
        f"init             {median('init_ms'):.1f} ms median "
        f"(min {min(r['init_ms'] for r in runs):.1f}, max {max(r['init_ms'] for r in runs):.1f}): spawn → first GET /next"
    )
    print(
        f"peak memory      {median('peak_mib'):.1f} MiB median VmHWM "
        f"(max {max(r['peak_mib'] for r in runs):.1f}) after the event is processed"
    )
    print(
        f"invocation       {median('invocation_ms'):.0f} ms median against moto "
        f"({runs[0]['rollups']} rollups written; moto's speed, not the processor's)"
    )


if __name__ == "__main__":
    main()
