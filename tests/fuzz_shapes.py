"""Hypothesis strategies for the fuzz tests (tests/test_fuzz.py): each protocol's request
shape with a random type in any field, and junk.

`loose(good)` is a field's value: mostly `good` (the type the protocol wants), sometimes
any JSON value at all (null, a huge number, unicode, an empty string, a nested mess). The
shapes are written from the public API references, not from the gateway's parsers."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import strategies as st

# --- scalars and junk ------------------------------------------------------------------

EDGE_TEXT = st.sampled_from(
    ["", " ", "null", "0", "\x00", "\u202e\u0000\ufeff", "💥" * 8, "a" * 3000, "é\n\t\\\"'"]
)
TEXT = st.text(max_size=24) | EDGE_TEXT
KEYS = st.text(max_size=10) | st.sampled_from(["type", "text", "role", "content", ""])
INTS = st.integers(-(2**70), 2**70) | st.sampled_from(
    [0, -1, 1, 1024, 2**31, 2**63, 2**64, 10**40, -(10**40), 10**300]
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 0.5, 1e308, -1e308, 5e-324, 2.0**1023]
)
SCALARS = st.none() | st.booleans() | INTS | FLOATS | TEXT
JUNK: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)


def deep(depth: int) -> bytes:
    """`depth` levels of alternating lists and objects around a 1, as JSON text."""
    opening = "".join('{"a":' if level % 2 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 else "]" for level in reversed(range(depth)))
    return f"{opening}1{closing}".encode()


# A deep nest travels as this placeholder (short to print when a test fails, and no
# recursion in json.dumps) until `encoded` puts the nest in its place.
_DEEP = re.compile(rb'"@deep(\d+)@"')
DEEP = (st.integers(20, 1200) | st.sampled_from([2500, 6000])).map(lambda n: f"@deep{n}@")
ANY = st.integers(0, 4).flatmap(lambda n: DEEP if n == 0 else JUNK)


def loose(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually `good`; one time in 20 anything (junk, or now and then a deep nest): a body
    has a few dozen fields, and most of them should get past the first check."""
    return st.integers(0, 19).flatmap(lambda n: ANY if n == 0 else good)


def enum(values: list[str]) -> st.SearchStrategy[str]:
    """One of `values`, or one time in ten any text."""
    return st.integers(0, 9).flatmap(lambda n: TEXT if n == 0 else st.sampled_from(values))


def obj(always: dict[str, Any] | None = None, /, **optional: Any) -> st.SearchStrategy[dict]:
    """An object with the `always` keys and a few of the `optional` ones (real requests
    set a handful of fields, and drawing each of thirty costs), every value loose."""
    fixed = st.fixed_dictionaries({key: loose(value) for key, value in (always or {}).items()})
    if not optional:
        return fixed
    values = {key: loose(value) for key, value in optional.items()}
    chosen = st.lists(st.sampled_from(sorted(values)), unique=True, max_size=6)

    @st.composite
    def draw_object(draw: st.DrawFn) -> dict:
        result = draw(fixed)
        for key in draw(chosen):
            result[key] = draw(values[key])
        return result

    return draw_object()


def listof(
    item: st.SearchStrategy[Any], max_size: int = 3, min_size: int = 0
) -> st.SearchStrategy[list]:
    return st.lists(loose(item), min_size=min_size, max_size=max_size)


# --- values every protocol uses --------------------------------------------------------

# Routed by the shipped routes.yaml: echo (the default), or the fake upstream's pools.
# Never opus/sonnet/haiku (the Claude Code CLI).
MODEL = st.sampled_from(
    [
        "echo",
        "demo",
        "gpt-4o",
        "gpt-4.1-mini",
        "o3",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "gemini-3-pro-preview",
    ]
) | st.text(max_size=12)
NAME = st.sampled_from(["get_weather", "f", "a" * 70, "bad name!", ""]) | st.text(max_size=8)
BOOL = st.booleans()
TOKENS = st.integers(-5, 5000) | INTS
# data: URLs, and http URLs the gateway must refuse without a connection (loopback)
IMAGE_URL = enum(
    [
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
        "nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==",
        "data:image/png;base64,!!!not base64",
        "data:;base64,",
        "data:image/jpeg,raw",
        "data:",
        "http://127.0.0.1:1/x.png",
        "https://localhost/cat.jpg",
        "file:///etc/passwd",
        "",
    ]
)
MEDIA_TYPE = st.sampled_from(["image/png", "image/jpeg", "application/pdf", "text/plain", ""])
BASE64 = enum(["iVBORw0KGgo=", "", "====", "not base64 at all", "QUJD"])
ARGUMENTS = st.sampled_from(["{}", '{"city": "Paris"}', "{", "[]", "null", ""]) | TEXT

