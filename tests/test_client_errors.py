"""Every failure is a ModuleException with a status code and a message a user can act on."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks_app.client import Configuration, ModuleException, Task, Tasks
from tests.live import free_port
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live

ANSWERS = {
    "/api/agent-execution/html/status": (200, "text/html", b"<html>a proxy login page</html>"),
    "/api/agent-execution/shape/status": (200, "application/json", b'{"id": "shape"}'),
    "/api/agent-execution/list/status": (200, "application/json", b"[1, 2]"),
    "/api/agent-execution/moved/status": (302, "text/html", b""),
    "/api/agent-execution/html/events": (200, "text/html", b"<html></html>"),
}


@pytest.fixture(scope="module")
def odd_server():
    """A server that answers wrongly in the ways a misconfigured proxy or base URL does."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = ANSWERS.get(self.path, (404, "text/plain", b"no"))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield Configuration(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/api", api_key="k")
    httpd.shutdown()


@pytest.fixture
def setup(daphne_server):
    return make_setup(daphne_server)


def raises(fn, *args, **kwargs) -> ModuleException:
    with pytest.raises(ModuleException) as caught:
        fn(*args, **kwargs)
    return caught.value


def test_server_errors_carry_the_status_and_message(setup):
    tasks = Tasks(setup.configuration)
    error = raises(tasks.get, "no-such-task")
    assert (error.status_code, error.description) == (404, "Task no-such-task not found")
    assert str(error) == "[404] Task no-such-task not found"
    error = raises(tasks.create, "no-such-agent", prompt="x")
    assert (error.status_code, error.description) == (404, "Agent no-such-agent not found")
    wrong_key = Configuration(base_url=setup.server.api, api_key="atc_wrong")
    assert raises(Tasks(wrong_key).get, "x").status_code == 401


def test_client_side_mistakes_are_caught_before_sending(setup):
    no_key = Configuration(base_url=setup.server.api, api_key=None)
    error = raises(Tasks(no_key).get, "x")
    assert error.status_code == 401 and "XPANDER_API_KEY" in error.description
    tasks = Tasks(setup.configuration)
    error = raises(tasks.create, setup.agent["id"], prompt="x", user_details={"id": "u"})
    assert (error.status_code, error.description) == (422, "user_details.email: Field required")
    error = raises(tasks.create, setup.agent["id"], prompt="x", not_an_option=True)
    assert error.status_code == 422 and "not_an_option" in error.description


def test_a_network_failure_names_the_url():
    offline = Configuration(base_url=f"http://127.0.0.1:{free_port()}/api", api_key="k")
    error = raises(Tasks(offline).get, "t1")
    assert error.status_code == 503
    assert f"{offline.base_url}/agent-execution/t1/status" in error.description
    assert error.description.startswith("Failed to get task - could not reach")


async def test_an_async_network_failure_names_the_url():
    offline = Configuration(base_url=f"http://127.0.0.1:{free_port()}/api", api_key="k")
    with pytest.raises(ModuleException) as caught:
        await Tasks(offline).acreate("agent-1", prompt="x")
    assert caught.value.status_code == 503
    assert f"{offline.base_url}/agent-execution/agent-1" in caught.value.description


def test_a_wrong_answer_is_an_exception_never_a_string(odd_server):
    tasks = Tasks(odd_server)
    error = raises(tasks.get, "html")
    assert (
        error.status_code == 502 and "expected JSON" in error.description and "text/html" in error.description
    )
    error = raises(tasks.get, "shape")
    assert error.status_code == 502 and "agent_id: Field required" in error.description
    assert raises(tasks.get, "list").status_code == 502
    assert raises(tasks.get, "moved").status_code == 302  # redirects are not followed


def test_event_stream_failures(setup, odd_server):
    ghost = Task.model_validate(
        {
            "id": "ghost",
            "agent_id": "a",
            "organization_id": "o",
            "input": {},
            "created_at": "2025-01-01T00:00:00Z",
        }
    )
    ghost._configuration = setup.configuration
    error = raises(list, ghost.events())
    assert (error.status_code, error.description) == (404, "Task ghost not found")

    ghost._configuration = odd_server.model_copy(update={"organization_id": None})
    ghost.id = "html"
    error = raises(list, ghost.events())
    assert error.status_code == 502 and "text/event-stream" in error.description

    offline = Configuration(
        base_url=f"http://127.0.0.1:{free_port()}/api", api_key="k", stream_reconnect_attempts=1
    )
    ghost._configuration = offline
    error = raises(list, ghost.events())
    assert error.status_code == 503
    assert f"{offline.base_url}/agent-execution/html/events" in error.description
