"""One client's reader and writer: slow readers, pings and pongs, frames at the socket level."""

from __future__ import annotations

import json
import secrets
import struct
import threading
import time
import zlib

from chatapp.realtime import framing
from tests.helpers import TIMEOUT, Client, RawClient

PING, PONG, CLOSE, TEXT = 0x9, 0xA, 0x8, 0x1


def test_a_client_that_never_reads_is_dropped_with_1013_and_others_get_everything(make_server) -> None:
    server = make_server({"SEND_QUEUE_SIZE": "16", "RATE_LIMIT": "100000", "MAX_MESSAGE_CHARS": "4000"})
    room = "slow-" + secrets.token_hex(3)
    stuck = RawClient(server, f"/ws?room={room}&name=stuck", rcvbuf=4096)
    total = 3000
    try:
        with Client(server, room, "sender") as sender, Client(server, room, "reader") as reader:
            sender.expect("welcome")
            reader.expect("welcome")
            texts = []
            for n in range(total):
                sender.say(f"{n:05d} " + "x" * 2000)
                if n % 10 == 9:  # in steps, so that the Hub runs many rounds
                    texts += [reader.expect("message")["text"][:5] for _ in range(10)]
                    for _ in range(10):
                        sender.expect("message")
            assert texts == [f"{n:05d}" for n in range(total)]  # all, in order, once
            # the stuck client, reading at last, finds what fitted in the buffers, then 1013
            code, events = stuck.read_until_close(timeout=15)
            assert code == 1013
            assert events[-1]["code"] == "too_slow"
            assert len([e for e in events if e["type"] == "message"]) < total
    finally:
        stuck.close()


def test_a_client_that_never_reads_pins_no_more_than_the_queues_bytes(make_server) -> None:
    """6,000 messages of 1.5 KB sent at once: the poster stores them 256 at a time and the Hub
    joins each lot into one batch, so a bound on batches alone held all of them (9 MB) for a
    client that never reads, and never dropped it. Bounded in bytes (SEND_QUEUE_BYTES, 1 MiB),
    it is dropped with 1013, while the sender, reading, gets every message. The count of batches
    is set out of reach: the bytes alone must drop it (with 256, batches of about 19 KB now
    would drop it too, at 4.8 MB)."""
    server = make_server({"RATE_LIMIT": "100000", "SEND_QUEUE_SIZE": "100000"})
    room = "pinned-" + secrets.token_hex(3)
    stuck = RawClient(server, f"/ws?room={room}&name=stuck", rcvbuf=4096)
    sender = RawClient(server, f"/ws?room={room}&name=sender")
    total = 6000
    frames = b"".join(
        masked_frame(0x81, json.dumps({"type": "message", "text": f"{n:05d} " + "x" * 1500}).encode())
        for n in range(total)
    )
    blast = threading.Thread(target=sender.sock.sendall, args=(frames,))
    peak = worker_peak_rss(server)
    try:
        blast.start()
        seen = 0
        while seen < total:  # the sender reads its echoes (it must not be the slow one)
            opcode, payload = sender.read_frame(timeout=30)
            seen += payload.count(b'"type":"message"')
        print(f"worker peak RSS grew by {(worker_peak_rss(server) - peak) / 2**20:.1f} MB")
        code, events = stuck.read_until_close(timeout=15)
        assert code == 1013 and events[-1]["code"] == "too_slow"
    finally:
        blast.join(TIMEOUT)
        stuck.close()
        sender.close()


def test_pings_keep_an_answering_client_and_drop_a_silent_one(make_server) -> None:
    server = make_server({"PING_INTERVAL": "0.2", "PONG_TIMEOUT": "0.3"})
    answering = RawClient(server, "/ws?name=answering")
    silent = RawClient(server, "/ws?name=silent")
    try:
        pings = 0
        while pings < 8:  # 1.6 s, well past the 0.5 s of silence allowed
            opcode, payload = answering.read_frame()
            if opcode == PING:
                pings += 1
                answering.send_frame(PONG, payload)
        with Client(server, "lobby", "probe") as probe:
            names = {m["name"] for m in probe.expect("welcome")["members"]}
            probe.say("still with us?")  # the idle client's writer ended long ago: a new one
            while True:
                opcode, payload = answering.read_frame()
                if opcode == PING:
                    answering.send_frame(PONG, payload)
                elif opcode == TEXT and b"still with us?" in payload:
                    break
        assert "answering" in names and "silent" not in names
        frames = []
        try:
            while True:
                frames.append(silent.read_frame()[0])
        except EOFError:
            pass
        assert PING in frames and CLOSE not in frames  # dropped without a close handshake
    finally:
        answering.close()
        silent.close()


def test_a_client_ping_gets_a_pong_with_the_same_payload(server) -> None:
    raw = RawClient(server, "/ws?name=pinger")
    try:
        raw.send_frame(PING, b"are you there")
        while True:
            opcode, payload = raw.read_frame()
            if opcode == PONG:
                assert payload == b"are you there"
                break
    finally:
        raw.close()


