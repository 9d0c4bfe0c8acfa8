"""HTML form bodies, for the public routes whose callers cannot send JSON (a route registered
with `form=True`): Twilio's callbacks, RFC 8058's one-click POSTs, a page's own form.

Both encodings a form travels in are taken: `application/x-www-form-urlencoded` and
`multipart/form-data` (RFC 8058 says a one-click POST SHOULD be multipart; providers send
either). Both are held to the same rules, so a route cannot tell them apart:

- each field once (a repeated one is refused: which of its values counts would be a guess, and
  a signature check and the handler could each take another);
- text fields only, UTF-8: no file parts;
- at most MAX_FIELDS fields, from a body the pipeline already read under its size limit.

Multipart is split by werkzeug's own decoder (the one Flask's `request.form` uses), fed the
bytes the pipeline read: the request stream is gone by then.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, Preamble

from shared.platform import errors

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
MEDIA_TYPES = (URLENCODED, MULTIPART)
# Twilio's status callback, the largest form we take, has about twenty fields.
MAX_FIELDS = 100


def takes(mimetype: str | None) -> bool:
    """Whether a body of this media type is a form."""
    return mimetype in MEDIA_TYPES


def fields(raw: bytes, mimetype: str, params: Mapping[str, str]) -> dict[str, str]:
    """A form's fields as the JSON object the route's model validates. `params` are the
    Content-Type's parameters (multipart's boundary). A body that breaks the rules above is a
    400 `malformed_form`."""
    pairs = (
        _multipart(raw, params.get("boundary", "")) if mimetype == MULTIPART else _urlencoded(raw)
    )
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in found:
            raise _malformed(f"The form repeats field {name!r}.")
        found[name] = value
    return found


def _malformed(detail: str = "The body is not a valid form.") -> errors.BadRequest:
    return errors.BadRequest(detail, code="malformed_form")


def _urlencoded(raw: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            raw.decode(),
            keep_blank_values=True,
            strict_parsing=bool(raw),
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _malformed() from None


def _multipart(raw: bytes, boundary: str) -> list[tuple[str, str]]:
    if not boundary or len(boundary) > 70:  # RFC 2046: 1 to 70 characters
        raise _malformed("A multipart form needs its boundary in the Content-Type.")
    pairs: list[tuple[str, str]] = []
    name: str | None = None
    value = bytearray()
    try:
        decoder = MultipartDecoder(boundary.encode("latin-1"), max_parts=MAX_FIELDS)
        decoder.receive_data(raw)
        decoder.receive_data(None)  # all of it is here: a message cut short is an error
        while not isinstance(event := decoder.next_event(), Epilogue):
            if isinstance(event, File):
                raise _malformed("This form takes text fields only, no files.")
            if isinstance(event, Field):
                if not event.name:
                    raise _malformed("A form field has no name.")
                name, value = event.name, bytearray()
            elif isinstance(event, Data) and name is not None:
                value += event.data
                if not event.more_data:
                    pairs.append((name, value.decode()))
                    name = None
            elif not isinstance(event, Preamble | Data):
                raise _malformed()
    except RequestEntityTooLarge:  # werkzeug's word for too many parts
        raise _malformed(f"A form has at most {MAX_FIELDS} fields.") from None
    except ValueError:  # UnicodeDecodeError and UnicodeEncodeError are ValueErrors too
        raise _malformed() from None
    return pairs
