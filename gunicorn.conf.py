"""gunicorn settings, read by `gunicorn -k gevent wsgi:app` from the working directory.

Locally it listens on 127.0.0.1:8000. A platform that sets $PORT (Heroku and its kind) gets
0.0.0.0:$PORT; HOST overrides the address. The command line overrides all of this.
"""

import gc
import glob
import json
import os
import re
import shutil
import signal
import sys
import tempfile

import gunicorn.util

# Prometheus multiprocess mode (chatapp/metrics.py): every worker writes its metrics to files
# in this directory, and /metrics adds them up. It must be set before prometheus_client is
# first imported (below, with the app's package), and hold no stale files when the server
# starts (on_starting). Without one from the environment, a temporary one, which the master
# that made it removes when it exits (CHATAPP_OWN_METRICS_DIR: its pid; a reload of this
# file, or a new master started by USR2, finds the variable set and keeps the directory).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chatapp-metrics-")
    os.environ["CHATAPP_OWN_METRICS_DIR"] = str(os.getpid())

from chatapp import backends  # after PROMETHEUS_MULTIPROC_DIR is set
from chatapp.config import Config, ConfigError
from chatapp.logs import gunicorn_logconfig


def _stop(message: str) -> None:
    """Refuse to start: without the directory this master made."""
    on_exit(None)
    sys.exit(message)


def on_exit(server):
    if getattr(server, "reexec_pid", 0):
        return  # after USR2: the new master's workers use the directory now
    if os.environ.get("CHATAPP_OWN_METRICS_DIR") == str(os.getpid()):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


try:
    _config = Config.from_env()
    backends.check(_config)  # an unknown scheme stops the master, not each worker as it boots
except ConfigError as exc:
    _stop(f"chatapp: bad configuration: {exc}")

_host = os.environ.get("HOST") or ("0.0.0.0" if os.environ.get("PORT") else "127.0.0.1")
bind = [f"{_host}:{_config.port}"]
worker_class = "gevent"
# Requests in flight per worker: HTTP requests, keep-alive connections between them, and
# WebSocket handshakes (a WebSocket counts only until its handshake is answered: the
# connection then lives on in a greenlet of the realtime layer, chatapp/realtime/endpoint.py,
# uncounted). Past it the worker stops accepting, and the rest wait in the kernel's backlog
# (2,048) until these are done. Without the bound, a storm of connects (every client back
# after a deploy) is accepted at once and queues seconds of handshakes ahead of the Hub's
# next turn: 3,000 at once delayed a talking pair's messages by 2.4-2.9 s with 20,000 or
# 1,000 here, 0.4-0.5 s with 200 (docs/performance.md, "A storm of connects").
worker_connections = 200
graceful_timeout = 20  # SIGTERM: clients are told to reconnect (1001) well within this
control_socket_disable = True  # no gunicornc; two servers on one machine would share its path
logconfig_dict = gunicorn_logconfig(_config.log_format)  # LOG_FORMAT=json: gunicorn's lines too

# Without Redis, clients of different workers could not see each other: one worker, whatever
# WEB_CONCURRENCY the platform sets. With Redis, gunicorn's default applies (WEB_CONCURRENCY, or 1).
if not _config.redis_url:
    workers = 1

# Python's cyclic GC, tuned for a server of long-lived connections. With the default gen0
# threshold of 700, objects caught in flight (events on their way to 1,000 clients) survive
# young collections so fast that a full collection ran every 3.6 s at 20 messages/s, each a
# pause of 80-130 ms with 1,000 clients (150,000 objects): p99 latency 66-110 ms. Young
# collections every 50,000 net allocations let those objects die first: one full collection
# in the run, p99 30 ms. Refcounting still frees all but cycles at once.
GC_THRESHOLDS = (50_000, 20, 10)


