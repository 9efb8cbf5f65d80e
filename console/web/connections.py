"""/connections/: a member's MCP connections (sign in, paste a token, refresh, disconnect), the tasks
waiting for their sign-in, the admins' health board, and the OAuth callback and sign-in links.

Views check who may act, call console.oauth (the connection rows) and the sign-in task API
(tasks_app.actions.signin) to resume waiting tasks, and render. Tokens are never shown: only their
last 4 characters, expiry, scopes and timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console import oauth, vault
from console.models import GraphItem, Role, UserToken
from console.web.guard import forbidden, member_page
from tasks_app.actions import signin as actions_signin

MAX_PASTED = 8192


@dataclass
class Connection:
    """One MCP server (graph item key) as the member sees it."""

    key: str
    name: str
    url: str
    item_id: int
    row: UserToken | None
    waiting: list

    @property
    def state(self) -> str:
        if self.row is None:
            return "not connected"
        if self.row.needs_signin:
            return "needs sign-in"
        if self.row.refresh_error:
            return "refresh failing"
        if (
            self.row.expires_at
            and self.row.expires_at <= timezone.now()
            and not self.row.refresh_token_encrypted
        ):
            return "expired"
        return "connected"


def callback_url(request: HttpRequest) -> str:
    return oauth.public_url(f"{request.scheme}://{request.get_host()}") + oauth.CALLBACK_PATH


def _items(organization_id: str) -> dict[str, GraphItem]:
    """Every MCP server of the organization's agents, one per graph item key (tokens are keyed by it)."""
    found: dict[str, GraphItem] = {}
    for item in GraphItem.objects.filter(agent__organization_id=organization_id, type="mcp").order_by(
        "key", "id"
    ):
        found.setdefault(item.key, item)
    return found


def _item(request: HttpRequest, item_id: int) -> GraphItem:
    item = GraphItem.objects.filter(
        pk=item_id, type="mcp", agent__organization_id=request.member.organization_id
    )
    found = item.select_related("agent").first()
    if found is None:
        raise Http404("No such MCP server in your organization")
    return found


def _owner(request: HttpRequest) -> vault.Owner:
    return vault.Owner(member_id=request.member.pk)


def _name(item: GraphItem) -> str:
    return item.mcp_settings.get("name") or item.name or item.key


@member_page
@require_GET
def connections(request: HttpRequest) -> HttpResponse:
    """The member's connections, their waiting tasks, and for admins everyone's health board."""
    org = request.member.organization_id
    owner = _owner(request)
    rows = {r.graph_item_key: r for r in owner.rows(org)}
    waits = actions_signin.waiting(org, owner)
    items = [
        Connection(
            key,
            _name(item),
            item.mcp_settings.get("url", ""),
            item.pk,
            rows.get(key),
            [w for w in waits if w.graph_item_key == key],
        )
        for key, item in _items(org).items()
    ]
    board = None
    if request.member.can(Role.ADMIN):
        board = list(
            UserToken.objects.filter(organization_id=org)
            .select_related("member__user")
            .order_by("graph_item_key", "member__user__email", "external_user_id")
        )
    context = {"nav": "connections", "items": items, "waits": waits, "board": board}
    return render(request, "connections/index.html", context)


@member_page(role=Role.MEMBER)
@require_POST
def sign_in(request: HttpRequest, item_id: int) -> HttpResponse:
    """Start the OAuth sign-in for the member on this server: off to the authorization server."""
    item = _item(request, item_id)
    request.session.save()
    try:
        url = oauth.start(
            organization_id=request.member.organization_id,
            owner=_owner(request),
            item=item,
            redirect_uri=callback_url(request),
            session_key=request.session.session_key or "",
        )
    except oauth.SignInError as exc:
        messages.error(request, f"{_name(item)}: {exc.message}")
        return redirect("/connections/")
    return _off_to(request, url, _name(item))


@require_http_methods(["GET", "POST"])
def signin_link(request: HttpRequest, token: str) -> HttpResponse:
    """A signed sign-in link (from a paused task or get_token): a page, then the OAuth sign-in on POST.

    A member's link works only for that member signed in (so nobody connects their account to
    someone else's tasks); an end user's link needs no session.
    """
    try:
        link = oauth.open_link(token)
    except oauth.SignInError as exc:
        return render(request, "connections/result.html", {"error": exc.message}, status=exc.status)
    if link.owner.is_member:
        member = (
            request.user.is_authenticated
            and request.user.memberships.filter(pk=link.owner.member_id).exists()
        )
        if not member:
            from django.contrib.auth.views import redirect_to_login

            if request.user.is_authenticated:
                return forbidden(request, "This sign-in link is for another member.")
            return redirect_to_login(request.get_full_path(), "/")
    if request.method == "GET":
        return render(request, "connections/link.html", {"name": _name(link.item)})
    request.session.save()
    try:
        url = oauth.start(
            organization_id=link.organization_id,
            owner=link.owner,
            item=link.item,
            redirect_uri=callback_url(request),
            session_key=request.session.session_key or "",
            link_nonce=link.nonce,
            step_up_scope=link.step_up_scope,
        )
    except oauth.SignInError as exc:
        return render(request, "connections/result.html", {"error": exc.message}, status=exc.status)
    return _off_to(request, url, _name(link.item))


def _off_to(request: HttpRequest, url: str, name: str) -> HttpResponse:
    """A page that goes on to the authorization server: the CSP's form-action 'self' forbids a
    form submission from being redirected to another origin, a link and a refresh are not."""
    return render(
        request, "connections/redirect.html", {"url": url, "name": name, "host": urlsplit(url).netloc}
    )


