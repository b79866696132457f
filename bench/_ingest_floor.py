"""The floor under a single-event request, for bench/ingest.py: the same uvicorn worker setup
(httptools, uvloop) serving a bare ASGI app that reads the body and answers a fixed 202,
either right away (`empty`: the server's own cost per request) or after the ingest producer's
awaited send of the body (`kafka`: the server plus Kafka, with no validation, encoding, auth
or metrics).

    python -m bench._ingest_floor --port 18081 --mode empty|kafka
"""

from __future__ import annotations

import argparse

import uvicorn

from ingest.app import ingest_producer
from ingest.config import IngestConfig
from plumbing.producer import AsyncProducer
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY

BODY = b'{"data":{"status":"PENDING"},"message":"Event enqueued for processing"}'
HEADERS = [(b"content-length", str(len(BODY)).encode()), (b"content-type", b"application/json")]


def make_app(mode: str):
    producer: list[AsyncProducer] = []

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if mode == "kafka":  # ingest's own producer, with its settings
                    producer.append(ingest_producer(Settings.from_env(), IngestConfig.from_env()).start())
                await send({"type": "lifespan.startup.complete"})
            for p in producer:
                p.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if producer:
            body = b"".join(chunks)
            await producer[0].send(EVENTS_LOYALTY, body[:40], body)
        await send({"type": "http.response.start", "status": 202, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("empty", "kafka"), required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        make_app(args.mode), host="127.0.0.1", port=args.port, log_level="warning",
        access_log=False, log_config=None, lifespan="on",
    )  # fmt: skip
    uvicorn.Server(config).run()  # uvicorn's loop choice (uvloop), as in ingest/workers.py


if __name__ == "__main__":
    main()
