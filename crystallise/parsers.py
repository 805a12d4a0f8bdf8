"""The JSON parser of every /v1/ endpoint.

A module of its own: DRF reads DEFAULT_PARSER_CLASSES when `rest_framework.views` is first
imported, so the parser must not live in a module that imports the views itself.
"""

from __future__ import annotations

import io
import json
import re

from django.conf import settings
from rest_framework import exceptions as drf_exceptions
from rest_framework.parsers import BaseParser, JSONParser


class LimitedJSONParser(BaseParser):
    """JSON with the contract's 64 MiB limit, answered as a 413 in the error shape.

    Deliberately not a `JSONParser` subclass: DRF reads the whole body into
    memory (`request.body`, up to DATA_UPLOAD_MAX_MEMORY_SIZE, 257 MiB) before
    calling a JSONParser, so a check inside `parse` would come too late. Here
    the declared Content-Length is checked before a byte is read, and the
    stream is read at most one byte past the limit (chunked bodies too).
    """

    media_type = "application/json"
    renderer_class = JSONParser.renderer_class

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.CRYSTALLISE_MAX_JSON_BYTES
        request = parser_context["request"] if parser_context else None
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        try:
            too_big = bool(length) and int(length) > limit
        except ValueError:
            too_big = False
        if too_big:
            raise _TooLarge()
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise _TooLarge()
        try:
            parsed = JSONParser().parse(io.BytesIO(data), media_type, parser_context)
            # "\ud800" is valid JSON but no text: it could not be stored (or encoded) later. Only
            # bodies with surrogate escapes (also valid pairs, e.g. emoji from ensure_ascii) are checked.
            if _SURROGATE_ESCAPE.search(data):
                json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except RecursionError:
            raise drf_exceptions.ParseError("JSON parse error - the body is nested too deeply.") from None
        except UnicodeEncodeError:
            raise drf_exceptions.ParseError(
                "JSON parse error - a string holds an unpaired UTF-16 surrogate escape (such as \\ud800); "
                "send valid Unicode text.") from None
        return parsed


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class _TooLarge(drf_exceptions.APIException):
    status_code = 413
    default_detail = "The JSON body is larger than 64 MiB. Upload papers as a file (multipart papers_file) instead."
