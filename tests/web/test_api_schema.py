"""schemathesis against the API's own OpenAPI schema, in-process over ASGI: no generated
input makes any operation answer 5xx (admin token, so every action runs for real)."""

from __future__ import annotations

import re
import warnings
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import NonInteractiveExampleWarning
from schemathesis import GenerationMode
from web_harness import LOCK, WebStack

EXAMPLES_PER_OPERATION = 8


def _generate(schema_dict: dict[str, Any], known: dict[str, Any]) -> list[Any]:
    """Cases per operation: positive and negative data, and positive data aimed at objects
    that exist (``known`` path parameters), so handlers run past their 404s."""
    schema = schemathesis.openapi.from_dict(schema_dict)
    cases: list[Any] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        names = set(re.findall(r"\{(\w+)\}", operation.path))
        fixed = {k: v for k, v in known.items() if k in names}
        strategies = [
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        ]
        if fixed:
            strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
        for strategy in strategies:

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                database=None,
                deadline=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(strategy)
            def collect(case: Any) -> None:
                cases.append(case)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NonInteractiveExampleWarning)
                collect()
    return cases


async def test_schema_is_served_at_a_stable_url_without_auth(stack: WebStack) -> None:
    response = await stack.client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/rooms/{room_id}/timeline" in schema["paths"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert not any(p.startswith(("/hooks", "/login")) for p in schema["paths"])


async def test_no_generated_request_gets_a_server_error(stack: WebStack) -> None:
    schema = (await stack.client().get("/api/v1/openapi.json")).json()
    known = {"room_id": stack.room_id, "lock_id": LOCK, "action": "unlock"}
    cases = _generate(schema, known)
    operations = {(c.method, c.path) for c in cases}
    assert len(operations) == sum(len(v) for v in schema["paths"].values())
    client = stack.client(token=stack.tokens["admin"])
    failures: list[str] = []
    statuses: list[int] = []
    for case in cases:
        kwargs = case.as_transport_kwargs(base_url="https://testserver")
        kwargs.pop("cookies", None)
        headers = {**(kwargs.pop("headers", None) or {})}
        headers["Authorization"] = f"Bearer {stack.tokens['admin']}"
        request_kwargs = {
            k: v
            for k, v in kwargs.items()
            if k in {"method", "url", "params", "json", "content", "data", "files"}
        }
        if isinstance(request_kwargs.get("data"), bytes | str):
            request_kwargs["content"] = request_kwargs.pop("data")
        response = await client.request(headers=headers, **request_kwargs)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")
    assert not failures, "\n".join(failures[:20])
    assert len(cases) > 100
    assert {200, 202, 400, 404} <= set(statuses)  # real handlers ran, not just 404s
