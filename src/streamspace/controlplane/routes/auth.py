"""Login and logout: a bearer token for API clients, the same token as an httpOnly cookie;
the user's own password change and personal API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status

from streamspace.controlplane.audit import Actor
from streamspace.controlplane.deps import (
    COOKIE_NAME,
    AccountDep,
    AddressDep,
    ApiTokensDep,
    LoginsDep,
    TokenDep,
    UserDep,
)
from streamspace.controlplane.idempotency import Idempotency
from streamspace.controlplane.routes.headers import IdempotencyKeyHeader
from streamspace.controlplane.routes.responses import AUTHENTICATED, BODY, errors
from streamspace.controlplane.routes.schemas import (
    ApiTokenCreatedOut,
    ApiTokenIn,
    ApiTokenOut,
    LoginIn,
    LoginOut,
    PasswordChangeIn,
    UserOut,
)
from streamspace.controlplane.routes.text import storable_url

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=AUTHENTICATED)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/login", responses=BODY | errors(429))
async def login(body: LoginIn, request: Request, logins: LoginsDep, response: Response) -> LoginOut:
    """A login token (and cookie); 403 for a disabled account. With ``must_change_password``
    the token is good for ``POST auth/password`` (and ``me``, ``logout``) only until then."""
    done = await logins.login(body.username, body.password, address=_address(request))
    response.set_cookie(
        COOKIE_NAME,
        done.token,
        max_age=int(done.ttl),
        httponly=True,
        samesite="strict",
        secure=logins.cookie_secure(request.url.scheme),
    )
    user = done.user
    return LoginOut(
        access_token=done.token,
        user=UserOut.of(user),
        must_change_password=user.must_change_password,
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    user: AccountDep,
    request: Request,
    logins: LoginsDep,
    response: Response,
    address: AddressDep,
    token: TokenDep,
) -> None:
    if token:
        await logins.logout(token, actor=Actor.of(user, address))
    response.delete_cookie(
        COOKIE_NAME,
        httponly=True,
        samesite="strict",
        secure=logins.cookie_secure(request.url.scheme),
    )


@router.get("/me")
async def me(user: AccountDep) -> UserOut:
    return UserOut.of(user)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, responses=BODY | errors(429))
async def change_password(
    body: PasswordChangeIn, request: Request, user: AccountDep, logins: LoginsDep, token: TokenDep
) -> None:
    """Change your own password (403 when the current one is wrong; wrong ones count as
    failed logins). Your other login tokens end; this one and your API tokens stay."""
    await logins.change_password(
        user,
        current=body.current_password,
        new=body.new_password,
        token=token,
        address=_address(request),
    )


@router.get("/tokens")
async def list_tokens(user: UserDep, api_tokens: ApiTokensDep) -> list[ApiTokenOut]:
    """Your personal API tokens, newest first (revoked and expired ones too)."""
    return [ApiTokenOut.model_validate(token) for token in await api_tokens.list(user)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, responses=BODY | errors(409))
async def create_token(
    body: ApiTokenIn,
    user: UserDep,
    api_tokens: ApiTokensDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ApiTokenCreatedOut:
    """A personal API token (``ssp_…``), answered this once: use it as
    ``Authorization: Bearer …`` until it expires or you revoke it. With an
    ``Idempotency-Key``, a retry answers with the same token (``token`` null) and makes none."""
    idempotency = Idempotency.of(idempotency_key, "api_token", body.model_dump())
    made = await api_tokens.create(
        user, name=body.name, days=body.expires_in_days, idempotency=idempotency
    )
    shown = ApiTokenOut.model_validate(made.token).model_dump()
    return ApiTokenCreatedOut(**shown, token=made.secret)


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(404),
    dependencies=[Depends(storable_url)],
)
async def revoke_token(token_id: str, user: UserDep, api_tokens: ApiTokensDep) -> None:
    """Revoke one of your API tokens: refused at once on every replica."""
    await api_tokens.revoke(user, token_id)
