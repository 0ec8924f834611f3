"""Pydantic models of the records d1store stores and returns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator

from d1store.encoding import as_utc, check_id, check_json, check_metadata, check_text, utc_now

__all__ = ["ROLES", "Include", "Message", "Page", "Resource", "Role", "Thread"]

Role = Literal["user", "assistant", "system", "tool"]
ROLES: frozenset[str] = frozenset(("user", "assistant", "system", "tool"))

T = TypeVar("T")


def _metadata(value: Any) -> dict[str, Any]:
    return check_metadata("metadata", value)


def _content(value: Any) -> str | list[Any] | dict[str, Any]:
    if value is None:
        raise ValueError("content must not be null; use a string, list or object")
    if not isinstance(value, (str, list, dict)):
        raise ValueError(
            f"content must be a string, list or object, got {type(value).__name__} {value!r:.60}"
        )
    check_json("content", value)
    return value


MetadataDict = Annotated[dict[str, Any], PlainValidator(_metadata)]
Content = Annotated[str | list[Any] | dict[str, Any], PlainValidator(_content)]


class _Record(BaseModel):
    # Assignments are validated too, so a record changed after construction
    # is still checked before it reaches the database.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("created_at", "updated_at", mode="after", check_fields=False)
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


class Thread(_Record):
    """A conversation owned by one resource (usually a user)."""

    id: str
    resource_id: str
    title: str = ""
    metadata: MetadataDict = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    #: When the thread was archived, or ``None`` while it is active.
    archived_at: datetime | None = None

    @field_validator("id", "resource_id", mode="before")
    @classmethod
    def _ids(cls, value: Any, info: Any) -> str:
        return check_id(info.field_name, value)

    @field_validator("archived_at", mode="after")
    @classmethod
    def _archived_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)

    @field_validator("title", mode="after")
    @classmethod
    def _title(cls, value: str) -> str:
        check_text("title", value)
        return value


class Message(_Record):
    """One message of a thread."""

    id: str
    thread_id: str
    resource_id: str | None = None
    role: Role
    content: Content
    type: str = "v2"
    metadata: MetadataDict = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utc_now)

    @field_validator("id", "thread_id", mode="before")
    @classmethod
    def _ids(cls, value: Any, info: Any) -> str:
        return check_id(info.field_name, value)

    @field_validator("resource_id", mode="before")
    @classmethod
    def _resource_id(cls, value: Any) -> str | None:
        return None if value is None else check_id("resource_id", value)

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Any:
        if value not in ROLES:
            raise ValueError(f"role must be one of user, assistant, system, tool; got {value!r}")
        return value

    @field_validator("type", mode="after")
    @classmethod
    def _type(cls, value: str) -> str:
        check_text("type", value)
        return value


class Resource(_Record):
    """Per-resource (usually per-user) working memory."""

    id: str
    working_memory: str | None = None
    metadata: MetadataDict = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return check_id("id", value)

    @field_validator("working_memory", mode="after")
    @classmethod
    def _working_memory(cls, value: str | None) -> str | None:
        if value is not None:
            check_text("working_memory", value)
        return value


class Page(BaseModel, Generic[T]):
    """One page of a listing, with the total number of matches."""

    items: list[T]
    total: int
    page: int
    per_page: int | None
    has_more: bool


class Include(BaseModel):
    """A message to add to a listing, with neighbours from its own thread."""

    model_config = ConfigDict(extra="forbid")

    id: str
    # The query requests previous + 1 rows, and D1 carries integers exactly
    # only up to 2**53 (SQLite raised OverflowError above 2**63 - 1).
    previous: int = Field(default=0, ge=0, le=2**53 - 1)
    next: int = Field(default=0, ge=0, le=2**53 - 1)

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return check_id("include id", value)
