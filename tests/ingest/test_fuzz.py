"""Fuzz: more than ten thousand malformed requests through the real ingest service on a real nats-server.

Issue 12's fuzzing (20,000 requests) got 295 answers 500, refusals named ``$``, and refusals missing
from ``DSE_REJECTED``. Here every request of a generated corpus (``corpus.py``: each family is invalid
whatever it draws) must be answered 400, with a reason code the contract lists, naming its field (a
path deeper than ``$``) or its limit, or, for a body that is not one JSON value at all, saying so; the
event log must stay empty; and ``DSE_REJECTED`` must hold exactly one record per refusal, under the
reason code the caller was given. Requests are sent 64 at a time (the service answers them in order).
The figures (requests, refusals by code, seconds) are printed for the record.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from typing import Any

import pytest

from engine.ingest.service import IngestService
from events.ingest_wire import REASON_CODES
from events.subjects import rejected_subject
from tests.ingest.corpus import Case, corpus
from tests.ingest.wire import Answer, ask, events_count, rejected_counts

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

REQUESTS = 10_500
SEED = 12
IN_FLIGHT = 64
#: what a refusal of the whole body says when there is no field to name: not JSON, or not an object
WHOLE_BODY = re.compile(
    r"JSON is malformed|Input data was truncated|Invalid UTF-8 encoded string \(byte \d+\)"
    r"|Expected `object`, got|empty batch|Expected `array`, got"
)


def names_its_field_or_limit(answer: Answer) -> bool:
    body = answer.body
    if not body["field"].startswith("$"):
        return False
    if body["field"] != "$" or body["limit"]:
        return True
    return bool(WHOLE_BODY.search(body["description"]))


async def test_ten_thousand_malformed_requests_are_each_refused_named_and_kept(
    nc: Any, ingest: IngestService
) -> None:
    cases = corpus(REQUESTS, seed=SEED, max_payload=nc.max_payload)
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def send(case: Case) -> Answer:
        async with gate:
            return await ask(nc, case.data, case.subject, timeout=30)

    started = time.monotonic()
    answers = await asyncio.gather(*(send(c) for c in cases))
    took = time.monotonic() - started

    codes = collections.Counter(a.code for a in answers)
    not_refused = [
        (i, c.family, a) for i, (c, a) in enumerate(zip(cases, answers, strict=True)) if a.code != "400"
    ]
    assert not_refused == [], f"{len(not_refused)} not answered 400, e.g. {not_refused[:3]}"
    unnamed = [
        (i, c.family, a)
        for i, (c, a) in enumerate(zip(cases, answers, strict=True))
        if not names_its_field_or_limit(a)
    ]
    assert unnamed == [], f"{len(unnamed)} refusals name neither a field nor a limit, e.g. {unnamed[:3]}"
    reasons = collections.Counter(a.body["reason_code"] for a in answers)
    assert set(reasons) <= set(REASON_CODES), reasons
    assert all(a.body["limit"] for a in answers if a.body["reason_code"] == "too_large")

    assert await events_count(nc) == 0
    kept = await rejected_counts(nc)
    assert kept == {rejected_subject(code): n for code, n in reasons.items()}
    assert sum(kept.values()) == len(cases)
    assert ingest.counters.rejections_lost == 0 and ingest.counters.failed == 0

    whole = sum(a.body["field"] == "$" and not a.body["limit"] for a in answers)
    print(
        f"\nfuzz: {len(cases)} requests in {took:.1f}s ({len(cases) / took:.0f}/s), answers {dict(codes)}, "
        f"refusals by code {dict(reasons.most_common())}, kept in DSE_REJECTED {sum(kept.values())}, "
        f"naming a field {len(cases) - whole - sum(bool(a.body['limit']) for a in answers)}, a limit "
        f"{sum(bool(a.body['limit']) for a in answers)}, the body as a whole (not JSON) {whole}, "
        f"by family {dict(collections.Counter(c.family for c in cases).most_common())}"
    )
    assert took < 60
