"""The baseline: a plain flask-sock chat, as most tutorials write it. A set of sockets; each
message is sent to every client by a loop of `ws.send` in the sender's handler.

    gunicorn -k gevent -w 1 --worker-connections 12000 bench.baseline_app:app
"""

from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)
clients: set = set()


@sock.route("/ws")
def chat(ws) -> None:
    clients.add(ws)
    try:
        while True:
            data = ws.receive()
            for client in list(clients):
                try:
                    client.send(data)
                except Exception:
                    clients.discard(client)
    finally:
        clients.discard(ws)
