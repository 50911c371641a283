"""Proves nats/nats-server.conf with real clients (nats-py) on a throw-away nats-server.

Run by scripts/ops/check-nats, which starts the server on 127.0.0.1 with the committed
configuration (listen, http and store_dir moved; random passwords in the environment):

    python3 nats_seams.py PORT STREAMS_DIR   (passwords in NATS_*_PASSWORD)

As `admin` (what nats-init does) it applies nats/streams/*.json twice, then checks each
role: what it must be able to do works, and what it must not do is refused by the
server ("Permissions Violation", reported through the client's error callback) or, for
the cross-account replies, lands in the requester's account and not in a stream.
Prints one line per case; exits 1 if any case fails.
"""

import asyncio
import glob
import json
import os
import sys

import nats
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout

PORT = int(sys.argv[1])
STREAMS_DIR = sys.argv[2]
URL = f"nats://127.0.0.1:{PORT}"
PASSWORDS = {
    "service": os.environ["NATS_SERVICE_PASSWORD"],
    "admin": os.environ["NATS_ADMIN_PASSWORD"],
    "publisher": os.environ["NATS_PUBLISHER_PASSWORD"],
    "events-reader": os.environ["NATS_EVENTS_READER_PASSWORD"],
    "sys": os.environ["NATS_SYS_PASSWORD"],
}
ENDPOINTS = ["create", "get", "list", "update", "replace", "delete", "clear"]
READER_CONSUMER = "check-events-reader"

failures = []


def report(ok, what, detail=""):
    print(f"   {'ok' if ok else 'FAIL'}: {what}{': ' + detail if detail and not ok else ''}")
    if not ok:
        failures.append(what)


class Client:
    """A connection as one user, with the permission violations the server sent it."""

    def __init__(self, user):
        self.user = user
        self.violations = []
        self.nc = None

    async def connect(self):
        async def on_error(err):
            self.violations.append(str(err))

        self.nc = await nats.connect(
            URL, user=self.user, password=PASSWORDS[self.user], error_cb=on_error,
            allow_reconnect=False, connect_timeout=3, max_reconnect_attempts=0)
        return self

    async def violated(self, kind, subject, wait=1.0):
        """True once the server has refused `kind` ("publish"/"subscription") on subject.

        The -ERR arrives before the PONG of a flush, but nats-py may hand it to the
        error callback a little later: poll for up to `wait` seconds.
        """
        await self.nc.flush()
        needle = f'permissions violation for {kind} to "{subject}"'.lower()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if any(needle in v.lower() for v in self.violations):
                return True
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)

    async def request_json(self, subject, payload=b"", timeout=2):
        msg = await self.nc.request(subject, payload, timeout=timeout)
        return json.loads(msg.data) if msg.data else {}


async def cannot_publish(client, subject, what):
    await client.nc.publish(subject, b"{}")
    report(await client.violated("publish", subject), what, "the server did not refuse it")


async def cannot_subscribe(client, subject, what, queue=""):
    sub = await client.nc.subscribe(subject, queue=queue)
    report(await client.violated("subscription", subject), what, "the server did not refuse it")
    await sub.unsubscribe()


async def stream_count(admin, stream):
    info = await admin.request_json(f"$JS.API.STREAM.INFO.{stream}")
    return info["state"]["messages"]