@require_GET
def callback(request: HttpRequest) -> HttpResponse:
    """The authorization server's redirect: finish the sign-in, store the tokens, resume waiting tasks."""
    params = {k: v for k, v in request.GET.items()}
    try:
        flow, row = oauth.finish(params, request.session.session_key or "")
    except oauth.SignInError as exc:
        return render(request, "connections/result.html", {"error": exc.message}, status=exc.status)
    owner = (
        vault.Owner(member_id=flow.member_id)
        if flow.member_id
        else vault.Owner(external_id=flow.external_user_id)
    )
    name = _name(flow.graph_item)
    resumed = actions_signin.resume_signed_in(flow.organization_id, owner, row.graph_item_key, name)
    if flow.member_id and request.user.is_authenticated:
        note = f" {carry_on(len(resumed))}" if resumed else ""
        messages.success(request, f"Connected to {name}.{note}")
        return redirect("/connections/")
    resumed_note = carry_on(len(resumed)) if resumed else ""
    return render(request, "connections/result.html", {"name": name, "resumed": resumed_note})


def carry_on(count: int) -> str:
    """What a sign-in tells its member about the tasks it resumed, in words a person would use."""
    return f"{count} waiting task carries on." if count == 1 else f"{count} waiting tasks carry on."


@member_page(role=Role.MEMBER)
@require_POST
def paste(request: HttpRequest, item_id: int) -> HttpResponse:
    """Store a pasted personal access token or API key after one authenticated request accepts it."""
    item = _item(request, item_id)
    token = (request.POST.get("token") or "").strip()
    if not token or len(token) > MAX_PASTED or any(c.isspace() for c in token):
        messages.error(request, f"{_name(item)}: paste one token, without spaces or line breaks inside it")
        return redirect("/connections/")
    accepted = async_to_sync(oauth.accepted_by)(item.mcp_settings.get("url", ""), token)
    if accepted is not True:
        why = "refused this token" if accepted is False else "could not be reached to check this token"
        messages.error(request, f"{_name(item)} {why}; nothing was stored")
        return redirect("/connections/")
    oauth.save_token(request.member.organization_id, _owner(request), item.key, token, source="pasted")
    resumed = actions_signin.resume_signed_in(
        request.member.organization_id, _owner(request), item.key, _name(item)
    )
    note = f" {carry_on(len(resumed))}" if resumed else ""
    messages.success(request, f"Token for {_name(item)} stored.{note}")
    return redirect("/connections/")


@member_page(role=Role.MEMBER)
@require_POST
def refresh_now(request: HttpRequest, item_id: int) -> HttpResponse:
    item = _item(request, item_id)
    row = _owner(request).rows(request.member.organization_id).filter(graph_item_key=item.key).first()
    if row is None or not row.refresh_token_encrypted:
        messages.error(request, f"{_name(item)}: this connection cannot be refreshed; sign in again")
        return redirect("/connections/")
    row = oauth.refresh(row.pk, rejected_token=row.reveal())
    if row is not None and not row.refresh_error:
        messages.success(request, f"{_name(item)}: refreshed")
    else:
        messages.error(request, f"{_name(item)}: refresh failed ({row.refresh_error if row else 'gone'})")
    return redirect("/connections/")


@member_page
@require_POST
def disconnect(request: HttpRequest, item_id: int) -> HttpResponse:
    item = _item(request, item_id)
    _owner(request).rows(request.member.organization_id).filter(graph_item_key=item.key).delete()
    messages.success(request, f"Disconnected from {_name(item)}")
    return redirect("/connections/")


@member_page(role=Role.ADMIN)
@require_POST
def revoke(request: HttpRequest, row_id: int) -> HttpResponse:
    """An admin removes someone's connection (their tasks then ask them to sign in again)."""
    deleted, _ = UserToken.objects.filter(pk=row_id, organization_id=request.member.organization_id).delete()
    if not deleted:
        raise Http404("No such connection in your organization")
    messages.success(request, "Connection revoked")
    return redirect("/connections/")


@require_GET
def client_metadata_document(request: HttpRequest) -> JsonResponse:
    """Our Client ID Metadata Document: the client id is this document's own HTTPS URL."""
    base = oauth.public_url(f"{request.scheme}://{request.get_host()}")
    body = oauth.client_metadata(base + oauth.CALLBACK_PATH).model_dump(mode="json", exclude_none=True)
    return JsonResponse({"client_id": base + oauth.METADATA_DOCUMENT_PATH, **body})


def missing_by_agent(member) -> list[tuple[str, str, list[str]]]:
    """Pre-flight for /tasks/new/: (agent id, agent name, servers the member has not connected).

    Servers that need no user token (auth_type none) are left out; so are connections that work.
    """
    owner = vault.Owner(member_id=member.pk)
    usable = set(
        owner.rows(member.organization_id).filter(needs_signin=False).values_list("graph_item_key", flat=True)
    )
    out: dict[str, tuple[str, str, list[str]]] = {}
    items = GraphItem.objects.filter(
        agent__organization_id=member.organization_id, type="mcp"
    ).select_related("agent")
    for item in items.order_by("agent__name", "position", "id"):
        if (item.mcp_settings.get("auth_type") or "none") == "none" or item.key in usable:
            continue
        out.setdefault(item.agent_id, (item.agent_id, item.agent.name, []))[2].append(_name(item))
    return list(out.values())
