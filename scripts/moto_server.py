"""moto's server with one request at a time.

moto's stock `moto_server` handles requests on many threads without a lock, so two concurrent
conditional PutItems on one item can both pass their condition check: moto's conditional writes
are not atomic under concurrency, while DynamoDB's are. pipetel's optimistic concurrency (and its
tests of concurrent writers) depend on that atomicity, so this launcher serialises request
handling behind one lock: connections are still accepted concurrently, and requests from
concurrent clients still interleave, one whole request at a time, as they do at DynamoDB's item
level.

Usage: python moto_server.py HOST PORT
"""
import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def serialised(environ, start_response):
    with one_at_a_time:
        # Drain the response under the lock: the backend's work happens while it is produced.
        return list(app(environ, start_response))


run_simple(host, port, serialised, threaded=True, request_handler=MotoRequestHandler)
