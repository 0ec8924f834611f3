"""The four repositories of a store."""

from d1store.repositories.messages import MessageRepository
from d1store.repositories.metadata import MetadataRepository
from d1store.repositories.resources import ResourceRepository
from d1store.repositories.threads import ThreadRepository

__all__ = ["MessageRepository", "MetadataRepository", "ResourceRepository", "ThreadRepository"]