# JSON Schemas of random structure but the right types: the gateway's two schema walkers
# (echo's sampler, the Gemini reduction) fail on a broken one (the xfail tests in
# test_fuzz.py). Once they are fixed, the values here can be `loose` too.
SCHEMA: st.SearchStrategy[Any] = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["string", "integer", "number", "boolean", "object", "array"])
            | st.lists(st.sampled_from(["string", "null", "OBJECT"]), max_size=2),
            "description": TEXT,
            "enum": st.lists(SCALARS, max_size=3),
            "$ref": st.sampled_from(["#/$defs/a", "#/nowhere", "http://x/y", "#"]),
            "format": st.sampled_from(["date-time", "email", "uuid"]),
        },
    ),
    lambda inner: st.fixed_dictionaries(
        {},
        optional={
            "properties": st.dictionaries(st.text(max_size=10), inner, max_size=3),
            "items": inner,
            "anyOf": st.lists(inner, max_size=2),
            "required": st.lists(st.text(max_size=10), max_size=2),
            "additionalProperties": BOOL | inner,
            "$defs": st.dictionaries(st.text(max_size=10), inner, max_size=2),
            "type": st.just("object"),
        },
    ),
    max_leaves=4,
)

# --- OpenAI Chat -----------------------------------------------------------------------

_CHAT_PART = obj(
    {"type": enum(["text", "image_url", "file", "refusal", "input_audio"])},
    text=TEXT,
    image_url=obj({"url": IMAGE_URL}, detail=st.sampled_from(["low", "high", "auto"])) | IMAGE_URL,
    file=obj(file_data=IMAGE_URL | BASE64, filename=TEXT, file_id=TEXT),
    refusal=TEXT,
    input_audio=obj(data=BASE64, format=st.sampled_from(["wav", "mp3"])),
)
_CHAT_CALL = obj(
    {"id": TEXT, "function": obj({"name": NAME}, arguments=ARGUMENTS)},
    type=enum(["function"]),
)
_CHAT_MESSAGE = obj(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])},
    content=TEXT | listof(_CHAT_PART) | st.none(),
    name=TEXT,
    tool_calls=listof(_CHAT_CALL, 2),
    tool_call_id=TEXT,
    reasoning_content=TEXT,
    refusal=TEXT,
    function_call=obj({"name": NAME}, arguments=ARGUMENTS),
)
_CHAT_TOOL = obj(
    {"function": obj({"name": NAME}, description=TEXT, parameters=SCHEMA, strict=BOOL)},
    type=enum(["function"]),
)
CHAT = obj(
    {"model": MODEL, "messages": listof(_CHAT_MESSAGE, 4, 1)},
    stream=BOOL,
    stream_options=obj(include_usage=BOOL),
    tools=listof(_CHAT_TOOL, 2),
    tool_choice=st.sampled_from(["auto", "none", "required"])
    | obj({"type": st.just("function")}, function=obj({"name": NAME})),
    parallel_tool_calls=BOOL,
    response_format=obj(
        {"type": st.sampled_from(["text", "json_object", "json_schema"])},
        json_schema=obj({"name": NAME}, schema=SCHEMA, strict=BOOL),
    ),
    max_tokens=TOKENS,
    max_completion_tokens=TOKENS,
    temperature=FLOATS,
    top_p=FLOATS,
    n=INTS,
    seed=INTS,
    stop=TEXT | st.lists(TEXT, max_size=3),
    reasoning_effort=enum(["none", "minimal", "low", "medium", "high"]),
    reasoning=obj(effort=TEXT, max_tokens=TOKENS, enabled=BOOL, exclude=BOOL),
    metadata=st.dictionaries(KEYS, TEXT, max_size=3),
    user=TEXT,
    logprobs=BOOL,
    logit_bias=st.dictionaries(KEYS, INTS, max_size=2),
    functions=listof(obj({"name": NAME}, parameters=SCHEMA), 2),
    function_call=st.sampled_from(["auto", "none"]) | obj({"name": NAME}),
    modalities=st.lists(st.sampled_from(["text", "audio"]), max_size=2),
)

