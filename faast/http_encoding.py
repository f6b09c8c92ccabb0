"""HTTP Content-Encoding as Triton's HTTP server speaks it: gzip and deflate request bodies, and
infer responses compressed as the client's Accept-Encoding asks (`tritonclient.http`'s
request_compression_algorithm / response_compression_algorithm).

faast decodes bodies itself rather than letting aiohttp do it: aiohttp inflates in the event loop
with no limit, so a 1 MB body could grow to gigabytes and stall every other request. Here a body
inflates in a worker thread, a chunk at a time, and stops past --http-max-input-size bytes, as
tritonserver 2.65+ stops (with its message); what a refused body inflated to is freed and given back
to the system (faast.memory) before the refusal is answered.
"""

import asyncio
import zlib

from . import memory
from .contract.errors import InvalidArgument

CHUNK = 1 << 20
ENCODED_IN_LOOP = 64 << 10  # smaller bodies decode (and responses encode) in the event loop: cheaper than a thread
UNSUPPORTED = "Unsupported compression type"  # Triton's words (HTTP 501)


class UnsupportedEncoding(Exception):
    """A Content-Encoding faast does not decode."""


class UndecodableBody(Exception):
    """A body that its Content-Encoding does not describe, or that inflates past the limit;
    `inflated`: how many bytes it had inflated to when it was refused."""

    def __init__(self, message: str, inflated: int = 0):
        super().__init__(message)
        self.inflated = inflated


def _decoder(encoding: str):
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped, as tritonclient and Triton write it
    raise UnsupportedEncoding(encoding)


def _inflate(data: bytes, encoding: str, limit: int) -> bytes:
    parts: list[bytes] = []
    try:
        return _inflate_into(parts, data, encoding, limit)
    finally:
        parts.clear()  # a refused body's parts are freed here, not kept by the exception's frames


def _inflate_into(parts: list[bytes], data: bytes, encoding: str, limit: int) -> bytes:
    decoder = _decoder(encoding)
    size = 0
    pending = data
    try:
        while not decoder.eof:
            part = decoder.decompress(pending, CHUNK)
            pending = decoder.unconsumed_tail
            if not part and not pending:  # all input read, and the stream has not ended
                break
            size += len(part)
            if size > limit:
                raise UndecodableBody(
                    too_large("Decompressed data size exceeds the maximum allowed value of", limit), size
                )
            parts.append(part)
        if not decoder.eof:
            raise UndecodableBody(f"the request body ends before its {encoding} stream does", size)
    except zlib.error as error:
        raise UndecodableBody(f"the request body is not valid {encoding}: {error}", size) from None
    return b"".join(parts)


def too_large(what: str, limit: int) -> str:
    """tritonserver's refusal of something past --http-max-input-size: `what` then the limit."""
    return f"{what} {limit} bytes. Use --http-max-input-size to increase the limit."


def check_json_size(length: int, limit: int) -> None:
    """tritonserver's check of a request's JSON (a whole body, or an infer body's JSON header)."""
    if length > limit:
        raise InvalidArgument(
            too_large(f"request JSON size of {length} bytes exceeds the maximum allowed input size of", limit)
        )


async def decode(data: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body as sent before its Content-Encoding (none or identity: as is). Raises
    UnsupportedEncoding for any other encoding than gzip or deflate, UndecodableBody for a body
    that does not decode or decodes past `limit`."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return data
    _decoder(encoding)  # refuse an unknown encoding before any work
    try:
        if len(data) <= ENCODED_IN_LOOP:
            return _inflate(data, encoding, limit)
        return await asyncio.to_thread(_inflate, data, encoding, limit)
    except UndecodableBody as error:
        memory.after_request(error.inflated)  # a refused bomb's gigabyte goes back to the system
        raise


def response_encoding(accept_encoding: str | None) -> str | None:
    """The encoding of an infer response for this Accept-Encoding: the first of gzip and deflate
    the client lists, else none, as Triton chooses (quality values are not weighed)."""
    offered = [part.split(";")[0].strip().lower() for part in (accept_encoding or "").split(",")]
    return next((encoding for encoding in offered if encoding in ("gzip", "deflate")), None)


async def encode(body: bytes, encoding: str) -> bytes:
    """`body` compressed with `encoding` (gzip or deflate), in a worker thread when it is large."""

    def compress() -> bytes:
        if encoding == "gzip":
            compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        else:
            compressor = zlib.compressobj()
        return compressor.compress(body) + compressor.flush()

    return compress() if len(body) <= ENCODED_IN_LOOP else await asyncio.to_thread(compress)
