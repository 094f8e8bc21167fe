"""Redis commands written in the wire protocol (RESP) by hand, for the telemetry share.

A 5,000-sample batch is one HSET of 5,000 fields; redis-py packs each argument on its own
(type checks, encoding, a bytes object each), ~1.5 µs of Python a field: about a quarter of
the Kafka worker's CPU per sample. Here a batch's command is one f-string per field and one
encode, and the replies are read as redis-py's pipeline reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import redis
from numpy.typing import NDArray


def command(*args: str | bytes) -> bytes:
    """One command of a few arguments."""
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


def hset(key: str, fields: Sequence[str], values: Sequence[str]) -> bytes:
    """`HSET key field value ...`, built as one string (fields and values are text)."""
    # Lengths are in bytes: a text that is all ASCII has as many as characters.
    ascii_only = "".join(fields).isascii() and "".join(values).isascii()
    size = len if ascii_only else (lambda text: len(text.encode()))
    head = f"*{2 + 2 * len(fields)}\r\n$4\r\nHSET\r\n${size(key)}\r\n{key}\r\n"
    body = "".join(
        [f"${size(f)}\r\n{f}\r\n${size(v)}\r\n{v}\r\n" for f, v in zip(fields, values, strict=True)]
    )
    return (head + body).encode()


def json_rows(*columns: NDArray[np.float64] | NDArray[np.bool_]) -> list[str]:
    """Each row of the columns as a JSON array of numbers (`[1764072000.0,80.5,1.0,0.0]`; a
    bool as 1.0/0.0), from one serialisation of the whole table."""
    table = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    if not len(table):
        return []
    # `[[a,b],[c,d]]`: numbers hold no bracket, so the rows are what lies between "],[".
    text = orjson.dumps(table, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return [f"[{row}]" for row in text[2:-2].split("],[")]


def send(client: Any, *commands: bytes) -> list[Any]:
    """Send packed commands in one write and read a reply for each, as redis-py's pipeline
    does: every reply is read before an error one is raised (the connection stays in step),
    and a lost connection is retried with the client's retry policy."""
    pool = client.connection_pool
    conn = pool.get_connection()

    def exchange() -> list[Any]:
        conn.send_packed_command(list(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies

    try:
        result: list[Any] = conn.retry.call_with_retry(exchange, lambda _err: conn.disconnect())
        return result
    finally:
        pool.release(conn)