async def main():
    # ---------------------------------------------------------------- admin: the streams
    admin = await Client("admin").connect()
    print("   -- admin (nats-init): stream definitions")
    for path in sorted(glob.glob(os.path.join(STREAMS_DIR, "*.json"))):
        with open(path) as f:
            cfg = json.load(f)
        name = cfg["name"]
        errors = []
        for verb in ("CREATE", "CREATE"):  # the second one: applying again is a no-op
            resp = await admin.request_json(f"$JS.API.STREAM.{verb}.{name}", json.dumps(cfg).encode())
            if "error" in resp:
                errors.append(str(resp["error"]))
        got = (await admin.request_json(f"$JS.API.STREAM.INFO.{name}"))["config"]
        for key in ("subjects", "retention", "storage", "duplicate_window", "max_age", "max_bytes"):
            if got.get(key) != cfg.get(key):
                errors.append(f"server has {key}={got.get(key)!r}, file says {cfg.get(key)!r}")
        report(not errors, f"{name} created and re-applied from {os.path.basename(path)}", "; ".join(errors))
    # The events reader's durable consumer is made by an operator (README): readers cannot.
    resp = await admin.request_json(
        f"$JS.API.CONSUMER.DURABLE.CREATE.TODO_EVENTS.{READER_CONSUMER}",
        json.dumps({"stream_name": "TODO_EVENTS", "config": {
            "durable_name": READER_CONSUMER, "ack_policy": "explicit", "deliver_policy": "all"}}).encode())
    report("error" not in resp, f"admin creates the pull consumer TODO_EVENTS/{READER_CONSUMER}", str(resp.get("error")))

    # ---------------------------------------------------------------- service
    print("   -- service")
    service = await Client("service").connect()
    js_service = service.nc.jetstream()

    async def answer(msg):
        await msg.respond(json.dumps({"endpoint": msg.subject, "owner": (msg.headers or {}).get("Todo-Owner")}).encode())

    subs = [await service.nc.subscribe(f"todo.{e}", queue="todo", cb=answer) for e in ENDPOINTS]
    report(not any([await service.violated("subscription", f"todo.{e}", wait=0.2) for e in ENDPOINTS]),
           "queue-subscribes the 7 endpoints todo.create … todo.clear")

    async def pong(msg):
        await msg.respond(b'{"name":"todo"}')

    subs.append(await service.nc.subscribe("$SRV.PING", cb=pong))
    subs.append(await service.nc.subscribe("$SRV.INFO.todo", cb=pong))
    report(not await service.violated("subscription", "$SRV.PING", wait=0.2)
           and not await service.violated("subscription", "$SRV.INFO.todo", wait=0),
           "subscribes $SRV.PING and $SRV.INFO.todo (micro service discovery)")
    try:
        info = await service.request_json("$JS.API.INFO")
        report("error" not in info, "$JS.API.INFO (account info)", str(info.get("error")))
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        report(False, "$JS.API.INFO (account info)", repr(e))
    with open(os.path.join(STREAMS_DIR, "TODO_EVENTS.json")) as f:
        events_cfg = f.read().encode()
    resp = await service.request_json("$JS.API.STREAM.UPDATE.TODO_EVENTS", events_cfg)
    report("error" not in resp, "updates a stream at start ($JS.API.STREAM.UPDATE.TODO_EVENTS)", str(resp.get("error")))
    resp = await service.request_json(
        "$JS.API.CONSUMER.DURABLE.CREATE.TODO_COMMANDS.todo-service",
        json.dumps({"stream_name": "TODO_COMMANDS", "config": {
            "durable_name": "todo-service", "ack_policy": "explicit", "max_deliver": 5}}).encode())
    report("error" not in resp, "creates its durable pull consumer on TODO_COMMANDS", str(resp.get("error")))
    try:
        ack = await js_service.publish("todo.events.created", b'{"id":"e1"}',
                                       headers={"Nats-Msg-Id": "check-nats-event-1", "Todo-Owner": "alice"})
        report(ack.stream == "TODO_EVENTS", "JetStream-publishes todo.events.created (PubAck from TODO_EVENTS)")
        ack = await js_service.publish("todo.dlq.create", b'{"title":"x"}')
        report(ack.stream == "TODO_DLQ", "JetStream-publishes todo.dlq.create (PubAck from TODO_DLQ)")
    except Exception as e:  # noqa: BLE001
        report(False, "JetStream publishes of events and dead letters", repr(e))
    await cannot_publish(service, "todo.cmd.create", "cannot publish commands (todo.cmd.create)")
    await cannot_subscribe(service, "todo.cmd.>", "cannot subscribe todo.cmd.> (it pulls from its consumer)")
    await cannot_publish(service, "$JS.API.STREAM.DELETE.TODO_EVENTS", "cannot delete a stream")
    await cannot_publish(service, "$JS.API.STREAM.PURGE.TODO_COMMANDS", "cannot purge a stream")

    # ---------------------------------------------------------------- publisher
    print("   -- publisher (account PUBLISHERS)")
    publisher = await Client("publisher").connect()
    js_pub = publisher.nc.jetstream()
    try:
        acks = [await js_pub.publish("todo.cmd.create", b'{"title":"from publisher"}',
                                     headers={"Nats-Msg-Id": "check-nats-cmd-1", "Todo-Owner": "alice"})
                for _ in range(2)]
        report(acks[0].stream == "TODO_COMMANDS" and not acks[0].duplicate,
               "JetStream-publishes todo.cmd.create across accounts (PubAck from TODO_COMMANDS)")
        report(acks[1].duplicate and acks[1].seq == acks[0].seq,
               "the same Nats-Msg-Id again is deduplicated (duplicate_window)", str(acks[1]))
    except Exception as e:  # noqa: BLE001
        report(False, "JetStream publish of todo.cmd.create", repr(e))
    try:
        msg = await publisher.nc.request("todo.get", b'{"id":"1"}', headers={"Todo-Owner": "alice"}, timeout=2)
        body = json.loads(msg.data)
        report(body == {"endpoint": "todo.get", "owner": "alice"},
               "requests todo.get and gets the service's reply (Todo-Owner header passed)", str(body))
        replies = [json.loads((await publisher.nc.request(f"todo.{e}", b"{}", timeout=2)).data)["endpoint"]
                   for e in ENDPOINTS]
        report(replies == [f"todo.{e}" for e in ENDPOINTS], "requests all 7 endpoints")
    except Exception as e:  # noqa: BLE001
        report(False, "requests to the endpoints", repr(e))
    await cannot_publish(publisher, "todo.events.created", "cannot publish todo.events.created")
    await cannot_publish(publisher, "todo.dlq.create", "cannot publish todo.dlq.create")
    await cannot_subscribe(publisher, "todo.cmd.>", "cannot subscribe todo.cmd.>")
    await cannot_subscribe(publisher, "todo.get", "cannot subscribe todo.get (serve requests)", queue="todo")
    await cannot_publish(publisher, "$SRV.PING", "cannot publish $SRV.PING")
    await cannot_publish(publisher, "$JS.API.CONSUMER.DURABLE.CREATE.TODO_COMMANDS.mine",
                         "cannot create consumers")
    await cannot_publish(publisher, "$JS.API.STREAM.INFO.TODO_COMMANDS", "no JetStream API (stream info)")
    # Reply subjects are not subject to permissions: a publisher may name any subject as
    # its reply. Across accounts the reply goes back to PUBLISHERS, so neither the
    # service's reply nor a PubAck reaches a stream of TODO.
    before = {s: await stream_count(admin, s) for s in ("TODO_EVENTS", "TODO_COMMANDS")}
    await publisher.nc.publish("todo.get", b'{"id":"1"}', reply="todo.events.deleted")
    await publisher.nc.publish("todo.cmd.update", b'{"id":"1"}', reply="todo.events.updated")
    await publisher.nc.publish("todo.get", b'{"id":"1"}', reply="todo.cmd.delete")
    await publisher.nc.flush()
    await asyncio.sleep(0.3)
    after = {s: await stream_count(admin, s) for s in before}
    report(after["TODO_EVENTS"] == before["TODO_EVENTS"],
           "replies naming todo.events.> do not reach TODO_EVENTS (service reply, PubAck)",
           f"TODO_EVENTS {before['TODO_EVENTS']} -> {after['TODO_EVENTS']} messages")
    # todo.cmd.update itself is a command (+1); a reply naming todo.cmd.delete adds nothing.
    report(after["TODO_COMMANDS"] == before["TODO_COMMANDS"] + 1,
           "a service reply naming todo.cmd.delete does not become a command",
           f"TODO_COMMANDS {before['TODO_COMMANDS']} -> {after['TODO_COMMANDS']} messages (expected +1)")

    # ---------------------------------------------------------------- service consumes
    print("   -- service consumes the commands")
    try:
        psub = await js_service.pull_subscribe_bind("todo-service", "TODO_COMMANDS")
        msgs = await psub.fetch(1, timeout=2)
        await msgs[0].ack_sync(timeout=2)  # double ack: the server confirms
        report(msgs[0].subject == "todo.cmd.create" and msgs[0].headers.get("Todo-Owner") == "alice",
               "pulls todo.cmd.create (publisher's command, Todo-Owner kept) and double-acks it")
    except Exception as e:  # noqa: BLE001
        report(False, "pull and double ack from TODO_COMMANDS", repr(e))

    # ---------------------------------------------------------------- events reader
    print("   -- events-reader (account EVENTS)")
    reader = await Client("events-reader").connect()
    live = await reader.nc.subscribe("todo.events.>")
    await reader.nc.flush()
    # Live events are core NATS (at most once). Through a stream import nats-server 2.9
    # now and then drops the first message published right after the SUB (about 1 run in
    # 10 here), so the event is published again (new Nats-Msg-Id) until one arrives.
    got, tries = None, 0
    while got is None and tries < 5:
        tries += 1
        await js_service.publish("todo.events.updated", b'{"id":"e1"}',
                                 headers={"Nats-Msg-Id": f"check-nats-event-live-{tries}"})
        try:
            got = await live.next_msg(timeout=0.5)
        except NatsTimeout:
            pass
    report(got is not None and got.subject == "todo.events.updated",
           f"receives live events (core subscription on todo.events.>; {tries} publish(es))",
           "no event in 5 tries")
    try:
        rsub = await reader.nc.jetstream().pull_subscribe_bind(READER_CONSUMER, "TODO_EVENTS")
        msgs = await rsub.fetch(2, timeout=2)
        for m in msgs:
            await m.ack_sync(timeout=2)
        report([m.subject for m in msgs] == ["todo.events.created", "todo.events.updated"],
               f"pulls from TODO_EVENTS/{READER_CONSUMER} across accounts and double-acks",
               str([m.subject for m in msgs]))
        info = await admin.request_json(f"$JS.API.CONSUMER.INFO.TODO_EVENTS.{READER_CONSUMER}")
        report(info["num_ack_pending"] == 0 and info["ack_floor"]["stream_seq"] == 2,
               "its acks reach the consumer (nothing pending, ack floor 2)", str(info.get("ack_floor")))
    except Exception as e:  # noqa: BLE001
        report(False, "durable consumption of TODO_EVENTS", repr(e))
    await cannot_publish(reader, "$JS.API.CONSUMER.CREATE.TODO_EVENTS", "cannot create consumers")
    await cannot_publish(reader, "$JS.API.CONSUMER.MSG.NEXT.TODO_COMMANDS.todo-service",
                         "cannot pull from the service's consumer on TODO_COMMANDS")
    await cannot_publish(reader, "todo.events.created", "cannot publish todo.events.created")
    await cannot_publish(reader, "todo.cmd.create", "cannot publish todo.cmd.create")
    await cannot_subscribe(reader, "todo.cmd.>", "cannot subscribe todo.cmd.>")

    # ---------------------------------------------------------------- system, anonymous
    print("   -- sys (system account), strangers")
    sysc = await Client("sys").connect()
    try:
        resp = await sysc.request_json("$SYS.REQ.SERVER.PING", timeout=2)
        report(resp.get("server", {}).get("name") == "todo-nats", "sys gets $SYS.REQ.SERVER.PING", str(resp)[:200])
    except Exception as e:  # noqa: BLE001
        report(False, "sys: $SYS.REQ.SERVER.PING", repr(e))
    try:
        await service.nc.request("$SYS.REQ.SERVER.PING", b"", timeout=0.5)
        report(False, "the service account sees no system requests", "it got an answer")
    except (NoRespondersError, NatsTimeout):
        report(True, "the service account sees no system requests")
    for who, kwargs in (("anonymous", {}), ("a wrong password", {"user": "publisher", "password": "wrong"})):
        try:
            nc = await nats.connect(URL, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0,
                                    error_cb=lambda e: asyncio.sleep(0), **kwargs)
            await nc.close()
            report(False, f"{who} is refused", "connected")
        except Exception:  # noqa: BLE001 - any refusal
            report(True, f"{who} is refused")

    for s in subs:
        await s.unsubscribe()
    for c in (admin, service, publisher, reader, sysc):
        await c.nc.close()


asyncio.run(main())
if failures:
    print(f"   {len(failures)} case(s) failed")
sys.exit(1 if failures else 0)