# --- OpenAI Responses ------------------------------------------------------------------

_RESPONSES_PART = obj(
    {"type": enum(["input_text", "output_text", "input_image", "input_file"])},
    text=TEXT,
    image_url=IMAGE_URL,
    file_data=IMAGE_URL | BASE64,
    file_id=TEXT,
    filename=TEXT,
    detail=TEXT,
)
_RESPONSES_ITEM = (
    obj(
        {"role": enum(["user", "assistant", "system", "developer"])},
        type=st.just("message"),
        content=TEXT | listof(_RESPONSES_PART),
    )
    | obj(
        {"type": st.just("function_call"), "call_id": TEXT, "name": NAME},
        arguments=ARGUMENTS,
        id=TEXT,
    )
    | obj({"type": st.just("function_call_output"), "call_id": TEXT}, output=TEXT | JUNK)
    | obj(
        {"type": st.just("reasoning")},
        summary=listof(obj({"type": st.just("summary_text"), "text": TEXT})),
        encrypted_content=TEXT,
        id=TEXT,
    )
    | obj({"type": TEXT})
)
RESPONSES = obj(
    {"model": MODEL, "input": TEXT | listof(_RESPONSES_ITEM, 4, 1)},
    instructions=TEXT,
    stream=BOOL,
    tools=listof(
        obj(
            {"type": enum(["function", "web_search", "file_search"])},
            name=NAME,
            parameters=SCHEMA,
            strict=BOOL,
            description=TEXT,
        ),
        2,
    ),
    tool_choice=st.sampled_from(["auto", "none", "required"])
    | obj({"type": st.just("function")}, name=NAME),
    text=obj(
        format=obj(
            {"type": st.sampled_from(["text", "json_object", "json_schema"])},
            name=NAME,
            schema=SCHEMA,
            strict=BOOL,
        ),
        verbosity=TEXT,
    ),
    reasoning=obj(effort=TEXT, summary=TEXT, generate_summary=TEXT),
    max_output_tokens=TOKENS,
    temperature=FLOATS,
    top_p=FLOATS,
    metadata=st.dictionaries(KEYS, TEXT, max_size=3),
    include=st.lists(enum(["reasoning.encrypted_content"]), max_size=2),
    parallel_tool_calls=BOOL,
    previous_response_id=TEXT,
    store=BOOL,
    background=BOOL,
    truncation=TEXT,
)

# --- Anthropic Messages ----------------------------------------------------------------

_SOURCE = obj(
    {"type": enum(["base64", "url", "file", "text"])},
    media_type=MEDIA_TYPE,
    data=BASE64,
    url=IMAGE_URL,
    file_id=TEXT,
)
_BLOCK = obj(
    {
        "type": enum(
            [
                "text",
                "image",
                "document",
                "tool_use",
                "tool_result",
                "thinking",
                "redacted_thinking",
                "server_tool_use",
                "search_result",
            ]
        )
    },
    text=TEXT,
    source=_SOURCE,
    id=TEXT,
    name=NAME,
    input=JUNK,
    tool_use_id=TEXT,
    content=TEXT | listof(obj({"type": st.just("text")}, text=TEXT, source=_SOURCE)),
    is_error=BOOL,
    thinking=TEXT,
    signature=TEXT,
    data=TEXT,
    title=TEXT,
    cache_control=obj({"type": st.just("ephemeral")}),
)
_ANTHROPIC_MESSAGE = obj({"role": enum(["user", "assistant"]), "content": TEXT | listof(_BLOCK, 4)})
_ANTHROPIC_FIELDS: dict[str, Any] = {
    "system": TEXT | listof(obj({"type": st.just("text"), "text": TEXT})),
    "stream": BOOL,
    "tools": listof(
        obj(
            {"name": NAME},
            input_schema=SCHEMA,
            description=TEXT,
            type=enum(["custom", "web_search_20250305", "bash_20250124"]),
        ),
        2,
    ),
    "tool_choice": obj(
        {"type": enum(["auto", "any", "tool", "none"])},
        name=NAME,
        disable_parallel_tool_use=BOOL,
    ),
    "thinking": obj(
        {"type": enum(["enabled", "disabled", "adaptive"])},
        budget_tokens=TOKENS,
        display=TEXT,
    ),
    "temperature": FLOATS,
    "top_p": FLOATS,
    "top_k": INTS,
    "stop_sequences": st.lists(TEXT, max_size=3),
    "metadata": obj(user_id=TEXT),
    "output_format": obj({"type": st.just("json_schema")}, schema=SCHEMA),
    "output_config": obj(format=obj({"type": st.just("json_schema")}, schema=SCHEMA), effort=TEXT),
    "service_tier": TEXT,
}
ANTHROPIC = obj(
    {"model": MODEL, "max_tokens": TOKENS, "messages": listof(_ANTHROPIC_MESSAGE, 4, 1)},
    **_ANTHROPIC_FIELDS,
)
ANTHROPIC_COUNT = obj(
    {"model": MODEL, "messages": listof(_ANTHROPIC_MESSAGE, 4, 1)}, **_ANTHROPIC_FIELDS
)