def _write_error(sock, status_int, reason, mesg):
    """gunicorn's own refusals (a request line or headers too large, a malformed request), which
    never reach the app, answered as the app answers errors: JSON, {"error", "detail"}, and
    nosniff (views._nosniff). In place of gunicorn's util.write_error (pinned in
    requirements.txt), which writes an HTML page."""
    error = re.sub(r"[^a-z]+", "_", reason.lower()).strip("_")  # "URI Too Long": uri_too_long
    body = json.dumps({"error": error, "detail": str(mesg)[:300]}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin1") + body)


gunicorn.util.write_error = _write_error  # the workers call it as util.write_error


def on_starting(server):
    # The master's own metric files (importing the app made its metrics, at 0: a `livemin`
    # gauge would read 0 from them for as long as the master lives), and in a directory from
    # the environment a previous run's. Under a new master started by USR2, the old workers'
    # files are live: only this master's own go.
    owner = os.environ.get("CHATAPP_OWN_METRICS_DIR")
    mine = "*.db" if owner in (None, str(os.getpid())) else f"*_{os.getpid()}.db"
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], mine)):
        os.remove(stale)
    if _config.redis_url:
        return
    if server.cfg.workers > 1:
        _stop(
            f"chatapp: {server.cfg.workers} workers asked for, but REDIS_URL is not set: without"
            " the Redis backplane, clients of different workers would not see each other"
        )
    concurrency = os.environ.get("WEB_CONCURRENCY", "")
    if concurrency.isdigit() and int(concurrency) > 1:
        server.log.warning("WEB_CONCURRENCY=%s ignored: one worker, since REDIS_URL is not set", concurrency)


def post_fork(server, worker):
    """In the new worker, first thing: until gunicorn installs the worker's own handlers (after
    gevent's patching), the master's are in place, and a SIGTERM (or the quick stop's SIGQUIT)
    then only queues a signal for a master that is not there: lost, and the booting worker runs
    on until the master kills it at graceful_timeout. Until then either ends it at once: it has
    no client yet."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, lambda signum, frame: os._exit(0))  # the quick stop (its default dumps core)


def post_worker_init(worker):
    """Start the realtime layer's greenlets. On SIGTERM, tell every client to reconnect (error
    shutting_down, close 1001) while gunicorn stops accepting; worker_exit waits for them to end."""
    import gevent

    # gevent records, for each greenlet, who spawned it and the ten frames it was spawned from
    # (for gevent.util's greenlet tree, a debugging aid): about 0.6 KB held by each client's
    # session greenlet for its whole life, and a walk of the stack at each writer's start.
    gevent.config.track_greenlet_tree = False
    gc.freeze()  # what the worker has imported and built so far lives as long as it does: never scan it
    gc.set_threshold(*GC_THRESHOLDS)
    realtime = worker.wsgi.extensions["realtime"]
    realtime.start()  # the Hub, and with Redis the listener, before the first client
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        gevent.spawn(realtime.shutdown)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_exit(server, worker):
    """In the worker, as it ends: after a SIGTERM, its clients' last moments (told to reconnect,
    they close; gunicorn waited only for requests, and a WebSocket's ended with its handshake;
    the master kills the worker at graceful_timeout, whatever is left), then its last second of
    counts into the metrics, and logging shut down while gevent still works. Left to the
    interpreter's exit, each logging handler's weakref callback takes logging's lock, whose
    owner check calls gevent's get_ident after gevent's module is torn down: "Exception ignored
    in: <function _removeHandlerRef>" and a traceback in every deploy's log. Dropping logging's
    list of handlers (after flushing and closing them) leaves no callback to run."""
    import logging

    realtime = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("realtime")  # none if it failed to load
    if realtime is not None:
        if not realtime.drain(server.cfg.graceful_timeout):
            server.log.warning("worker exiting with WebSocket clients still connected")
        realtime.stop()
        realtime.sample_metrics()
    logging.shutdown()
    logging._handlerList.clear()  # the weakrefs whose callbacks would run at teardown


def child_exit(server, worker):
    """A worker ended (or was killed): its live gauges (clients connected...) leave the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
