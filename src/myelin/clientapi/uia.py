"""User-interactive authentication (client-server-api, "User-Interactive Authentication API").

A protected request without a finished session is answered 401 with the flows, the
session ID and the stages completed so far; the client repeats the request with an `auth`
dict for the next stage. A session is bound to the request (method and URI) that opened it
and to the user who made it, and authorises that one request only.
"""

from __future__ import annotations

from typing import Any

from myelin.clientapi.context import ClientContext
from myelin.clientapi.http import MatrixError, Request, bad_json, forbidden, opt_dict
from myelin.userapi.accounts import UserAPIError

DUMMY = "m.login.dummy"
#: A validated e-mail address (myelin.clientapi.threepid); offered for registration.
EMAIL_IDENTITY = "m.login.email.identity"
PASSWORD = "m.login.password"
#: Completed through the fallback page and the CAS ticket URL (myelin.clientapi.sso).
SSO = "m.login.sso"
#: Recorded instead of SSO when single sign-on proved somebody else: the request is refused.
SSO_MISMATCH = "x.myelin.sso_other_user"


class UIAChallenge(MatrixError):
    """The 401 that carries flows rather than a plain error (errcode only on a failed stage)."""

    def __init__(
        self,
        session: str,
        flows: list[list[str]],
        completed: list[str],
        failure: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(401, failure[0] if failure else "", failure[1] if failure else "")
        self.extra = {
            "flows": [{"stages": f} for f in flows],
            "params": {},
            "session": session,
            # Always present (also empty): clients and Sytest read it after a failed stage.
            "completed": completed,
        }

    def body(self) -> dict[str, Any]:
        out = dict(self.extra)
        if self.errcode:
            out["errcode"] = self.errcode
            out["error"] = self.error
        return out


async def authenticate(
    ctx: ClientContext,
    req: Request,
    body: dict[str, Any],
    flows: list[list[str]],
    user_id: str | None,
) -> str:
    """Run UIA for this request; returns the session ID once a flow is complete.

    `user_id` is the authenticated user for account-management endpoints (the password
    stage must prove it is them) and None for registration. Raises UIAChallenge (401)
    until a flow is complete; a failed stage (wrong password) is the same 401 with
    errcode M_FORBIDDEN, so the client may try again in the same session.
    """
    if req.requester is not None and req.requester.app_service is not None:
        # An application service acts for its users with its own token: no UIA
        # (application-service-api.md; the reference server does the same).
        return f"appservice:{req.requester.app_service}"
    if ctx.config.cas_server_url and user_id is not None and [PASSWORD] in flows:
        # Whoever may prove themselves by password may do so by single sign-on too.
        flows = [*flows, [SSO]]
    auth = opt_dict(body, "auth")
    uri = req.path
    if auth is None:
        session = await ctx.users.uia_start(req.method, uri, user_id)
        raise UIAChallenge(session, flows, [])
    session_id = auth.get("session")
    if session_id is not None and not isinstance(session_id, str):
        raise bad_json("auth.session must be a string")
    if session_id is None:
        # A single-stage flow may be completed without a session (allowed by the spec).
        session_id = await ctx.users.uia_start(req.method, uri, user_id)
    found = await ctx.users.uia_get(session_id)
    if found is None:
        raise MatrixError(400, "M_UNKNOWN", "Unknown or expired UIA session")
    method, s_uri, s_user, completed = found
    if method != req.method or s_uri != uri or s_user != user_id:
        raise forbidden("This UIA session was started for a different request")
    if SSO_MISMATCH in completed:
        raise forbidden("Single sign-on proved a different user than the one asking")
    stage = auth.get("type")
    if stage is not None:
        if not isinstance(stage, str):
            raise bad_json("auth.type must be a string")
        allowed = {s for flow in flows for s in flow}
        if stage not in allowed:
            raise UIAChallenge(
                session_id, flows, completed, ("M_UNRECOGNIZED", f"Unknown auth stage {stage}")
            )
        failure = await _check_stage(ctx, stage, auth, user_id)
        if failure is not None:
            # A failed attempt may be retried: the same 401, plus errcode and error.
            raise UIAChallenge(session_id, flows, completed, failure)
        completed = await ctx.users.uia_complete_stage(session_id, stage)
    for flow in flows:
        if all(s in completed for s in flow):
            await ctx.users.uia_finish(session_id)
            return session_id
    raise UIAChallenge(session_id, flows, completed)


async def _check_stage(
    ctx: ClientContext, stage: str, auth: dict[str, Any], user_id: str | None
) -> tuple[str, str] | None:
    """None when the stage succeeded, else (errcode, error) of the failed attempt."""
    if stage == DUMMY:
        return None
    if stage == EMAIL_IDENTITY and ctx.threepids is not None:
        return await ctx.threepids.check_email_stage(auth)
    if stage == PASSWORD:
        password = auth.get("password")
        if not isinstance(password, str):
            raise bad_json("auth.password must be a string")
        claimed = identifier_user(auth)
        try:
            claimed_id = ctx.users.user_id_for(claimed) if claimed is not None else user_id
        except UserAPIError:
            claimed_id = None
        if user_id is None or claimed_id != user_id:
            # Not a failed attempt but a different user: no retry in this session.
            raise forbidden("Authenticated user does not match the requester")
        if not await ctx.users.verify_password(user_id, password):
            return ("M_FORBIDDEN", "Invalid password")
        return None
    raise MatrixError(400, "M_UNRECOGNIZED", f"Unsupported auth stage {stage}")


def identifier_user(auth: dict[str, Any]) -> str | None:
    """The user named by an `identifier` of type m.id.user (or the legacy `user` field)."""
    ident = auth.get("identifier")
    if ident is not None:
        if not isinstance(ident, dict):
            raise bad_json("identifier must be an object")
        if ident.get("type") != "m.id.user":
            raise MatrixError(400, "M_UNKNOWN", "Only m.id.user identifiers are supported")
        user = ident.get("user")
        if not isinstance(user, str) or not user:
            raise bad_json("identifier.user must be a non-empty string")
        return user
    user = auth.get("user")
    if user is None:
        return None
    if not isinstance(user, str) or not user:
        raise bad_json("user must be a non-empty string")
    return user
