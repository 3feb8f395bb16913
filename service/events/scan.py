"""The compiled fast path of decoding: typical events read straight from their bytes.

Most messages of a healthy stream look alike: one flat JSON object of ASCII text with the
contract's fields, integer or plain decimal numbers, and small maps of scalars. For those,
:func:`scan_batch` reads every field of every message in one compiled pass over the
batch's bytes (joined once): no Python object per event, ids and map keys located as
byte spans, numbers converted in place. A message it cannot read *exactly* as the
contract would is deferred, never guessed at; the decoder hands those to the orjson
screen (:mod:`service.events.fast`) and then to pydantic, so every rejection reason and
detail is unchanged. Deferred are, among others: anything that is not valid JSON, a
string with an escape, a DEL or a byte outside ASCII, an unknown or repeated key (top
level or in a map), a value of a wrong type or past a limit, an integer id or number of
more than 18 digits, a decimal number with more than 15 significant digits or an exponent
beyond ±22 (which Clinger's fast path could not convert with exact rounding), ``-0`` as
an integer id, and a map value that is an object or an array.

The checks that give rejection reasons of their own (empty or long ids, timestamps,
value ranges, schema version) stay in the decoder, which runs them on the columns of
every accepted message alike. Control characters are the exception: every string the
scanner reads is free of them (a raw C0 byte is not JSON, an escape or a DEL is
deferred), so the decoder searches only the columns of the deferred messages for them.

Example
-------
>>> s = scan_batch([b'{"schema_version":1,"event_id":"e1","event_type":"click",'
...                 b'"user_id":7,"item_id":"i1","timestamp":1700000000000,'
...                 b'"context":{"device":"ios","position":2}}', b'{"oops"'])
>>> s.ok.tolist(), s.ids["user_id"].to_list(), s.maps["context"].to_dicts()
([True, False], ['7', ''], [{'device': 'ios', 'position': 2}, None])

References
----------
Clinger. How to read floating point numbers accurately (PLDI 1990): the fast path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from service.events.fast import FIELD_NAMES, MAP_FIELDS
from service.events.maps import BOOL, FLOAT, INT, NULL, TEXT, PackedMaps
from service.events.model import (
    EVENT_TYPE_NAMES,
    MAX_ABS_NUMBER,
    MAX_EPOCH_MS,
    MAX_KEY_LENGTH,
    MAX_MAP_KEYS,
    MAX_TEXT_LENGTH,
    MAX_TIMESTAMP_TEXT,
    SCHEMA_VERSION,
)
from service.events.packed import PackedStrings

ID_FIELDS = ("event_id", "user_id", "item_id")


def _table(names: Sequence[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    raw = [name.encode("ascii") for name in names]
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in raw], out=offsets[1:])
    return np.frombuffer(b"".join(raw), dtype=np.uint8).copy(), offsets


_NAMES, _NAME_OFF = _table(FIELD_NAMES)
_TYPES, _TYPE_OFF = _table(EVENT_TYPE_NAMES)
# Powers of ten that float64 holds exactly: the limit of Clinger's fast path.
_POW10 = np.array([10.0 ** k for k in range(23)], dtype=np.float64)
_REQUIRED = (1 << 6) - 1  # the first six fields of FIELD_NAMES
_MAX_MAP_INT = int(MAX_ABS_NUMBER)
# Field numbers, in the order of FIELD_NAMES.
(_VERSION, _EVENT_ID, _TYPE, _USER, _ITEM, _TS, _VALUE, _CONTEXT, _USER_F,
 _ITEM_F) = range(10)
# span columns: the three ids, then the timestamp's text
_TS_SPAN = 3

# numba compiles the module's globals in as constants.
_MAX_EPOCH = MAX_EPOCH_MS
_MAX_KEY = MAX_KEY_LENGTH
_MAX_TEXT = MAX_TEXT_LENGTH
_MAX_TS_TEXT = MAX_TIMESTAMP_TEXT
_MAX_KEYS = MAX_MAP_KEYS
_MAX_NUMBER = MAX_ABS_NUMBER
_ONE = SCHEMA_VERSION
_TEXT, _INT, _FLOAT, _BOOL, _NULL = TEXT, INT, FLOAT, BOOL, NULL


# The kernel is one function on purpose: numba increments and decrements the reference
# count of every array passed to a helper, at each call, even an inlined one; with a
# helper per token that cost more than the parsing itself (measured: 50 ns per call).


@njit(cache=True)
def _scan(
    buf: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64],
    names: npt.NDArray[np.uint8], name_off: npt.NDArray[np.int64],
    types: npt.NDArray[np.uint8], type_off: npt.NDArray[np.int64],
    pow10: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int8], npt.NDArray[np.int64],
           npt.NDArray[np.bool_], npt.NDArray[np.float64], npt.NDArray[np.int64],
           npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int8],
           npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int8],
           npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    n = len(offsets) - 1
    ok = np.zeros(n, dtype=np.bool_)
    etype = np.zeros(n, dtype=np.int8)
    ts = np.zeros(n, dtype=np.int64)
    ts_text = np.zeros(n, dtype=np.bool_)
    value = np.full(n, np.nan)
    span_start = np.zeros((4, n), dtype=np.int64)
    span_len = np.zeros((4, n), dtype=np.int64)
    map_count = np.full((3, n), -1, dtype=np.int64)
    # Every map entry takes at least 5 bytes ('"":0,'): a bound on the entries of a batch.
    cap = len(buf) // 5 + 16
    e_field = np.empty(cap, dtype=np.int8)
    e_key_s = np.empty(cap, dtype=np.int64)
    e_key_l = np.empty(cap, dtype=np.int64)
    e_kind = np.empty(cap, dtype=np.int8)
    e_num = np.empty(cap, dtype=np.float64)
    e_txt_s = np.empty(cap, dtype=np.int64)
    e_txt_l = np.empty(cap, dtype=np.int64)
    n_fields = len(name_off) - 1
    n_types = len(type_off) - 1
    ne = 0
    for i in range(n):
        end = offsets[i + 1]
        p = offsets[i]
        first = ne  # entries of this message start here (dropped if it is deferred)
        bad = False
        seen = 0
        in_map = -1  # the map being read (0, 1, 2), or -1 at the top level
        map_first = ne
        while p < end and (buf[p] == 32 or buf[p] == 10 or buf[p] == 13 or buf[p] == 9):
            p += 1
        if p >= end or buf[p] != 123:  # '{'
            bad = True
        p += 1
        done = False
        while not bad and not done:
            # -- a key --------------------------------------------------------------------
            while p < end and (buf[p] == 32 or buf[p] == 10 or buf[p] == 13 or buf[p] == 9):
                p += 1
            if p >= end or buf[p] != 34:
                bad = True
                break
            ks = p + 1
            p += 1
            while p < end and buf[p] != 34:
                c = buf[p]
                # An escape, a control byte (C0 is not JSON, DEL is refused in keys) or
                # non-ASCII: the slower paths decide.
                if c == 92 or c >= 127 or c < 32:
                    bad = True
                    break
                p += 1
            if bad or p >= end:
                bad = True
                break
            kl = p - ks
            p += 1
            f = -1
            if in_map < 0:
                for k in range(n_fields):
                    a = name_off[k]
                    if name_off[k + 1] - a != kl:
                        continue
                    same = True
                    for j in range(kl):
                        if buf[ks + j] != names[a + j]:
                            same = False
                            break
                    if same:
                        f = k
                        break
                # A key the contract ignores, or a repeated one: orjson and pydantic decide.
                if f < 0 or (seen >> f) & 1:
                    bad = True
                    break
                seen |= 1 << f
            else:
                if kl > _MAX_KEY or ne - map_first >= _MAX_KEYS or ne >= cap:
                    bad = True
                    break
                for e in range(map_first, ne):  # a repeated key: dict semantics decide
                    if e_key_l[e] == kl:
                        same = True
                        for j in range(kl):
                            if buf[e_key_s[e] + j] != buf[ks + j]:
                                same = False
                                break
                        if same:
                            bad = True
                            break
                if bad:
                    break
            while p < end and (buf[p] == 32 or buf[p] == 10 or buf[p] == 13 or buf[p] == 9):
                p += 1
            if p >= end or buf[p] != 58:  # ':'
                bad = True
                break
            p += 1
            while p < end and (buf[p] == 32 or buf[p] == 10 or buf[p] == 13 or buf[p] == 9):
                p += 1
            if p >= end:
                bad = True
                break
            c = buf[p]
            if in_map < 0 and f >= _CONTEXT and c == 123:  # a map opens
                in_map = f - _CONTEXT
                map_first = ne
                p += 1
                while p < end and (buf[p] == 32 or buf[p] == 10 or buf[p] == 13
                                   or buf[p] == 9):
                    p += 1
                if p < end and buf[p] == 125:  # '{}'
                    map_count[in_map, i] = 0
                    in_map = -1
                    p += 1
                else:
                    continue
            else:
                # -- a scalar: kind 0 text, 1 integer, 2 decimal, 3 true, 4 false, 5 null --
                kind = -1
                vs = p  # where the value starts (text: after its quote)
                iv = 0
                x = 0.0
                if c == 34:
                    p += 1
                    vs = p
                    while p < end and buf[p] != 34:
                        d = buf[p]
                        # As in keys: DEL is refused in ids (and rare elsewhere).
                        if d == 92 or d >= 127 or d < 32:
                            bad = True
                            break
                        p += 1
                    if bad or p >= end:
                        bad = True
                        break
                    p += 1
                    kind = 0
                elif c == 116:
                    if (p + 4 <= end and buf[p + 1] == 114 and buf[p + 2] == 117
                            and buf[p + 3] == 101):
                        kind = 3
                        p += 4
                elif c == 102:
                    if (p + 5 <= end and buf[p + 1] == 97 and buf[p + 2] == 108
                            and buf[p + 3] == 115 and buf[p + 4] == 101):
                        kind = 4
                        p += 5
                elif c == 110:
                    if (p + 4 <= end and buf[p + 1] == 117 and buf[p + 2] == 108
                            and buf[p + 3] == 108):
                        kind = 5
                        p += 4
                else:
                    # A JSON number: an integer of at most 18 digits, or a decimal of at
                    # most 15 significant digits and a power of ten within ±22 (exact).
                    neg = False
                    if c == 45:
                        neg = True
                        p += 1
                    mant = 0
                    sig = 0  # significant digits, leading zeros excluded
                    digits = 0
                    if p < end and buf[p] == 48:
                        p += 1
                        digits = 1
                        if p < end and 48 <= buf[p] <= 57:
                            bad = True  # a leading zero: not JSON
                            break
                    else:
                        while p < end and 48 <= buf[p] <= 57:
                            if sig < 19:
                                mant = mant * 10 + (int(buf[p]) - 48)
                            sig += 1
                            digits += 1
                            p += 1
                    if digits == 0:
                        bad = True
                        break
                    is_float = False
                    frac = 0
                    if p < end and buf[p] == 46:  # '.'
                        is_float = True
                        p += 1
                        while p < end and 48 <= buf[p] <= 57:
                            d = int(buf[p]) - 48
                            if mant != 0 or d != 0:
                                if sig < 19:
                                    mant = mant * 10 + d
                                sig += 1
                            frac += 1
                            p += 1
                        if frac == 0:
                            bad = True
                            break
                    exp = 0
                    if p < end and (buf[p] == 101 or buf[p] == 69):  # 'e', 'E'
                        is_float = True
                        p += 1
                        eneg = False
                        if p < end and (buf[p] == 43 or buf[p] == 45):
                            eneg = buf[p] == 45
                            p += 1
                        n_exp = 0
                        while p < end and 48 <= buf[p] <= 57:
                            if exp < 100_000:
                                exp = exp * 10 + (int(buf[p]) - 48)
                            n_exp += 1
                            p += 1
                        if n_exp == 0:
                            bad = True
                            break
                        if eneg:
                            exp = -exp
                    if not is_float:
                        if sig <= 18:
                            iv = -mant if neg else mant
                            x = float(iv)
                            kind = 1
                    elif sig <= 15:
                        e10 = exp - frac
                        if mant == 0:
                            kind = 2
                        elif 0 <= e10 <= 22:
                            x = float(mant) * pow10[e10]
                            kind = 2
                        elif -22 <= e10 < 0:
                            x = float(mant) / pow10[-e10]
                            kind = 2
                        if neg:
                            x = -x
                if kind < 0:
                    bad = True
                    break
                vl = p - vs - 1 if kind == 0 else p - vs  # text: without its quote
                # -- where the scalar goes ---------------------------------------------
                if in_map >= 0:
                    e_txt_s[ne] = 0
                    e_txt_l[ne] = 0
                    e_num[ne] = 0.0
                    if kind == 0:
                        if vl > _MAX_TEXT:
                            bad = True
                            break
                        e_kind[ne] = _TEXT
                        e_txt_s[ne] = vs
                        e_txt_l[ne] = vl
                    elif kind == 1:
                        if iv < -_MAX_MAP_INT or iv > _MAX_MAP_INT:
                            bad = True
                            break
                        e_kind[ne] = _INT
                        e_num[ne] = x
                    elif kind == 2:
                        if abs(x) > _MAX_NUMBER:
                            bad = True
                            break
                        e_kind[ne] = _FLOAT
                        e_num[ne] = x
                    elif kind == 5:
                        e_kind[ne] = _NULL
                    else:
                        e_kind[ne] = _BOOL
                        e_num[ne] = 1.0 if kind == 3 else 0.0
                    e_field[ne] = in_map
                    e_key_s[ne] = ks
                    e_key_l[ne] = kl
                    ne += 1
                elif f == _VERSION:
                    if kind != 1 or iv != _ONE:
                        bad = True
                        break
                elif f in (_EVENT_ID, _USER, _ITEM):
                    # An integer id is its decimal text as sent, except "-0" (the id "0").
                    if not (kind == 0 or (kind == 1 and f != _EVENT_ID
                                          and not (iv == 0 and neg))):
                        bad = True
                        break
                    column = 0 if f == _EVENT_ID else f - 2
                    span_start[column, i] = vs
                    span_len[column, i] = vl
                elif f == _TYPE:
                    code = -1
                    if kind == 0:
                        for k in range(n_types):
                            a = type_off[k]
                            if type_off[k + 1] - a != vl:
                                continue
                            same = True
                            for j in range(vl):
                                if buf[vs + j] != types[a + j]:
                                    same = False
                                    break
                            if same:
                                code = k
                                break
                    if code < 0:
                        bad = True
                        break
                    etype[i] = code
                elif f == _TS:
                    if kind == 0 and vl <= _MAX_TS_TEXT:
                        ts_text[i] = True
                        span_start[_TS_SPAN, i] = vs
                        span_len[_TS_SPAN, i] = vl
                    elif kind == 1 and 0 <= iv <= _MAX_EPOCH:
                        ts[i] = iv
                    else:
                        bad = True
                        break
                elif f == _VALUE:
                    if kind == 1 or kind == 2:
                        value[i] = x
                    elif kind != 5:
                        bad = True
                        break
                elif kind != 5:  # a map field that is neither an object nor null
                    bad = True
                    break
            # -- after a value: ',' for the next key, '}' closes a map or the event ------
            while True:
                while p < end and (buf[p] == 32 or buf[p] == 10 or buf[p] == 13
                                   or buf[p] == 9):
                    p += 1
                if p < end and buf[p] == 44:  # ','
                    p += 1
                    break
                if p < end and buf[p] == 125:  # '}'
                    p += 1
                    if in_map >= 0:
                        map_count[in_map, i] = ne - map_first
                        in_map = -1
                        continue
                    done = True
                    break
                bad = True
                break
        if not bad:
            while p < end and (buf[p] == 32 or buf[p] == 10 or buf[p] == 13 or buf[p] == 9):
                p += 1
            # Trailing data, or a required field missing: the slower paths say which.
            bad = p != end or (seen & _REQUIRED) != _REQUIRED
        if not bad:
            ok[i] = True
        else:  # deferred: forget what was read of it, its columns stay neutral
            ne = first
            etype[i] = 0
            ts[i] = 0
            ts_text[i] = False
            value[i] = np.nan
            for c4 in range(4):
                span_start[c4, i] = 0
                span_len[c4, i] = 0
            for m in range(3):
                map_count[m, i] = -1
    return (ok, etype, ts, ts_text, value, span_start, span_len, map_count,
            e_field[:ne], e_key_s[:ne], e_key_l[:ne], e_kind[:ne], e_num[:ne],
            e_txt_s[:ne], e_txt_l[:ne])


@dataclass(frozen=True, slots=True)
class Scanned:
    """What :func:`scan_batch` read; rows where ``ok`` is false hold neutral values.

    Parameters
    ----------
    ok
        Whether each message was read (the others must take the slower paths).
    event_type, ts_ms, value
        ``int8`` codes, integer timestamps (0 where ``ts_is_text``), ``float64`` (NaN when
        absent or null).
    ts_is_text, ts_text
        Which timestamps were sent as text, and that text (``""`` elsewhere).
    ids
        ``event_id``, ``user_id``, ``item_id`` (an integer id as its decimal text).
    maps
        ``context``, ``user_features``, ``item_features``.
    """

    ok: npt.NDArray[np.bool_]
    event_type: npt.NDArray[np.int8]
    ts_ms: npt.NDArray[np.int64]
    ts_is_text: npt.NDArray[np.bool_]
    ts_text: PackedStrings
    value: npt.NDArray[np.float64]
    ids: dict[str, PackedStrings]
    maps: dict[str, PackedMaps]


def scan_batch(values: Sequence[bytes]) -> Scanned:
    """Read every message of ``values`` (all ``bytes``) that has the typical shape."""
    n = len(values)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=n), out=offsets[1:])
    buf = np.frombuffer(b"".join(values), dtype=np.uint8)
    (ok, etype, ts, ts_text, value, span_start, span_len, map_count, e_field, e_key_s,
     e_key_l, e_kind, e_num, e_txt_s, e_txt_l) = _scan(
        buf, offsets, _NAMES, _NAME_OFF, _TYPES, _TYPE_OFF, _POW10)
    ids = {name: PackedStrings.from_spans(buf, span_start[c], span_len[c])
           for c, name in enumerate(ID_FIELDS)}
    maps: dict[str, PackedMaps] = {}
    for m, name in enumerate(MAP_FIELDS):
        count = map_count[m]
        if not len(e_field):
            maps[name] = PackedMaps(count >= 0, np.zeros(n + 1, dtype=np.int64),
                                    PackedStrings.from_list([]), np.zeros(0, dtype=np.int8),
                                    np.zeros(0, dtype=np.float64),
                                    PackedStrings.from_list([]))
            continue
        # Entries were written message after message: those of one field are in event order.
        at = np.flatnonzero(e_field == m)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.maximum(count, 0), out=indptr[1:])
        maps[name] = PackedMaps(
            count >= 0, indptr, PackedStrings.from_spans(buf, e_key_s[at], e_key_l[at]),
            e_kind[at], e_num[at], PackedStrings.from_spans(buf, e_txt_s[at], e_txt_l[at]))
    text = PackedStrings.from_spans(buf, span_start[_TS_SPAN], span_len[_TS_SPAN])
    return Scanned(ok, etype, ts, ts_text, text, value, ids, maps)