def test_the_close_handshake_echoes_the_clients_code(server) -> None:
    raw = RawClient(server, "/ws?name=leaver")
    try:
        raw.send_frame(CLOSE, struct.pack("!H", 1000) + b"bye")
        code, _events = raw.read_until_close()
        assert code == 1000
        assert raw.sock.recv(1) == b""  # and the server closes TCP
    finally:
        raw.close()


def test_invalid_utf8_closes_with_1007(server) -> None:
    raw = RawClient(server, "/ws?name=garbler")
    try:
        raw.send_frame(TEXT, b'{"type":"message","text":"\xff\xfe"}')
        code, _events = raw.read_until_close()
        assert code == 1007
    finally:
        raw.close()


def test_a_message_in_fragments_is_one_message(server) -> None:
    raw = RawClient(server, "/ws?room=frag&name=fragments")
    try:
        data = json.dumps({"type": "message", "text": "in three parts"}).encode()
        raw.send_frame(TEXT, data[:10], fin=False)
        raw.send_frame(0x0, data[10:20], fin=False)
        raw.send_frame(0x0, data[20:], fin=True)
        while True:
            opcode, payload = raw.read_frame()
            events = [json.loads(line) for line in payload.decode().split("\n")] if opcode == TEXT else []
            if any(e["type"] == "message" for e in events):
                assert [e["text"] for e in events if e["type"] == "message"] == ["in three parts"]
                break
    finally:
        raw.close()


