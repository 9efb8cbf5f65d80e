"""console.urls.hot_first: the task routes are tried first, and every path resolves as before."""

from __future__ import annotations

import itertools
import re

from django.urls import Resolver404
from django.urls.resolvers import RegexPattern, URLResolver

from console.urls import api, hot_first

# Values a path parameter could take that are also literal segments of other routes.
SEGMENTS = ["x1", "agent-execution", "executions", "history", "user", "events", "push", "status", "update",
            "v1", "agents", "workers", "list", "keys", "audit", "connections", "docs", "openapi.json"]  # fmt: skip


def resolver(patterns: list) -> URLResolver:
    return URLResolver(RegexPattern(r"^"), patterns)


def sample_paths(patterns: list) -> set[str]:
    """Each route with its parameters filled by every combination of SEGMENTS (two at most varied)."""
    paths = set()
    for pattern in patterns:
        route = str(pattern.pattern)
        holes = re.findall(r"<[^>]+>", route)
        for values in itertools.product(SEGMENTS, repeat=min(len(holes), 2)):
            path = route
            for i, hole in enumerate(holes):
                path = path.replace(hole, values[i] if i < len(values) else "x1", 1)
            paths.add(path)
            paths.add(path + "/")
    return paths


def match(res: URLResolver, path: str) -> tuple | None:
    try:
        found = res.resolve(path)
    except Resolver404:
        return None
    # The route and its name tell the pattern apart (each api.urls builds its views anew).
    return found.route, found.url_name, found.kwargs


def test_the_task_routes_come_first_and_every_path_resolves_as_before():
    original, app_name, namespace = api.urls
    reordered, app_name2, namespace2 = hot_first(api.urls)
    assert (app_name2, namespace2) == (app_name, namespace)
    routes = [str(p.pattern) for p in reordered]
    assert sorted(routes) == sorted(str(p.pattern) for p in original)  # the same patterns, moved
    hot = [r for r in routes if r.startswith("agent-execution/")]
    assert routes[: len(hot)] == hot and "agent-execution/<id>/events/push" in hot
    before, after = resolver(original), resolver(reordered)
    paths = sample_paths(original)
    assert len(paths) > 500
    assert [match(before, p) for p in sorted(paths)] == [match(after, p) for p in sorted(paths)]


def test_a_push_tries_its_own_route_before_the_console_routes(alice, task_of):
    from django.urls import resolve

    task = task_of()
    found = resolve(f"/api/agent-execution/{task['id']}/events/push")
    assert found.route == "api/agent-execution/<id>/events/push"
    assert not any("v1/" in str(tried[-1].pattern) for tried in found.tried)