# --- Gemini ----------------------------------------------------------------------------

_INLINE = obj(mimeType=MEDIA_TYPE, data=BASE64)
_GEMINI_PART = st.one_of(
    obj({"text": TEXT}, thought=BOOL, thoughtSignature=BASE64),
    obj({"inlineData": _INLINE}),
    obj({"inline_data": obj(mime_type=MEDIA_TYPE, data=BASE64)}),
    obj({"fileData": obj(mimeType=MEDIA_TYPE, fileUri=IMAGE_URL)}),
    obj({"functionCall": obj({"name": NAME}, args=JUNK, id=TEXT)}, thoughtSignature=BASE64),
    obj({"functionResponse": obj({"name": NAME}, response=JUNK, id=TEXT)}),
    obj(  # several kinds in one part, or none
        text=TEXT,
        inlineData=_INLINE,
        function_call=obj({"name": NAME}, args=JUNK),
        executableCode=obj(code=TEXT, language=TEXT),
    ),
)
_GEMINI_CONTENT = obj({"parts": listof(_GEMINI_PART, 3)}, role=enum(["user", "model", "function"]))
_GEMINI_FIELDS: dict[str, Any] = {
    "systemInstruction": _GEMINI_CONTENT | TEXT,
    "system_instruction": _GEMINI_CONTENT,
    "tools": listof(
        obj(
            functionDeclarations=listof(
                obj(
                    {"name": NAME},
                    description=TEXT,
                    parameters=SCHEMA,
                    parametersJsonSchema=SCHEMA,
                    response=SCHEMA,
                ),
                2,
            ),
            googleSearch=st.just({}),
            codeExecution=st.just({}),
        ),
        2,
    ),
    "toolConfig": obj(
        functionCallingConfig=obj(
            mode=enum(["AUTO", "ANY", "NONE", "VALIDATED"]),
            allowedFunctionNames=st.lists(NAME, max_size=2),
        )
    ),
    "generationConfig": obj(
        temperature=FLOATS,
        topP=FLOATS,
        topK=INTS,
        maxOutputTokens=TOKENS,
        candidateCount=INTS,
        stopSequences=st.lists(TEXT, max_size=3),
        responseMimeType=enum(["application/json", "text/plain", "text/x.enum"]),
        responseSchema=SCHEMA,
        responseJsonSchema=SCHEMA,
        thinkingConfig=obj(thinkingBudget=TOKENS, includeThoughts=BOOL, thinkingLevel=TEXT),
        seed=INTS,
        responseModalities=st.lists(enum(["TEXT", "IMAGE"]), max_size=2),
    ),
    "safetySettings": listof(obj(category=TEXT, threshold=TEXT)),
    "cachedContent": TEXT,
}
GEMINI = obj({"contents": listof(_GEMINI_CONTENT, 4, 1)}, **_GEMINI_FIELDS)
GEMINI_COUNT = GEMINI | obj(
    {
        "generateContentRequest": obj(
            {
                "model": MODEL.map(lambda m: "models/" + m) | TEXT,
                "contents": listof(_GEMINI_CONTENT),
            },
            **_GEMINI_FIELDS,
        )
    }
)