def test_with_ws_deflate_room_frames_go_out_compressed_and_read_back(make_server) -> None:
    server = make_server({"WS_DEFLATE": "1"})
    r = "d-" + secrets.token_hex(3)
    raw = RawClient(server, f"/ws?room={r}&name=raw", headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    try:
        assert "permessage-deflate" in raw.head.lower()
        with Client(server, r, "ann") as ann:  # the websockets library offers deflate too
            assert "permessage-deflate" in ann.ws.response.headers["Sec-WebSocket-Extensions"]
            ann.expect("welcome")
            text = "héllo 👋 " * 50
            ann.say(text)  # compressed by the client; the server inflates it
            assert ann.expect("message")["text"] == text.strip()
        inflater = zlib.decompressobj(-15)
        events = []
        while not any(e.get("type") == "leave" for e in events):
            opcode, payload = raw.read_frame()
            assert (opcode, raw.first_byte & 0x40) == (0x1, 0x40), "not a compressed text frame (RSV1)"
            text_ = inflater.decompress(payload + b"\x00\x00\xff\xff").decode()
            events += [json.loads(line) for line in text_.split("\n")]
        assert [e["type"] for e in events] == ["welcome", "join", "join", "message", "leave"]  # its own join first
        assert events[3]["text"] == text.strip()
    finally:
        raw.close()
    small = RawClient(
        server,
        f"/ws?room={r}&name=s",
        headers={"Sec-WebSocket-Extensions": "permessage-deflate; server_max_window_bits=10"},
    )
    try:  # it asks for a smaller window than our shared frames use: no deflate for it
        assert small.status == 101 and "permessage-deflate" not in small.head.lower()
    finally:
        small.close()
    for path in (f"/ws?room={r}&name=m", f"/ws/text?room={r}&name=m"):  # a malformed offer: declined
        for offer in ("permessage-deflate; client_max_window_bits=abc", "permessage-deflate; server_max_window_bits=x"):
            malformed = RawClient(server, path, headers={"Sec-WebSocket-Extensions": offer})
            try:
                assert malformed.status == 101 and "permessage-deflate" not in malformed.head.lower(), malformed.head
            finally:
                malformed.close()
    assert "Traceback" not in server.log()


def test_a_deflate_bomb_is_refused_without_being_inflated(make_server) -> None:
    """50 MB of text compresses to about 50 KB: the server inflates no more than MAX_FRAME_BYTES
    of it, closes that client with 1009, and everyone else goes on."""
    server = make_server({"WS_DEFLATE": "1"})
    r = "bomb-" + secrets.token_hex(3)
    with Client(server, r, "bystander") as bystander, Client(server, r, "bomber") as bomber:
        bystander.expect("welcome")
        bomber.expect("welcome")
        peak = worker_peak_rss(server)
        bomber.ws.send("a" * (50 * 1024 * 1024))  # the websockets library compresses it
        code, _reason, _events = bomber.closed(timeout=10)
        assert code == 1009
        assert worker_peak_rss(server) - peak < 20 * 1024 * 1024  # inflated whole: 50 MB and more
        bystander.say("still here")
        assert bystander.expect("message")["text"] == "still here"


def worker_peak_rss(server) -> int:
    """The highest resident memory the worker answering /healthz has had, in bytes."""
    pid = server.health()["pid"]
    with open(f"/proc/{pid}/status") as status:
        kb = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    return int(kb) * 1024


def violation(server, frame: bytes) -> tuple[int, RawClient]:
    """Send `frame` as is from a fresh client in room `viol`; the close code it gets."""
    raw = RawClient(server, "/ws?room=viol&name=bad")
    raw.read_frame()  # welcome
    raw.sock.sendall(frame)
    code, _events = raw.read_until_close()
    return code, raw


def masked_frame(first: int, payload: bytes, length: int | None = None) -> bytes:
    """A client frame with `first` as its first byte (FIN, RSV, opcode), masked with zeros
    (framing.frame); with `length`, one whose header says `length` bytes but only `payload` follows."""
    size = len(payload) if length is None else length
    whole = framing.frame(first, payload.ljust(size, b"\0"), fin=False, mask=True, key=bytes(4))
    return whole[: len(whole) - (size - len(payload))]


def test_socket_level_violations_get_1002_and_disturb_nobody(server) -> None:
    cases = {
        "unmasked": framing.frame(framing.Opcode.TEXT, b"{}"),
        "reserved opcode 0x3": masked_frame(0x83, b"x"),
        "reserved opcode 0xB": masked_frame(0x8B, b"x"),
        "RSV1 without deflate": masked_frame(0xC1, b"{}"),
        "RSV2": masked_frame(0xA1, b"{}"),
        "ping over 125 bytes": masked_frame(0x89, b"p" * 126),
        "fragmented ping": masked_frame(0x09, b"p"),
        "continuation with nothing to continue": masked_frame(0x80, b"x"),
    }
    with Client(server, "viol", "observer") as observer:
        observer.expect("welcome")
        for what, frame in cases.items():
            code, raw = violation(server, frame)
            raw.close()
            assert code == 1002, f"{what}: closed with {code}"
        observer.say("still here")
        assert observer.expect("message")["text"] == "still here"
        assert not [e for e in observer.pending if e["type"] not in ("join", "leave")]


def test_half_a_frame_then_silence_is_dropped_after_the_pong_timeout(make_server) -> None:
    server = make_server({"PING_INTERVAL": "1", "PONG_TIMEOUT": "1"})
    raw = RawClient(server, "/ws?room=half&name=staller")
    try:
        raw.read_frame()  # welcome
        raw.sock.sendall(masked_frame(0x81, b'{"type":"mess', length=40))  # 13 of 40 bytes
        # the server pings (it cannot answer: its frame is half read); no pong comes
        deadline = 10.0
        opcode = None
        while opcode != CLOSE:
            opcode, _ = raw.read_frame(timeout=deadline)
    except EOFError:
        pass  # dropped without a close frame: as good
    finally:
        raw.close()


def test_a_client_streaming_cheap_frames_is_closed_and_delays_no_one(make_server) -> None:
    """Typing events and pings as fast as a client can send them (each one dropped or answered
    at little cost): past FRAME_RATE_LIMIT frames in 10 s, it is told `flood` and closed 1008,
    and meanwhile a pair in another room talks as usual. The pair's delays are printed (-s):
    bench/ measures them; the test asserts what can fail without the rule."""
    server = make_server({"FRAME_RATE_LIMIT": "100", "RATE_LIMIT": "1000"})
    typing = json.dumps({"type": "typing"}).encode()
    flooders = [RawClient(server, f"/ws?room=flood&name=f{n}") for n in range(2)]
    stop = threading.Event()

    def flood(raw: RawClient, opcode: int, payload: bytes) -> None:
        burst = b"".join(masked_frame(0x80 | opcode, payload) for _ in range(200))
        try:
            while not stop.is_set():
                raw.sock.sendall(burst)
        except OSError:
            pass  # closed by the server, as it should be

    threads = [
        threading.Thread(target=flood, args=(flooders[0], 0x1, typing)),
        threading.Thread(target=flood, args=(flooders[1], 0x9, b"ping")),
    ]
    with Client(server, "calm", "ann") as ann, Client(server, "calm", "bob") as bob:
        ann.expect("welcome")
        bob.expect("welcome")
        for thread in threads:
            thread.start()
        delays = []
        try:
            for n in range(100):
                sent = time.monotonic()
                ann.say(f"m{n}")
                bob.expect("message", text=f"m{n}")
                delays.append(time.monotonic() - sent)
        finally:
            stop.set()
            for thread in threads:
                thread.join(TIMEOUT)
        delays.sort()
        print(f"bystander delays: p50 {delays[49] * 1000:.1f} ms, p99 {delays[98] * 1000:.1f} ms")
        assert delays[98] <= 0.05  # the bound (the reader yields, the flooders are cut off)
    for raw in flooders:
        raw.sock.settimeout(TIMEOUT)
        code, events = raw.read_until_close()
        assert code == 1008 and events[-1]["code"] == "flood"
        raw.close()