# --- transport: headers, query strings, junk bodies ------------------------------------

_FRAMING = frozenset(
    {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te"}
    | {"keep-alive", "trailer", "proxy-connection"}
)
HEADER_NAME = st.sampled_from(
    [
        "authorization",
        "x-api-key",
        "x-goog-api-key",
        "anthropic-version",
        "anthropic-beta",
        "model-provider",
        "x-router-strict",
        "content-type",
        "accept",
        "accept-encoding",
        "content-encoding",
        "user-agent",
        "openai-beta",
        "x-stainless-retry-count",
        "cookie",
        "x-forwarded-for",
    ]
) | st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True).filter(lambda n: n not in _FRAMING)
_HEADER_WORDS = st.sampled_from(
    [
        b"",
        b"Bearer k",
        b"text/event-stream",
        *b"2023-06-01 true gzip application/json echo openai-custom claude-custom gemini-api "
        b"claudeCode-custom nope".split(),
    ]
)


def _header_text(top: int) -> st.SearchStrategy[bytes]:
    visible = st.characters(min_codepoint=0x21, max_codepoint=top, exclude_characters="\x7f")
    return st.text(visible, max_size=30).map(lambda value: value.encode("latin-1"))


HEADER_VALUE = _header_text(0xFF) | _HEADER_WORDS
HEADERS = st.lists(
    HEADER_NAME.flatmap(lambda name: st.tuples(st.just(name.encode()), HEADER_VALUE)),
    max_size=5,
)

QUERY = st.lists(
    st.tuples(
        st.sampled_from(["alt", "key", "stream", "beta", "api-version"]) | st.text(max_size=6),
        st.sampled_from(["sse", "json", "", "true", "k"]) | st.text(max_size=10),
    ),
    max_size=3,
)
RAW_QUERY = st.sampled_from(
    [b"", b"alt=sse", b"%", b"%zz=%ff", b"a=%00", b"&&&==", b"alt=sse&alt=json", b"key"]
) | st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=20
).map(str.encode)

PROVIDER = st.sampled_from(
    [
        "echo",
        "openai-custom",
        "openaiResponses-custom",
        "claude-custom",
        "gemini-api",
        "gemini-cli-oauth",
        "claudeCode-custom",
        "nope",
        "v1",
        "api",
        "health",
        "ui",
    ]
) | st.from_regex(r"[A-Za-z0-9._~-]{1,12}", fullmatch=True)

CONTENT_TYPE = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "",
    ]
)


def encoded(body: Any) -> bytes:
    raw = json.dumps(body, ensure_ascii=False).encode()
    return _DEEP.sub(lambda found: deep(int(found.group(1))), raw)


@st.composite
def junk_body(draw: st.DrawFn, shape: st.SearchStrategy[Any]) -> bytes:
    """Bytes that are not the JSON object the endpoint wants, or only nearly."""
    kind = draw(st.sampled_from(["bytes", "truncated", "not-object", "latin1", "edge", "dup"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncated":
        raw = encoded(draw(shape))
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if kind == "not-object":
        return encoded(draw(JUNK.filter(lambda value: not isinstance(value, dict))))
    if kind == "latin1":
        return (
            json.dumps(draw(shape), ensure_ascii=False).encode("utf-8", "replace")[:-1] + b"\xff}"
        )
    if kind == "dup":  # duplicated keys, a BOM, trailing garbage
        raw = encoded(draw(shape))
        return draw(st.sampled_from([b"\xef\xbb\xbf" + raw, raw + b" x", raw + raw, b" \n" + raw]))
    return draw(
        st.sampled_from(
            [
                b"",
                b"{",
                b"}",
                b"null",
                b"{}",
                b'{"model": "\\ud800", "messages": []}',
                b'{"model": "echo", "messages": [{"role": "user", "content": "\\udfff"}]}',
                b'{"contents": [{"parts": [{"text": "\\ud83d"}]}]}',
                b'{"model": 1e999}',
                b'{"model": "echo", "max_tokens": ' + b"9" * 4000 + b"}",
                b'{"model": "echo", "temperature": 1' + b"0" * 400 + b"}",
                b"[" * 100_000,
                b'{"a":' * 3000 + b"1" + b"}" * 3000,
                b"\x00" * 64,
            ]
        )
    )
